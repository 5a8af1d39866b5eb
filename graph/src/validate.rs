//! Validation: every error the graph recorded while being built, unknown inputs, and cycles
//! (named); on success, a [`Topology`]: a topological order and the consumer lists, in linear
//! time and memory.

use std::collections::VecDeque;

use crate::error::{GraphError, InvalidGraph};
use crate::prefetch::{prefetch, AHEAD};
use crate::{Graph, Place, TaskId};

/// The shape of a valid graph: a topological order (inputs before consumers) and, per task, the
/// tasks that consume it, in compressed form.
#[derive(Debug, Clone)]
pub struct Topology {
    order: Vec<TaskId>,
    consumer_start: Vec<u32>,
    consumers: Vec<TaskId>,
}

impl Topology {
    /// All tasks, each after all of its inputs: in id order when every task's inputs have
    /// lower ids (as in any graph built through the Rust API, or a file listing inputs
    /// first), else Kahn's order, ties broken by task id. Deterministic either way. The id
    /// order keeps the passes over a large graph close in memory: neighbours in it are
    /// neighbours in the tables.
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
        self.order
            .iter()
            .copied()
            .filter(|&t| self.consumers(t).is_empty())
    }
}

impl Graph {
    /// Checks the graph and returns its [`Topology`], or every problem found, each naming the
    /// task keys involved: errors recorded while building (duplicate keys, malformed pools and
    /// resources, ...), unknown inputs, and a cycle with the keys on it.
    pub fn validate(&self) -> Result<Topology, InvalidGraph> {
        let mut errors = self.errors.clone();
        for id in self.task_ids() {
            // The inputs of a task a few ahead: their records are read at random.
            if id.index() + AHEAD < self.len() {
                for &i in self.inputs(TaskId(id.0 + AHEAD as u32)) {
                    prefetch(&self.tasks[i.index()]);
                }
            }
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
            self.check_once_cells(id, &mut errors);
        }
        // A cycle is found whatever else is wrong (with every input defined), so that all the
        // errors come at once.
        let structural = errors
            .iter()
            .any(|e| matches!(e, GraphError::UnknownInput { .. }));
        if structural {
            return Err(InvalidGraph { errors });
        }
        let topo = self.topology();
        if topo.order.len() < self.len() {
            errors.push(GraphError::Cycle {
                keys: self.find_cycle(&topo),
            });
        }
        if !errors.is_empty() {
            return Err(InvalidGraph { errors });
        }
        Ok(topo)
    }

    /// A once-cell takes no inputs and no resources; a task using pooled once-cells must be
    /// able to run in their pool.
    fn check_once_cells(&self, id: TaskId, errors: &mut Vec<GraphError>) {
        let key = || self.key(id).to_owned();
        if self.is_once_cell(id) {
            if !self.inputs(id).is_empty() {
                errors.push(GraphError::OnceCellWithInputs { task: key() });
            }
            if !self.resources(id).is_empty() {
                errors.push(GraphError::OnceCellWithResources { task: key() });
            }
        }
        let mut first: Option<(TaskId, crate::PoolId)> = None;
        for &input in self.inputs(id) {
            let Place::Pinned(p) = self.place(input) else {
                continue;
            };
            if !self.is_defined(input) || !self.is_once_cell(input) {
                continue;
            }
            let conflict = match (first, self.place(id)) {
                (Some((other, q)), _) if q != p => Some(format!(
                    "it also uses once-cell {:?} of pool {:?}",
                    self.key(other),
                    self.pool_name(q)
                )),
                (_, Place::Pinned(q)) if q != p => {
                    Some(format!("it is pinned to pool {:?}", self.pool_name(q)))
                }
                (_, Place::Any) => Some("it is marked any-pool".to_owned()),
                _ => None,
            };
            if let Some(conflict) = conflict {
                errors.push(GraphError::OnceCellPoolConflict {
                    task: key(),
                    cell: self.key(input).to_owned(),
                    cell_pool: self.pool_name(p).to_owned(),
                    conflict,
                });
                return;
            }
            first.get_or_insert((input, p));
        }
    }

