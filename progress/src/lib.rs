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

/// Shuffles `items` in place in an order fixed by `seed` (SplitMix64-driven Fisher-Yates): the
/// same seed gives the same order on every machine, so a shuffled job can be continued.
pub fn seeded_shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed;
    for i in (1..items.len()).rev() {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        items.swap(i, (z % (i as u64 + 1)) as usize);
    }
}

/// Milliseconds since the Unix epoch now: the stores' clock.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

#[cfg(test)]
mod tests {
    #[test]
    fn shuffles_are_seeded_and_keep_every_item() {
        let items: Vec<u32> = (0..100).collect();
        let (mut a, mut b, mut c) = (items.clone(), items.clone(), items.clone());
        super::seeded_shuffle(&mut a, 1);
        super::seeded_shuffle(&mut b, 1);
        super::seeded_shuffle(&mut c, 2);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, items);
        a.sort_unstable();
        assert_eq!(a, items);
    }
}
