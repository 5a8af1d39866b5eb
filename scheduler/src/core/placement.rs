//! Placement: which pool a ready task is restricted to, and which worker runs it.
//!
//! * Pinned tasks are restricted to their pool; any-pool tasks to nothing.
//! * A task whose pool came from the pass is re-decided when it becomes ready, by the pass's
//!   forward rule over *actual* result sizes and *actual* locations: every input votes for the
//!   pools of the worker holding it; the pool with strictly the most bytes wins; a tie leaves it
//!   unrestricted; with no votes it keeps the pass's pool.
//! * A task the pass's optimising step placed keeps that pool while its inputs came out the
//!   sizes they were hinted to be (within 2x): the optimiser weighed the whole graph, which the
//!   local vote cannot. Inputs without hints, or far from them, send it to the vote above.
//! * A worker is eligible when it is not retiring, is in the task's pool (if restricted), has
//!   every function the task needs (its own and its once-cells' loaders) and its consumable
//!   resources.
//! * Ready tasks wait in one queue per restriction and requirements, so tasks no worker can take
//!   now never hold up others behind them.
//! * Among eligible workers with room, the earliest estimated start wins: queued work over
//!   threads times the mean task duration, plus bytes to fetch over the bandwidth. Ties go to
//!   the lowest worker id, so the same state always gives the same choice.
//! * A worker takes tasks up to its threads plus a prefetch window sized to hold about 10 ms of
//!   work per thread at the observed mean duration: deep for tiny tasks (throughput), shallow
//!   for long ones (balance).

use std::collections::HashSet;

use drover_protocol::{TaskIdx, ToClient, ToWorker, WorkerId};

use super::{Class, ClientId, Command, Core, PoolIdx, ReqIdx, State, StaticPlace, Worker};

/// Which workers may run a ready task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Restriction {
    /// Any worker.
    Anywhere,
    /// Only workers of this pool.
    Pool(PoolIdx),
}

/// Assumed load time of a once-cell never loaded yet, in microseconds: loaders are expensive
/// by nature, so a worker that has one is preferred until it is a second behind.
pub(crate) const DEFAULT_LOAD_US: f64 = 1_000_000.0;

/// Target queued work per thread, in microseconds.
const PREFETCH_US: f64 = 10_000.0;
/// Most tasks queued on a worker beyond its threads.
const MAX_PREFETCH: u32 = 1024;

impl Core {
    /// Decides the restriction of a task that is becoming ready.
    pub(crate) fn restriction(&self, t: TaskIdx) -> Restriction {
        let task = &self.tasks[t as usize];
        let fallback = match task.place {
            StaticPlace::Pinned(p) => return Restriction::Pool(p),
            StaticPlace::Any => return Restriction::Anywhere,
            StaticPlace::Pass(p) => p.filter(|&p| self.pool_can_run(p, task.req)),
            StaticPlace::Optimised(p) => {
                let runnable = self.pool_can_run(p, task.req);
                if runnable && self.sizes_as_hinted(t) {
                    return Restriction::Pool(p);
                }
                runnable.then_some(p)
            }
        };
        let mut votes: Vec<(PoolIdx, u64)> = Vec::new();
        // Each input counts once.
        let mut seen = super::Distinct::new(task.inputs.len());
        for &i in task.inputs.iter() {
            if task.inputs.len() > 1 && !seen.first(i) {
                continue;
            }
            let input = &self.tasks[i as usize];
            if input.cell.is_some() {
                // Loaded wherever needed, never moved: no vote.
                continue;
            }
            let Some(holder) = input.holders.first().and_then(|h| self.workers.get(h)) else {
                continue;
            };
            for &p in &holder.pools {
                match votes.iter_mut().find(|(q, _)| *q == p) {
                    Some((_, b)) => *b += input.size,
                    None => votes.push((p, input.size)),
                }
            }
        }
        let Some(best) = votes.iter().map(|(_, b)| *b).max() else {
            return fallback.map_or(Restriction::Anywhere, Restriction::Pool);
        };
        let mut winners = votes.iter().filter(|(_, b)| *b == best);
        let first = winners.next().map(|(p, _)| *p);
        match (first, winners.next()) {
            // A placement of choice, not of need: never one no connected worker can honour.
            (Some(p), None) if self.pool_can_run(p, task.req) => Restriction::Pool(p),
            _ => Restriction::Anywhere,
        }
    }

    /// Whether every input of `t` that moves (not a once-cell) has a size hint and came out
    /// within 2x of it: the sizes the optimising pass placed `t` for.
    fn sizes_as_hinted(&self, t: TaskIdx) -> bool {
        self.tasks[t as usize].inputs.iter().all(|&i| {
            let input = &self.tasks[i as usize];
            if input.cell.is_some() {
                return true;
            }
            let (hint, size) = (input.hint, input.size);
            hint != super::NO_HINT
                && size <= hint.saturating_mul(2)
                && hint <= size.saturating_mul(2)
        })
    }

