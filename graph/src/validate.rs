//! Validation: every error the graph recorded while being built, unknown inputs, and cycles
//! (named); on success, a [`Topology`]: a topological order and the consumer lists, in linear
//! time and memory.

use std::collections::VecDeque;

use crate::error::{GraphError, InvalidGraph};
use crate::{Graph, TaskId};

/// The shape of a valid graph: a topological order (inputs before consumers) and, per task, the
/// tasks that consume it, in compressed form.
#[derive(Debug, Clone)]
pub struct Topology {
    order: Vec<TaskId>,
    consumer_start: Vec<u32>,
    consumers: Vec<TaskId>,
}

impl Topology {
    /// All tasks, each after all of its inputs. Ties are broken by task id, so the order is
    /// deterministic.
    pub fn order(&self) -> &[TaskId] {
        &self.order
    }

    /// The tasks that list `id` among their inputs, once per mention, in id order.
    #[inline]
    pub fn consumers(&self, id: TaskId) -> &[TaskId] {
        let i = id.index();
        &self.consumers[self.consumer_start[i] as usize..self.consumer_start[i + 1] as usize]
    }

    /// Tasks nothing consumes: the graph's outputs.
    pub fn sinks(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.order.iter().copied().filter(|&t| self.consumers(t).is_empty())
    }
}

impl Graph {
    /// Checks the graph and returns its [`Topology`], or every problem found, each naming the
    /// task keys involved: errors recorded while building (duplicate keys, malformed pools and
    /// resources, ...), unknown inputs, and a cycle with the keys on it.
    pub fn validate(&self) -> Result<Topology, InvalidGraph> {
        let mut errors = self.errors.clone();
        for id in self.task_ids() {
            if !self.is_defined(id) {
                continue;
            }
            for &input in self.inputs(id) {
                if !self.is_defined(input) {
                    errors.push(GraphError::UnknownInput {
                        task: self.key(id).to_owned(),
                        input: self.key(input).to_owned(),
                    });
                }
            }
        }
        if !errors.is_empty() {
            return Err(InvalidGraph { errors });
        }
        let topo = self.topology();
        if topo.order.len() < self.len() {
            return Err(GraphError::Cycle {
                keys: self.find_cycle(&topo),
            }
            .into());
        }
        Ok(topo)
    }

    /// Consumer lists and Kahn's algorithm. With a cycle, the order is short: it holds exactly
    /// the tasks not on or behind a cycle.
    fn topology(&self) -> Topology {
        let n = self.len();
        let mut consumer_start = vec![0u32; n + 1];
        for &input in &self.input_arena {
            consumer_start[input.index() + 1] += 1;
        }
        for i in 0..n {
            consumer_start[i + 1] += consumer_start[i];
        }
        let mut fill = consumer_start.clone();
        let mut consumers = vec![TaskId(0); self.input_arena.len()];
        for id in self.task_ids() {
            for &input in self.inputs(id) {
                let slot = &mut fill[input.index()];
                consumers[*slot as usize] = id;
                *slot += 1;
            }
        }
        let mut pending: Vec<u32> = self.tasks.iter().map(|t| t.inputs_len).collect();
        let mut queue: VecDeque<TaskId> = self.task_ids().filter(|t| pending[t.index()] == 0).collect();
        let mut order = Vec::with_capacity(n);
        let topo_consumers = |t: TaskId| {
            &consumers[consumer_start[t.index()] as usize..consumer_start[t.index() + 1] as usize]
        };
        while let Some(t) = queue.pop_front() {
            order.push(t);
            for &c in topo_consumers(t) {
                let p = &mut pending[c.index()];
                *p -= 1;
                if *p == 0 {
                    queue.push_back(c);
                }
            }
        }
        Topology {
            order,
            consumer_start,
            consumers,
        }
    }

    /// Finds one cycle among the tasks Kahn's algorithm could not order. Each such task has an
    /// input that is also unordered, so walking inputs from any of them must revisit a task; the
    /// walk from there on is a cycle. Linear time.
    fn find_cycle(&self, topo: &Topology) -> Vec<String> {
        let mut ordered = vec![false; self.len()];
        for &t in &topo.order {
            ordered[t.index()] = true;
        }
        let start = self
            .task_ids()
            .find(|t| !ordered[t.index()])
            .expect("a short order leaves a task unordered");
        let mut step_of = vec![u32::MAX; self.len()];
        let mut path = Vec::new();
        let mut t = start;
        while step_of[t.index()] == u32::MAX {
            step_of[t.index()] = path.len() as u32;
            path.push(t);
            t = *self
                .inputs(t)
                .iter()
                .find(|i| !ordered[i.index()])
                .expect("an unordered task has an unordered input");
        }
        // path[step_of[t]..] walks from t through inputs back to t; reverse it so that each key
        // is an input of the next, and close the loop.
        let mut cycle: Vec<String> = path[step_of[t.index()] as usize..]
            .iter()
            .rev()
            .map(|&i| self.key(i).to_owned())
            .collect();
        cycle.insert(0, self.key(t).to_owned());
        cycle
    }
}
