//! What a worker process keeps for itself: its identity (id, name, pools, resources), its
//! typed worker state (MPIRE's `use_worker_state`), and its once-cells. One per worker: in a
//! `worker` process, one per process; it outlives reconnections to the scheduler.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use drover_annotations::Resources;

use crate::cells::CellTable;

/// A worker's identity, state and once-cells. Tasks reach it as
/// [`TaskContext::worker`](crate::TaskContext::worker); init and exit hooks receive it.
pub struct WorkerLocal {
    name: String,
    resources: Resources,
    id: AtomicU32,
    memory_limit: Option<u64>,
    state: Mutex<HashMap<TypeId, Box<dyn Any + Send>>>,
    pub(crate) cells: CellTable,
}

impl std::fmt::Debug for WorkerLocal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerLocal")
            .field("name", &self.name)
            .field("id", &self.id())
            .field("resources", &self.resources)
            .finish()
    }
}

/// The id a worker has before the scheduler gave it one.
pub const NO_ID: u32 = u32::MAX;

impl WorkerLocal {
    /// A worker named `name` with `resources` (its pools are its `pool-X` resources).
    pub fn new(name: &str, resources: Resources) -> WorkerLocal {
        WorkerLocal {
            name: name.to_owned(),
            resources,
            id: AtomicU32::new(NO_ID),
            memory_limit: None,
            state: Mutex::new(HashMap::new()),
            cells: CellTable::default(),
        }
    }

    /// The same worker, whose outputs must fit in `limit` bytes (its `--memory-limit`).
    pub fn with_memory_limit(mut self, limit: Option<u64>) -> WorkerLocal {
        self.memory_limit = limit;
        self
    }

    /// Its `--memory-limit` in bytes, if it has one.
    pub fn memory_limit(&self) -> Option<u64> {
        self.memory_limit
    }

    /// The most bytes one output may take here, and what bounds it: the worker's memory limit,
    /// else the memory the machine has available now (Linux), else nothing known.
    pub fn memory_budget(&self) -> Option<(u64, &'static str)> {
        match self.memory_limit {
            Some(l) => Some((l, "memory limit")),
            None => available_memory().map(|a| (a, "available memory")),
        }
    }

    /// The worker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its id in the scheduler's current session ([`NO_ID`] before it first connected; a
    /// reconnection gives a new one).
    pub fn id(&self) -> u32 {
        self.id.load(Ordering::Relaxed)
    }

    pub(crate) fn set_id(&self, id: u32) {
        self.id.store(id, Ordering::Relaxed);
    }

    /// Its pools (from its `pool-X` resources), sorted.
    pub fn pools(&self) -> Vec<String> {
        self.resources
            .pools()
            .map(|p| p.name().to_owned())
            .collect()
    }

    /// Its resources, pools included.
    pub fn resources(&self) -> &Resources {
        &self.resources
    }

    /// Runs `f` on this worker's state of type `T`, created with `T::default()` on first use.
    /// The state lasts the worker's life and is shared by every task on it; calls are
    /// serialised (keep `f` short; hold no other lock of the worker inside it).
    pub fn with_state<T: Default + Send + 'static, R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut map = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Box::new(T::default()));
        f(entry.downcast_mut::<T>().expect("keyed by its type"))
    }

    /// Keys of the once-cells loaded here.
    pub fn loaded_cells(&self) -> Vec<String> {
        self.cells.loaded_keys()
    }
}

/// The memory the machine has available now (Linux `MemAvailable`), in bytes.
pub fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A worker-start or worker-exit hook.
pub type Hook = dyn Fn(&WorkerLocal) + Send + Sync;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_typed_created_on_first_use_and_kept() {
        let w = WorkerLocal::new("w", "pool-A=1,gpu=2".parse::<Resources>().unwrap());
        assert_eq!(w.pools(), vec!["A"]);
        assert_eq!(w.id(), NO_ID);
        let n = w.with_state(|n: &mut u64| {
            *n += 1;
            *n
        });
        assert_eq!(n, 1);
        w.with_state(|v: &mut Vec<String>| v.push("x".into()));
        assert_eq!(w.with_state(|n: &mut u64| *n), 1);
        assert_eq!(w.with_state(|v: &mut Vec<String>| v.len()), 1);
    }
}
