//! Once-cells in the scheduler. A cell is a task that is always "in memory": every eligible
//! worker can make its own copy by loading it, so its users never wait for it and never fetch
//! it. What the core tracks is where it is loaded (a worker's `cells`, the cell's `holders`),
//! which placement prefers, and when to drop it.
//!
//! * A worker learns a cell (`ToWorker::Cell`) before the first task using it is sent there;
//!   it loads on that task's first need, single-flight.
//! * Eager cells are also sent, with `load_now`, at submission to as many eligible workers as
//!   the cell has users (at least one), least busy first: loads overlap upstream work.
//! * Each load is reported (`FromWorker::Loaded`) and becomes an event of its own (`load`), with
//!   its worker, duration, bytes received and error.
//! * A run-scoped cell is dropped on every worker once all runs using it ended (the client
//!   says so, or left); a client can drop any cell by name.

use drover_graph::Lifetime;
use drover_protocol::{CellSpec, TaskEvent, TaskIdx, TaskStatus, ToClient, ToWorker, WorkerId};

use super::placement::Restriction;
use super::{ClientId, Command, Core, StaticPlace};

impl Core {
    /// Tells worker `w` of cell `t` (to load now, or on a task's first need) and records that
    /// it knows it.
    fn send_cell(&mut self, w: WorkerId, t: TaskIdx, load_now: bool) {
        let task = &self.tasks[t as usize];
        let spec = CellSpec {
            id: t,
            key: task.key.to_string(),
            function: self.functions[task.function as usize].to_string(),
            params: task.params.as_deref().map(str::to_owned),
            retries: task.retries_left,
            load_now,
        };
        if let Some(worker) = self.workers.get_mut(&w) {
            worker.cells.insert(t);
        }
        self.out.push(Command::Worker(w, ToWorker::Cell(spec)));
    }

    /// Tells `w` of the once-cells task `t` uses that it does not know yet.
    pub(crate) fn announce_cells(&mut self, t: TaskIdx, w: WorkerId) {
        let task = &self.tasks[t as usize];
        if task.inputs.is_empty() {
            return;
        }
        let Some(worker) = self.workers.get(&w) else {
            return;
        };
        let new: Vec<TaskIdx> = task
            .inputs
            .iter()
            .copied()
            .filter(|&i| self.tasks[i as usize].cell.is_some() && !worker.cells.contains(&i))
            .collect();
        for c in new {
            self.send_cell(w, c, false);
        }
    }

    /// Starts loading an eager cell with `users` users on eligible workers that lack it.
    pub(crate) fn load_eagerly(&mut self, t: TaskIdx, users: usize) {
        let task = &self.tasks[t as usize];
        if task.cell.as_ref().is_none_or(|c| c.lazy) {
            return;
        }
        let restriction = match task.place {
            StaticPlace::Pinned(p) => Restriction::Pool(p),
            _ => Restriction::Anywhere,
        };
        let mut candidates: Vec<(u32, WorkerId, bool)> = self
            .workers
            .iter()
            .filter(|(_, w)| self.eligible(w, restriction, task.req))
            .map(|(&id, w)| (w.inflight, id, w.cells.contains(&t)))
            .collect();
        candidates.sort_unstable();
        let already = candidates.iter().filter(|c| c.2).count();
        let wanted = users.max(1).min(candidates.len()).saturating_sub(already);
        let chosen: Vec<WorkerId> = candidates
            .iter()
            .filter(|c| !c.2)
            .take(wanted)
            .map(|c| c.1)
            .collect();
        for w in chosen {
            self.send_cell(w, t, true);
        }
    }

