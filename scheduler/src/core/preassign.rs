//! Pre-assignment: a task whose inputs are all being computed (or held) on one worker is sent
//! to that worker before they finish, so the worker starts it the moment its inputs are made,
//! without a round trip to the scheduler. A chain of tasks then runs on its worker back to back.
//!
//! * When task `t` is assigned to worker `w`, its first consumer that could run nowhere better
//!   is assigned to `w` too: a waiting task of at most [`MAX_INPUTS`] inputs, every one held by
//!   `w` or assigned to `w` (no once-cells, no stored outputs), that `w` may run (pool,
//!   functions, resources) and has room for. The rule applies again to that consumer, and so on
//!   down a chain, while `w` has room. One consumer per task: the others of a fan-out are
//!   placed as usual when their inputs are done, so a wide graph still spreads.
//! * The task's message lists those unfinished inputs ([`ComputeTask::after`]); the core counts
//!   them in `Core::preassigned` until each is reported finished.
//! * When one of them ends on `w` without a result (failed, timed out, its inputs lost), the
//!   worker drops every task waiting for it here, transitively, without a report; the core
//!   drops the same ones: they wait again (the input is retried) or fail with it. A worker
//!   that leaves takes its pre-assigned tasks back to the queues like any other.
//!
//! [`ComputeTask::after`]: drover_protocol::ComputeTask::after

use drover_protocol::{TaskIdx, WorkerId};

use super::{Command, Core, Distinct, State, StaticPlace};

/// Consumers with more inputs are never pre-assigned (checking them on every input's
/// assignment would cost the product of the two).
pub(crate) const MAX_INPUTS: usize = 8;

/// Chains stopped at a worker's capacity that are remembered per worker, to extend when room
/// frees (more of them are started again by their next result instead, one round trip later).
pub(crate) const MAX_STALLED: usize = 32;

impl Core {
    /// `t` was just assigned to `w`: pre-assigns the chain of consumers that follows it there
    /// (see the module docs).
    pub(crate) fn preassign_after(&mut self, t: TaskIdx, w: WorkerId) {
        let mut x = t;
        loop {
            let Some(worker) = self.workers.get(&w) else {
                return;
            };
            let Some((c, pool)) = self.local_successor(x, w) else {
                return;
            };
            if worker.inflight >= self.capacity(worker) {
                let worker = self.workers.get_mut(&w).expect("checked above");
                if worker.stalled.len() < MAX_STALLED && !worker.stalled.contains(&x) {
                    worker.stalled.push(x);
                }
                return;
            }
            let inputs = &self.tasks[c as usize].inputs;
            let mut distinct = Distinct::new(inputs.len());
            let after: Vec<TaskIdx> = inputs
                .iter()
                .copied()
                .filter(|&i| {
                    self.tasks[i as usize].state == State::Assigned(w) && distinct.first(i)
                })
                .collect();
            self.seq += 1;
            let task = &mut self.tasks[c as usize];
            task.state = State::Assigned(w);
            task.started = false;
            task.assigned_seq = self.seq;
            task.placed_pool = pool;
            let worker = self.workers.get_mut(&w).expect("checked above");
            worker.inflight += 1;
            worker.waiting += 1;
            worker.assigned.insert(c);
            self.preassigned.insert(c, after);
            let msg = self.compute_message(c, w);
            self.out.push(Command::Worker(w, msg));
            x = c;
        }
    }

    /// Room freed on `w`: the chains that stopped at its capacity go on while it has room.
    pub(crate) fn resume_stalled(&mut self, w: WorkerId) {
        loop {
            let Some(worker) = self.workers.get(&w) else {
                return;
            };
            if worker.stalled.is_empty() || worker.inflight >= self.capacity(worker) {
                return;
            }
            let worker = self.workers.get_mut(&w).expect("checked above");
            let x = worker.stalled.pop().expect("checked above");
            // A tail that finished and moved on, or was taken back, has nothing to extend.
            let task = &self.tasks[x as usize];
            let here = task.state == State::Assigned(w)
                || (task.state == State::Memory && worker.has.contains(&x));
            if here {
                self.preassign_after(x, w);
            }
        }
    }

