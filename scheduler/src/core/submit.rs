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

use drover_graph::prefetch::{prefetch, AHEAD};
use drover_graph::{fingerprints, propagate_pools, Graph, Place, Reason, TaskId};
use drover_protocol::{TaskIdx, TaskStatus, ToClient};

use super::{CellInfo, ClientId, Command, Core, Fingerprint, Req, Run, State, StaticPlace, Task};

/// Submissions of at least this many new tasks have their memory prepared beside validation
/// (see `Core::with_room_for`); smaller ones are not worth a thread.
const PREPARE_MIN: usize = 100_000;

/// How a task of a submitted graph maps onto the core.
enum Merge {
    /// The same task is known: this slot.
    Known(TaskIdx),
    /// The same definition failed before: run it again in this slot.
    Retry(TaskIdx),
    /// A new task (or a new definition of a key whose old one is detached).
    New,
}

/// How a task of a submission is settled at once, without running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// Done before, held or freed in the core.
    Reused,
    /// A durable task found done in the progress store.
    DoneBefore,
    /// Not needed: it only feeds tasks done before.
    Skipped,
}

/// A parsed, validated submission: merged at once, or once the progress store said which of
/// its durable tasks are done.
#[derive(Debug)]
pub(crate) struct Submission {
    client: ClientId,
    run: u32,
    graph: Graph,
    topo: drover_graph::Topology,
    prints: Vec<u128>,
    wants: Vec<String>,
    /// Durable tasks asked about, in the order of the lookup.
    asked: Vec<TaskId>,
}