    /// Consumer lists and Kahn's algorithm. With a cycle, the order is short: it holds exactly
    /// the tasks not on or behind a cycle.
    fn topology(&self) -> Topology {
        let n = self.len();
        let mut consumer_start = vec![0u32; n + 1];
        let arena = &self.input_arena;
        for (k, &input) in arena.iter().enumerate() {
            if let Some(ahead) = arena.get(k + 4 * AHEAD) {
                prefetch(&consumer_start[ahead.index() + 1]);
            }
            consumer_start[input.index() + 1] += 1;
        }
        for i in 0..n {
            consumer_start[i + 1] += consumer_start[i];
        }
        let mut fill = consumer_start.clone();
        let mut consumers = vec![TaskId(0); self.input_arena.len()];
        // Whether every input comes before its consumer in id order.
        let mut inputs_first = true;
        for id in self.task_ids() {
            if id.index() + AHEAD < n {
                for &i in self.inputs(TaskId(id.0 + AHEAD as u32)) {
                    prefetch(&fill[i.index()]);
                }
            }
            for &input in self.inputs(id) {
                inputs_first &= input < id;
                let slot = &mut fill[input.index()];
                consumers[*slot as usize] = id;
                *slot += 1;
            }
        }
        if inputs_first {
            return Topology {
                order: self.task_ids().collect(),
                consumer_start,
                consumers,
            };
        }
        let mut pending: Vec<u32> = self.tasks.iter().map(|t| t.inputs_len).collect();
        let mut queue: VecDeque<TaskId> = self
            .task_ids()
            .filter(|t| pending[t.index()] == 0)
            .collect();
        let mut order = Vec::with_capacity(n);
        let topo_consumers = |t: TaskId| {
            &consumers[consumer_start[t.index()] as usize..consumer_start[t.index() + 1] as usize]
        };
        while let Some(t) = queue.pop_front() {
            if let Some(&ahead) = queue.get(AHEAD) {
                for &c in topo_consumers(ahead) {
                    prefetch(&pending[c.index()]);
                }
            }
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

#[cfg(test)]
mod tests {
    use crate::{Graph, GraphError, Place};

    fn errors(g: &Graph) -> Vec<String> {
        g.validate()
            .unwrap_err()
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn duplicate_keys_are_named() {
        let mut g = Graph::new();
        g.task("f", &()).key("a").add();
        g.task("g", &()).key("a").add();
        assert_eq!(errors(&g), ["duplicate key \"a\": two tasks have this key"]);
    }

    #[test]
    fn unknown_inputs_are_named() {
        let mut g = Graph::new();
        g.task("f", &()).key("b").input_key("nope").add();
        assert_eq!(
            errors(&g),
            ["task \"b\" has unknown input \"nope\": no task has that key"]
        );
    }

    #[test]
    fn inputs_may_be_added_later() {
        let mut g = Graph::new();
        let b = g.task("f", &()).key("b").input_key("a").add();
        let a = g.task("f", &()).key("a").add();
        let topo = g.validate().unwrap();
        assert_eq!(topo.order(), [a.id(), b.id()]);
        assert_eq!(topo.consumers(a.id()), [b.id()]);
        assert_eq!(topo.sinks().collect::<Vec<_>>(), [b.id()]);
    }

    #[test]
    fn the_order_is_the_id_order_when_inputs_come_first() {
        // A diamond whose breadth-first order (s, x, y, z, d) is not its id order.
        let mut g = Graph::new();
        let s = g.task("f", &()).key("s").add();
        let x = g.task("f", &()).key("x").input(s).add();
        let z = g.task("f", &()).key("z").input(x).add();
        let y = g.task("f", &()).key("y").input(s).add();
        let d = g.task("f", &()).key("d").inputs([z, y]).add();
        let topo = g.validate().unwrap();
        assert_eq!(topo.order(), [s.id(), x.id(), z.id(), y.id(), d.id()]);
        // One input defined after its consumer: Kahn's order, ties by id.
        let mut g = Graph::new();
        let late = g.task("f", &()).key("late").input_key("s").add();
        let x = g.task("f", &()).key("x").input_key("s").add();
        let s = g.task("f", &()).key("s").add();
        let topo = g.validate().unwrap();
        assert_eq!(topo.order(), [s.id(), late.id(), x.id()]);
    }

    #[test]
    fn cycles_name_their_keys_in_dependency_order() {
        let mut g = Graph::new();
        g.task("f", &()).key("root").add();
        g.task("f", &())
            .key("a")
            .input_key("c")
            .input_key("root")
            .add();
        g.task("f", &()).key("b").input_key("a").add();
        g.task("f", &()).key("c").input_key("b").add();
        g.task("f", &()).key("after").input_key("c").add();
        let errs = g.validate().unwrap_err().errors;
        let GraphError::Cycle { keys } = &errs[0] else {
            panic!("expected a cycle, got {errs:?}");
        };
        assert_eq!(keys.first(), keys.last());
        assert_eq!(keys.len(), 4);
        // Each key is an input of the next.
        for w in keys.windows(2) {
            let consumer = g.id_of(&w[1]).unwrap();
            assert!(
                g.inputs(consumer).contains(&g.id_of(&w[0]).unwrap()),
                "{keys:?}"
            );
        }
        assert!(errs[0].to_string().starts_with("cycle: "));
    }

    #[test]
    fn self_loop_is_a_cycle() {
        let mut g = Graph::new();
        g.task("f", &()).key("me").input_key("me").add();
        assert_eq!(errors(&g), ["cycle: me -> me"]);
    }

    #[test]
    fn bad_pools_and_resources_are_reported_with_the_task() {
        let mut g = Graph::new();
        g.task("f", &()).key("p1").pool("").add();
        g.task("f", &()).key("p2").pool("a b").add();
        g.task("f", &()).key("r1").resources("gpu=-1").add();
        g.task("f", &()).key("r2").resources("gpu=lots").add();
        g.task("f", &()).key("r3").resources("gpu").add();
        g.task("f", &()).key("r4").resources("pool-A=1").add();
        g.pool("bad pool", |g| g.task("f", &()).key("s").add());
        let e = errors(&g);
        assert_eq!(e[0], "task \"p1\": pool name is empty");
        assert!(
            e[1].starts_with("task \"p2\": pool name \"a b\" contains ' '"),
            "{}",
            e[1]
        );
        assert!(e[2].contains("task \"r1\" has bad resources") && e[2].contains("not negative"));
        assert!(e[3].contains("\"r2\"") && e[3].contains("\"lots\", which is not a number"));
        assert!(e[4].contains("\"r3\"") && e[4].contains("part \"gpu\" is not NAME=AMOUNT"));
        assert!(
            e[5].contains("\"r4\" lists resource \"pool-A\": pin the task with \"pool\": \"A\"")
        );
        assert!(e[6].starts_with("pool scope \"bad pool\""), "{}", e[6]);
        assert_eq!(e.len(), 7);
    }

    #[test]
    fn empty_key_and_function() {
        let mut g = Graph::new();
        g.task("", &()).key("k").add();
        g.task("f", &()).key("").add();
        assert_eq!(
            errors(&g),
            [
                "task \"k\" has an empty function name",
                "a task has an empty key (function \"f\")"
            ]
        );
    }

    #[test]
    fn handles_from_another_graph_are_refused() {
        let mut other = Graph::new();
        let h = other.task("f", &()).add();
        let mut g = Graph::new();
        g.task("f", &()).key("x").input(h).add();
        assert_eq!(
            errors(&g),
            ["task \"x\" uses a handle from another graph as an input"]
        );
    }

    #[test]
    fn unserialisable_params_are_reported() {
        let mut g = Graph::new();
        let mut bad = std::collections::HashMap::new();
        bad.insert((1, 2), 3);
        g.task("f", &bad).key("k").add();
        assert!(errors(&g)[0].starts_with("task \"k\": params cannot be serialised"));
    }

    #[test]
    fn derived_keys_are_stable_and_identical_tasks_merge() {
        let build = || {
            let mut g = Graph::new();
            let a = g.task("load", &serde_json::json!({"n": 3})).add();
            let b = g.task("double", &()).input(a).add();
            let b2 = g.task("double", &()).input(a).add();
            (g, a, b, b2)
        };
        let (g1, a1, b1, b1_again) = build();
        let (g2, a2, _, _) = build();
        assert_eq!(g1.key(a1.id()), g2.key(a2.id()));
        assert!(g1.key(a1.id()).starts_with("load-"));
        assert_eq!(b1, b1_again);
        assert_eq!(g1.defined_len(), 2);
        g1.validate().unwrap();
        // Same derived key with different annotations is a conflict, not a silent merge.
        let mut g = Graph::new();
        g.task("load", &()).add();
        g.task("load", &()).retries(2).add();
        assert!(errors(&g)[0].starts_with("duplicate key \"load-"));
    }

    #[test]
    fn annotations_compose_across_scopes_and_task_settings() {
        use drover_annotations::Annotations;
        let mut g = Graph::new();
        let t = g.pool("A", |g| {
            g.annotate(Annotations::new().retries(3).priority(2), |g| {
                g.task("f", &()).resources("gpu=1").size_hint(5).add()
            })
        });
        let inner = g.pool("A", |g| {
            g.pool("B", |g| g.task("f", &()).key("inner").add())
        });
        let any = g.pool("A", |g| g.any_pool(|g| g.task("f", &()).key("any").add()));
        let own = g.any_pool(|g| g.task("f", &()).key("own").pool("C").add());
        let id = t.id();
        assert_eq!(g.place(id), Place::Pinned(g.pool_id("A").unwrap()));
        assert_eq!(
            (g.retries(id), g.priority(id), g.size_hint(id)),
            (3, 2, Some(5))
        );
        assert_eq!(g.resources(id).to_string(), "gpu=1");
        assert_eq!(g.place(inner.id()), Place::Pinned(g.pool_id("B").unwrap()));
        assert_eq!(g.place(any.id()), Place::Any);
        assert_eq!(g.place(own.id()), Place::Pinned(g.pool_id("C").unwrap()));
        g.validate().unwrap();
    }

    #[test]
    fn empty_graph_is_valid() {
        let g = Graph::new();
        assert!(g.validate().unwrap().order().is_empty());
    }
}

#[cfg(test)]
mod once_cell_tests {
    use crate::{propagate_pools, Graph, Reason};

    #[test]
    fn once_cells_take_no_inputs_or_resources_and_users_must_fit_their_pool() {
        let g = Graph::from_json_str(
            r#"{"tasks": [
                {"key": "x", "function": "noop"},
                {"key": "m", "function": "load", "inputs": ["x"], "resources": {"gpu": 1}, "once_cell": {}},
                {"key": "a", "function": "load", "pool": "A", "once_cell": {}},
                {"key": "b", "function": "load", "pool": "B", "once_cell": {}},
                {"key": "both", "function": "f", "inputs": ["a", "b"]},
                {"key": "pinned", "function": "f", "pool": "B", "inputs": ["a"]},
                {"key": "any", "function": "f", "any_pool": true, "inputs": ["a"]}
            ]}"#,
        )
        .unwrap();
        let text = g.validate().unwrap_err().to_string();
        for needle in [
            "once-cell \"m\" has inputs",
            "once-cell \"m\" asks for resources",
            "task \"both\" uses once-cell \"b\", which loads only in pool \"B\", but it also uses once-cell \"a\" of pool \"A\"",
            "task \"pinned\" uses once-cell \"a\", which loads only in pool \"A\", but it is pinned to pool \"B\"",
            "task \"any\" uses once-cell \"a\", which loads only in pool \"A\", but it is marked any-pool",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn users_of_a_pooled_cell_go_to_its_pool_and_cells_weigh_nothing() {
        let g = Graph::from_json_str(
            r#"{"tasks": [
                {"key": "big", "function": "noop", "pool": "B", "size_hint": 1000000},
                {"key": "m", "function": "load", "pool": "A", "once_cell": {}},
                {"key": "free_cell", "function": "load", "once_cell": {"lazy": true}},
                {"key": "t", "function": "f", "inputs": ["big", "m"]},
                {"key": "u", "function": "f", "inputs": ["free_cell"]}
            ]}"#,
        )
        .unwrap();
        let topo = g.validate().unwrap();
        let p = propagate_pools(&g, &topo);
        let t = g.id_of("t").unwrap();
        assert_eq!(
            (p.pool_name(&g, t), p.reason(t)),
            (Some("A"), Reason::OnceCell)
        );
        // A cell without a pool is not pulled anywhere, and pulls nothing.
        let (fc, u) = (g.id_of("free_cell").unwrap(), g.id_of("u").unwrap());
        assert_eq!(p.pool(fc), None);
        assert_eq!(p.pool(u), None);
        // Only `big` crosses (into A); the cell edges cost nothing.
        assert_eq!(p.estimate.full, 1000000);
        // The file form round-trips the once-cell settings.
        let again = Graph::from_file(&g.to_file());
        assert!(again.once_cell(fc).unwrap().lazy);
    }
}
