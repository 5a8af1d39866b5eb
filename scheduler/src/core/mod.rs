//! The scheduler's pure core: a synchronous state machine. The server feeds it [`Event`]s and
//! sends the [`Command`]s it returns; no sockets, clocks or tasks here, so every rule is unit
//! tested in microseconds (see `tests.rs`).
//!
//! Life of a task: *waiting* (inputs pending) → *ready* (queued by placement) → *assigned* to a
//! worker → *memory* (held by one or more workers) → *released* when no pending task and no
//! client needs it; or *failed*, which fails its dependents with a reason naming it.

mod cells;
mod forget;
mod placement;
mod retire;
mod submit;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use drover_protocol::{
    ComputeTask, FromClient, FromWorker, PeerInfo, TaskEvent, TaskIdx, TaskStatus, ToClient,
    ToWorker, WorkerHello, WorkerId,
};

pub use placement::Restriction;

/// A client's id.
pub type ClientId = u32;
/// A pool's id in the scheduler (global across graphs).
pub type PoolIdx = u32;
/// A task's consumable resources, shared by tasks with the same set.
pub(crate) type ResourceList = Arc<[(String, f64)]>;

/// Something that happened, fed to [`Core::handle`].
#[derive(Debug)]
pub enum Event {
    /// A worker passed the handshake.
    WorkerJoined {
        /// Its id.
        id: WorkerId,
        /// What it said.
        hello: WorkerHello,
    },
    /// A worker's connection ended.
    WorkerLeft {
        /// Its id.
        id: WorkerId,
    },
    /// A client passed the handshake.
    ClientJoined {
        /// Its id.
        id: ClientId,
    },
    /// A client's connection ended.
    ClientLeft {
        /// Its id.
        id: ClientId,
    },
    /// Messages from a worker.
    Worker(WorkerId, FromWorker),
    /// Messages from a client.
    Client(ClientId, FromClient),
}

/// Something to send, returned by [`Core::handle`].
#[derive(Debug, Clone)]
pub enum Command {
    /// To a worker.
    Worker(WorkerId, ToWorker),
    /// To a client.
    Client(ClientId, ToClient),
}

/// Where a task is in its life.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum State {
    Waiting,
    Ready,
    Assigned(WorkerId),
    Memory,
    Released,
    Failed(Arc<str>),
}

/// What the pass said about a task's pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StaticPlace {
    /// Pinned by the user: hard.
    Pinned(PoolIdx),
    /// Any-pool: never restricted.
    Any,
    /// Chosen by the pass (or none): re-decided at run time from real sizes and locations.
    Pass(Option<PoolIdx>),
}

#[derive(Debug)]
pub(crate) struct Task {
    pub key: Arc<str>,
    pub function: Arc<str>,
    pub params: Option<Arc<str>>,
    pub inputs: Box<[TaskIdx]>,
    pub consumers: Vec<TaskIdx>,
    pub place: StaticPlace,
    pub resources: ResourceList,
    pub priority: i32,
    pub retries_left: u32,
    pub state: State,
    /// Input occurrences not yet in memory.
    pub pending: u32,
    /// Consumer occurrences not yet finished, plus client wants.
    pub waiters: u32,
    pub holders: Vec<WorkerId>,
    pub size: u64,
    /// The run that created it; others are in `Core::extra_runs`.
    pub run: u32,
    /// Where it was placed when assigned (for events).
    pub placed_pool: Option<PoolIdx>,
    /// How many times it started running (re-runs after a lost worker or a retry count;
    /// a task bounced before it started does not).
    pub attempts: u32,
    /// Whether its current assignment has started running.
    pub started: bool,
    /// When it was last assigned (the core's sequence), for the worker's run order.
    pub assigned_seq: u64,
    pub timeout_ms: Option<u64>,
    /// Set for once-cells: always "in memory" (every worker can load its own), never freed
    /// by waiters; `holders` are the workers that loaded it.
    pub cell: Option<CellInfo>,
}

/// A once-cell's settings and what the scheduler learnt of it.
#[derive(Debug, Clone)]
pub(crate) struct CellInfo {
    pub lifetime: drover_graph::Lifetime,
    pub lazy: bool,
    /// Mean load time seen so far, microseconds.
    pub mean_load_us: Option<f64>,
}

