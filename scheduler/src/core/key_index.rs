//! The core's index of keys: which task slot each key names.
//!
//! An open-addressing table of 8-byte slots, each a task slot number with 32 bits of its key's
//! hash, probed linearly and at most three quarters full, instead of a map that also keeps a
//! copy of every key (24 bytes a bucket): merging a graph of a million new tasks touches a
//! table three times smaller, compares a key only when its hash bits match, and asks for the
//! slot a few tasks ahead ([`KeyIndex::prefetch`]) so that the inserts' cache misses overlap.
//! Growing re-homes the entries from their stored hash bits, without reading a key.
//!
//! The rule that keeps it sound: a slot is in the index only while its task's key is the key
//! it was indexed under. Slots are removed before their task is forgotten (tombstoned or
//! reused), and a redefined key is moved to its new slot.

use super::{Task, TaskIdx};

/// An unused entry (no task slot is `u32::MAX`: slots stop below 2^32 - 1).
const EMPTY: u64 = u64::MAX;

/// Key to slot, for the slots of [`Core::tasks`](super::Core).
#[derive(Debug, Default)]
pub(crate) struct KeyIndex {
    /// [`EMPTY`], or the low 32 bits of a key's hash (high half) and its task slot (low half),
    /// at the position of the hash's low bits or the next free one. A power of two long (or
    /// empty).
    entries: Vec<u64>,
    /// Entries in use.
    len: usize,
    hasher: foldhash::fast::RandomState,
}

/// Entries for `n` keys at most three quarters full.
fn entries_for(n: usize) -> usize {
    (n.saturating_mul(4) / 3 + 1).next_power_of_two().max(16)
}

