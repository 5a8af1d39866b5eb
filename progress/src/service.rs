//! Requests to a progress store and their answers, as they travel from clients to the
//! scheduler, and [`answer`], which serves one from a [`Store`] (the scheduler applies batches
//! of changes together instead: see [`crate::apply`]).

use serde::{Deserialize, Serialize};

use crate::engine;
use crate::record::Millis;
use crate::store::Store;

/// What a client asks of the scheduler's progress store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ProgressRequest {
    /// Apply these changes in order (claims, renewals, commits, failures); the answer comes
    /// once they are on disk.
    Apply(Vec<crate::Request>),
    /// One key's record.
    Get {
        /// The namespace.
        namespace: String,
        /// The key.
        key: String,
    },
    /// Counts per state, of one namespace or of all.
    Counts {
        /// The namespace, or all.
        namespace: Option<String>,
    },
    /// A page of keys by prefix and state.
    List {
        /// The namespace.
        namespace: String,
        /// Keys starting with this.
        prefix: String,
        /// Only keys in this state.
        kind: Option<crate::Kind>,
        /// Keys after this one (paging).
        after: Option<String>,
        /// At most this many.
        limit: u32,
    },
    /// Make keys free again (all of the namespace when `None`).
    Reset {
        /// The namespace.
        namespace: String,
        /// The keys.
        keys: Option<Vec<String>>,
    },
    /// About key lists shared by loops (served by a scheduler only).
    Lists(crate::ListRequest),
}

/// The progress store's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ProgressReply {
    /// Per change, in order: its outcome, or why it alone was refused.
    Applied(Vec<Result<crate::Outcome, String>>),
    /// The record asked for.
    Record(Option<crate::Record>),
    /// Counts per namespace.
    Counts(Vec<(String, crate::Counts)>),
    /// Keys and their records.
    Listed(Vec<(String, crate::Record)>),
    /// How many records were removed.
    Reset(u64),
    /// About key lists.
    Lists(crate::ListReply),
    /// The store failed (nothing of the request was kept), and why.
    Error(String),
}

/// Answers `request` from `store` at `now` (changes in their own transaction).
pub fn answer(
    store: &dyn Store,
    request: ProgressRequest,
    now: Millis,
    max_output: usize,
) -> ProgressReply {
    let result = match request {
        ProgressRequest::Apply(reqs) => {
            engine::apply(store, &reqs, now, max_output).map(ProgressReply::Applied)
        }
        ProgressRequest::Get { namespace, key } => {
            engine::get(store, &namespace, &key).map(ProgressReply::Record)
        }
        ProgressRequest::Counts { namespace } => {
            let namespaces = match namespace {
                Some(n) => Ok(vec![n]),
                None => store.namespaces(),
            };
            namespaces.and_then(|ns| {
                ns.into_iter()
                    .map(|n| engine::counts(store, &n, now).map(|c| (n, c)))
                    .collect::<Result<Vec<_>, _>>()
                    .map(ProgressReply::Counts)
            })
        }
        ProgressRequest::List {
            namespace,
            prefix,
            kind,
            after,
            limit,
        } => engine::list(
            store,
            &namespace,
            &prefix,
            kind,
            after.as_deref(),
            limit.min(100_000) as usize,
            now,
        )
        .map(ProgressReply::Listed),
        ProgressRequest::Reset { namespace, keys } => {
            engine::reset(store, &namespace, keys.as_deref()).map(ProgressReply::Reset)
        }
        ProgressRequest::Lists(_) => Err(crate::StoreError::Invalid(
            "key lists are kept by a scheduler; this store claims key by key".to_owned(),
        )),
    };
    result.unwrap_or_else(|e| ProgressReply::Error(e.to_string()))
}