    /// Whether some connected worker of pool `p` can run tasks of requirements `req`
    /// (remembered until a worker joins, leaves or retires).
    pub(crate) fn pool_can_run(&self, p: PoolIdx, req: ReqIdx) -> bool {
        if let Some(&known) = self.pool_can.borrow().get(&(p, req)) {
            return known;
        }
        let can = self
            .workers
            .values()
            .any(|w| self.eligible(w, Restriction::Pool(p), req));
        self.pool_can.borrow_mut().insert((p, req), can);
        can
    }

    /// Tasks in flight on `w` that take (or soon take) its threads: all but the pre-assigned
    /// ones still waiting for their inputs.
    pub(crate) fn load(&self, w: &Worker) -> u32 {
        w.inflight - w.waiting
    }

    /// How many tasks `w` may have in flight: its threads, and enough queued ahead of them
    /// to cover a round trip at the mean task duration.
    pub(crate) fn capacity(&self, w: &Worker) -> u32 {
        let per_thread = (PREFETCH_US / self.mean_duration_us.max(1.0)).ceil() as u32;
        w.nthreads + (per_thread.saturating_mul(w.nthreads)).clamp(1, MAX_PREFETCH)
    }

    /// Whether `w` may run a task of requirements `req` under `restriction`.
    pub(crate) fn eligible(&self, w: &Worker, restriction: Restriction, req: ReqIdx) -> bool {
        if w.retiring {
            return false;
        }
        if let Restriction::Pool(p) = restriction {
            if !w.pools.contains(&p) {
                return false;
            }
        }
        let req = &self.reqs[req as usize];
        req.functions.iter().all(|f| w.functions.contains(f))
            && req.resources.iter().all(|(name, need)| {
                let need = f64::from_bits(*need);
                w.resources
                    .iter()
                    .any(|(have, amount)| have == name && *amount >= need)
            })
    }

    /// The best worker with room for `t`, if any; and whether any worker at all is eligible.
    /// Best is the earliest estimated start (queue, then bytes to fetch, then once-cells to
    /// load); ties go to the worker missing fewer inputs (so zero-byte inputs still pull work
    /// to where they are), then to the lowest id.
    fn best_worker(&self, t: TaskIdx, restriction: Restriction) -> (Option<WorkerId>, bool) {
        let task = &self.tasks[t as usize];
        let mut best: Option<(f64, usize, WorkerId)> = None;
        let mut any_eligible = false;
        for (&id, w) in &self.workers {
            if !self.eligible(w, restriction, task.req) {
                continue;
            }
            any_eligible = true;
            if self.load(w) >= self.capacity(w) {
                continue;
            }
            let (mut missing_bytes, mut missing, mut loads_us) = (0u64, 0usize, 0f64);
            for i in task.inputs.iter().filter(|i| !w.has.contains(i)) {
                let input = &self.tasks[*i as usize];
                match &input.cell {
                    // A once-cell costs its load where it is not (being) loaded.
                    Some(c) if !w.cells.contains(i) => {
                        loads_us += c.mean_load_us.unwrap_or(DEFAULT_LOAD_US);
                        missing += 1;
                    }
                    Some(_) => {}
                    None => {
                        missing_bytes += input.size;
                        missing += 1;
                    }
                }
            }
            let start = f64::from(self.load(w)) / f64::from(w.nthreads) * self.mean_duration_us
                + missing_bytes as f64 / self.bandwidth
                + loads_us;
            let better = match best {
                None => true,
                Some((s, m, _)) => start < s || (start == s && missing < m),
            };
            if better {
                best = Some((start, missing, id));
            }
        }
        (best.map(|(_, _, id)| id), any_eligible)
    }

    /// Assigns queued ready tasks to workers with room, best first in each queue.
    pub(crate) fn schedule(&mut self) {
        if self.ready.is_empty() {
            return;
        }
        // Nothing can be placed while every worker is full; warnings can wait for room too.
        let mut active = self.workers.values().filter(|w| !w.retiring).peekable();
        if active.peek().is_some() && active.all(|w| self.load(w) >= self.capacity(w)) {
            return;
        }
        let classes: Vec<Class> = self.ready.keys().copied().collect();
        for class in classes {
            let (r, _) = class;
            while let Some(e) = self.ready.get(&class).and_then(|q| q.peek()) {
                let t = e.task;
                if !self.is_live_entry(e) {
                    // Stale: the task was requeued, lost an input, was cancelled or forgotten.
                    self.ready.get_mut(&class).map(|q| q.pop());
                    continue;
                }
                let (chosen, any_eligible) = self.best_worker(t, r);
                let Some(w) = chosen else {
                    if !any_eligible
                        && matches!(r, Restriction::Pool(_))
                        && self.unpin_stranded(class)
                    {
                        continue; // what was left in the queue must be there
                    }
                    if !any_eligible {
                        self.warn_no_workers(class);
                    }
                    break;
                };
                self.ready.get_mut(&class).map(|q| q.pop());
                self.seq += 1;
                let task = &mut self.tasks[t as usize];
                task.state = State::Assigned(w);
                task.started = false;
                task.assigned_seq = self.seq;
                task.placed_pool = match r {
                    Restriction::Pool(p) => Some(p),
                    Restriction::Anywhere => None,
                };
                let worker = self.workers.get_mut(&w).expect("chosen worker exists");
                worker.inflight += 1;
                worker.assigned.insert(t);
                self.announce_cells(t, w);
                self.hand_stored(t, w);
                let msg = self.compute_message(t, w);
                self.out.push(Command::Worker(w, msg));
                if self.config.preassign {
                    self.preassign_after(t, w);
                }
            }
        }
        self.ready.retain(|_, q| !q.is_empty());
    }

