//! Demand: the few rules that move a task through its life (see the module docs of `core`).
//! Every other part of the core changes task states only through these, which keep two counts
//! true at all times, as [`Core::check`] verifies:
//!
//! * `waiters` = pending consumer occurrences + client wants + handoffs;
//! * `pending` (of a waiting task) = input occurrences not in memory.
//!
//! The rules:
//! * [`Core::need`]: something starts needing a result; one never computed or freed is
//!   computed (again), with its own inputs needed in turn.
//! * [`Core::unneed`]: a need ends; a result nobody needs is freed on every holder; a task
//!   nobody needs and no connected client's run includes is cancelled.
//! * [`Core::settle`]: a waiting task counts what it lacks; it fails if an input failed, is
//!   cancelled if nothing wants it any more, and is queued when nothing is missing.
//! * [`Core::lose`]: a result lost its last holder: computed again if still needed.
//! * [`Core::fail`]: a task fails, and so do the pending tasks waiting for it.

use std::sync::Arc;

use drover_protocol::{TaskIdx, TaskStatus, ToWorker, WorkerId};

use super::{Command, Core, State};

impl Core {
    /// One more need of `t`'s result; computes it if it was never finished or was freed.
    pub(crate) fn need(&mut self, t: TaskIdx) {
        let task = &mut self.tasks[t as usize];
        task.waiters += 1;
        if matches!(task.state, State::Idle | State::Released) {
            self.activate(t);
        }
    }

    /// Makes `t` pending: it needs each of its inputs (computing again those not held, all the
    /// way up), and is queued once they are all in memory. A task that was idle or released
    /// starts a new computation (its attempts count from zero).
    pub(crate) fn activate(&mut self, t: TaskIdx) {
        let (mut stack, mut activated) = std::mem::take(&mut self.activation);
        stack.clear();
        activated.clear();
        stack.push(t);
        while let Some(x) = stack.pop() {
            let task = &mut self.tasks[x as usize];
            if matches!(task.state, State::Idle | State::Released) {
                task.attempts = 0;
            }
            task.state = State::Waiting;
            activated.push(x);
            for n in 0..self.tasks[x as usize].inputs.len() {
                let i = self.tasks[x as usize].inputs[n];
                let input = &mut self.tasks[i as usize];
                input.waiters += 1;
                if matches!(input.state, State::Idle | State::Released) {
                    // Marked now, so an input listed twice is activated once.
                    input.attempts = 0;
                    input.state = State::Waiting;
                    stack.push(i);
                }
            }
        }
        // Inputs first: a task's count sees its inputs' states settled.
        for &x in activated.iter().rev() {
            self.settle(x);
        }
        // Kept for the next, unless one activation made them large.
        if stack.capacity().max(activated.capacity()) <= 1 << 16 {
            self.activation = (stack, activated);
        }
    }

    /// One need of `t` is gone: frees its result when nothing needs it, and cancels it when it
    /// has not run, nothing needs it and no connected client's run includes it. A cancelled
    /// task's inputs lose its need in turn, all the way up: on a work list, not by recursion
    /// (a chain of a million tasks cancelled at once must not overflow the stack).
    pub(crate) fn unneed(&mut self, t: TaskIdx) {
        let mut stack = vec![t];
        while let Some(t) = stack.pop() {
            if self.lose_need(t) {
                // Reversed, so inputs are visited in order, as a recursion would.
                stack.extend(self.tasks[t as usize].inputs.iter().rev().copied());
            }
        }
    }

    /// [`Core::unneed`] for `t` alone: true when it was cancelled (its inputs are then the
    /// caller's to unneed).
    fn lose_need(&mut self, t: TaskIdx) -> bool {
        let task = &mut self.tasks[t as usize];
        debug_assert!(task.waiters > 0, "task {} has no waiter to lose", task.key);
        task.waiters = task.waiters.saturating_sub(1);
        if task.waiters > 0 {
            return false;
        }
        let held = task.state == State::Memory && task.cell.is_none();
        let unstarted = matches!(task.state, State::Waiting | State::Ready);
        let scoped_cell = task
            .cell
            .as_ref()
            .is_some_and(|c| c.lifetime == drover_graph::Lifetime::Run);
        if held {
            self.release(t);
        } else if unstarted && !self.has_connected_run(t) {
            self.tasks[t as usize].state = State::Idle;
            self.note_done_for_good(t);
            return true;
        } else if scoped_cell && !self.scoped_cell_in_use(t) {
            // The last user of a run-scoped cell whose runs are over is done.
            self.drop_cell(t);
        }
        false
    }

    /// Frees `t`'s result on every holder (and a stored output the core held).
    pub(crate) fn release(&mut self, t: TaskIdx) {
        self.stored.remove(&t);
        let task = &mut self.tasks[t as usize];
        task.state = State::Released;
        for w in std::mem::take(&mut task.holders) {
            if let Some(worker) = self.workers.get_mut(&w) {
                worker.has.remove(&t);
            }
            self.out.push(Command::Worker(w, ToWorker::Free(vec![t])));
        }
        self.note_done_for_good(t);
    }

    /// `t` will not run after all (nobody needs it and its runs are gone): it goes back to
    /// idle, and its inputs lose its need.
    pub(crate) fn cancel(&mut self, t: TaskIdx) {
        self.tasks[t as usize].state = State::Idle;
        self.leave_pending(t);
        self.note_done_for_good(t);
    }

