//! The core's index of keys: which task slot each key names.
//!
//! A hash table of slot numbers alone (4 bytes a bucket), hashed by the key each slot's task
//! holds, instead of a map that also keeps a copy of every key (24 bytes a bucket): merging a
//! graph of a million new tasks touches a table six times smaller, and the inserts' cache and
//! TLB misses were a fifth of that merge.
//!
//! The rule that keeps it sound: a slot is in the index only while its task's key is the key
//! it was indexed under. Slots are removed before their task is forgotten (tombstoned or
//! reused), and a redefined key is moved to its new slot.

use hashbrown::HashTable;

use super::{Task, TaskIdx};

/// Key to slot, for the slots of [`Core::tasks`](super::Core).
#[derive(Debug, Default)]
pub(crate) struct KeyIndex {
    table: HashTable<TaskIdx>,
    hasher: foldhash::fast::RandomState,
}

impl KeyIndex {
    fn hash(&self, key: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(key)
    }

    /// The slot `key` names, if any.
    pub fn get(&self, key: &str, tasks: &[Task]) -> Option<TaskIdx> {
        self.table
            .find(self.hash(key), |&t| &*tasks[t as usize].key == key)
            .copied()
    }

    /// Makes the key of slot `t`'s task name `t` (replacing the slot it named before, if any).
    pub fn insert(&mut self, t: TaskIdx, tasks: &[Task]) {
        let key = &*tasks[t as usize].key;
        let hash = self.hash(key);
        let hasher = &self.hasher;
        match self.table.entry(
            hash,
            |&o| &*tasks[o as usize].key == key,
            |&o| {
                use std::hash::BuildHasher;
                hasher.hash_one(&*tasks[o as usize].key)
            },
        ) {
            hashbrown::hash_table::Entry::Occupied(mut e) => *e.get_mut() = t,
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert(t);
            }
        }
    }

    /// Unmaps `key` if it names slot `t` (a redefined key names another slot: kept).
    pub fn remove_if(&mut self, key: &str, t: TaskIdx, tasks: &[Task]) {
        if let Ok(e) = self
            .table
            .find_entry(self.hash(key), |&o| &*tasks[o as usize].key == key)
        {
            if *e.get() == t {
                e.remove();
            }
        }
    }

    /// Room for `n` more keys without growing.
    pub fn reserve(&mut self, n: usize, tasks: &[Task]) {
        let hasher = &self.hasher;
        self.table.reserve(n, |&o| {
            use std::hash::BuildHasher;
            hasher.hash_one(&*tasks[o as usize].key)
        });
    }

    /// Gives back memory down to room for `n` keys (at least the current count).
    pub fn shrink_to(&mut self, n: usize, tasks: &[Task]) {
        let hasher = &self.hasher;
        self.table.shrink_to(n, |&o| {
            use std::hash::BuildHasher;
            hasher.hash_one(&*tasks[o as usize].key)
        });
    }

    /// How many keys are mapped.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// How many keys fit without growing.
    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// Every mapped slot, in no particular order.
    pub fn slots(&self) -> impl Iterator<Item = TaskIdx> + '_ {
        self.table.iter().copied()
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
        index.shrink_to(0, &tasks);
        index.reserve(10_000, &tasks);
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