impl KeyIndex {
    fn hash(&self, key: &str) -> u32 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(key) as u32
    }

    fn mask(&self) -> usize {
        self.entries.len().wrapping_sub(1)
    }

    /// Where `key` (hash bits `h`) is, or the free entry where it would go.
    fn find(&self, key: &str, h: u32, tasks: &[Task]) -> (usize, Option<TaskIdx>) {
        let mask = self.mask();
        let mut i = h as usize & mask;
        loop {
            let e = self.entries[i];
            if e == EMPTY {
                return (i, None);
            }
            if (e >> 32) as u32 == h && &*tasks[e as u32 as usize].key == key {
                return (i, Some(e as u32));
            }
            i = (i + 1) & mask;
        }
    }

    /// Rebuilds the table with `n` entries (a power of two above the count).
    fn rebuild(&mut self, n: usize) {
        let old = std::mem::replace(&mut self.entries, vec![EMPTY; n]);
        let mask = n - 1;
        for e in old.into_iter().filter(|&e| e != EMPTY) {
            let mut i = (e >> 32) as usize & mask;
            while self.entries[i] != EMPTY {
                i = (i + 1) & mask;
            }
            self.entries[i] = e;
        }
    }

    /// Asks the processor for the entry where a lookup of `key` starts (a hint, see
    /// [`drover_graph::prefetch`]); nothing when no key is mapped.
    #[inline]
    pub fn prefetch(&self, key: &str) {
        if self.len == 0 {
            return;
        }
        if let Some(e) = self.entries.get(self.hash(key) as usize & self.mask()) {
            drover_graph::prefetch::prefetch(e);
        }
    }

    /// The slot `key` names, if any. An empty index answers without reading its table (a
    /// large submission to a fresh core asks about every key: 64 MB of free entries at 4M).
    pub fn get(&self, key: &str, tasks: &[Task]) -> Option<TaskIdx> {
        if self.len == 0 {
            return None;
        }
        self.find(key, self.hash(key), tasks).1
    }

    /// Makes the key of slot `t`'s task name `t` (replacing the slot it named before, if any).
    pub fn insert(&mut self, t: TaskIdx, tasks: &[Task]) {
        assert!(t != u32::MAX, "fewer than 2^32 - 1 task slots");
        if (self.len + 1) * 4 > self.entries.len() * 3 {
            self.rebuild(entries_for(self.len + 1).max(self.entries.len() * 2));
        }
        let h = self.hash(&tasks[t as usize].key);
        let (i, found) = self.find(&tasks[t as usize].key, h, tasks);
        if found.is_none() {
            self.len += 1;
        }
        self.entries[i] = u64::from(h) << 32 | u64::from(t);
    }

    /// Unmaps `key` if it names slot `t` (a redefined key names another slot: kept).
    pub fn remove_if(&mut self, key: &str, t: TaskIdx, tasks: &[Task]) {
        if self.entries.is_empty() {
            return;
        }
        let (mut hole, found) = self.find(key, self.hash(key), tasks);
        if found != Some(t) {
            return;
        }
        // Backward shift: each entry after the hole, up to the next free one, moves into the
        // hole if the hole is on its probe path (between its home and where it is).
        let mask = self.mask();
        let mut j = (hole + 1) & mask;
        loop {
            let e = self.entries[j];
            if e == EMPTY {
                break;
            }
            let home = (e >> 32) as usize & mask;
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.entries[hole] = e;
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.entries[hole] = EMPTY;
        self.len -= 1;
    }

    /// Room for `n` more keys without growing.
    pub fn reserve(&mut self, n: usize) {
        let want = entries_for(self.len.saturating_add(n));
        if want > self.entries.len() {
            self.rebuild(want);
        }
    }

    /// Gives back memory down to room for `n` keys (at least the current count).
    pub fn shrink_to(&mut self, n: usize) {
        let want = entries_for(n.max(self.len));
        if want < self.entries.len() {
            self.rebuild(want);
        }
    }

    /// How many keys are mapped.
    pub fn len(&self) -> usize {
        self.len
    }

    /// How many keys fit without growing.
    pub fn capacity(&self) -> usize {
        self.entries.len() * 3 / 4
    }

    /// Every mapped slot, in no particular order.
    pub fn slots(&self) -> impl Iterator<Item = TaskIdx> + '_ {
        self.entries
            .iter()
            .filter(|&&e| e != EMPTY)
            .map(|&e| e as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(key: &str) -> Task {
        Task {
            key: std::sync::Arc::from(key),
            ..Task::tombstone()
        }
    }

    #[test]
    fn random_inserts_and_removals_agree_with_a_map() {
        // Few distinct keys in a small table: long probe runs, shifts across the wrap.
        let mut tasks: Vec<Task> = Vec::new();
        let mut index = KeyIndex::default();
        let mut model: std::collections::HashMap<String, u32> = Default::default();
        let mut x: u64 = 7;
        for step in 0..20_000u32 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = format!("k{}", (x >> 33) % 40);
            if (x >> 20) % 3 == 0 {
                if let Some(&t) = model.get(&key) {
                    index.remove_if(&key, t, &tasks);
                    model.remove(&key);
                }
            } else {
                tasks.push(task(&key));
                let t = tasks.len() as u32 - 1;
                index.insert(t, &tasks);
                model.insert(key, t);
            }
            if step % 1000 == 0 {
                index.shrink_to(0);
            }
            assert_eq!(index.len(), model.len());
            for k in 0..40 {
                let key = format!("k{k}");
                assert_eq!(index.get(&key, &tasks), model.get(&key).copied(), "{key}");
            }
        }
    }

    #[test]
    fn keys_find_their_slots_through_redefinition_removal_and_growth() {
        let mut tasks: Vec<Task> = (0..3000).map(|i| task(&format!("k{i}"))).collect();
        let mut index = KeyIndex::default();
        for t in 0..3000 {
            index.insert(t, &tasks);
        }
        assert_eq!(index.len(), 3000);
        assert_eq!(index.get("k17", &tasks), Some(17));
        assert_eq!(index.get("nope", &tasks), None);
        // A redefined key names its new slot; removing the old slot leaves it.
        tasks.push(task("k17"));
        index.insert(3000, &tasks);
        assert_eq!((index.len(), index.get("k17", &tasks)), (3000, Some(3000)));
        index.remove_if("k17", 17, &tasks);
        assert_eq!(index.get("k17", &tasks), Some(3000));
        index.remove_if("k17", 3000, &tasks);
        assert_eq!(index.get("k17", &tasks), None);
        for t in (0..3000).filter(|t| t % 2 == 0) {
            let key = tasks[t as usize].key.clone();
            index.remove_if(&key, t, &tasks);
        }
        index.shrink_to(0);
        index.reserve(10_000);
        assert!(index.capacity() >= 10_000 + index.len());
        for t in 0..3000u32 {
            let want = (t % 2 == 1 && t != 17).then_some(t);
            assert_eq!(index.get(&format!("k{t}"), &tasks), want, "k{t}");
        }
        let mut slots: Vec<u32> = index.slots().collect();
        slots.sort_unstable();
        let odd: Vec<u32> = (0..3000).filter(|&t| t % 2 == 1 && t != 17).collect();
        assert_eq!(slots, odd);
    }
}