#[derive(Debug)]
pub(crate) struct Worker {
    pub name: Arc<str>,
    pub pools: Vec<PoolIdx>,
    pub resources: Vec<(String, f64)>,
    pub nthreads: u32,
    pub inflight: u32,
    pub peer: PeerInfo,
    /// Results held here.
    pub has: HashSet<TaskIdx>,
    /// Tasks assigned here and not finished.
    pub assigned: HashSet<TaskIdx>,
    /// Retiring: takes no new tasks; leaves once nothing needed is held only here.
    pub retiring: bool,
    /// Workers asked to copy this retiring worker's results, not yet answered.
    pub handoffs: Vec<WorkerId>,
    /// A handoff failed: retire at the next step whatever is left (recomputed if needed).
    pub handoff_failed: bool,
    /// A replacement is coming: hold results until some other worker can take them.
    pub await_successor: bool,
    /// Once-cells this worker was told of: loaded, loading, or to load on first need.
    pub cells: HashSet<TaskIdx>,
}

#[derive(Debug)]
pub(crate) struct Run {
    pub client: ClientId,
    pub client_run: u32,
    /// The client said the run is over.
    pub ended: bool,
    /// Once-cells scoped to this run.
    pub scoped_cells: Vec<TaskIdx>,
}

/// A ready task in a queue: higher priority first, then first come.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ReadyEntry {
    pub priority: i32,
    pub order: std::cmp::Reverse<u64>,
    pub task: TaskIdx,
}

/// The scheduler's state. See the module docs.
#[derive(Debug, Default)]
pub struct Core {
    pub(crate) tasks: Vec<Task>,
    pub(crate) keys: HashMap<Arc<str>, TaskIdx>,
    pub(crate) workers: BTreeMap<WorkerId, Worker>,
    pub(crate) pools: Vec<Arc<str>>,
    pub(crate) pool_index: HashMap<Arc<str>, PoolIdx>,
    pub(crate) functions: HashMap<Arc<str>, ()>,
    pub(crate) runs: Vec<Run>,
    pub(crate) extra_runs: HashMap<TaskIdx, Vec<u32>>,
    pub(crate) clients: HashMap<ClientId, HashSet<TaskIdx>>,
    pub(crate) ready: BTreeMap<Restriction, BinaryHeap<ReadyEntry>>,
    pub(crate) warned: HashSet<(ClientId, Restriction)>,
    pub(crate) seq: u64,
    /// Running mean of task durations, microseconds.
    pub(crate) mean_duration_us: f64,
    /// Assumed transfer bandwidth, bytes per microsecond.
    pub(crate) bandwidth: f64,
    pub(crate) out: Vec<Command>,
    pub(crate) config: CoreConfig,
    /// Names of workers that died while running a task, for the tasks that have any.
    pub(crate) deaths: HashMap<TaskIdx, Vec<Arc<str>>>,
    /// Locate requests waiting for results being computed: (client, request, keys).
    pub(crate) pending_locates: Vec<(ClientId, u32, Vec<String>)>,
    /// Task slots freed by forgetting, reused by new tasks (kept sorted, lowest last).
    pub(crate) free_slots: Vec<TaskIdx>,
}

/// Limits of the scheduler's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreConfig {
    /// A task that was running on this many workers that each died is failed as suspicious
    /// rather than tried on another.
    pub max_worker_deaths: u32,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            max_worker_deaths: 3,
        }
    }
}

/// Counts for monitoring and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Tasks known (any state).
    pub tasks: usize,
    /// Tasks whose results are held.
    pub in_memory: usize,
    /// Tasks queued ready.
    pub ready: usize,
    /// Tasks assigned to workers.
    pub assigned: usize,
    /// Connected workers.
    pub workers: usize,
}

impl Core {
    /// An empty scheduler.
    pub fn new() -> Core {
        Core::with_config(CoreConfig::default())
    }

    /// An empty scheduler with these limits.
    pub fn with_config(config: CoreConfig) -> Core {
        Core {
            mean_duration_us: 1000.0,
            bandwidth: 100.0,
            config,
            ..Default::default()
        }
    }

