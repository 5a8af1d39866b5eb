//! Once-cells are never forgotten (they stay "in memory": a worker maps the cell's id to its
//! object, so the id must not come back as another task's); they are a few hundred bytes each.
//!
//! Forgetting: when clients leave, the tasks only their runs referred to, and whose results are
//! gone (released, cancelled or failed), are dropped from the core: keys unmapped, slots freed for
//! reuse, trailing free slots truncated. So the scheduler's memory returns to where it was.
//!
//! A task is forgotten only once every consumer of it is (`live_consumers` is zero), so no task
//! the core still knows names a forgotten input: a consumer still held for a task that runs on
//! for a departed client keeps its lineage. Forgetting a task makes its inputs candidates in
//! turn. (A forgotten task's input may be shared with a client still here; it stops listing the
//! forgotten consumer.) Ids are reused only after the task's result was freed on every worker
//! (the `Free` goes out first on the same ordered stream), and a queue entry only ever matches
//! the task it was made for (its queueing number), so a reused slot is never scheduled by an
//! old entry.

use super::{Core, Fingerprint, State, Task};

impl Core {
    /// Drops every task that no connected client's run refers to and that holds no result.
    pub(crate) fn forget_departed(&mut self) {
        self.forget_candidates.clear();
        let all: Vec<u32> = (0..self.tasks.len() as u32).collect();
        self.forget(all);
        // Queues may hold entries of tasks gone: give their memory back.
        let mut ready = std::mem::take(&mut self.ready);
        for q in ready.values_mut() {
            q.retain(|e| self.is_live_entry(e));
        }
        ready.retain(|_, q| !q.is_empty());
        self.ready = ready;
        self.tasks.shrink_to(self.tasks.len().max(1024));
        self.keys.shrink_to(self.keys.len().max(1024));
        self.extra_runs.shrink_to_fit();
    }

    /// Drops the tasks noted since the last pass as done for good after their runs were gone
    /// (they finished, failed or were cancelled once nobody was left to want them).
    pub(crate) fn forget_noted(&mut self) {
        let mut noted = std::mem::take(&mut self.forget_candidates);
        noted.sort_unstable();
        noted.dedup();
        self.forget(noted);
    }

    /// Notes `t` for forgetting at the end of this event if no connected run includes it.
    pub(crate) fn note_done_for_good(&mut self, t: u32) {
        if !self.has_connected_run(t) {
            self.forget_candidates.push(t);
        }
    }

    /// Whether `t` may be forgotten: settled (idle, released or failed), needed by nothing,
    /// included in no connected client's run, and no task still known consumes it.
    fn forgettable(&self, t: u32) -> bool {
        let task = &self.tasks[t as usize];
        !task.key.is_empty()
            && task.cell.is_none()
            && task.waiters == 0
            && task.live_consumers == 0
            && matches!(task.state, State::Idle | State::Released | State::Failed(_))
            && !self.has_connected_run(t)
    }

    /// Forgets those of `candidates` that may be (see [`Core::forgettable`]), and then their
    /// inputs that may be once they lost their last consumer.
    fn forget(&mut self, mut candidates: Vec<u32>) {
        let mut forgotten = 0usize;
        // Inputs of forgotten tasks: their consumer lists are pruned once each at the end (an
        // input with many consumers is not scanned once per consumer).
        let mut touched: Vec<u32> = Vec::new();
        while let Some(t) = candidates.pop() {
            if !self.forgettable(t) {
                continue;
            }
            // A redefined key names another task now: only unmap it if it names this one.
            self.keys
                .remove_if(&self.tasks[t as usize].key, t, &self.tasks);
            let inputs = std::mem::take(&mut self.tasks[t as usize].inputs);
            for &i in inputs.iter() {
                let input = &mut self.tasks[i as usize];
                input.live_consumers -= 1;
                if input.live_consumers == 0 {
                    candidates.push(i);
                }
            }
            touched.extend_from_slice(&inputs);
            // The empty key marks the slot as forgotten until it is reused.
            self.tasks[t as usize] = Task::tombstone();
            self.extra_runs.remove(&t);
            self.deaths.remove(&t);
            self.moved.remove(&t);
            self.free_slots.push(t);
            forgotten += 1;
        }
        if forgotten == 0 {
            return;
        }
        touched.sort_unstable();
        touched.dedup();
        for i in touched {
            let (before, after) = self.tasks.split_at_mut(i as usize);
            let (input, after) = after.split_first_mut().expect("in range");
            if input.key.is_empty() {
                continue;
            }
            input.consumers.retain(|&c| {
                let c = c as usize;
                let consumer = if c < before.len() {
                    &before[c]
                } else {
                    &after[c - before.len() - 1]
                };
                !consumer.key.is_empty()
            });
        }
        // Give back trailing free slots.
        while self.tasks.last().is_some_and(|t| t.key.is_empty()) {
            self.tasks.pop();
        }
        let len = self.tasks.len() as u32;
        self.free_slots.retain(|&t| t < len);
        self.free_slots.sort_unstable_by(|a, b| b.cmp(a)); // pop() takes the lowest first
        self.shrink();
        tracing::debug!(
            forgotten,
            tasks = self.tasks.len(),
            "forgot tasks of departed clients"
        );
    }

    /// Gives back the room of tables that emptied (a table at most a quarter full is cut down
    /// to its contents), so memory returns when clients leave.
    fn shrink(&mut self) {
        fn vec<T>(v: &mut Vec<T>) {
            if v.capacity() > 4 * v.len() + 64 {
                v.shrink_to_fit();
            }
        }
        fn map<K: std::hash::Hash + Eq, V, S: std::hash::BuildHasher>(
            m: &mut std::collections::HashMap<K, V, S>,
        ) {
            if m.capacity() > 4 * m.len() + 64 {
                m.shrink_to_fit();
            }
        }
        vec(&mut self.tasks);
        vec(&mut self.free_slots);
        vec(&mut self.forget_candidates);
        if self.keys.capacity() > 4 * self.keys.len() + 64 {
            self.keys.shrink_to(0);
        }
        map(&mut self.extra_runs);
        map(&mut self.deaths);
        map(&mut self.moved);
        map(&mut self.clients);
        map(&mut self.stored);
    }

    /// A free task slot, or a new one.
    pub(crate) fn new_slot(&mut self, task: Task) -> u32 {
        match self.free_slots.pop() {
            Some(t) => {
                self.tasks[t as usize] = task;
                t
            }
            None => {
                let t = u32::try_from(self.tasks.len()).expect("fewer than 2^32 live tasks");
                self.tasks.push(task);
                t
            }
        }
    }
}

impl Task {
    /// An empty slot (its empty key marks it: real keys are never empty).
    pub(crate) fn tombstone() -> Task {
        Task {
            key: std::sync::Arc::from(""),
            fingerprint: Fingerprint::default(),
            function: 0,
            params: None,
            inputs: Box::new([]),
            consumers: Vec::new(),
            live_consumers: 0,
            place: super::StaticPlace::Any,
            req: 0,
            priority: 0,
            retries_left: 0,
            state: State::Released,
            pending: 0,
            waiters: 0,
            holders: Vec::new(),
            size: 0,
            hint: super::NO_HINT,
            run: 0,
            placed_pool: None,
            told_below: 0,
            attempts: 0,
            started: false,
            assigned_seq: 0,
            ready_seq: 0,
            fetch_failures: 0,
            timeout_ms: None,
            durable: None,
            cell: None,
        }
    }
}
