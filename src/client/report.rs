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
    /// `finished`, `failed`, `done before` (a durable task found done in the progress store:
    /// not run again), or `skipped` (not run: it only feeds tasks done before).
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
    /// When the client heard of it, in milliseconds since the run was submitted (for a task
    /// reported more than once, the latest).
    pub at_ms: f64,
    /// `task` for a task run; `load` for a once-cell load (one row per load, on its worker;
    /// `moved_bytes` is what the worker received for it, a shared object's value).
    pub kind: &'static str,
    /// Done before this run was submitted (an earlier run computed the same key with the same
    /// definition): reused, not run again.
    pub reused: bool,
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
    /// Durable tasks found done in the progress store (not run again).
    pub done_before: usize,
    /// Tasks not run because they only feed tasks done before.
    pub skipped: usize,
    /// Once-cell loads (each also a row of `tasks`, kind `load`); failed ones are not counted
    /// in `failed`: the tasks that needed them are.
    pub loads: usize,
    /// Where the time went, when asked for (`drover run --insights`, [`Report::with_insights`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insights: Option<RunInsights>,
}

/// Where a run's time went (MPIRE's insights), and its workers'.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunInsights {
    /// The run's tasks: microseconds computing, summed.
    pub compute_us: u64,
    /// The run's once-cell loads: microseconds, summed.
    pub load_us: u64,
    /// The run's slowest tasks (up to 10): key, worker, milliseconds.
    pub slowest: Vec<(String, String, f64)>,
    /// Each worker since it joined, as the scheduler saw it: computing, fetching inputs,
    /// loading once-cells, waiting for work.
    pub workers: Vec<(String, drover_protocol::Insights)>,
    /// All workers together.
    pub total: drover_protocol::Insights,
}

impl Report {
    /// The report with its [`RunInsights`]: the run's own from its rows, the workers' from
    /// `status` (the scheduler's, see [`crate::Client::status`]).
    pub fn with_insights(mut self, status: &drover_protocol::ClusterStatus) -> Report {
        let micros = |ms: f64| (ms * 1000.0).round() as u64;
        let (mut compute_us, mut load_us) = (0, 0);
        for t in &self.tasks {
            if t.kind == "load" {
                load_us += micros(t.duration_ms);
            } else if t.status == "finished" || t.status == "failed" {
                compute_us += micros(t.duration_ms);
            }
        }
        let mut slowest: Vec<(String, String, f64)> = self
            .tasks
            .iter()
            .filter(|t| t.kind == "task" && !t.reused)
            .map(|t| {
                (
                    t.key.clone(),
                    t.worker.clone().unwrap_or_default(),
                    t.duration_ms,
                )
            })
            .collect();
        slowest.sort_by(|a, b| b.2.total_cmp(&a.2));
        slowest.truncate(10);
        self.insights = Some(RunInsights {
            compute_us,
            load_us,
            slowest,
            workers: status
                .workers
                .iter()
                .map(|w| (w.name.clone(), w.insights))
                .collect(),
            total: status.insights,
        });
        self
    }

    /// Builds the report from task events. A task reported twice (recomputed after a lost
    /// worker, or resubmitted after the scheduler was lost) has one row, from its latest event,
    /// in the order of its first; its `reruns` count every start beyond the first, over all
    /// schedulers; the byte totals count every transfer that happened, the lost run's included.
    pub fn from_events(events: &[TaskEvent]) -> Report {
        Report::from_timed_events(events, &[])
    }

