//! Once-cells are never forgotten (they stay "in memory": a worker maps the cell's id to its
//! object, so the id must not come back as another task's); they are a few hundred bytes each.
//!
//! Forgetting: when clients leave, the tasks only their runs referred to, and whose results are
//! gone (released, cancelled or failed), are dropped from the core: keys unmapped, slots freed for
//! reuse, trailing free slots truncated. So the scheduler's memory returns to where it was.
//!
//! Safe because graphs are closed under inputs: every consumer of a task belongs to one of that
//! task's runs, so when all of a task's runs are gone, so are all of its consumers' runs, and no
//! live task can still name it as an input. (The other way round is possible: a forgotten task's
//! input may be shared with a client still here; it stops listing the forgotten consumer.) Ids
//! are reused only after the task's result was freed on every worker (the `Free` goes out first
//! on the same ordered stream).

use super::{Core, State, Task};

impl Core {
    /// Drops every task that no connected client's run refers to and that holds no result.
    pub(crate) fn forget_departed(&mut self) {
        let mut forgotten = 0usize;
        // Forgotten slots, and the inputs that must stop listing them: pruned once each at the
        // end (an input with many consumers is not scanned once per consumer).
        let mut gone: Vec<bool> = Vec::new();
        let mut touched: Vec<u32> = Vec::new();
        for t in 0..self.tasks.len() {
            let task = &self.tasks[t];
            if task.key.is_empty()
                || task.waiters > 0
                || !matches!(task.state, State::Idle | State::Released | State::Failed(_))
            {
                continue;
            }
            let t = t as u32;
            if self.has_connected_run(t) {
                continue;
            }
            // A redefined key names another task now: only unmap it if it names this one.
            let key = self.tasks[t as usize].key.clone();
            if self.keys.get(&key) == Some(&t) {
                self.keys.remove(&key);
            }
            // Its inputs may live on (shared with a client still here): they stop listing it.
            let inputs = std::mem::take(&mut self.tasks[t as usize].inputs);
            touched.extend_from_slice(&inputs);
            if gone.is_empty() {
                gone = vec![false; self.tasks.len()];
            }
            gone[t as usize] = true;
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
            if !gone[i as usize] {
                self.tasks[i as usize]
                    .consumers
                    .retain(|&c| !gone[c as usize]);
            }
        }
        // Ready queues drop entries of tasks no longer ready (cancelled and now forgotten ones
        // among them) before any slot is reused: an old entry must never schedule a new task.
        let tasks = &self.tasks;
        for q in self.ready.values_mut() {
            q.retain(|e| {
                let t = &tasks[e.task as usize];
                !t.key.is_empty() && t.state == State::Ready && t.ready_seq == e.order.0
            });
        }
        self.ready.retain(|_, q| !q.is_empty());
        // Give back trailing free slots, and memory the maps no longer need.
        while self.tasks.last().is_some_and(|t| t.key.is_empty()) {
            self.tasks.pop();
        }
        let len = self.tasks.len() as u32;
        self.free_slots.retain(|&t| t < len);
        self.free_slots.sort_unstable_by(|a, b| b.cmp(a)); // pop() takes the lowest first
        self.tasks.shrink_to(self.tasks.len().max(1024));
        self.keys.shrink_to(self.keys.len().max(1024));
        self.extra_runs.shrink_to_fit();
        tracing::debug!(
            forgotten,
            tasks = self.tasks.len(),
            "forgot tasks of departed clients"
        );
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
            fingerprint: 0,
            function: 0,
            params: None,
            inputs: Box::new([]),
            consumers: Vec::new(),
            place: super::StaticPlace::Any,
            req: 0,
            priority: 0,
            retries_left: 0,
            state: State::Released,
            pending: 0,
            waiters: 0,
            holders: Vec::new(),
            size: 0,
            run: 0,
            placed_pool: None,
            attempts: 0,
            started: false,
            assigned_seq: 0,
            ready_seq: 0,
            fetch_failures: 0,
            timeout_ms: None,
            cell: None,
        }
    }
}