    /// The first consumer of `x` (assigned to `w`) that may be pre-assigned to `w`, and the
    /// pool it is placed in.
    fn local_successor(&self, x: TaskIdx, w: WorkerId) -> Option<(TaskIdx, Option<u32>)> {
        let worker = self.workers.get(&w)?;
        let consumers = &self.tasks[x as usize].consumers;
        'next: for &c in consumers {
            let task = &self.tasks[c as usize];
            if task.state != State::Waiting || task.cell.is_some() || task.inputs.len() > MAX_INPUTS
            {
                continue;
            }
            for &i in task.inputs.iter() {
                let input = &self.tasks[i as usize];
                let here = match input.state {
                    State::Assigned(a) => a == w,
                    State::Memory => input.cell.is_none() && worker.has.contains(&i),
                    _ => false,
                };
                if !here {
                    continue 'next;
                }
            }
            // Where the run-time placement would put it with every input on `w`.
            let pool = match task.place {
                StaticPlace::Pinned(p) | StaticPlace::Optimised(p) => {
                    if !worker.pools.contains(&p) {
                        continue;
                    }
                    Some(p)
                }
                StaticPlace::Any => None,
                // Every input votes for `w`'s pools: one wins outright, several tie.
                StaticPlace::Pass(p) => match worker.pools.as_slice() {
                    [only] => Some(*only),
                    [] if p.is_some_and(|p| self.pool_can_run(p, task.req)) => continue,
                    _ => None,
                },
            };
            if !self.eligible(worker, super::Restriction::Anywhere, task.req) {
                continue;
            }
            return Some((c, pool));
        }
        None
    }

    /// `c`, assigned to `w`, waits for nothing more there (its inputs are made, or it left).
    pub(crate) fn unwait(&mut self, c: TaskIdx, w: WorkerId) {
        if self.preassigned.remove(&c).is_some() {
            if let Some(worker) = self.workers.get_mut(&w) {
                worker.waiting -= 1;
            }
        }
    }

    /// `t` finished on `w`: the tasks pre-assigned there after it wait for one input less.
    pub(crate) fn preassigned_input_done(&mut self, t: TaskIdx, w: WorkerId) {
        if self.preassigned.is_empty() {
            return;
        }
        let n = self.tasks[t as usize].consumers.len();
        let mut seen = Distinct::new(n);
        for k in 0..n {
            let c = self.tasks[t as usize].consumers[k];
            if self.tasks[c as usize].state != State::Assigned(w) || !seen.first(c) {
                continue;
            }
            let Some(after) = self.preassigned.get_mut(&c) else {
                continue;
            };
            after.retain(|&i| i != t);
            if after.is_empty() {
                self.unwait(c, w);
            }
        }
    }

    /// `t` ended on `w` without a result: the tasks pre-assigned there after it (and after
    /// those, all the way down) are taken back, as the worker drops them. They are left waiting,
    /// inputs first; the caller settles them once `t`'s own fate is decided.
    pub(crate) fn drop_preassigned(&mut self, t: TaskIdx, w: WorkerId) -> Vec<TaskIdx> {
        let mut dropped = Vec::new();
        if self.preassigned.is_empty() {
            return dropped;
        }
        let mut next = 0;
        let mut x = t;
        loop {
            for n in 0..self.tasks[x as usize].consumers.len() {
                let c = self.tasks[x as usize].consumers[n];
                let waits = self.tasks[c as usize].state == State::Assigned(w)
                    && self.preassigned.get(&c).is_some_and(|a| a.contains(&x));
                if !waits {
                    continue;
                }
                self.unwait(c, w);
                self.tasks[c as usize].state = State::Waiting;
                if let Some(worker) = self.workers.get_mut(&w) {
                    worker.inflight -= 1;
                    worker.assigned.remove(&c);
                }
                dropped.push(c);
            }
            let Some(&d) = dropped.get(next) else {
                return dropped;
            };
            next += 1;
            x = d;
        }
    }

    /// The invariant of pre-assigned tasks: each is assigned, and waits for at least one input,
    /// each listed once and still assigned to the same worker.
    pub(crate) fn check_preassigned(&self) -> Result<(), String> {
        for (&c, after) in &self.preassigned {
            let task = &self.tasks[c as usize];
            let State::Assigned(w) = task.state else {
                return Err(format!(
                    "{:?} is counted as pre-assigned but is {:?}",
                    task.key, task.state
                ));
            };
            for (k, &i) in after.iter().enumerate() {
                let input = &self.tasks[i as usize];
                if input.state != State::Assigned(w)
                    || after[..k].contains(&i)
                    || !task.inputs.contains(&i)
                {
                    return Err(format!(
                        "{:?} is pre-assigned on {w} after {:?}, which is {:?}",
                        task.key, input.key, input.state
                    ));
                }
            }
            if after.is_empty() {
                return Err(format!("{:?} is pre-assigned after nothing", task.key));
            }
        }
        for (&id, w) in &self.workers {
            let waiting = self
                .preassigned
                .keys()
                .filter(|&&c| self.tasks[c as usize].state == State::Assigned(id))
                .count();
            if waiting != w.waiting as usize {
                return Err(format!(
                    "worker {id} counts {} pre-assigned tasks waiting; {waiting} are",
                    w.waiting
                ));
            }
        }
        Ok(())
    }
}