    /// [`Report::from_events`], with each event's arrival time (ms since submission; missing
    /// times are 0).
    pub fn from_timed_events(events: &[TaskEvent], times_ms: &[f64]) -> Report {
        // Per key: the index of its latest event, and the starts of earlier schedulers' sessions. A session's
        // attempts only grow, so an event not above the previous one starts a new session.
        let mut latest: std::collections::HashMap<&str, (usize, u32), foldhash::fast::RandomState> =
            Default::default();
        // Rows in first-seen order: a task key, or a load (its index in `events`).
        let mut order: Vec<Result<&str, usize>> = Vec::new();
        let (mut between_workers, mut between_pools) = (0, 0);
        for (n, e) in events.iter().enumerate() {
            between_workers += e.moved_bytes;
            between_pools += e.cross_pool_bytes;
            if e.load {
                order.push(Err(n));
                continue;
            }
            match latest.entry(&e.key) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert((n, 0));
                    order.push(Ok(&e.key));
                }
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    let (prev, earlier) = *o.get();
                    let prev = events[prev].attempts;
                    let earlier = if e.attempts <= prev {
                        earlier + prev
                    } else {
                        earlier
                    };
                    o.insert((n, earlier));
                }
            }
        }
        let mut r = Report {
            tasks: Vec::with_capacity(order.len()),
            bytes_between_workers: between_workers,
            bytes_between_pools: between_pools,
            finished: 0,
            failed: 0,
            done_before: 0,
            skipped: 0,
            loads: 0,
            insights: None,
        };
        for row in order {
            let (n, earlier) = match row {
                Ok(key) => latest[key],
                Err(n) => (n, 0),
            };
            let e = &events[n];
            let status = match (e.status, e.load) {
                (TaskStatus::Finished, false) if e.done_before => {
                    r.done_before += 1;
                    "done before"
                }
                (TaskStatus::Finished, false) => {
                    r.finished += 1;
                    "finished"
                }
                (TaskStatus::Failed, false) => {
                    r.failed += 1;
                    "failed"
                }
                (TaskStatus::Skipped, _) => {
                    r.skipped += 1;
                    "skipped"
                }
                (TaskStatus::Finished, true) => "finished",
                (TaskStatus::Failed, true) => "failed",
            };
            r.loads += usize::from(e.load);
            r.tasks.push(TaskReport {
                key: e.key.clone(),
                worker: e.worker.clone(),
                pool: e.pool.clone(),
                status,
                output_bytes: e.output_bytes,
                duration_ms: e.duration_us as f64 / 1000.0,
                error: e.error.clone(),
                moved_bytes: e.moved_bytes,
                // Whole microseconds: no float noise in reports.
                at_ms: (times_ms.get(n).copied().unwrap_or(0.0) * 1000.0).round() / 1000.0,
                reruns: if e.load {
                    0
                } else {
                    (earlier + e.attempts).saturating_sub(1)
                },
                kind: if e.load { "load" } else { "task" },
                reused: e.reused,
            });
        }
        r
    }

    /// The report of one task (not of a load).
    pub fn task(&self, key: &str) -> Option<&TaskReport> {
        self.tasks.iter().find(|t| t.key == key && t.kind == "task")
    }

    /// The loads of a once-cell, in order.
    pub fn loads_of<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a TaskReport> + 'a {
        self.tasks
            .iter()
            .filter(move |t| t.key == key && t.kind == "load")
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
            load: false,
            reused: false,
            done_before: false,
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

    #[test]
    fn loads_are_rows_of_their_own_and_not_task_failures() {
        let load = |worker: &str, ok: bool| TaskEvent {
            worker: Some(worker.into()),
            load: true,
            status: if ok {
                TaskStatus::Finished
            } else {
                TaskStatus::Failed
            },
            error: (!ok).then(|| "no file".into()),
            moved_bytes: 0,
            ..event("model", 1, 0)
        };
        let events = [
            load("w1", false),
            load("w1", true),
            event("t", 1, 0),
            load("w2", true),
        ];
        let r = Report::from_events(&events);
        assert_eq!((r.finished, r.failed, r.loads), (1, 0, 3));
        let loads: Vec<_> = r
            .loads_of("model")
            .map(|l| (l.worker.clone().unwrap(), l.status))
            .collect();
        assert_eq!(
            loads,
            vec![
                ("w1".into(), "failed"),
                ("w1".into(), "finished"),
                ("w2".into(), "finished")
            ]
        );
        assert!(r.task("model").is_none());
        assert_eq!(r.task("t").unwrap().kind, "task");
    }
}
