//! `run_once`: do a keyed piece of work unless it was done before or is being done elsewhere,
//! like the seed's decorator, with the claim renewed while the work runs.

use std::time::Duration;

use drover_progress::{Op, Outcome, Request};

use super::{ClaimOptions, Progress, ProgressError};

/// What [`Progress::run_once`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOnce {
    /// Skipped: done before, with the output stored then (the seed's `SKIP_OK`).
    DoneBefore(Option<Vec<u8>>),
    /// Computed now and committed, with its output (`COMPUTE_OK`).
    Computed(Option<Vec<u8>>),
    /// Skipped: another process holds the key now (`SKIP_IN_PROGRESS`).
    InProgressElsewhere {
        /// Who holds it.
        holder: String,
    },
    /// Computed now, and the work failed with this error; the key is free again
    /// (`COMPUTE_ERROR`).
    Failed(String),
}

impl Progress {
    /// Runs `work` for `key` of `namespace` unless it is done (then its stored output is
    /// returned) or held by another process. The work runs on a blocking thread while its
    /// claim is renewed; its `Ok` output is committed (and on disk before this returns), its
    /// `Err` fails the key with the message. `Err(Stale)` if the claim was lost while the work
    /// ran (its lease lapsed and another process took the key).
    pub async fn run_once<E: std::fmt::Display>(
        &self,
        namespace: &str,
        key: &str,
        options: &ClaimOptions,
        work: impl FnOnce() -> Result<Option<Vec<u8>>, E> + Send + 'static,
    ) -> Result<RunOnce, ProgressError> {
        let holder = self.holder().to_owned();
        let request = |op| Request {
            namespace: namespace.to_owned(),
            key: key.to_owned(),
            op,
        };
        let claim = request(Op::Claim {
            version: options.version,
            holder: holder.clone(),
            lease: options.lease.as_millis() as u64,
        });
        let outcome = self.one(claim).await?;
        let fence = match outcome {
            Outcome::Claimed { fence } => fence,
            Outcome::Done { output } => return Ok(RunOnce::DoneBefore(output)),
            Outcome::Held { holder, .. } => return Ok(RunOnce::InProgressElsewhere { holder }),
            Outcome::NewerVersion { version } => {
                return Err(ProgressError::NewerVersion {
                    key: key.to_owned(),
                    stored: version,
                    asked: options.version,
                })
            }
            other => return Err(ProgressError::Unexpected(format!("{other:?}"))),
        };
        // Renew while the work runs.
        let renewer = {
            let (progress, renew) = (self.clone(), request(Op::Renew { fence }));
            let every = (options.lease / 3).max(Duration::from_millis(50));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let _ = progress.apply(vec![renew.clone()]).await;
                }
            })
        };
        let result = tokio::task::spawn_blocking(move || work().map_err(|e| e.to_string()))
            .await
            .unwrap_or_else(|p| Err(format!("the work panicked: {p}")));
        renewer.abort();
        let (op, status) = match result {
            Ok(output) => (
                Op::Commit {
                    fence,
                    by: holder,
                    output: output.clone(),
                },
                RunOnce::Computed(output),
            ),
            Err(e) => (
                Op::Fail {
                    fence,
                    by: holder,
                    error: e.clone(),
                },
                RunOnce::Failed(e),
            ),
        };
        match self.one(request(op)).await? {
            Outcome::Applied => Ok(status),
            Outcome::Stale { reason } => Err(ProgressError::Stale {
                key: key.to_owned(),
                reason,
            }),
            other => Err(ProgressError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Applies one change and returns its outcome.
    async fn one(&self, request: Request) -> Result<Outcome, ProgressError> {
        let outcome = self
            .apply(vec![request])
            .await?
            .into_iter()
            .next()
            .unwrap_or_else(|| Err("no answer".to_owned()));
        outcome.map_err(ProgressError::Refused)
    }
}
