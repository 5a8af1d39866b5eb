//! Retiring workers (SIGTERM): a retiring worker gets no new tasks and finishes those it has.
//! Then every result held only by it that a pending task or a client still needs is replicated
//! to another worker (one of its pool when it was placed in a pool), and only when none is left
//! is the worker told it may exit. Nothing is lost, so nothing is recomputed. A retiring
//! worker whose successor is on its way (lifespan, memory limit) waits for it when no other
//! worker can take its results. Each copy under way counts as a need of its result, so the
//! result is not freed (and its id not reused) before the copy is answered.

use std::collections::BTreeMap;

use drover_protocol::{TaskIdx, ToWorker, WorkerId};

use super::{Command, Core, State};

/// Rounds of failed copies after which a retiring worker gives up what is left (it is then
/// recomputed where needed).
const MAX_HANDOFF_ROUNDS: u32 = 3;

impl Core {
    /// Moves every retiring worker one step on.
    pub(crate) fn progress_retirements(&mut self) {
        for (id, w) in self.workers.iter().filter(|(_, w)| w.retiring) {
            tracing::debug!(
                worker = id,
                inflight = w.inflight,
                handoffs = w.handoffs.len(),
                "retiring worker waits"
            );
        }
        let retiring: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| w.retiring && w.inflight == 0 && w.handoffs.is_empty())
            .map(|(&id, _)| id)
            .collect();
        for id in retiring {
            self.retire_step(id);
        }
    }

    fn retire_step(&mut self, id: WorkerId) {
        let mut needed: Vec<TaskIdx> = self.workers[&id]
            .has
            .iter()
            .copied()
            .filter(|&t| {
                let task = &self.tasks[t as usize];
                task.state == State::Memory
                    && task.waiters > 0
                    && task.holders.iter().all(|&h| h == id)
            })
            .collect();
        needed.sort_unstable();
        let targets: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(&w, x)| w != id && !x.retiring)
            .map(|(&w, _)| w)
            .collect();
        // A failed copy is tried again (with the targets there are then), a few times.
        let give_up = self.workers[&id].handoff_failures >= MAX_HANDOFF_ROUNDS;
        if !needed.is_empty() && targets.is_empty() && self.workers[&id].await_successor && !give_up
        {
            return; // its replacement will join; hand over to it then
        }
        if needed.is_empty() || targets.is_empty() || give_up {
            if !needed.is_empty() {
                tracing::warn!(
                    worker = id,
                    results = needed.len(),
                    "no other worker to take a retiring worker's results; they will be recomputed"
                );
            }
            self.out.push(Command::Worker(id, ToWorker::Retired));
            self.worker_left(id);
            return;
        }
        // Each result goes to a worker of the pool it was placed in if there is one, else to
        // the targets in turn.
        let mut plan: BTreeMap<WorkerId, Vec<TaskIdx>> = BTreeMap::new();
        for (i, t) in needed.into_iter().enumerate() {
            let pool = self.tasks[t as usize].placed_pool;
            let in_pool = pool.and_then(|p| {
                targets
                    .iter()
                    .copied()
                    .find(|w| self.workers[w].pools.contains(&p))
            });
            let target = in_pool.unwrap_or(targets[i % targets.len()]);
            plan.entry(target).or_default().push(t);
        }
        self.workers
            .get_mut(&id)
            .expect("retiring worker exists")
            .handoffs = plan.keys().copied().collect();
        for (target, ids) in plan {
            for &t in &ids {
                self.need(t);
            }
            self.workers
                .get_mut(&target)
                .expect("targets exist")
                .replicating
                .push((id, ids.clone()));
            self.out.push(Command::Worker(
                target,
                ToWorker::Replicate { from: id, ids },
            ));
        }
    }

    /// `w` now holds replicas of `ids`, copied from the retiring worker `from`.
    pub(crate) fn replicated(
        &mut self,
        w: WorkerId,
        from: WorkerId,
        ids: &[TaskIdx],
        failed: bool,
    ) {
        let Some(worker) = self.workers.get_mut(&w) else {
            return;
        };
        let Some(pos) = worker.replicating.iter().position(|(f, _)| *f == from) else {
            return;
        };
        let (_, planned) = worker.replicating.remove(pos);
        // Copies of results lost or freed meanwhile (or not asked for) are not kept.
        let mut unwanted = Vec::new();
        for &t in ids {
            let Some(task) = self.tasks.get_mut(t as usize) else {
                continue;
            };
            if task.holders.contains(&w) {
                continue;
            }
            if task.state != State::Memory || !planned.contains(&t) {
                unwanted.push(t);
                continue;
            }
            task.holders.push(w);
            if let Some(worker) = self.workers.get_mut(&w) {
                worker.has.insert(t);
            }
        }
        if !unwanted.is_empty() {
            self.out.push(Command::Worker(w, ToWorker::Free(unwanted)));
        }
        for t in planned {
            self.unneed(t);
        }
        if failed {
            tracing::warn!(worker = w, from, "some results of a retiring worker could not be copied; they will be recomputed if needed");
        }
        if let Some(r) = self.workers.get_mut(&from) {
            r.handoffs.retain(|&t| t != w);
            r.handoff_failures += u32::from(failed);
        }
    }
}
