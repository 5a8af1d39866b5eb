//! Workers joining and leaving, and what they report: starts, results, failures, replicas made
//! by fetches, inputs that could not be fetched.
//!
//! What the core believes a worker holds changes only by what that worker reported (a result,
//! a replica) or by what the core told it to drop, so belief and store agree once messages
//! settle. When a worker cannot fetch an input from a holder, the core stops counting that copy
//! and tells the holder to drop it, so a wrong belief is corrected at once and never retried.

use std::collections::HashSet;
use std::sync::Arc;

use drover_protocol::{FromWorker, PeerInfo, TaskIdx, TaskStatus, ToWorker, WorkerHello, WorkerId};

use super::placement::Restriction;
use super::{Command, Core, State, Worker};

impl Core {
    pub(crate) fn worker_message(&mut self, w: WorkerId, msg: FromWorker) {
        match msg {
            FromWorker::Retiring { successor } => {
                if let Some(worker) = self.workers.get_mut(&w) {
                    tracing::info!(worker = w, name = %worker.name, successor, "worker retiring");
                    worker.retiring = true;
                    worker.await_successor = successor;
                }
            }
            FromWorker::Returned(ids) => self.returned(w, &ids),
            FromWorker::Replicated { from, ids, failed } => self.replicated(w, from, &ids, failed),
            FromWorker::Started(id) => self.mark_started(w, id),
            FromWorker::Fetched { task, inputs, .. } => self.fetched(w, task, &inputs),
            FromWorker::Finished {
                id,
                size,
                duration_us,
                output,
            } => self.finished(w, id, size, duration_us, output),
            FromWorker::Failed {
                id,
                error,
                duration_us,
            } => self.failed(w, id, error, duration_us),
            FromWorker::InputsLost { id, lost, error } => self.inputs_lost(w, id, &lost, &error),
            FromWorker::Loaded {
                id,
                duration_us,
                bytes,
                error,
            } => self.cell_loaded(w, id, duration_us, bytes, error),
            // For the shell's monitor only.
            FromWorker::Stats { .. } => {}
        }
    }

    pub(crate) fn worker_joined(&mut self, id: WorkerId, hello: WorkerHello) {
        let resources: drover_annotations::Resources = {
            let mut r = drover_annotations::Resources::new();
            for (k, v) in &hello.resources {
                // The server checked names and amounts already; skip anything odd.
                let _ = r.insert(k, *v);
            }
            r
        };
        let pools: Vec<super::PoolIdx> = resources
            .pools()
            .map(|p| self.intern_pool(p.name()))
            .collect();
        let functions: HashSet<super::FnIdx> = hello
            .functions
            .iter()
            .map(|f| self.intern_function(f))
            .collect();
        let peer = PeerInfo {
            id,
            name: hello.name.clone(),
            addr: hello.peer_addr,
            cert: hello.peer_cert.clone(),
            data_addr: hello.data_addr,
        };
        let others: Vec<PeerInfo> = self.workers.values().map(|w| w.peer.clone()).collect();
        for &other in self.workers.keys() {
            self.out
                .push(Command::Worker(other, ToWorker::Peers(vec![peer.clone()])));
        }
        self.out.push(Command::Worker(id, ToWorker::Peers(others)));
        // Warnings about tasks no worker could run may be due again.
        self.warned.retain(|(_, (r, _))| match r {
            Restriction::Anywhere => false,
            Restriction::Pool(p) => !pools.contains(p),
        });
        self.workers.insert(
            id,
            Worker {
                name: Arc::from(hello.name.as_str()),
                pools,
                resources: resources
                    .consumable()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
                functions,
                nthreads: hello.nthreads.max(1),
                inflight: 0,
                peer,
                has: Default::default(),
                assigned: Default::default(),
                retiring: false,
                handoffs: Vec::new(),
                handoff_failures: 0,
                await_successor: false,
                replicating: Vec::new(),
                cells: Default::default(),
                stalled: Vec::new(),
                waiting: 0,
            },
        );
    }

