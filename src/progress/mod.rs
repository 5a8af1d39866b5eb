//! Durable progress for keyed work (the run-once seed, done right): each key of a namespace is
//! completed once globally, however many processes on however many machines loop over the same
//! keys, however many times, and progress survives crashes and restarts.
//!
//! ```no_run
//! # async fn f() -> Result<(), drover::progress::ProgressError> {
//! use drover::progress::{ClaimOptions, Progress};
//! let progress = Progress::connect("access.json").await?;    // or Progress::embedded(".drover")?
//! let keys: Vec<String> = (0..100_000).map(|i| format!("task_{i}")).collect();
//! let mut claims = progress.claims("evaluate", keys, ClaimOptions::default());
//! while let Some(claim) = claims.next().await {
//!     let claim = claim?;
//!     // ... the work for claim.key() ...
//!     claim.done_later(None);           // committed with the next batch of claims
//! }
//! let summary = claims.finish().await?;  // every commit on disk
//! # Ok(()) }
//! ```
//!
//! What is exactly-once: the **commit**. A key is committed at most once per version, and a
//! commit is acknowledged only once it is on disk. What is at-least-once: the **work**. A holder
//! that dies, or whose lease lapses without renewal, loses its claim; another process may take
//! the key and do the work again, and the first holder's late commit is refused.
//!
//! Two places keep progress: the scheduler's store (reached through a [`Client`], only by token
//! holders) and the embedded store, one file in a local directory (`.drover/` by default) that
//! the processes of one machine share, needing no scheduler.

mod claims;
mod run_once;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use claims::{Claim, ClaimOptions, Claims, Summary};
pub use drover_progress::{Counts, Kind, Record, State};
pub use run_once::RunOnce;

use drover_progress::{Outcome, RedbStore, Request, Sharing};
use drover_protocol::{ProgressReply, ProgressRequest};

use crate::client::{Client, ClientError};

/// The embedded store's default directory.
pub const DEFAULT_DIR: &str = ".drover";

/// What can go wrong with progress.
#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    /// The scheduler could not be reached or was lost.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The store failed (disk full, read-only, corrupt): nothing of the request was kept.
    #[error("{0}")]
    Store(String),
    /// A request was refused on its own: a bad namespace or key, an output too large.
    #[error("{0}")]
    Refused(String),
    /// A commit or failure was refused: the claim is not the key's current one any more.
    #[error("the claim of {key:?} was lost: {reason}")]
    Stale {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The key's record is of a newer version than asked.
    #[error("{key:?} is at version {stored}, newer than the {asked} asked for")]
    NewerVersion {
        /// The key.
        key: String,
        /// The record's version.
        stored: u64,
        /// The version asked for.
        asked: u64,
    },
    /// The answer did not fit the request (a scheduler speaking another protocol).
    #[error("unexpected answer from the progress store: {0}")]
    Unexpected(String),
}

#[derive(Clone)]
enum Backend {
    Remote(Client),
    Embedded {
        store: Arc<RedbStore>,
        max_output: usize,
    },
}

/// A handle on a progress store. Cheap to clone; every handle is its own holder of claims.
#[derive(Clone)]
pub struct Progress {
    backend: Backend,
    holder: Arc<str>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let place = match &self.backend {
            Backend::Remote(c) => format!("{c:?}"),
            Backend::Embedded { store, .. } => store.path().display().to_string(),
        };
        f.debug_struct("Progress")
            .field("store", &place)
            .field("holder", &self.holder)
            .finish()
    }
}

/// A holder name unique to this handle: `BASE#N`.
fn holder_name(base: &str) -> Arc<str> {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    Arc::from(format!("{base}#{}", NEXT.fetch_add(1, Ordering::Relaxed)).as_str())
}

fn local_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

impl Progress {
    /// The scheduler's store, through `client`.
    pub fn remote(client: &Client) -> Progress {
        Progress {
            holder: holder_name(client.name()),
            backend: Backend::Remote(client.clone()),
        }
    }

    /// Connects to the scheduler named in `access_file` and uses its store.
    pub async fn connect(access_file: impl AsRef<Path>) -> Result<Progress, ProgressError> {
        Ok(Progress::remote(&Client::connect(access_file).await?))
    }

    /// The embedded store in directory `dir` (`DIR/progress.redb`, made if missing), shared
    /// with the other processes of this machine; outputs of at most 1 MiB.
    pub fn embedded(dir: impl AsRef<Path>) -> Result<Progress, ProgressError> {
        let path = dir.as_ref().join("progress.redb");
        let store = RedbStore::open(&path, Sharing::Processes)
            .map_err(|e| ProgressError::Store(e.to_string()))?;
        Ok(Progress {
            holder: holder_name(&local_name()),
            backend: Backend::Embedded {
                store: Arc::new(store),
                max_output: drover_progress::DEFAULT_MAX_OUTPUT,
            },
        })
    }

