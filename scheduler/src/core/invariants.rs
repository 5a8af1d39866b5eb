//! The core's invariants, checked from scratch: what unit tests and the simulation assert after
//! every event. Linear in tasks, edges and workers, so it is for tests, not the hot path.

use std::collections::HashMap;

use drover_protocol::TaskIdx;

use super::{Core, Restriction, State};

impl Core {
    /// Recomputes every count and cross-reference of the state and says where it disagrees:
    /// waiters, pending counts, queue entries, holders against workers, assignments against
    /// workers, keys against tasks, and that nothing waits for a result nobody holds or will
    /// make. `Ok` when all hold.
    pub fn check(&self) -> Result<(), String> {
        let n = self.tasks.len();
        let live = |t: usize| !self.tasks[t].key.is_empty();
        let mut waiters = vec![0u32; n];
        for wants in self.clients.values() {
            for &t in wants {
                waiters[t as usize] += 1;
            }
        }
        for w in self.workers.values() {
            for (_, ids) in &w.replicating {
                for &t in ids {
                    waiters[t as usize] += 1;
                }
            }
        }
        // Edges both ways: each input occurrence is listed once among the input's consumers.
        let mut edges: HashMap<(TaskIdx, TaskIdx), i64> = HashMap::new();
        for (t, task) in self.tasks.iter().enumerate() {
            if !live(t) {
                continue;
            }
            for &i in task.inputs.iter() {
                if !live(i as usize) {
                    return Err(format!("{:?} has a forgotten input slot {i}", task.key));
                }
                *edges.entry((i, t as TaskIdx)).or_default() += 1;
                if task.state.is_pending() {
                    waiters[i as usize] += 1;
                }
            }
            for &c in &task.consumers {
                *edges.entry((t as TaskIdx, c)).or_default() -= 1;
            }
        }
        if let Some(((i, c), d)) = edges.iter().find(|(_, d)| **d != 0) {
            return Err(format!(
                "edge {:?} -> {:?} is listed {} time(s) more as an input than as a consumer",
                self.tasks[*i as usize].key, self.tasks[*c as usize].key, d
            ));
        }
        let mut queued: HashMap<TaskIdx, u32> = HashMap::new();
        for ((r, req), q) in &self.ready {
            for e in q.iter() {
                if self.is_live_entry(e) {
                    let task = &self.tasks[e.task as usize];
                    if task.req != *req
                        || matches!(task.place, super::StaticPlace::Pinned(p) if *r != Restriction::Pool(p))
                    {
                        return Err(format!("{:?} is queued under another class", task.key));
                    }
                    *queued.entry(e.task).or_default() += 1;
                }
            }
        }
        for (t, task) in self.tasks.iter().enumerate() {
            if !live(t) {
                continue;
            }
            let key = &task.key;
            let ti = t as TaskIdx;
            if task.waiters != waiters[t] {
                return Err(format!(
                    "{key:?} ({:?}) counts {} waiters; there are {}",
                    task.state, task.waiters, waiters[t]
                ));
            }
            if task.live_consumers as usize != task.consumers.len() {
                return Err(format!(
                    "{key:?} counts {} live consumers; it lists {}",
                    task.live_consumers,
                    task.consumers.len()
                ));
            }
            if self.stored.contains_key(&ti) && task.state != State::Memory {
                return Err(format!(
                    "{key:?} is {:?} but the core still stores its output",
                    task.state
                ));
            }
            let inputs = || task.inputs.iter().map(|&i| &self.tasks[i as usize]);
            let alive = task.waiters > 0 || self.has_connected_run(ti);
            match &task.state {
                State::Waiting => {
                    let missing = inputs().filter(|i| i.state != State::Memory).count() as u32;
                    if task.pending != missing || missing == 0 {
                        return Err(format!(
                            "{key:?} waits for {} inputs; {missing} are not in memory",
                            task.pending
                        ));
                    }
                    if let Some(i) =
                        inputs().find(|i| !i.state.is_pending() && i.state != State::Memory)
                    {
                        return Err(format!(
                            "{key:?} waits for {:?}, which is {:?}: nobody holds or will make it",
                            i.key, i.state
                        ));
                    }
                    if !alive {
                        return Err(format!("{key:?} waits though nobody wants it"));
                    }
                }
                State::Ready => {
                    if let Some(i) = inputs().find(|i| i.state != State::Memory) {
                        return Err(format!("{key:?} is ready but {:?} is {:?}", i.key, i.state));
                    }
                    if queued.get(&ti) != Some(&1) {
                        return Err(format!("{key:?} is ready but not queued once"));
                    }
                    if !alive {
                        return Err(format!("{key:?} is queued though nobody wants it"));
                    }
                }
                State::Assigned(w) => {
                    let Some(worker) = self.workers.get(w) else {
                        return Err(format!("{key:?} is assigned to worker {w}, which is gone"));
                    };
                    if !worker.assigned.contains(&ti) {
                        return Err(format!(
                            "{key:?} is assigned to {w}, which does not list it"
                        ));
                    }
                    if let Some(i) =
                        inputs().find(|i| matches!(i.state, State::Idle | State::Released))
                    {
                        return Err(format!(
                            "{key:?} runs on {w} but its input {:?} is {:?}",
                            i.key, i.state
                        ));
                    }
                }
                State::Memory if task.cell.is_none() => {
                    if task.holders.is_empty() && !self.stored.contains_key(&ti) {
                        return Err(format!("{key:?} is in memory with no holder"));
                    }
                    if task.waiters == 0 {
                        return Err(format!("{key:?} is held though nothing needs it"));
                    }
                    for (k, h) in task.holders.iter().enumerate() {
                        if task.holders[..k].contains(h) {
                            return Err(format!("{key:?} lists holder {h} twice"));
                        }
                        if !self.workers.get(h).is_some_and(|w| w.has.contains(&ti)) {
                            return Err(format!(
                                "{key:?} is held by {h}, which is gone or does not list it"
                            ));
                        }
                    }
                }
                State::Memory => {}
                State::Idle | State::Released if task.waiters > 0 => {
                    return Err(format!(
                        "{key:?} is {:?} though {} waiter(s) need it",
                        task.state, task.waiters
                    ));
                }
                State::Idle | State::Released | State::Failed(_) => {
                    if task.cell.is_none() && !task.holders.is_empty() {
                        return Err(format!(
                            "{key:?} is {:?} but held by {:?}",
                            task.state, task.holders
                        ));
                    }
                }
            }
        }
        self.check_preassigned()?;
        for t in self.keys.slots() {
            let Some(task) = self.tasks.get(t as usize) else {
                return Err(format!("the key index names slot {t}, past the tasks"));
            };
            if task.key.is_empty() {
                return Err(format!("the key index names slot {t}, a forgotten task"));
            }
            if self.slot_of(&task.key) != Some(t) {
                return Err(format!("key {:?} of slot {t} is not found there", task.key));
            }
        }
        for (&id, w) in &self.workers {
            for &t in &w.has {
                let task = &self.tasks[t as usize];
                if task.state != State::Memory || !task.holders.contains(&id) {
                    return Err(format!(
                        "worker {id} lists {:?} ({:?}) as held; the task does not name it",
                        task.key, task.state
                    ));
                }
            }
            for &t in &w.assigned {
                if self.tasks[t as usize].state != State::Assigned(id) {
                    return Err(format!(
                        "worker {id} lists {:?} as assigned; it is {:?}",
                        self.tasks[t as usize].key, self.tasks[t as usize].state
                    ));
                }
            }
            if w.inflight as usize != w.assigned.len() {
                return Err(format!(
                    "worker {id} counts {} tasks in flight; {} are assigned",
                    w.inflight,
                    w.assigned.len()
                ));
            }
        }
        Ok(())
    }
}