    /// Hands `w` the stored outputs (of durable tasks done before) that task `t` needs and `w`
    /// does not hold: sent before the task, and `w` counts as holding them from now on. Sent
    /// even when another worker was handed them already: that one may not have received them
    /// yet, so it is no source to fetch from.
    fn hand_stored(&mut self, t: TaskIdx, w: WorkerId) {
        if self.stored.is_empty() {
            return;
        }
        let mut data: Vec<(TaskIdx, Vec<u8>)> = Vec::new();
        for n in 0..self.tasks[t as usize].inputs.len() {
            let i = self.tasks[t as usize].inputs[n];
            let input = &self.tasks[i as usize];
            // (An input listed twice is held after its first time.)
            if input.holders.contains(&w) {
                continue;
            }
            if let Some(bytes) = self.stored.get(&i) {
                data.push((i, bytes.to_vec()));
                self.tasks[i as usize].holders.push(w);
                if let Some(worker) = self.workers.get_mut(&w) {
                    worker.has.insert(i);
                }
            }
        }
        if !data.is_empty() {
            self.out.push(Command::Worker(w, ToWorker::Data(data)));
        }
    }

    /// No connected worker can run the tasks of pool queue `class`: those placed there by
    /// choice (the pass or their inputs' locations, not pinned) are queued again where they
    /// can run. `true` if any moved.
    fn unpin_stranded(&mut self, class: Class) -> bool {
        let Some(q) = self.ready.remove(&class) else {
            return false;
        };
        self.pool_can.borrow_mut().clear();
        let mut kept = std::collections::BinaryHeap::new();
        let mut moved = Vec::new();
        for e in q.into_vec() {
            if !self.is_live_entry(&e) {
                continue;
            }
            if matches!(self.tasks[e.task as usize].place, StaticPlace::Pinned(_)) {
                kept.push(e);
            } else {
                moved.push(e.task);
            }
        }
        if !kept.is_empty() {
            self.ready.insert(class, kept);
        }
        moved.sort_unstable();
        for &t in &moved {
            self.push_ready(t);
        }
        !moved.is_empty()
    }

    /// Tells each client with tasks waiting in queue `class` that no connected worker can run
    /// them, and why (no worker in the pool, none with the function, none with the
    /// resources), once (until a worker joins).
    fn warn_no_workers(&mut self, class: Class) {
        let (r, req) = class;
        let waiting: Vec<TaskIdx> = self
            .ready
            .get(&class)
            .map(|q| {
                q.iter()
                    .filter(|e| self.is_live_entry(e))
                    .map(|e| e.task)
                    .collect()
            })
            .unwrap_or_default();
        let mut clients: HashSet<ClientId> = HashSet::new();
        for &t in &waiting {
            clients.extend(self.runs_of(t).map(|r| self.runs[r as usize].client));
        }
        let mut clients: Vec<_> = clients.into_iter().collect();
        clients.sort_unstable();
        let in_pool: Vec<&Worker> = self
            .workers
            .values()
            .filter(|w| match r {
                Restriction::Pool(p) => w.pools.contains(&p),
                Restriction::Anywhere => true,
            })
            .collect();
        let pool_text = match r {
            Restriction::Pool(p) => format!(" in pool {:?}", &*self.pools[p as usize]),
            Restriction::Anywhere => String::new(),
        };
        let needs = &self.reqs[req as usize];
        let missing_fn = needs
            .functions
            .iter()
            .find(|f| !in_pool.iter().any(|w| w.functions.contains(f)));
        let msg = if let (Restriction::Pool(p), true) = (r, in_pool.is_empty()) {
            format!(
                "pool {:?} has no workers: {} task(s) wait until a worker with resource pool-{}=1 joins",
                &*self.pools[p as usize],
                waiting.len(),
                &*self.pools[p as usize]
            )
        } else if let Some(&f) = missing_fn {
            format!(
                "no connected worker{pool_text} has function {:?}: {} task(s) wait until a worker that registers it joins",
                &*self.functions[f as usize],
                waiting.len()
            )
        } else {
            let example = waiting.first().map(|&t| {
                let task = &self.tasks[t as usize];
                let needs: Vec<String> = self
                    .req_resources(task.req)
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                if needs.is_empty() {
                    format!("{:?}", &*task.key)
                } else {
                    format!("{:?} needing {}", &*task.key, needs.join(","))
                }
            });
            format!(
                "no connected worker{pool_text} can run {} task(s) (e.g. {}): they wait until one that can joins",
                waiting.len(),
                example.unwrap_or_default()
            )
        };
        for c in clients {
            if self.warned.insert((c, class)) {
                self.out
                    .push(Command::Client(c, ToClient::Warning(msg.clone())));
            }
        }
    }
}
