//! Results held by this worker: shared, immutable byte buffers, keyed by task id. Many threads
//! read it at once (executors, the peer server), hence a concurrent map; no guard is held across
//! an `.await`.

use bytes::Bytes;
use dashmap::DashMap;
use drover_protocol::TaskIdx;

/// The data store.
#[derive(Debug, Default)]
pub struct Store {
    data: DashMap<TaskIdx, Bytes>,
}

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        Store::default()
    }

    /// Keeps `bytes` as the result of `id`.
    pub fn put(&self, id: TaskIdx, bytes: Bytes) {
        self.data.insert(id, bytes);
    }

    /// The result of `id`, if held (a cheap shared clone).
    pub fn get(&self, id: TaskIdx) -> Option<Bytes> {
        self.data.get(&id).map(|b| b.clone())
    }

    /// Whether `id` is held.
    pub fn contains(&self, id: TaskIdx) -> bool {
        self.data.contains_key(&id)
    }

    /// Drops `id`.
    pub fn remove(&self, id: TaskIdx) {
        self.data.remove(&id);
        if self.data.capacity() > 4 * self.data.len() + 1024 {
            self.data.shrink_to_fit();
        }
    }

    /// How many results are held.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Total bytes held.
    pub fn bytes(&self) -> u64 {
        self.data.iter().map(|e| e.value().len() as u64).sum()
    }
}
