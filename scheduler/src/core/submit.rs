//! Submitting a graph: parse, validate and propagate it (refusing it with the same messages as
//! `drover check`, leaving the state untouched), then merge its tasks by key into the core.
//! A key the scheduler already knows is the same task: held results are reused, running ones are
//! shared, released ones are recomputed, failed ones run again.

use std::sync::Arc;

use drover_graph::{propagate_pools, Graph, Place, Reason};
use drover_protocol::{TaskIdx, TaskStatus, ToClient};

use super::{CellInfo, ClientId, Command, Core, ResourceList, Run, State, StaticPlace, Task};

impl Core {
    pub(crate) fn submit(
        &mut self,
        client: ClientId,
        run: u32,
        graph_json: &str,
        wants: &[String],
    ) {
        let reject = |core: &mut Core, error: String| {
            core.out
                .push(Command::Client(client, ToClient::Rejected { run, error }));
        };
        let graph = match Graph::from_json_str(graph_json) {
            Ok(g) => g,
            Err(e) => return reject(self, e.to_string()),
        };
        let topo = match graph.validate() {
            Ok(t) => t,
            Err(e) => {
                let n = e.errors.len();
                return reject(
                    self,
                    format!(
                        "invalid graph ({n} error{}):\n{e}",
                        if n == 1 { "" } else { "s" }
                    ),
                );
            }
        };
        if let Some(k) = wants.iter().find(|k| graph.id_of(k).is_none()) {
            return reject(self, format!("wanted key {k:?} is not a task of the graph"));
        }
        let prop = propagate_pools(&graph, &topo);
        let run_idx = self.runs.len() as u32;
        self.runs.push(Run {
            client,
            client_run: run,
            ended: false,
            scoped_cells: Vec::new(),
        });

        let mut resource_sets: Vec<Option<ResourceList>> = Vec::new();
        let mut map: Vec<TaskIdx> = vec![0; graph.len()];
        let mut fresh: Vec<TaskIdx> = Vec::new();
        let mut restart: Vec<TaskIdx> = Vec::new();
        let mut already_done: Vec<TaskIdx> = Vec::new();
        let mut cells: Vec<(TaskIdx, drover_graph::TaskId)> = Vec::new();
        for &gid in topo.order() {
            let key = graph.key(gid);
            if let Some(&existing) = self.keys.get(key) {
                if self.tasks[existing as usize].cell.is_some() {
                    // The same once-cell: workers that loaded it keep it.
                    map[gid.index()] = existing;
                    self.extra_runs.entry(existing).or_default().push(run_idx);
                    cells.push((existing, gid));
                    continue;
                }
                match self.tasks[existing as usize].state {
                    State::Failed(_) => {}
                    State::Memory => {
                        map[gid.index()] = existing;
                        self.extra_runs.entry(existing).or_default().push(run_idx);
                        already_done.push(existing);
                        continue;
                    }
                    State::Released => {
                        map[gid.index()] = existing;
                        self.extra_runs.entry(existing).or_default().push(run_idx);
                        restart.push(existing);
                        continue;
                    }
                    _ => {
                        map[gid.index()] = existing;
                        self.extra_runs.entry(existing).or_default().push(run_idx);
                        continue;
                    }
                }
            }
            let rs = graph.resource_set_id(gid) as usize;
            if resource_sets.len() <= rs {
                resource_sets.resize(rs + 1, None);
            }
            let resources = resource_sets[rs]
                .get_or_insert_with(|| {
                    graph
                        .resources(gid)
                        .consumable()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect()
                })
                .clone();
            let place = match graph.place(gid) {
                Place::Pinned(p) => StaticPlace::Pinned(self.intern_pool(graph.pool_name(p))),
                Place::Any => StaticPlace::Any,
                // Where a pooled once-cell it uses loads: as hard as a pin.
                Place::Free if prop.reason(gid) == Reason::OnceCell => StaticPlace::Pinned(
                    self.intern_pool(
                        prop.pool_name(&graph, gid)
                            .expect("once-cell reasons carry a pool"),
                    ),
                ),
                Place::Free => {
                    StaticPlace::Pass(prop.pool_name(&graph, gid).map(|n| self.intern_pool(n)))
                }
            };
            let cell = graph.once_cell(gid).map(|c| CellInfo {
                lifetime: c.lifetime,
                lazy: c.lazy,
                mean_load_us: None,
            });
            let inputs: Box<[TaskIdx]> = graph.inputs(gid).iter().map(|i| map[i.index()]).collect();
            let task = Task {
                key: graph.key_shared(gid).clone(),
                function: self.intern_function(graph.function(gid)),
                params: graph.params(gid).map(Arc::from),
                inputs,
                consumers: Vec::new(),
                place,
                resources,
                priority: graph.priority(gid),
                retries_left: graph.retries(gid),
                pending: 0,
                waiters: 0,
                holders: Vec::new(),
                size: 0,
                run: run_idx,
                placed_pool: None,
                attempts: 0,
                started: false,
                assigned_seq: 0,
                timeout_ms: graph.timeout(gid).map(|d| d.as_millis() as u64),
                state: if cell.is_some() {
                    State::Memory
                } else {
                    State::Waiting
                },
                cell,
            };
            let idx = match self.keys.get(key) {
                Some(&failed) => {
                    let consumers = std::mem::take(&mut self.tasks[failed as usize].consumers);
                    self.tasks[failed as usize] = Task { consumers, ..task };
                    failed
                }
                None => {
                    let key = task.key.clone();
                    let idx = self.new_slot(task);
                    self.keys.insert(key, idx);
                    idx
                }
            };
            map[gid.index()] = idx;
            if self.tasks[idx as usize].cell.is_some() {
                cells.push((idx, gid));
                continue;
            }
            fresh.push(idx);
        }
        // Wire consumers and count what each new task waits for.
        for &t in &fresh {
            let inputs = self.tasks[t as usize].inputs.clone();
            let mut pending = 0;
            for &i in inputs.iter() {
                let input = &mut self.tasks[i as usize];
                input.consumers.push(t);
                input.waiters += 1;
                if input.state != State::Memory {
                    pending += 1;
                }
            }
            self.tasks[t as usize].pending = pending;
        }
        for k in wants {
            let t = map[graph.id_of(k).expect("checked above").index()];
            if self.clients.entry(client).or_default().insert(t) {
                self.tasks[t as usize].waiters += 1;
            }
        }
        self.out.push(Command::Client(
            client,
            ToClient::Accepted {
                run,
                tasks: (graph.len() - cells.len()) as u32,
            },
        ));
        for &(t, gid) in &cells {
            if self.tasks[t as usize]
                .cell
                .as_ref()
                .is_some_and(|c| c.lifetime == drover_graph::Lifetime::Run)
            {
                self.runs[run_idx as usize].scoped_cells.push(t);
            }
            let users = topo.consumers(gid).len();
            self.load_eagerly(t, users);
        }
        for t in already_done {
            self.emit_to_run(t, run_idx);
        }
        for t in restart {
            if self.tasks[t as usize].state == State::Released {
                self.tasks[t as usize].state = State::Waiting;
                self.make_ready_or_recompute_pub(t);
            }
        }
        for &t in &fresh {
            if self.tasks[t as usize].pending == 0 && self.tasks[t as usize].state == State::Waiting
            {
                self.push_ready(t);
            }
        }
    }

    fn intern_function(&mut self, name: &str) -> Arc<str> {
        if let Some((k, _)) = self.functions.get_key_value(name) {
            return k.clone();
        }
        let k: Arc<str> = Arc::from(name);
        self.functions.insert(k.clone(), ());
        k
    }

    /// Tells one run that a task it includes is already done.
    fn emit_to_run(&mut self, t: TaskIdx, run_idx: u32) {
        let task = &self.tasks[t as usize];
        let run = &self.runs[run_idx as usize];
        let holder = task.holders.first().and_then(|w| self.workers.get(w));
        let event = drover_protocol::TaskEvent {
            run: run.client_run,
            key: task.key.to_string(),
            status: TaskStatus::Finished,
            worker: holder.map(|w| w.name.to_string()),
            pool: task.placed_pool.map(|p| self.pools[p as usize].to_string()),
            output_bytes: task.size,
            duration_us: 0,
            moved_bytes: 0,
            cross_pool_bytes: 0,
            error: None,
            attempts: task.attempts,
            load: false,
        };
        self.out
            .push(Command::Client(run.client, ToClient::Events(vec![event])));
    }
}