    /// A worker is gone (its connection ended, it was cut off, or it retired): its copies are
    /// no longer counted, results only it held are computed again where still needed, and its
    /// queued and running tasks go back to the queues, unless a task has now been running on
    /// too many workers that died: then it is the likely culprit, and fails.
    pub(crate) fn worker_left(&mut self, id: WorkerId) {
        let Some(w) = self.workers.remove(&id) else {
            return;
        };
        for &other in self.workers.keys() {
            self.out
                .push(Command::Worker(other, ToWorker::PeerGone(id)));
        }
        // Copies it was asked to make will not come: their needs end, their sources move on.
        for (from, ids) in &w.replicating {
            for &t in ids {
                self.unneed(t);
            }
            if let Some(src) = self.workers.get_mut(from) {
                src.handoffs.retain(|&x| x != id);
                src.handoff_failures += 1;
            }
        }
        // Its copies.
        let mut lost: Vec<TaskIdx> = Vec::new();
        let mut held: Vec<TaskIdx> = w.has.iter().copied().collect();
        held.sort_unstable();
        for t in held {
            let task = &mut self.tasks[t as usize];
            task.holders.retain(|&h| h != id);
            if task.holders.is_empty()
                && task.state == State::Memory
                && task.cell.is_none()
                && !self.stored.contains_key(&t)
            {
                lost.push(t);
            }
        }
        for &c in &w.cells {
            self.tasks[c as usize].holders.retain(|&h| h != id);
        }
        // Its tasks. Those it was running: those it reported started; if none was (a task can
        // kill its worker before the report gets out), the first `nthreads` in the worker's
        // own run order (priority, then arrival) among those that could have started: whose
        // inputs it held (a task still fetching was not running).
        let mut assigned: Vec<TaskIdx> = w.assigned.iter().copied().collect();
        assigned.sort_unstable();
        assigned.retain(|&t| self.tasks[t as usize].state == State::Assigned(id));
        let mut running: Vec<TaskIdx> = assigned
            .iter()
            .copied()
            .filter(|&t| self.tasks[t as usize].started)
            .collect();
        if running.is_empty() {
            running = assigned
                .iter()
                .copied()
                .filter(|&t| {
                    self.tasks[t as usize]
                        .inputs
                        .iter()
                        .all(|&i| self.tasks[i as usize].cell.is_some() || w.has.contains(&i))
                })
                .collect();
            running.sort_by_key(|&t| {
                let task = &self.tasks[t as usize];
                (std::cmp::Reverse(task.priority), task.assigned_seq)
            });
            running.truncate(w.nthreads as usize);
        }
        let mut requeued = Vec::with_capacity(assigned.len());
        for t in assigned {
            self.moved.remove(&t);
            self.preassigned.remove(&t);
            if running.contains(&t) {
                let deaths = self.deaths.entry(t).or_default();
                deaths.push(w.name.clone());
                if deaths.len() as u32 >= self.config.max_worker_deaths {
                    let names: Vec<String> = deaths.iter().map(|n| format!("{n:?}")).collect();
                    let error = format!(
                        "suspicious task: it was running on {} workers that died ({}); not retried",
                        names.len(),
                        names.join(", ")
                    );
                    self.fail(t, Arc::from(error.as_str()), None, 0);
                    continue;
                }
            }
            self.tasks[t as usize].state = State::Waiting;
            requeued.push(t);
        }
        for t in lost {
            self.lose(t);
        }
        for t in requeued {
            self.settle(t);
        }
    }

    /// `t` started on `w` (reported, or implied by its outcome): counts an attempt once per
    /// assignment.
    fn mark_started(&mut self, w: WorkerId, t: TaskIdx) {
        if let Some(task) = self.tasks.get_mut(t as usize) {
            if task.state == State::Assigned(w) && !task.started {
                task.started = true;
                task.attempts += 1;
            }
        }
    }

    /// `w`'s assignment of `t` ended (whatever the outcome): `w` has room again. `false` when
    /// `t` was not assigned to `w` (a stale report).
    fn unassign(&mut self, w: WorkerId, t: TaskIdx) -> bool {
        if self.tasks.get(t as usize).map(|t| &t.state) != Some(&State::Assigned(w)) {
            return false;
        }
        self.unwait(t, w);
        if let Some(worker) = self.workers.get_mut(&w) {
            worker.inflight -= 1;
            worker.assigned.remove(&t);
        }
        true
    }

    /// `w` fetched these inputs for `task` and holds them now.
    fn fetched(&mut self, w: WorkerId, task: TaskIdx, inputs: &[(TaskIdx, WorkerId, u64)]) {
        if !self.workers.contains_key(&w) {
            return;
        }
        let counted = self
            .tasks
            .get(task as usize)
            .is_some_and(|t| t.state == State::Assigned(w));
        let my_pools = self.workers[&w].pools.clone();
        let (mut moved, mut cross) = (0, 0);
        let mut drop = Vec::new();
        for &(input, from, bytes) in inputs {
            moved += bytes;
            if self.workers.get(&from).is_some_and(|x| x.pools != my_pools) {
                cross += bytes;
            }
            let Some(t) = self.tasks.get_mut(input as usize) else {
                continue;
            };
            if t.state == State::Memory && t.cell.is_none() {
                if !t.holders.contains(&w) {
                    t.holders.push(w);
                    self.workers
                        .get_mut(&w)
                        .expect("checked above")
                        .has
                        .insert(input);
                }
            } else {
                // Lost (and being made again) or freed meanwhile: not counted, so not kept.
                drop.push(input);
            }
        }
        if !drop.is_empty() {
            self.out.push(Command::Worker(w, ToWorker::Free(drop)));
        }
        if counted {
            let m = self.moved.entry(task).or_default();
            m.0 += moved;
            m.1 += cross;
        }
    }