impl Core {
    pub(crate) fn submit(
        &mut self,
        client: ClientId,
        run: u32,
        graph: Result<Graph, String>,
        wants: &[String],
    ) {
        let reject = |core: &mut Core, error: String| {
            core.out
                .push(Command::Client(client, ToClient::Rejected { run, error }));
        };
        let graph = match graph {
            Ok(g) => g,
            Err(e) => return reject(self, e),
        };
        // Validation and fingerprints need only the graph: meanwhile the memory the new tasks
        // will take is made ready on the other core.
        let started = std::time::Instant::now();
        let new = self.new_keys(&graph);
        let checked = self.with_room_for(new, || {
            graph.validate().map(|topo| {
                let prints = fingerprints(&graph, &topo);
                (topo, prints)
            })
        });
        let (topo, prints) = match checked {
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
        tracing::debug!(
            tasks = graph.len(),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "submitted graph validated and fingerprinted"
        );
        if let Some(k) = wants.iter().find(|k| graph.id_of(k).is_none()) {
            return reject(self, format!("wanted key {k:?} is not a task of the graph"));
        }
        // Durable tasks the core does not hold or run already: the progress store says whether
        // they are done, and the merge waits for its answer.
        let mut asked = Vec::new();
        let mut keys = Vec::new();
        for gid in graph.task_ids() {
            let Some(version) = graph.durable(gid) else {
                continue;
            };
            if let Err(e) = drover_progress::check_names(graph.namespace(), graph.key(gid)) {
                return reject(self, format!("durable task {:?}: {e}", graph.key(gid)));
            }
            let known = self.slot_of(graph.key(gid)).is_some_and(|t| {
                let task = &self.tasks[t as usize];
                task.fingerprint.get() == prints[gid.index()]
                    && (task.state.is_pending() || task.state == State::Memory)
            });
            if !known {
                asked.push(gid);
                keys.push((graph.key(gid).to_owned(), version, prints[gid.index()]));
            }
        }
        let sub = Submission {
            client,
            run,
            graph,
            topo,
            prints,
            wants: wants.to_vec(),
            asked,
        };
        if keys.is_empty() {
            return self.merge(sub, Vec::new());
        }
        self.next_lookup += 1;
        let id = self.next_lookup;
        self.out.push(Command::Lookup {
            id,
            namespace: sub.graph.namespace().to_owned(),
            keys,
        });
        self.lookups.insert(id, sub);
    }

    /// The progress store's answer to lookup `id`: per durable task asked, `None` if it is not
    /// done at its version, else its stored output (if it had one small enough).
    pub(crate) fn looked(&mut self, id: u64, found: Result<Vec<Option<Option<Vec<u8>>>>, String>) {
        let Some(sub) = self.lookups.remove(&id) else {
            return;
        };
        if !self.clients.contains_key(&sub.client) {
            return; // its client left meanwhile
        }
        let found = match found {
            Ok(f) if f.len() == sub.asked.len() => Ok(f),
            Ok(f) => Err(format!(
                "the progress store answered {} of {} durable tasks",
                f.len(),
                sub.asked.len()
            )),
            Err(e) => Err(format!("cannot read the progress store: {e}")),
        };
        let found = match found {
            Ok(f) => f,
            Err(error) => {
                self.out.push(Command::Client(
                    sub.client,
                    ToClient::Rejected {
                        run: sub.run,
                        error,
                    },
                ));
                return;
            }
        };
        let done: Vec<(TaskId, Option<Vec<u8>>)> = sub
            .asked
            .iter()
            .zip(found)
            .filter_map(|(&gid, f)| f.map(|output| (gid, output)))
            .collect();
        self.merge(sub, done);
    }

    /// Merges a submission into the core; `done` are its durable tasks found done, with their
    /// stored outputs.
    fn merge(&mut self, sub: Submission, done: Vec<(TaskId, Option<Vec<u8>>)>) {
        let Submission {
            client,
            run,
            graph,
            topo,
            prints,
            wants,
            ..
        } = sub;
        let started = std::time::Instant::now();
        let reject = |core: &mut Core, error: String| {
            core.out
                .push(Command::Client(client, ToClient::Rejected { run, error }));
        };
        // Decide every task before changing anything: a conflict refuses the whole graph.
        let mut merges: Vec<Merge> = Vec::with_capacity(graph.len());
        let mut conflicts: Vec<String> = Vec::new();
        for gid in graph.task_ids() {
            // Keys are anywhere in the index: ask for a few tasks ahead's entries early.
            if gid.index() + AHEAD < graph.len() {
                self.keys.prefetch(graph.key(TaskId(gid.0 + AHEAD as u32)));
            }
            let merge = match self.slot_of(graph.key(gid)) {
                None => Merge::New,
                Some(old) => {
                    let task = &self.tasks[old as usize];
                    if task.fingerprint.get() != prints[gid.index()] {
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
        // The decide step and the pools pass, for the debug log.
        let planned_ms = started.elapsed().as_secs_f64() * 1e3;
        self.estimated_cross_pool = self.estimated_cross_pool.saturating_add(prop.estimate.full);
        let run_idx = self.runs.len() as u32;
        self.runs.push(Run {
            client,
            client_run: run,
            ended: false,
            scoped_cells: Vec::new(),
            namespace: Arc::from(graph.namespace()),
        });
        // Room for the new tasks at once: growing these tables step by step (rehashing
        // every key each time) was a twentieth of a large submission.
        let new = merges.iter().filter(|m| matches!(m, Merge::New)).count();
        self.keys.reserve(new);
        self.tasks
            .reserve(new.saturating_sub(self.free_slots.len()));
        self.clients.entry(client).or_default().reserve(wants.len());

        let mut map: Vec<TaskIdx> = vec![0; graph.len()];
        let mut known: Vec<TaskIdx> = Vec::new();
        let mut cells: Vec<(TaskIdx, TaskId)> = Vec::new();
        let order = topo.order();
        for (k, &gid) in order.iter().enumerate() {
            // A task's inputs are anywhere in the core: their slots in `map`, then their
            // records, then the end of their consumer lists (which the task joins) are asked
            // for in three steps ahead, each once the previous one is in cache (an input among
            // the next few tasks is not placed yet: a wasted hint, no harm).
            if let Some(&far) = order.get(k + 3 * AHEAD) {
                for &i in graph.inputs(far) {
                    prefetch(&map[i.index()]);
                }
            }
            if let Some(&mid) = order.get(k + 2 * AHEAD) {
                for &i in graph.inputs(mid) {
                    self.prefetch_task(map[i.index()]);
                }
            }
            if let Some(&ahead) = order.get(k + AHEAD) {
                self.keys.prefetch(graph.key(ahead));
                for &i in graph.inputs(ahead) {
                    self.prefetch_consumers(map[i.index()]);
                }
            }
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
                    let t = self.new_slot(task);
                    // A redefined key now names the new task; the old one stays detached.
                    self.keys.insert(t, &self.tasks);
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
        // Durable tasks done before (the store said so) are done here too: held by the core
        // with their stored output, or freed (computed again only if something needs them).
        let mut done_before: Vec<TaskIdx> = Vec::with_capacity(done.len());
        for (gid, output) in done {
            let t = map[gid.index()];
            let task = &mut self.tasks[t as usize];
            if task.state.is_pending() || task.state == State::Memory {
                continue;
            }
            task.state = match output {
                Some(bytes) => {
                    task.size = bytes.len() as u64;
                    self.stored.insert(t, Arc::new(bytes));
                    State::Memory
                }
                None => State::Released,
            };
            done_before.push(t);
        }
        let skipped = if done_before.is_empty() {
            std::collections::HashSet::new()
        } else {
            self.only_feeding_done(&graph, &topo, &map, &wants)
        };
        // New, retried and cancelled tasks run; they need their inputs, which computes again
        // the freed ones they need (and only those).
        for (k, &gid) in order.iter().enumerate() {
            if let Some(&ahead) = order.get(k + AHEAD) {
                let t = map[ahead.index()];
                self.prefetch_task(t);
                for &i in self.tasks[t as usize].inputs.iter() {
                    self.prefetch_task(i);
                }
            }
            let t = map[gid.index()];
            if self.tasks[t as usize].state == State::Idle && !skipped.contains(&gid) {
                self.activate(t);
            }
        }
        // Done before without a stored output, but needed already (by a client's earlier want
        // or another run's task): computed again.
        for &t in &done_before {
            let task = &self.tasks[t as usize];
            if task.state == State::Released && task.waiters > 0 {
                self.activate(t);
            }
        }
        for k in &wants {
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
        // Stored outputs nothing here needs are not kept.
        // Those computed again after all report as they end.
        for &t in &done_before {
            let task = &self.tasks[t as usize];
            if task.state == State::Memory && task.waiters == 0 {
                self.release(t);
            }
            if matches!(
                self.tasks[t as usize].state,
                State::Memory | State::Released
            ) {
                self.emit_settled(t, run_idx, Settled::DoneBefore);
            }
        }
        let mut skipped: Vec<TaskId> = skipped.into_iter().collect();
        skipped.sort_unstable();
        for gid in skipped {
            let t = map[gid.index()];
            if self.tasks[t as usize].state == State::Idle {
                self.emit_settled(t, run_idx, Settled::Skipped);
            }
        }
        // Known tasks done before (held, or freed and not needed here) are done for this run.
        let found: std::collections::HashSet<TaskIdx> = done_before.into_iter().collect();
        for t in known {
            let task = &self.tasks[t as usize];
            if task.cell.is_none()
                && matches!(task.state, State::Memory | State::Released)
                && !found.contains(&t)
            {
                self.emit_settled(t, run_idx, Settled::Reused);
            }
        }
        tracing::debug!(
            tasks = graph.len(),
            planned_ms,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "submitted graph merged"
        );
    }

    /// How many of a large `graph`'s keys the core does not know (each a new task at
    /// least); 0 for a graph below [`PREPARE_MIN`] tasks, which is not counted.
    fn new_keys(&self, graph: &Graph) -> usize {
        if graph.len() < PREPARE_MIN {
            return 0;
        }
        if self.keys.len() == 0 {
            return graph.len();
        }
        graph
            .task_ids()
            .filter(|&t| self.slot_of(graph.key(t)).is_none())
            .count()
    }

    /// Runs `work` (which does not touch the core) while, for at least [`PREPARE_MIN`]
    /// `new` tasks, a helper thread grows the key index and writes once to every page of
    /// the room reserved for their records. Page faults on fresh memory cost microseconds
    /// each (a million-task merge writes a quarter of a gigabyte of records): on the other
    /// core they overlap with validation instead of slowing the merge. Decisions do not
    /// change: only where the memory is first touched. Without a thread, `work` just runs.
    fn with_room_for<T>(&mut self, new: usize, work: impl FnOnce() -> T) -> T {
        let records = new.saturating_sub(self.free_slots.len());
        if records < PREPARE_MIN {
            return work();
        }
        self.tasks.reserve(records);
        let keys = &mut self.keys;
        let room = &mut self.tasks.spare_capacity_mut()[..records];
        std::thread::scope(|scope| {
            // Joined as the scope ends; if it cannot start, the merge faults the pages in.
            let _helper = std::thread::Builder::new()
                .name("prepare-room".into())
                .spawn_scoped(scope, move || {
                    keys.reserve(new);
                    // One record per 4 KiB page (records are 256 bytes).
                    for record in room
                        .iter_mut()
                        .step_by((4096 / std::mem::size_of::<Task>()).max(1))
                    {
                        *record = std::mem::MaybeUninit::zeroed();
                    }
                });
            work()
        })
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
                let pool = prop.pool_name(graph, gid).map(|n| self.intern_pool(n));
                match pool {
                    Some(p) if prop.reason(gid) == Reason::Optimised => StaticPlace::Optimised(p),
                    _ => StaticPlace::Pass(pool),
                }
            }
        };
        let cell = graph.once_cell(gid).map(|c| {
            Box::new(CellInfo {
                lifetime: c.lifetime,
                lazy: c.lazy,
                mean_load_us: None,
            })
        });
        let inputs: Box<[TaskIdx]> = graph.inputs(gid).iter().map(|i| map[i.index()]).collect();
        let function = self.intern_function(graph.function(gid));
        let plain = graph.resources(gid).consumable().next().is_none()
            && !inputs
                .iter()
                .any(|&i| self.tasks[i as usize].cell.is_some());
        let req = match self.plain_req.get(&function) {
            Some(&r) if plain => r,
            _ => {
                let r = self.req_of(graph, gid, function, &inputs);
                if plain {
                    self.plain_req.insert(function, r);
                }
                r
            }
        };
        Task {
            key: graph.key_shared(gid),
            fingerprint: Fingerprint::new(prints[gid.index()]),
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
            hint: graph.size_hint(gid).unwrap_or(super::NO_HINT),
            run: run_idx,
            placed_pool: None,
            told_below: 0,
            attempts: 0,
            started: false,
            assigned_seq: 0,
            ready_seq: 0,
            fetch_failures: 0,
            timeout_ms: graph
                .timeout(gid)
                .and_then(|d| std::num::NonZeroU64::new((d.as_millis() as u64).max(1))),
            durable: graph.durable(gid),
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

    /// The tasks of a submission that found some durable tasks done which only feed done
    /// tasks (and what does not run): not wanted, not sinks, not feeding a once-cell. They do
    /// not run (they are computed later only if something needs them). A set of graph ids.
    fn only_feeding_done(
        &self,
        graph: &Graph,
        topo: &drover_graph::Topology,
        map: &[TaskIdx],
        wants: &[String],
    ) -> std::collections::HashSet<TaskId> {
        let wanted: std::collections::HashSet<TaskId> =
            wants.iter().filter_map(|k| graph.id_of(k)).collect();
        let mut skip = std::collections::HashSet::new();
        for &gid in topo.order().iter().rev() {
            let task = &self.tasks[map[gid.index()] as usize];
            let consumers = topo.consumers(gid);
            if task.state != State::Idle || consumers.is_empty() || wanted.contains(&gid) {
                continue;
            }
            let unneeded = consumers.iter().all(|c| {
                let consumer = &self.tasks[map[c.index()] as usize];
                consumer.cell.is_none()
                    && (skip.contains(c)
                        || matches!(consumer.state, State::Memory | State::Released))
            });
            if unneeded {
                skip.insert(gid);
            }
        }
        skip
    }

    /// The requirement of graph task `gid` running `function` on `inputs` (core slots): its
    /// function and the loaders of the once-cells among its inputs, and its consumable
    /// resources.
    fn req_of(
        &mut self,
        graph: &Graph,
        gid: TaskId,
        function: super::FnIdx,
        inputs: &[TaskIdx],
    ) -> super::ReqIdx {
        let mut functions: Vec<super::FnIdx> = vec![function];
        for &i in inputs {
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
        self.intern_req(Req {
            functions: functions.into_boxed_slice(),
            resources,
        })
    }

    /// Tells one run that a task it includes is settled at its submission: done before (in
    /// the core, or found done in the progress store), or not needed.
    fn emit_settled(&mut self, t: TaskIdx, run_idx: u32, how: Settled) {
        let task = &self.tasks[t as usize];
        let run = &self.runs[run_idx as usize];
        let holder = task.holders.first().and_then(|w| self.workers.get(w));
        let event = drover_protocol::TaskEvent {
            run: run.client_run,
            key: task.key.to_string(),
            status: match how {
                Settled::Skipped => TaskStatus::Skipped,
                Settled::Reused | Settled::DoneBefore => TaskStatus::Finished,
            },
            worker: holder.map(|w| w.name.to_string()),
            pool: task.placed_pool.map(|p| self.pools[p as usize].to_string()),
            output_bytes: task.size,
            duration_us: 0,
            moved_bytes: 0,
            cross_pool_bytes: 0,
            error: None,
            attempts: task.attempts,
            load: false,
            reused: how == Settled::Reused,
            // A durable task reused from memory is done before too (its commit is on disk
            // before this event goes out).
            done_before: how == Settled::DoneBefore
                || (how == Settled::Reused && task.durable.is_some()),
        };
        self.out
            .push(Command::Client(run.client, ToClient::Events(vec![event])));
        // Told: a later computation of the task (its result freed, made again for a newer
        // run) is no news to this run. Settled tasks are not computing, so every run below
        // this one that includes the task was told already (at its submission or at the
        // task's last finish).
        let told = &mut self.tasks[t as usize].told_below;
        *told = (*told).max(run_idx + 1);
    }
}
