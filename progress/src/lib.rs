//! Durable progress: keyed records that survive crashes, restarts and many machines.
//!
//! * [`record`]: a key's record and the pure rules that change it (claims with leases and
//!   fences, commits, failures, versions), with time as an argument.
//! * [`store`]: the [`Store`] trait (atomic, durable transactions) and [`MemStore`].
//! * [`redb_store`]: [`RedbStore`], records in one redb file, shareable by processes.
//! * [`engine`]: batches of changes in one transaction (group commit), look-ups, counts,
//!   lists, resets, and leases refreshed after a restart.
//! * [`lists`]: key lists shared by the loops claiming from them (one cursor for all).
//! * [`service`]: requests and answers as they travel, and [`service::answer`].
//!
//! The scheduler owns one store (`STATE/progress.redb`) and serves it to clients; the embedded
//! store (`.drover/progress.redb`) serves one machine without a scheduler.

#![warn(missing_docs, missing_debug_implementations)]

pub mod engine;
pub mod lists;
pub mod record;
pub mod redb_store;
pub mod service;
pub mod store;

pub use engine::{
    apply, check_names, counts, done_for, get, list, refresh_leases, reset, Counts, DurableTask,
    Pass, Request, DEFAULT_MAX_OUTPUT, MAX_ERROR, MAX_KEY, MAX_NAMESPACE,
};
pub use lists::{Answer, Ask, ClientTag, KeyLists, ListId, ListReply, ListRequest, Status};
pub use record::{Kind, Millis, Op, Outcome, Record, State};
pub use redb_store::{RedbStore, Sharing};
pub use service::{answer, ProgressReply, ProgressRequest};
pub use store::{MemStore, Store, StoreError, Txn};

/// Milliseconds since the Unix epoch now: the stores' clock.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}
