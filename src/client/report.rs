//! The report every run ends with: per task where and how it ran; totals of bytes moved.

use drover_protocol::{TaskEvent, TaskStatus};
use serde::Serialize;

/// One task in a [`Report`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskReport {
    /// The task key.
    pub key: String,
    /// The worker it ran on.
    pub worker: Option<String>,
    /// The pool it was placed in.
    pub pool: Option<String>,
    /// `finished` or `failed`.
    pub status: &'static str,
    /// Output bytes.
    pub output_bytes: u64,
    /// Run time in milliseconds.
    pub duration_ms: f64,
    /// Why it failed.
    pub error: Option<String>,
    /// Input bytes moved into it from other workers.
    pub moved_bytes: u64,
    /// Times it was started beyond the first (after a lost worker, a lost input or a retry).
    pub reruns: u32,
}

/// What a run did. The JSON form is a contract: `tasks` with `key`, `worker`, `pool`, `status`,
/// `output_bytes`, `duration_ms`, `error`; `bytes_between_workers`; `bytes_between_pools`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Per task, in completion order.
    pub tasks: Vec<TaskReport>,
    /// Bytes moved between workers.
    pub bytes_between_workers: u64,
    /// Bytes moved between workers of different pools.
    pub bytes_between_pools: u64,
    /// Tasks that finished.
    pub finished: usize,
    /// Tasks that failed.
    pub failed: usize,
}

impl Report {
    /// Builds the report from task events. A task reported twice (recomputed after a lost
    /// worker, or resubmitted after the scheduler was lost) has one row, from its latest event,
    /// in the order of its first; its `reruns` count every start beyond the first, over all
    /// schedulers; the byte totals count every transfer that happened, the lost run's included.
    pub fn from_events(events: &[TaskEvent]) -> Report {
        // Per key: the latest event, and the starts of earlier schedulers' sessions. A session's
        // attempts only grow, so an event not above the previous one starts a new session.
        let mut latest: std::collections::HashMap<&str, (&TaskEvent, u32)> = Default::default();
        let mut order: Vec<&str> = Vec::new();
        let (mut between_workers, mut between_pools) = (0, 0);
        for e in events {
            between_workers += e.moved_bytes;
            between_pools += e.cross_pool_bytes;
            match latest.entry(&e.key) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert((e, 0));
                    order.push(&e.key);
                }
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    let (prev, earlier) = *o.get();
                    let earlier = if e.attempts <= prev.attempts {
                        earlier + prev.attempts
                    } else {
                        earlier
                    };
                    o.insert((e, earlier));
                }
            }
        }
        let mut r = Report {
            tasks: Vec::with_capacity(order.len()),
            bytes_between_workers: between_workers,
            bytes_between_pools: between_pools,
            finished: 0,
            failed: 0,
        };
        for (e, earlier) in order.iter().map(|k| latest[k]) {
            let status = match e.status {
                TaskStatus::Finished => {
                    r.finished += 1;
                    "finished"
                }
                TaskStatus::Failed => {
                    r.failed += 1;
                    "failed"
                }
            };
            r.tasks.push(TaskReport {
                key: e.key.clone(),
                worker: e.worker.clone(),
                pool: e.pool.clone(),
                status,
                output_bytes: e.output_bytes,
                duration_ms: e.duration_us as f64 / 1000.0,
                error: e.error.clone(),
                moved_bytes: e.moved_bytes,
                reruns: (earlier + e.attempts).saturating_sub(1),
            });
        }
        r
    }

    /// The report of one task.
    pub fn task(&self, key: &str) -> Option<&TaskReport> {
        self.tasks.iter().find(|t| t.key == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: &str, attempts: u32, moved: u64) -> TaskEvent {
        TaskEvent {
            run: 1,
            key: key.to_owned(),
            status: TaskStatus::Finished,
            worker: Some("w".into()),
            pool: None,
            output_bytes: 1,
            duration_us: 1000,
            moved_bytes: moved,
            cross_pool_bytes: 0,
            error: None,
            attempts,
        }
    }

    #[test]
    fn one_row_per_key_with_reruns_over_every_scheduler() {
        let events = [
            event("a", 1, 10),
            event("b", 1, 0),
            // Recomputed after a lost worker: same scheduler, attempts grow.
            event("a", 2, 5),
            // The scheduler was lost; the resubmitted run starts counting again.
            event("a", 1, 0),
            event("b", 1, 0),
        ];
        let r = Report::from_events(&events);
        assert_eq!(r.tasks.len(), 2);
        assert_eq!(r.task("a").unwrap().reruns, 2);
        assert_eq!(r.task("b").unwrap().reruns, 1);
        assert_eq!(r.bytes_between_workers, 15);
        assert_eq!(r.finished, 2);
        assert_eq!(r.tasks[0].key, "a");
    }
}
