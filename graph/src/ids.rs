//! Dense integer ids. Hot maps in Drover are vectors indexed by these, never string maps.

use serde::{Deserialize, Serialize};

/// A task's dense id within one [`Graph`](crate::Graph): the index of its interned key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskId(pub u32);

/// A pool's dense id within one [`Graph`](crate::Graph), in order of first mention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PoolId(pub u32);

impl TaskId {
    /// The id as a vector index.
    #[inline]
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl PoolId {
    /// The id as a vector index.
    #[inline]
    pub fn index(self) -> usize {
        self.0 as usize
    }
}