    /// The scheduler's store when an access file is given, else the embedded store in `dir`.
    pub async fn open(access_file: Option<&Path>, dir: &Path) -> Result<Progress, ProgressError> {
        match access_file {
            Some(a) => Progress::connect(a).await,
            None => Progress::embedded(dir),
        }
    }

    /// Who this handle's claims are held by.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Applies changes in order, durably, in one round trip.
    pub(crate) async fn apply(
        &self,
        requests: Vec<Request>,
    ) -> Result<Vec<Result<Outcome, String>>, ProgressError> {
        match self.ask(ProgressRequest::Apply(requests)).await? {
            ProgressReply::Applied(o) => Ok(o),
            other => Err(ProgressError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Whether this handle is on a scheduler's store (key lists are served there).
    pub(crate) fn is_remote(&self) -> bool {
        matches!(self.backend, Backend::Remote(_))
    }

    /// A request about key lists (a scheduler's store only).
    pub(crate) async fn lists(
        &self,
        request: drover_progress::ListRequest,
    ) -> Result<drover_progress::ListReply, ProgressError> {
        match self.ask(ProgressRequest::Lists(request)).await? {
            ProgressReply::Lists(r) => Ok(r),
            other => Err(ProgressError::Unexpected(format!("{other:?}"))),
        }
    }

    /// One request to the store.
    async fn ask(&self, request: ProgressRequest) -> Result<ProgressReply, ProgressError> {
        let reply = match &self.backend {
            Backend::Remote(c) => c.progress_request(request).await?,
            Backend::Embedded { store, max_output } => {
                let (store, max_output) = (store.clone(), *max_output);
                tokio::task::spawn_blocking(move || {
                    drover_progress::answer(&*store, request, drover_progress::now_ms(), max_output)
                })
                .await
                .map_err(|e| ProgressError::Store(format!("the store's thread failed: {e}")))?
            }
        };
        match reply {
            ProgressReply::Error(e) => Err(ProgressError::Store(e)),
            r => Ok(r),
        }
    }

    /// The record of `key` in `namespace`, if it has one.
    pub async fn record(
        &self,
        namespace: &str,
        key: &str,
    ) -> Result<Option<Record>, ProgressError> {
        match self
            .ask(ProgressRequest::Get {
                namespace: namespace.to_owned(),
                key: key.to_owned(),
            })
            .await?
        {
            ProgressReply::Record(r) => Ok(r),
            other => Err(ProgressError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Counts per state of `namespace`, or of every namespace.
    pub async fn counts(
        &self,
        namespace: Option<&str>,
    ) -> Result<Vec<(String, Counts)>, ProgressError> {
        match self
            .ask(ProgressRequest::Counts {
                namespace: namespace.map(str::to_owned),
            })
            .await?
        {
            ProgressReply::Counts(c) => Ok(c),
            other => Err(ProgressError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Up to `limit` keys of `namespace` starting with `prefix` and coming after `after`, in
    /// key order, of state `kind` if given, with their records (a page; pass the last key as
    /// `after` for the next).
    pub async fn list(
        &self,
        namespace: &str,
        prefix: &str,
        kind: Option<Kind>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<(String, Record)>, ProgressError> {
        match self
            .ask(ProgressRequest::List {
                namespace: namespace.to_owned(),
                prefix: prefix.to_owned(),
                kind,
                after: after.map(str::to_owned),
                limit,
            })
            .await?
        {
            ProgressReply::Listed(l) => Ok(l),
            other => Err(ProgressError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Makes `keys` of `namespace` free again (the whole namespace when `None`), so a run can
    /// start over. Returns how many records were removed.
    pub async fn reset(
        &self,
        namespace: &str,
        keys: Option<Vec<String>>,
    ) -> Result<u64, ProgressError> {
        match self
            .ask(ProgressRequest::Reset {
                namespace: namespace.to_owned(),
                keys,
            })
            .await?
        {
            ProgressReply::Reset(n) => Ok(n),
            other => Err(ProgressError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Claims `keys` of `namespace` first come first served across every process: see
    /// [`Claims`].
    pub fn claims(
        &self,
        namespace: &str,
        keys: impl IntoIterator<Item = String>,
        options: ClaimOptions,
    ) -> Claims {
        Claims::new(self.clone(), namespace, keys.into_iter().collect(), options)
    }
}