    /// Handles one event and returns what to send.
    pub fn handle(&mut self, event: Event) -> Vec<Command> {
        match event {
            Event::WorkerJoined { id, hello } => self.worker_joined(id, hello),
            Event::WorkerLeft { id } => self.worker_left(id),
            Event::ClientJoined { id } => {
                self.clients.entry(id).or_default();
            }
            Event::ClientLeft { id } => self.client_left(id),
            Event::Worker(w, msg) => match msg {
                FromWorker::Retiring { successor } => {
                    if let Some(worker) = self.workers.get_mut(&w) {
                        tracing::info!(worker = w, name = %worker.name, successor, "worker retiring");
                        worker.retiring = true;
                        worker.await_successor = successor;
                    }
                }
                FromWorker::Replicated { from, ids, failed } => {
                    self.replicated(w, from, &ids, failed)
                }
                FromWorker::Started(id) => self.mark_started(w, id),
                FromWorker::Finished {
                    id,
                    size,
                    duration_us,
                    fetched,
                } => self.finished(w, id, size, duration_us, &fetched),
                FromWorker::Failed {
                    id,
                    error,
                    duration_us,
                } => self.failed(w, id, error, duration_us),
                FromWorker::InputsLost { id, holder, error } => {
                    self.inputs_lost(w, id, holder, &error)
                }
                FromWorker::Loaded {
                    id,
                    duration_us,
                    bytes,
                    error,
                } => self.cell_loaded(w, id, duration_us, bytes, error),
            },
            Event::Client(c, msg) => match msg {
                FromClient::Submit {
                    run,
                    graph_json,
                    wants,
                } => self.submit(c, run, &graph_json, &wants),
                FromClient::Locate { req, keys } => {
                    self.pending_locates.push((c, req, keys));
                }
                FromClient::Release { keys } => self.release_wants(c, &keys),
                FromClient::EndRun { run } => self.end_run(c, run),
                FromClient::ReleaseCells { keys } => self.release_cells(&keys),
            },
        }
        self.schedule();
        self.progress_retirements();
        if !self.pending_locates.is_empty() {
            self.answer_locates();
        }
        std::mem::take(&mut self.out)
    }

    /// Counts of tasks and workers.
    pub fn stats(&self) -> Stats {
        let mut s = Stats {
            tasks: self.tasks.len() - self.free_slots.len(),
            workers: self.workers.len(),
            ..Default::default()
        };
        for t in &self.tasks {
            match t.state {
                State::Memory => s.in_memory += 1,
                State::Ready => s.ready += 1,
                State::Assigned(_) => s.assigned += 1,
                _ => {}
            }
        }
        s
    }

