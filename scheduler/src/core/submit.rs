//! Submitting a graph: parse, validate and propagate it (refusing it with the same messages as
//! `drover check`, leaving the state untouched), then merge its tasks by key into the core.
//!
//! A key means one computation: each task carries the fingerprint of its definition (function,
//! params, once-cell spec, and its inputs' keys and fingerprints, so everything upstream).
//!
//! * A key the core knows with the same fingerprint is the same task: a held result is reused
//!   (reported done at once), a pending one is shared, a failed one runs again, a freed one is
//!   computed again only if something of this run needs it (else it is reported done: it was
//!   done, and nothing here needs its bytes).
//! * A key the core knows with another fingerprint is refused while a live run (a connected
//!   client's run that has not ended) includes the old task or a connected client wants its
//!   result, naming the key and both definitions; otherwise the old task is detached from its
//!   key (it stays only as the lineage of results still held) and the new one is computed.

use std::sync::Arc;

use drover_graph::{fingerprints, propagate_pools, Graph, Place, Reason, TaskId};
use drover_protocol::{TaskIdx, TaskStatus, ToClient};

use super::{CellInfo, ClientId, Command, Core, Req, Run, State, StaticPlace, Task};

/// How a task of a submitted graph maps onto the core.
enum Merge {
    /// The same task is known: this slot.
    Known(TaskIdx),
    /// The same definition failed before: run it again in this slot.
    Retry(TaskIdx),
    /// A new task (or a new definition of a key whose old one is detached).
    New,
}

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
        let prints = fingerprints(&graph, &topo);
        // Decide every task before changing anything: a conflict refuses the whole graph.
        let mut merges: Vec<Merge> = Vec::with_capacity(graph.len());
        let mut conflicts: Vec<String> = Vec::new();
        for gid in graph.task_ids() {
            let merge = match self.keys.get(graph.key(gid)) {
                None => Merge::New,
                Some(&old) => {
                    let task = &self.tasks[old as usize];
                    if task.fingerprint != prints[gid.index()] {
                        if self.in_live_use(old) {
                            conflicts.push(self.conflict_text(old, &graph, gid));
                        }
                        Merge::New
                    } else if matches!(task.state, State::Failed(_)) {
                        Merge::Retry(old)
                    } else {
                        Merge::Known(old)
                    }
                }
            };
            merges.push(merge);
        }
        if !conflicts.is_empty() {
            conflicts.truncate(10);
            return reject(
                self,
                format!(
                    "the graph redefines {} key(s) that a live run still uses: {}. Use new keys, or wait until those runs end and their results are released",
                    conflicts.len(),
                    conflicts.join("; ")
                ),
            );
        }
        let prop = propagate_pools(&graph, &topo);
        let run_idx = self.runs.len() as u32;
        self.runs.push(Run {
            client,
            client_run: run,
            ended: false,
            scoped_cells: Vec::new(),
        });
        self.clients.entry(client).or_default();

        let mut map: Vec<TaskIdx> = vec![0; graph.len()];
        let mut known: Vec<TaskIdx> = Vec::new();
        let mut cells: Vec<(TaskIdx, TaskId)> = Vec::new();
        for &gid in topo.order() {
            let t = match merges[gid.index()] {
                Merge::Known(t) => {
                    self.extra_runs.entry(t).or_default().push(run_idx);
                    known.push(t);
                    t
                }
                Merge::Retry(t) => {
                    let task = self.make_task(&graph, gid, &prop, &map, &prints, run_idx);
                    // Its consumers stay, and so does what needs it (a client's want). Its
                    // inputs are the same definitions but may be other slots (a key redefined
                    // and defined back): its edges move to them.
                    let old = &mut self.tasks[t as usize];
                    let consumers = std::mem::take(&mut old.consumers);
                    let (waiters, live_consumers) = (old.waiters, old.live_consumers);
                    let old_inputs = std::mem::take(&mut old.inputs);
                    for &i in old_inputs.iter() {
                        let input = &mut self.tasks[i as usize];
                        if let Some(pos) = input.consumers.iter().position(|&c| c == t) {
                            input.consumers.swap_remove(pos);
                            input.live_consumers -= 1;
                        }
                    }
                    for &i in task.inputs.iter() {
                        self.tasks[i as usize].consumers.push(t);
                        self.tasks[i as usize].live_consumers += 1;
                    }
                    self.tasks[t as usize] = Task {
                        consumers,
                        live_consumers,
                        waiters,
                        ..task
                    };
                    t
                }
                Merge::New => {
                    let task = self.make_task(&graph, gid, &prop, &map, &prints, run_idx);
                    let key = task.key.clone();
                    let t = self.new_slot(task);
                    // A redefined key now names the new task; the old one stays detached.
                    self.keys.insert(key, t);
                    for n in 0..self.tasks[t as usize].inputs.len() {
                        let i = self.tasks[t as usize].inputs[n];
                        self.tasks[i as usize].consumers.push(t);
                        self.tasks[i as usize].live_consumers += 1;
                    }
                    t
                }
            };
            map[gid.index()] = t;
            if self.tasks[t as usize].cell.is_some() {
                cells.push((t, gid));
            }
        }
        // New, retried and cancelled tasks run; they need their inputs, which computes again
        // the freed ones they need (and only those).
        for &gid in topo.order() {
            let t = map[gid.index()];
            if self.tasks[t as usize].state == State::Idle {
                self.activate(t);
            }
        }
        for k in wants {
            let t = map[graph.id_of(k).expect("checked above").index()];
            if self.clients.entry(client).or_default().insert(t) {
                self.need(t);
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
        // Known tasks done before (held, or freed and not needed here) are done for this run.
        for t in known {
            let task = &self.tasks[t as usize];
            if task.cell.is_none() && matches!(task.state, State::Memory | State::Released) {
                self.emit_reused(t, run_idx);
            }
        }
    }

    /// The core's task for graph task `gid`.
    fn make_task(
        &mut self,
        graph: &Graph,
        gid: TaskId,
        prop: &drover_graph::Propagation,
        map: &[TaskIdx],
        prints: &[u128],
        run_idx: u32,
    ) -> Task {
        let place = match graph.place(gid) {
            Place::Pinned(p) => StaticPlace::Pinned(self.intern_pool(graph.pool_name(p))),
            Place::Any => StaticPlace::Any,
            // Where a pooled once-cell it uses loads: as hard as a pin.
            Place::Free if prop.reason(gid) == Reason::OnceCell => StaticPlace::Pinned(
                self.intern_pool(
                    prop.pool_name(graph, gid)
                        .expect("once-cell reasons carry a pool"),
                ),
            ),
            Place::Free => {
                StaticPlace::Pass(prop.pool_name(graph, gid).map(|n| self.intern_pool(n)))
            }
        };
        let cell = graph.once_cell(gid).map(|c| CellInfo {
            lifetime: c.lifetime,
            lazy: c.lazy,
            mean_load_us: None,
        });
        let inputs: Box<[TaskIdx]> = graph.inputs(gid).iter().map(|i| map[i.index()]).collect();
        let function = self.intern_function(graph.function(gid));
        let mut functions: Vec<super::FnIdx> = vec![function];
        for &i in inputs.iter() {
            let input = &self.tasks[i as usize];
            if input.cell.is_some() {
                functions.push(input.function);
            }
        }
        functions.sort_unstable();
        functions.dedup();
        let mut resources: Vec<(String, u64)> = graph
            .resources(gid)
            .consumable()
            .map(|(k, v)| (k.to_owned(), v.to_bits()))
            .collect();
        resources.sort();
        let req = self.intern_req(Req {
            functions: functions.into_boxed_slice(),
            resources,
        });
        Task {
            key: graph.key_shared(gid).clone(),
            fingerprint: prints[gid.index()],
            function,
            params: graph.params(gid).map(Arc::from),
            inputs,
            consumers: Vec::new(),
            live_consumers: 0,
            place,
            req,
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
            ready_seq: 0,
            fetch_failures: 0,
            timeout_ms: graph.timeout(gid).map(|d| d.as_millis() as u64),
            state: if cell.is_some() {
                State::Memory
            } else {
                State::Idle
            },
            cell,
        }
    }

    /// Whether a live run (connected, not ended) includes `t`, or a connected client wants it.
    fn in_live_use(&self, t: TaskIdx) -> bool {
        self.runs_of(t).any(|r| {
            let run = &self.runs[r as usize];
            !run.ended && self.run_connected(r)
        }) || self.clients.values().any(|w| w.contains(&t))
    }

    /// Says how task `old` and graph task `gid`, both keyed alike, differ.
    fn conflict_text(&self, old: TaskIdx, graph: &Graph, gid: TaskId) -> String {
        let task = &self.tasks[old as usize];
        let before = (
            &*self.functions[task.function as usize],
            task.params.as_deref(),
        );
        let after = (graph.function(gid), graph.params(gid));
        let show = |(f, p): (&str, Option<&str>)| match p {
            Some(p) if p.len() > 80 => format!("function {f:?} with params {}...", &p[..77]),
            Some(p) => format!("function {f:?} with params {p}"),
            None => format!("function {f:?}"),
        };
        let how = if before == after {
            "the same function and params, but other inputs or upstream tasks".to_owned()
        } else {
            format!("{} there, {} here", show(before), show(after))
        };
        format!("key {:?} ({how})", graph.key(gid))
    }

    /// Tells one run that a task it includes was done before it was submitted.
    fn emit_reused(&mut self, t: TaskIdx, run_idx: u32) {
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
            reused: true,
        };
        self.out
            .push(Command::Client(run.client, ToClient::Events(vec![event])));
    }
}