    /// `t` stopped being pending (finished, failed or cancelled): its inputs lose a need each.
    pub(crate) fn leave_pending(&mut self, t: TaskIdx) {
        for n in 0..self.tasks[t as usize].inputs.len() {
            let i = self.tasks[t as usize].inputs[n];
            self.unneed(i);
        }
    }

    /// A waiting task counts the inputs it lacks: fails if one failed, is cancelled if nothing
    /// wants it any more, is queued when nothing is missing.
    pub(crate) fn settle(&mut self, t: TaskIdx) {
        if self.tasks[t as usize].state != State::Waiting {
            return;
        }
        if self.tasks[t as usize].waiters == 0 && !self.has_connected_run(t) {
            return self.cancel(t);
        }
        let mut pending = 0;
        let mut failed: Option<TaskIdx> = None;
        for &i in self.tasks[t as usize].inputs.iter() {
            match &self.tasks[i as usize].state {
                State::Memory => {}
                State::Failed(_) => failed = Some(i),
                _ => pending += 1,
            }
        }
        if let Some(i) = failed {
            let input = &self.tasks[i as usize];
            let State::Failed(why) = &input.state else {
                unreachable!("matched above")
            };
            let reason: Arc<str> = Arc::from(format!("input {:?} failed: {why}", &*input.key));
            return self.fail(t, reason, None, 0);
        }
        self.tasks[t as usize].pending = pending;
        if pending == 0 {
            self.push_ready(t);
        }
    }

    /// Result `t` lost its last holder: the waiting tasks that need it count it as missing
    /// again, and it is computed again if anything still needs it.
    pub(crate) fn lose(&mut self, t: TaskIdx) {
        debug_assert!(self.tasks[t as usize].holders.is_empty());
        for n in 0..self.tasks[t as usize].consumers.len() {
            let c = self.tasks[t as usize].consumers[n];
            let ct = &mut self.tasks[c as usize];
            if matches!(ct.state, State::Waiting | State::Ready) {
                // A ready one leaves its queue (its entry goes stale).
                ct.state = State::Waiting;
                ct.pending += 1;
            }
        }
        if self.tasks[t as usize].waiters > 0 {
            // Computed again because it was lost: every run hears of it (a rerun).
            self.tasks[t as usize].told_below = 0;
            self.activate(t);
        } else {
            self.tasks[t as usize].state = State::Released;
            self.note_done_for_good(t);
        }
    }

    /// Result `t` is now held by `w` (its task finished there): the tasks waiting for it count
    /// it, and its own inputs lose its need.
    pub(crate) fn arrive(&mut self, t: TaskIdx, w: WorkerId, size: u64) {
        let task = &mut self.tasks[t as usize];
        task.state = State::Memory;
        task.size = size;
        task.fetch_failures = 0;
        task.holders.push(w);
        if let Some(worker) = self.workers.get_mut(&w) {
            worker.has.insert(t);
        }
        self.leave_pending(t);
        for n in 0..self.tasks[t as usize].consumers.len() {
            let c = self.tasks[t as usize].consumers[n];
            let ct = &mut self.tasks[c as usize];
            if ct.state == State::Waiting {
                ct.pending -= 1;
                if ct.pending == 0 {
                    self.push_ready(c);
                }
            }
        }
        if self.tasks[t as usize].waiters == 0 {
            self.release(t);
        }
    }

    /// Fails pending task `t` and, transitively, the waiting tasks that need it. Assigned ones
    /// are left to their workers, which cannot fetch it and say so.
    pub(crate) fn fail(
        &mut self,
        t: TaskIdx,
        error: Arc<str>,
        worker: Option<WorkerId>,
        duration_us: u64,
    ) {
        let mut stack = vec![(t, error, worker, duration_us)];
        while let Some((t, error, worker, duration_us)) = stack.pop() {
            let was_pending = self.tasks[t as usize].state.is_pending();
            self.tasks[t as usize].state = State::Failed(Box::new(error.clone()));
            self.emit(
                t,
                TaskStatus::Failed,
                worker,
                duration_us,
                0,
                0,
                Some(error.to_string()),
            );
            if was_pending {
                self.leave_pending(t);
            }
            self.note_done_for_good(t);
            let key = self.tasks[t as usize].key.clone();
            for n in 0..self.tasks[t as usize].consumers.len() {
                let c = self.tasks[t as usize].consumers[n];
                if matches!(self.tasks[c as usize].state, State::Waiting | State::Ready) {
                    let reason: Arc<str> = Arc::from(format!("input {:?} failed: {error}", &*key));
                    // Marked now so a consumer listed twice is failed once.
                    self.tasks[c as usize].state = State::Failed(Box::new(reason.clone()));
                    self.leave_pending(c);
                    stack.push((c, reason, None, 0));
                }
            }
        }
    }

    /// Whether a queue entry is the live one of a ready task (entries of tasks requeued,
    /// no longer ready or forgotten are stale and skipped).
    pub(crate) fn is_live_entry(&self, e: &super::ReadyEntry) -> bool {
        self.tasks
            .get(e.task as usize)
            .is_some_and(|t| t.state == State::Ready && t.ready_seq == e.order.0)
    }

    /// Queues `t` (all its inputs are in memory) under its restriction and requirements.
    pub(crate) fn push_ready(&mut self, t: TaskIdx) {
        let class = (self.restriction(t), self.tasks[t as usize].req);
        self.seq += 1;
        let task = &mut self.tasks[t as usize];
        task.state = State::Ready;
        task.ready_seq = self.seq;
        self.ready
            .entry(class)
            .or_default()
            .push(super::ReadyEntry {
                priority: task.priority,
                order: std::cmp::Reverse(self.seq),
                task: t,
            });
    }
}
