//! The cluster at a glance: what `drover status` prints and the dashboard shows, aggregated
//! on the scheduler (never a row per task).

use serde::{Deserialize, Serialize};

use crate::RunInfo;

/// Tasks by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCounts {
    /// Waiting for inputs.
    pub waiting: u64,
    /// Ready, queued at the scheduler.
    pub ready: u64,
    /// Assigned to a worker (queued there or running).
    pub running: u64,
    /// Finished (held, or freed after use).
    pub done: u64,
    /// Failed.
    pub failed: u64,
}

impl TaskCounts {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.waiting + self.ready + self.running + self.done + self.failed
    }
}

/// One connected worker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// The scheduler's id for it.
    pub id: u32,
    /// Its name.
    pub name: String,
    /// Its pools.
    pub pools: Vec<String>,
    /// Its resources (pool resources included), as `NAME=AMOUNT`.
    pub resources: String,
    /// Executor threads.
    pub nthreads: u32,
    /// Tasks running on it now.
    pub running: u32,
    /// Tasks assigned to it, not started yet.
    pub queued: u32,
    /// Results it holds.
    pub held: u64,
    /// Once-cells it holds or is loading.
    pub cells: u64,
    /// Leaving.
    pub retiring: bool,
    /// Tasks it finished since it joined.
    pub finished: u64,
    /// Tasks that failed on it since it joined.
    pub failed: u64,
    /// Tasks finished per second over the last few seconds.
    pub tasks_per_s: f64,
    /// Its memory (resident set), bytes, as it last said.
    pub memory_bytes: Option<u64>,
    /// When it joined, ms since the Unix epoch.
    pub joined_ms: u64,
    /// How long ago the scheduler last heard from it, ms.
    pub last_heard_ago_ms: u64,
    /// Where its time went (see [`Insights`]).
    pub insights: Insights,
}

/// Where time went (MPIRE's insights): microseconds spent computing tasks, fetching inputs,
/// loading once-cells, and waiting for work, since the worker joined.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Insights {
    /// Running task functions (summed over threads).
    pub compute_us: u64,
    /// Fetching inputs from other workers.
    pub fetch_us: u64,
    /// Loading once-cells.
    pub load_us: u64,
    /// Threads idle: thread time since joining minus the above.
    pub idle_us: u64,
    /// The scheduler's own time: its event loop handling events and deciding (in the total
    /// only; 0 for each worker).
    #[serde(default)]
    pub scheduler_us: u64,
}

/// One pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolStatus {
    /// Its name.
    pub name: String,
    /// Connected workers in it.
    pub workers: u32,
    /// Tasks placed in it (pinned, propagated or chosen at run time), by state.
    pub tasks: TaskCounts,
    /// Bytes that moved into this pool's workers from workers outside it.
    pub bytes_in: u64,
}

/// One live run (a connected client's, or a detached one).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunStatus {
    /// The detached run's id, or `CLIENT.RUN` for a client's run.
    pub id: String,
    /// A detached run's name.
    pub name: String,
    /// Its tasks by state.
    pub tasks: TaskCounts,
    /// Up to 20 failed tasks with their errors.
    pub failures: Vec<(String, String)>,
}

/// A slow task, for the insights' top list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlowTask {
    /// Its key.
    pub key: String,
    /// Its function.
    pub function: String,
    /// The worker it ran on.
    pub worker: String,
    /// Its run time, microseconds.
    pub duration_us: u64,
}

/// The cluster at a glance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// When this was taken, ms since the Unix epoch.
    pub now_ms: u64,
    /// Since the scheduler started, ms.
    pub uptime_ms: u64,
    /// Every task the scheduler knows, by state.
    pub tasks: TaskCounts,
    /// Connected workers, by id.
    pub workers: Vec<WorkerStatus>,
    /// Pools, by name.
    pub pools: Vec<PoolStatus>,
    /// Live runs.
    pub runs: Vec<RunStatus>,
    /// Detached runs, as `drover runs` lists them.
    pub detached: Vec<RunInfo>,
    /// Bytes moved between workers since the start.
    pub bytes_between_workers: u64,
    /// The part of it that crossed pools.
    pub bytes_between_pools: u64,
    /// The propagate-pools pass's estimate of the bytes crossing pools, summed over the graphs
    /// submitted since the start.
    pub estimated_bytes_between_pools: u64,
    /// Recent joins and departures of workers: (ms since the Unix epoch, what happened).
    pub events: Vec<(u64, String)>,
    /// The slowest tasks seen (up to 10), slowest first.
    pub slowest: Vec<SlowTask>,
    /// All workers' insights summed.
    pub insights: Insights,
}