    /// A load ended on `w`: record where the cell is, and tell the cell's runs.
    pub(crate) fn cell_loaded(
        &mut self,
        w: WorkerId,
        t: TaskIdx,
        duration_us: u64,
        bytes: u64,
        error: Option<String>,
    ) {
        let Some(task) = self.tasks.get_mut(t as usize) else {
            return;
        };
        let Some(cell) = task.cell.as_mut() else {
            return;
        };
        if error.is_none() {
            if duration_us > 0 {
                let d = duration_us as f64;
                cell.mean_load_us = Some(cell.mean_load_us.map_or(d, |m| 0.7 * m + 0.3 * d));
            }
            if !task.holders.contains(&w) {
                task.holders.push(w);
            }
        } else {
            // Failed here: the next need (maybe elsewhere) loads again.
            task.holders.retain(|&h| h != w);
            if let Some(worker) = self.workers.get_mut(&w) {
                worker.cells.remove(&t);
            }
        }
        tracing::debug!(cell = %self.tasks[t as usize].key, worker = w, duration_us, ok = error.is_none(), "once-cell loaded");
        let task = &self.tasks[t as usize];
        let worker = self.workers.get(&w);
        let runs: Vec<u32> = self.runs_of(t).collect();
        for r in runs {
            let run = &self.runs[r as usize];
            if run.ended || !self.run_connected(r) {
                continue;
            }
            let event = TaskEvent {
                run: run.client_run,
                key: task.key.to_string(),
                status: if error.is_none() {
                    TaskStatus::Finished
                } else {
                    TaskStatus::Failed
                },
                worker: worker.map(|w| w.name.to_string()),
                pool: match task.place {
                    StaticPlace::Pinned(p) => Some(self.pools[p as usize].to_string()),
                    _ => None,
                },
                output_bytes: 0,
                duration_us,
                moved_bytes: bytes,
                cross_pool_bytes: 0,
                error: error.clone(),
                attempts: 1,
                load: true,
                reused: false,
                done_before: false,
            };
            self.out
                .push(Command::Client(run.client, ToClient::Events(vec![event])));
        }
    }

    /// The client says its run is over: drop the run's scoped cells no live run still uses.
    pub(crate) fn end_run(&mut self, client: ClientId, client_run: u32) {
        let Some(r) = self
            .runs
            .iter()
            .rposition(|r| r.client == client && r.client_run == client_run && !r.ended)
        else {
            return;
        };
        self.runs[r].ended = true;
        let scoped = std::mem::take(&mut self.runs[r].scoped_cells);
        self.drop_unused_scoped(&scoped);
    }

    /// A client left: all its runs are over.
    pub(crate) fn drop_scoped_cells_of_client(&mut self, client: ClientId) {
        let mut scoped = Vec::new();
        for run in self.runs.iter_mut().filter(|r| r.client == client) {
            run.ended = true;
            scoped.append(&mut run.scoped_cells);
        }
        self.drop_unused_scoped(&scoped);
    }

    fn drop_unused_scoped(&mut self, cells: &[TaskIdx]) {
        for &t in cells {
            let task = &self.tasks[t as usize];
            if task
                .cell
                .as_ref()
                .is_none_or(|c| c.lifetime != Lifetime::Run)
            {
                continue;
            }
            if !self.scoped_cell_in_use(t) {
                self.drop_cell(t);
            }
        }
    }

    /// Whether run-scoped cell `t` is still wanted: a live run includes it, or a pending task
    /// uses it (a result lost after its run ended may be made again for the client that keeps
    /// it). When the last such user is done, [`Core::unneed`] drops it.
    pub(crate) fn scoped_cell_in_use(&self, t: TaskIdx) -> bool {
        self.tasks[t as usize].waiters > 0
            || self
                .runs_of(t)
                .any(|r| !self.runs[r as usize].ended && self.run_connected(r))
    }

    /// Drops these once-cells on every worker (a client released them by name).
    pub(crate) fn release_cells(&mut self, keys: &[String]) {
        for k in keys {
            if let Some(t) = self.slot_of(k) {
                if self.tasks[t as usize].cell.is_some() {
                    self.drop_cell(t);
                }
            }
        }
    }

    pub(crate) fn drop_cell(&mut self, t: TaskIdx) {
        self.tasks[t as usize].holders.clear();
        let mut told = 0;
        for (&w, worker) in self.workers.iter_mut() {
            if worker.cells.remove(&t) {
                self.out
                    .push(Command::Worker(w, ToWorker::DropCells(vec![t])));
                told += 1;
            }
        }
        tracing::info!(cell = %self.tasks[t as usize].key, workers = told, "dropping once-cell");
    }
}