    /// The runs that include task `t`: the one that created it, then any others.
    pub(crate) fn runs_of(&self, t: TaskIdx) -> impl Iterator<Item = u32> + '_ {
        std::iter::once(self.tasks[t as usize].run)
            .chain(self.extra_runs.get(&t).into_iter().flatten().copied())
    }

    /// Whether run `r`'s client is still connected.
    pub(crate) fn run_connected(&self, r: u32) -> bool {
        self.clients.contains_key(&self.runs[r as usize].client)
    }

    pub(crate) fn intern_pool(&mut self, name: &str) -> PoolIdx {
        if let Some(&p) = self.pool_index.get(name) {
            return p;
        }
        let p = self.pools.len() as PoolIdx;
        let name: Arc<str> = Arc::from(name);
        self.pools.push(name.clone());
        self.pool_index.insert(name, p);
        p
    }

    fn worker_joined(&mut self, id: WorkerId, hello: WorkerHello) {
        let resources: drover_annotations::Resources = {
            let mut r = drover_annotations::Resources::new();
            for (k, v) in &hello.resources {
                // The server checked names and amounts already; skip anything odd.
                let _ = r.insert(k, *v);
            }
            r
        };
        let pools: Vec<PoolIdx> = resources
            .pools()
            .map(|p| self.intern_pool(p.name()))
            .collect();
        let peer = PeerInfo {
            id,
            name: hello.name.clone(),
            addr: hello.peer_addr,
            cert: hello.peer_cert.clone(),
        };
        let others: Vec<PeerInfo> = self.workers.values().map(|w| w.peer.clone()).collect();
        for &other in self.workers.keys() {
            self.out
                .push(Command::Worker(other, ToWorker::Peers(vec![peer.clone()])));
        }
        self.out.push(Command::Worker(id, ToWorker::Peers(others)));
        self.warned.retain(|(_, r)| match r {
            Restriction::Anywhere => false,
            Restriction::Pool(p) => !pools.contains(p),
        });
        self.workers.insert(
            id,
            Worker {
                name: Arc::from(hello.name.as_str()),
                pools,
                resources: resources
                    .consumable()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
                nthreads: hello.nthreads.max(1),
                inflight: 0,
                peer,
                has: HashSet::new(),
                assigned: HashSet::new(),
                retiring: false,
                handoffs: Vec::new(),
                handoff_failed: false,
                await_successor: false,
                cells: HashSet::new(),
            },
        );
    }

    fn worker_left(&mut self, id: WorkerId) {
        let Some(w) = self.workers.remove(&id) else {
            return;
        };
        // Copies it was asked to make for retiring workers will not come.
        for other in self.workers.values_mut() {
            if let Some(i) = other.handoffs.iter().position(|&t| t == id) {
                other.handoffs.swap_remove(i);
                other.handoff_failed = true;
            }
        }
        for &other in self.workers.keys() {
            self.out
                .push(Command::Worker(other, ToWorker::PeerGone(id)));
        }
        // Its running and queued tasks go back to the queues, unless a task has now been
        // running on too many workers that died: then it is the likely culprit, and fails.
        let mut assigned: Vec<TaskIdx> = w.assigned.into_iter().collect();
        assigned.sort_unstable();
        assigned.retain(|&t| self.tasks[t as usize].state == State::Assigned(id));
        // The tasks it was running: those it reported started; if none was (a task can kill
        // its worker before the report gets out), the first `nthreads` in the worker's own run
        // order (priority, then arrival), which are the ones it runs first.
        let mut running: Vec<TaskIdx> = assigned
            .iter()
            .copied()
            .filter(|&t| self.tasks[t as usize].started)
            .collect();
        if running.is_empty() {
            running = assigned.clone();
            running.sort_by_key(|&t| {
                let task = &self.tasks[t as usize];
                (std::cmp::Reverse(task.priority), task.assigned_seq)
            });
            running.truncate(w.nthreads as usize);
        }
        for t in assigned {
            if running.contains(&t) {
                let deaths = self.deaths.entry(t).or_default();
                deaths.push(w.name.clone());
                if deaths.len() as u32 >= self.config.max_worker_deaths {
                    let names: Vec<String> = deaths.iter().map(|n| format!("{n:?}")).collect();
                    let error = format!(
                        "suspicious task: it was running on {} workers that died ({}); not retried",
                        names.len(),
                        names.join(", ")
                    );
                    self.fail(t, Arc::from(error.as_str()), None, 0);
                    continue;
                }
            }
            self.tasks[t as usize].state = State::Waiting;
            self.make_ready_or_recompute(t);
        }
        for &c in &w.cells {
            self.tasks[c as usize].holders.retain(|&h| h != id);
        }
        // Results only it held are recomputed from lineage if still needed.
        let mut lost: Vec<TaskIdx> = w.has.into_iter().collect();
        lost.sort_unstable();
        for t in lost {
            let task = &mut self.tasks[t as usize];
            task.holders.retain(|&h| h != id);
            if task.holders.is_empty() && task.state == State::Memory {
                task.state = State::Waiting;
                if task.waiters > 0 {
                    self.lost_result(t);
                } else {
                    task.state = State::Released;
                }
            }
        }
    }

    /// A result vanished while still needed: its waiting consumers count it as pending again,
    /// and it is recomputed.
    fn lost_result(&mut self, t: TaskIdx) {
        let consumers = self.tasks[t as usize].consumers.clone();
        for c in consumers {
            let ct = &mut self.tasks[c as usize];
            if matches!(ct.state, State::Waiting | State::Ready) {
                ct.pending += 1;
                if ct.state == State::Ready {
                    // Stays queued; it is skipped until ready again.
                    ct.state = State::Waiting;
                }
            }
        }
        self.make_ready_or_recompute(t);
    }

    /// Makes a waiting task ready when its inputs are held, recomputing released inputs.
    pub(crate) fn make_ready_or_recompute_pub(&mut self, t: TaskIdx) {
        self.make_ready_or_recompute(t)
    }

    fn make_ready_or_recompute(&mut self, t: TaskIdx) {
        let inputs = self.tasks[t as usize].inputs.clone();
        let mut pending = 0;
        for &i in inputs.iter() {
            match self.tasks[i as usize].state {
                State::Memory => {}
                State::Released => {
                    self.tasks[i as usize].state = State::Waiting;
                    self.tasks[i as usize].waiters += 1;
                    pending += 1;
                    self.make_ready_or_recompute(i);
                }
                _ => pending += 1,
            }
        }
        let task = &mut self.tasks[t as usize];
        task.pending = pending;
        if pending == 0 {
            self.push_ready(t);
        }
    }

    /// A client left: its wanted results are released, and the tasks that only its runs were
    /// waiting for and that have not started are cancelled (tasks another client's run shares
    /// go on). Tasks already running finish; their results are freed when nobody needs them.
    fn client_left(&mut self, id: ClientId) {
        if let Some(wants) = self.clients.remove(&id) {
            let mut wants: Vec<TaskIdx> = wants.into_iter().collect();
            wants.sort_unstable();
            for t in wants {
                self.unwait(t);
            }
        }
        self.warned.retain(|(c, _)| *c != id);
        self.pending_locates.retain(|(c, _, _)| *c != id);
        self.drop_scoped_cells_of_client(id);
        // A run is gone when its client is no longer connected (this one or an earlier one).
        let mut cancelled = 0usize;
        for t in 0..self.tasks.len() as TaskIdx {
            let task = &self.tasks[t as usize];
            if !matches!(task.state, State::Waiting | State::Ready)
                || self.runs_of(t).any(|r| self.run_connected(r))
            {
                continue;
            }
            // Cancelled: it can be submitted again later (a released task is recomputed).
            self.tasks[t as usize].state = State::Released;
            cancelled += 1;
            for i in self.tasks[t as usize].inputs.clone().iter() {
                self.unwait(*i);
            }
        }
        if cancelled > 0 {
            tracing::info!(
                client = id,
                cancelled,
                "client left: its waiting tasks are cancelled"
            );
        }
        self.forget_departed();
    }

    /// Answers the locate requests whose keys are all settled: held, or failed, released or
    /// unknown. A key still being computed (or recomputed after a lost worker) keeps its request
    /// waiting, so a client never hears "not held" for a result that is on its way.
    fn answer_locates(&mut self) {
        let pending = std::mem::take(&mut self.pending_locates);
        for (client, req, keys) in pending {
            let unsettled = keys.iter().any(|k| {
                self.keys.get(k.as_str()).is_some_and(|&t| {
                    matches!(
                        self.tasks[t as usize].state,
                        State::Waiting | State::Ready | State::Assigned(_)
                    )
                })
            });
            if unsettled && self.clients.contains_key(&client) {
                self.pending_locates.push((client, req, keys));
                continue;
            }
            let found = keys
                .into_iter()
                .map(|k| {
                    let holder = self.keys.get(k.as_str()).and_then(|&t| {
                        let task = &self.tasks[t as usize];
                        (task.state == State::Memory)
                            .then(|| task.holders.first().and_then(|w| self.workers.get(w)))
                            .flatten()
                            .map(|w| (t, w.peer.clone()))
                    });
                    (k, holder)
                })
                .collect();
            self.out
                .push(Command::Client(client, ToClient::Located { req, found }));
        }
    }

    fn release_wants(&mut self, client: ClientId, keys: &[String]) {
        for k in keys {
            let Some(&t) = self.keys.get(k.as_str()) else {
                continue;
            };
            let removed = self.clients.get_mut(&client).is_some_and(|w| w.remove(&t));
            if removed {
                self.unwait(t);
            }
        }
    }

    /// One waiter of `t` is gone; frees its result when none is left.
    pub(crate) fn unwait(&mut self, t: TaskIdx) {
        let task = &mut self.tasks[t as usize];
        task.waiters = task.waiters.saturating_sub(1);
        self.release_if_unneeded(t);
    }

    /// Frees `t`'s result on every holder when no pending task or client needs it.
    fn release_if_unneeded(&mut self, t: TaskIdx) {
        let task = &mut self.tasks[t as usize];
        if task.waiters == 0 && task.state == State::Memory && task.cell.is_none() {
            task.state = State::Released;
            let holders = std::mem::take(&mut task.holders);
            for w in holders {
                if let Some(worker) = self.workers.get_mut(&w) {
                    worker.has.remove(&t);
                }
                self.out.push(Command::Worker(w, ToWorker::Free(vec![t])));
            }
        }
    }

    pub(crate) fn push_ready(&mut self, t: TaskIdx) {
        let restriction = self.restriction(t);
        let task = &mut self.tasks[t as usize];
        task.state = State::Ready;
        self.seq += 1;
        self.ready.entry(restriction).or_default().push(ReadyEntry {
            priority: task.priority,
            order: std::cmp::Reverse(self.seq),
            task: t,
        });
    }

    /// `t` started on `w` (reported, or implied by its result): counts an attempt once per
    /// assignment.
    fn mark_started(&mut self, w: WorkerId, t: TaskIdx) {
        if let Some(task) = self.tasks.get_mut(t as usize) {
            if task.state == State::Assigned(w) && !task.started {
                task.started = true;
                task.attempts += 1;
            }
        }
    }

    fn finished(
        &mut self,
        w: WorkerId,
        t: TaskIdx,
        size: u64,
        duration_us: u64,
        fetched: &[(TaskIdx, WorkerId, u64)],
    ) {
        self.mark_started(w, t);
        let Some(task) = self.tasks.get_mut(t as usize) else {
            return;
        };
        if task.state != State::Assigned(w) {
            return; // stale: reassigned after its worker was presumed gone
        }
        tracing::debug!(key = %task.key, worker = w, "task finished");
        task.state = State::Memory;
        task.size = size;
        task.holders.push(w);
        self.mean_duration_us = 0.9 * self.mean_duration_us + 0.1 * duration_us as f64;
        let (moved, cross) = self.account_fetches(w, fetched);
        if let Some(worker) = self.workers.get_mut(&w) {
            worker.inflight -= 1;
            worker.assigned.remove(&t);
            worker.has.insert(t);
        }
        self.emit(
            t,
            TaskStatus::Finished,
            Some(w),
            duration_us,
            moved,
            cross,
            None,
        );
        // By index: no copy of the input list per finished task.
        for n in 0..self.tasks[t as usize].inputs.len() {
            let i = self.tasks[t as usize].inputs[n];
            self.unwait(i);
        }
        let consumers = std::mem::take(&mut self.tasks[t as usize].consumers);
        for &c in &consumers {
            let ct = &mut self.tasks[c as usize];
            if ct.state == State::Waiting {
                ct.pending -= 1;
                if ct.pending == 0 {
                    self.push_ready(c);
                }
            }
        }
        self.tasks[t as usize].consumers = consumers;
        self.release_if_unneeded(t);
    }

    /// Records replicas made by fetches and returns (bytes moved, bytes moved across pools).
    fn account_fetches(&mut self, w: WorkerId, fetched: &[(TaskIdx, WorkerId, u64)]) -> (u64, u64) {
        let (mut moved, mut cross) = (0, 0);
        let my_pools = self
            .workers
            .get(&w)
            .map(|x| x.pools.clone())
            .unwrap_or_default();
        for &(input, from, bytes) in fetched {
            moved += bytes;
            let from_pools = self.workers.get(&from).map(|x| &x.pools);
            if from_pools.is_some_and(|p| *p != my_pools) {
                cross += bytes;
            }
            if let Some(task) = self.tasks.get_mut(input as usize) {
                if task.state == State::Memory && !task.holders.contains(&w) {
                    task.holders.push(w);
                    if let Some(worker) = self.workers.get_mut(&w) {
                        worker.has.insert(input);
                    }
                }
            }
        }
        (moved, cross)
    }

    /// `w` could not fetch `t`'s inputs from `holder`: that holder's copies are no longer
    /// trusted; results left without a holder are recomputed; `t` waits for them again.
    fn inputs_lost(&mut self, w: WorkerId, t: TaskIdx, holder: WorkerId, error: &str) {
        let Some(task) = self.tasks.get(t as usize) else {
            return;
        };
        if task.state != State::Assigned(w) {
            return;
        }
        tracing::warn!(task = %task.key, worker = w, holder, error, "inputs lost; recomputing");
        if let Some(worker) = self.workers.get_mut(&w) {
            worker.inflight -= 1;
            worker.assigned.remove(&t);
        }
        let inputs = self.tasks[t as usize].inputs.clone();
        for &i in inputs.iter() {
            let input = &mut self.tasks[i as usize];
            if !input.holders.contains(&holder) {
                continue;
            }
            input.holders.retain(|&h| h != holder);
            if let Some(hw) = self.workers.get_mut(&holder) {
                hw.has.remove(&i);
            }
            if input.holders.is_empty() && input.state == State::Memory {
                input.state = State::Waiting;
                self.lost_result(i);
            }
        }
        self.tasks[t as usize].state = State::Waiting;
        self.make_ready_or_recompute(t);
    }

    fn failed(&mut self, w: WorkerId, t: TaskIdx, error: String, duration_us: u64) {
        self.mark_started(w, t);
        let Some(task) = self.tasks.get_mut(t as usize) else {
            return;
        };
        if task.state != State::Assigned(w) {
            return;
        }
        if let Some(worker) = self.workers.get_mut(&w) {
            worker.inflight -= 1;
            worker.assigned.remove(&t);
        }
        let task = &mut self.tasks[t as usize];
        if task.retries_left > 0 {
            task.retries_left -= 1;
            task.state = State::Waiting;
            self.make_ready_or_recompute(t);
            return;
        }
        let error: Arc<str> = Arc::from(error.as_str());
        self.fail(t, error, Some(w), duration_us);
    }

    /// Fails `t` and, transitively, everything waiting on it.
    fn fail(&mut self, t: TaskIdx, error: Arc<str>, worker: Option<WorkerId>, duration_us: u64) {
        let mut stack = vec![(t, error, worker, duration_us)];
        while let Some((t, error, worker, duration_us)) = stack.pop() {
            self.tasks[t as usize].state = State::Failed(error.clone());
            self.emit(
                t,
                TaskStatus::Failed,
                worker,
                duration_us,
                0,
                0,
                Some(error.to_string()),
            );
            let inputs = self.tasks[t as usize].inputs.clone();
            for &i in inputs.iter() {
                self.unwait(i);
            }
            let key = self.tasks[t as usize].key.clone();
            for &c in self.tasks[t as usize].consumers.clone().iter() {
                if matches!(self.tasks[c as usize].state, State::Waiting | State::Ready) {
                    let reason: Arc<str> = Arc::from(format!("input {key:?} failed: {error}"));
                    // Mark now so a consumer listed twice is failed once.
                    self.tasks[c as usize].state = State::Failed(reason.clone());
                    stack.push((c, reason, None, 0));
                }
            }
        }
    }

    /// Sends a task event to every run that includes the task.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn emit(
        &mut self,
        t: TaskIdx,
        status: TaskStatus,
        worker: Option<WorkerId>,
        duration_us: u64,
        moved_bytes: u64,
        cross_pool_bytes: u64,
        error: Option<String>,
    ) {
        let task = &self.tasks[t as usize];
        let worker_name = worker
            .and_then(|w| self.workers.get(&w))
            .map(|w| w.name.to_string());
        let pool = task.placed_pool.map(|p| self.pools[p as usize].to_string());
        let runs: Vec<u32> = self.runs_of(t).collect();
        for r in runs {
            if !self.run_connected(r) {
                continue;
            }
            let run = &self.runs[r as usize];
            let event = TaskEvent {
                run: run.client_run,
                key: task.key.to_string(),
                status,
                worker: worker_name.clone(),
                pool: pool.clone(),
                output_bytes: if status == TaskStatus::Finished {
                    task.size
                } else {
                    0
                },
                duration_us,
                moved_bytes,
                cross_pool_bytes,
                error: error.clone(),
                attempts: task.attempts,
                load: false,
            };
            self.out
                .push(Command::Client(run.client, ToClient::Events(vec![event])));
        }
    }

    /// Builds the message that assigns `t` to `w`.
    pub(crate) fn compute_message(&self, t: TaskIdx, w: WorkerId) -> ToWorker {
        let task = &self.tasks[t as usize];
        let inputs = task
            .inputs
            .iter()
            .map(|&i| {
                let holders = &self.tasks[i as usize].holders;
                let holder = if holders.contains(&w) || self.tasks[i as usize].cell.is_some() {
                    w
                } else {
                    holders.first().copied().unwrap_or(w)
                };
                (i, holder)
            })
            .collect();
        ToWorker::Compute(ComputeTask {
            id: t,
            key: task.key.to_string(),
            function: task.function.to_string(),
            params: task.params.as_deref().map(str::to_owned),
            inputs,
            resources: task.resources.to_vec(),
            priority: task.priority,
            timeout_ms: task.timeout_ms,
        })
    }
}