    fn finished(
        &mut self,
        w: WorkerId,
        t: TaskIdx,
        size: u64,
        duration_us: u64,
        output: Option<Vec<u8>>,
    ) {
        self.mark_started(w, t);
        if !self.unassign(w, t) {
            // Not this worker's to report (it was presumed gone and the task moved on): its
            // copy is not counted, so it must not keep it.
            let counted = self
                .tasks
                .get(t as usize)
                .is_some_and(|task| task.holders.contains(&w));
            if self.workers.contains_key(&w) && !counted {
                self.out.push(Command::Worker(w, ToWorker::Free(vec![t])));
            }
            return;
        }
        tracing::debug!(key = %self.tasks[t as usize].key, worker = w, "task finished");
        self.mean_duration_us = 0.9 * self.mean_duration_us + 0.1 * duration_us as f64;
        self.tasks[t as usize].size = size;
        let (moved, cross) = self.moved.remove(&t).unwrap_or_default();
        self.emit(
            t,
            TaskStatus::Finished,
            Some(w),
            duration_us,
            moved,
            cross,
            None,
        );
        self.deaths.remove(&t);
        self.preassigned_input_done(t, w);
        if let Some(version) = self.tasks[t as usize].durable {
            // Its output goes with it when the worker sent it (small enough to keep).
            let task = &self.tasks[t as usize];
            self.out.push(Command::Commit {
                namespace: self.runs[task.run as usize].namespace.to_string(),
                key: task.key.to_string(),
                version,
                definition: task.fingerprint.get(),
                output: output.filter(|o| o.len() as u64 == size),
            });
        }
        self.arrive(t, w, size);
        self.resume_stalled(w);
    }

    fn failed(&mut self, w: WorkerId, t: TaskIdx, error: String, duration_us: u64) {
        self.mark_started(w, t);
        if !self.unassign(w, t) {
            return;
        }
        self.moved.remove(&t);
        let dropped = self.drop_preassigned(t, w);
        let task = &mut self.tasks[t as usize];
        if task.retries_left > 0 {
            task.retries_left -= 1;
            task.state = State::Waiting;
            self.settle(t);
        } else {
            self.fail(t, Arc::from(error.as_str()), Some(w), duration_us);
        }
        self.settle_all(&dropped);
    }

    /// `w` gave back these unstarted tasks (it retires): they wait again, to be placed
    /// elsewhere, with the tasks pre-assigned there after them (the worker drops those, or
    /// gives them back too: then they are stale here).
    fn returned(&mut self, w: WorkerId, ids: &[TaskIdx]) {
        let mut back = Vec::with_capacity(ids.len());
        for &t in ids {
            if self.unassign(w, t) {
                self.moved.remove(&t);
                self.tasks[t as usize].state = State::Waiting;
                back.push(t);
                let dropped = self.drop_preassigned(t, w);
                back.extend(dropped);
            }
        }
        tracing::debug!(worker = w, tasks = back.len(), "unstarted tasks given back");
        self.settle_all(&back);
    }

    /// Settles tasks taken back from a worker (in order: inputs first).
    fn settle_all(&mut self, tasks: &[TaskIdx]) {
        for &t in tasks {
            self.settle(t);
        }
    }

    /// `w` could not get some inputs of `t`: each failed (input, holder) copy stops being
    /// counted (the holder is told to drop it), results left without a copy are computed
    /// again, and `t` waits for its inputs again, or fails after too many failures from
    /// holders that are still connected.
    fn inputs_lost(&mut self, w: WorkerId, t: TaskIdx, lost: &[(TaskIdx, WorkerId)], error: &str) {
        if !self.unassign(w, t) {
            return;
        }
        self.moved.remove(&t);
        let dropped = self.drop_preassigned(t, w);
        tracing::warn!(task = %self.tasks[t as usize].key, worker = w, ?lost, error, "inputs lost; recomputing what no one holds");
        let mut from_live = false;
        for &(i, h) in lost {
            let Some(input) = self.tasks.get_mut(i as usize) else {
                continue;
            };
            if input.cell.is_some() {
                continue;
            }
            from_live |= self.workers.contains_key(&h);
            if !input.holders.contains(&h) {
                continue;
            }
            input.holders.retain(|&x| x != h);
            if let Some(hw) = self.workers.get_mut(&h) {
                hw.has.remove(&i);
                if h != w {
                    self.out.push(Command::Worker(h, ToWorker::Free(vec![i])));
                }
            }
            if input.holders.is_empty()
                && input.state == State::Memory
                && !self.stored.contains_key(&i)
            {
                self.lose(i);
            }
        }
        let task = &mut self.tasks[t as usize];
        task.state = State::Waiting;
        if from_live {
            task.fetch_failures += 1;
            if task.fetch_failures >= self.config.max_fetch_failures {
                let reason = format!(
                    "could not fetch its inputs {} times in a row from workers that are still connected; last: {error}",
                    task.fetch_failures
                );
                self.fail(t, Arc::from(reason), Some(w), 0);
                return self.settle_all(&dropped);
            }
        }
        self.settle(t);
        self.settle_all(&dropped);
    }
}
