//! The scheduler's pure core: a synchronous state machine. The server feeds it [`Event`]s and
//! sends the [`Command`]s it returns; no sockets, clocks or tasks here, so every rule is unit
//! tested in microseconds (see `tests.rs`) and the whole cluster's logic runs in a seeded
//! simulation (the repository's `tests/simulation.rs`).
//!
//! Life of a task (see `demand.rs` for the rules that move it):
//!
//! * *idle*: known, not needed, never finished (just submitted, or cancelled);
//! * *pending*: it will run: *waiting* (inputs missing) → *ready* (queued) → *assigned* to a
//!   worker;
//! * *memory*: held by one or more workers;
//! * *released*: finished once, its result freed because nothing needed it; a later need
//!   computes it again;
//! * *failed*, which fails the pending tasks that need it, with a reason naming it.
//!
//! Everything hangs on one count per task, its *waiters*: the pending consumers (one per input
//! occurrence), the clients that want its result, and the handoffs copying it off a retiring
//! worker. A result is freed exactly when its waiters reach zero; a task that becomes pending
//! adds itself as a waiter of each input, computing again those that were freed; a result lost
//! with its last holder is computed again exactly when it still has waiters. [`Core::check`]
//! recomputes all of it from scratch and says where the state disagrees.

mod cells;
mod clients;
mod demand;
pub mod detached;
mod forget;
mod invariants;
mod key_index;
mod placement;
mod preassign;
mod retire;
mod submit;
mod summary;
#[cfg(test)]
mod tests;
mod workers;

use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use drover_protocol::{
    ComputeTask, FromClient, FromWorker, PeerInfo, TaskEvent, TaskIdx, TaskStatus, ToClient,
    ToWorker, WorkerHello, WorkerId,
};

/// A hash map of the core's hot tables, hashed with foldhash (fast, seeded per map against
/// crafted collisions): SipHash took about a tenth of a million-task submission.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
/// A hash set of the core's hot tables (see [`FastMap`]).
pub(crate) type FastSet<T> = HashSet<T, foldhash::fast::RandomState>;

pub use placement::Restriction;

/// A client's id.
pub type ClientId = u32;
/// A pool's id in the scheduler (global across graphs).
pub type PoolIdx = u32;
/// A function's (or loader's) id in the scheduler, interned from its name.
pub(crate) type FnIdx = u32;
/// The id of a task's requirements (functions and consumable resources), interned.
pub(crate) type ReqIdx = u32;

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
    /// The clock: ms since the Unix epoch (the server ticks every second; detached runs'
    /// times and retention use it).
    Tick {
        /// Now.
        now_ms: u64,
    },
    /// Messages from a worker.
    Worker(WorkerId, FromWorker),
    /// Messages from a client.
    Client(ClientId, FromClient),
    /// The progress store's answer to [`Command::Lookup`] `id`: per key asked, `None` if it is
    /// not done at its version, else its stored output (if it had one); or why it could not
    /// be read.
    Looked {
        /// The lookup.
        id: u64,
        /// Per key asked, in order.
        found: Result<Vec<Option<Option<Vec<u8>>>>, String>,
    },
}

/// Something to send, returned by [`Core::handle`].
#[derive(Debug, Clone)]
pub enum Command {
    /// To a worker.
    Worker(WorkerId, ToWorker),
    /// To a client.
    Client(ClientId, ToClient),
    /// Ask the progress store which of these durable tasks (key, version, fingerprint) of
    /// `namespace` are done; answer with [`Event::Looked`].
    Lookup {
        /// The lookup's number.
        id: u64,
        /// The namespace.
        namespace: String,
        /// The tasks asked about.
        keys: Vec<drover_progress::DurableTask>,
    },
    /// Commit a durable task as done in the progress store: what clients hear after this
    /// command must wait until it is on disk.
    Commit {
        /// The namespace.
        namespace: String,
        /// The task's key.
        key: String,
        /// Its version.
        version: u64,
        /// The fingerprint of its definition.
        definition: u128,
        /// Its output, if small enough to keep.
        output: Option<Vec<u8>>,
    },
}

/// Where a task is in its life (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum State {
    Idle,
    Waiting,
    Ready,
    Assigned(WorkerId),
    Memory,
    Released,
    /// Why (boxed: a thin pointer keeps every [`Task`] 8 bytes smaller).
    Failed(Box<Arc<str>>),
}

impl State {
    /// Waiting, ready or assigned: it will run.
    pub fn is_pending(&self) -> bool {
        matches!(self, State::Waiting | State::Ready | State::Assigned(_))
    }
}

/// [`Task::hint`] of a task without a size hint.
pub(crate) const NO_HINT: u64 = u64::MAX;

/// What the pass said about a task's pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StaticPlace {
    /// Pinned by the user: hard.
    Pinned(PoolIdx),
    /// Any-pool: never restricted.
    Any,
    /// Chosen by the pass (or none): re-decided at run time from real sizes and locations.
    Pass(Option<PoolIdx>),
    /// Placed by the pass's optimising step for the sizes hinted: kept at run time while the
    /// inputs' actual sizes are within 2x of their hints, re-decided otherwise.
    Optimised(PoolIdx),
}

#[derive(Debug)]
pub(crate) struct Task {
    pub key: Arc<str>,
    /// What it computes (see `drover_graph::fingerprint`).
    pub fingerprint: Fingerprint,
    pub function: FnIdx,
    pub params: Option<Arc<str>>,
    pub inputs: Box<[TaskIdx]>,
    /// One entry per input occurrence of each consumer.
    pub consumers: Vec<TaskIdx>,
    /// Entries of `consumers` whose task the core still knows (not forgotten).
    pub live_consumers: u32,
    pub place: StaticPlace,
    pub req: ReqIdx,
    pub priority: i32,
    pub retries_left: u32,
    pub state: State,
    /// Input occurrences not in memory (meaningful while waiting).
    pub pending: u32,
    /// Pending consumer occurrences, client wants and handoffs (see the module docs).
    pub waiters: u32,
    pub holders: Vec<WorkerId>,
    pub size: u64,
    /// Its output's size hint ([`NO_HINT`] without one): run-time placement compares actual
    /// sizes with it.
    pub hint: u64,
    /// The run that created it; others are in `Core::extra_runs`.
    pub run: u32,
    /// Where it was placed when assigned (for events).
    pub placed_pool: Option<PoolIdx>,
    /// Runs below this number were told it finished (or, at their submission, that it was
    /// done or skipped): a later computation of its freed result
    /// (for a newer run) is news to the newer runs only. 0 after a loss, so every run hears of
    /// the recomputation (a rerun).
    pub told_below: u32,
    /// How many times its current computation started (re-runs after a lost worker, a lost
    /// input or a retry count; a task bounced before it started does not). Computing a freed
    /// result again for a new run starts from zero.
    pub attempts: u32,
    /// Whether its current assignment has started running.
    pub started: bool,
    /// When it was last assigned (the core's sequence), for the worker's run order.
    pub assigned_seq: u64,
    /// When it was last queued: only the queue entry with this number is live.
    pub ready_seq: u64,
    /// Times in a row a worker could not fetch its inputs from a holder still connected.
    pub fetch_failures: u32,
    pub timeout_ms: Option<std::num::NonZeroU64>,
    /// Durable at this version: committed to the progress store when it finishes.
    pub durable: Option<u64>,
    /// Set for once-cells: always "in memory" (every worker can load its own), never freed
    /// by waiters; `holders` are the workers that loaded it.
    pub cell: Option<Box<CellInfo>>,
}

/// A task's fingerprint (see `drover_graph::fingerprint`), kept as two words: a `u128` field
/// would align every [`Task`] to 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Fingerprint([u64; 2]);

impl Fingerprint {
    /// Of the graph's fingerprint `v`.
    pub fn new(v: u128) -> Fingerprint {
        Fingerprint([v as u64, (v >> 64) as u64])
    }

    /// The graph's fingerprint.
    pub fn get(self) -> u128 {
        u128::from(self.0[0]) | (u128::from(self.0[1]) << 64)
    }
}

/// A once-cell's settings and what the scheduler learnt of it.
#[derive(Debug, Clone)]
pub(crate) struct CellInfo {
    pub lifetime: drover_graph::Lifetime,
    pub lazy: bool,
    /// Mean load time seen so far, microseconds.
    pub mean_load_us: Option<f64>,
}

/// What a task needs of a worker besides a pool: functions (its own and its once-cells'
/// loaders, sorted) and consumable resources.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Req {
    pub functions: Box<[FnIdx]>,
    pub resources: Vec<(String, u64)>,
}

#[derive(Debug)]
pub(crate) struct Worker {
    pub name: Arc<str>,
    pub pools: Vec<PoolIdx>,
    pub resources: Vec<(String, f64)>,
    pub functions: HashSet<FnIdx>,
    pub nthreads: u32,
    pub inflight: u32,
    pub peer: PeerInfo,
    /// Results held here.
    pub has: FastSet<TaskIdx>,
    /// Tasks assigned here and not finished.
    pub assigned: FastSet<TaskIdx>,
    /// Retiring: takes no new tasks; leaves once nothing needed is held only here.
    pub retiring: bool,
    /// Workers asked to copy this retiring worker's results, not yet answered.
    pub handoffs: Vec<WorkerId>,
    /// Rounds of handoffs in which a copy failed (tried again, up to a bound).
    pub handoff_failures: u32,
    /// A replacement is coming: hold results until some other worker can take them.
    pub await_successor: bool,
    /// Copies this worker was asked to make: (retiring worker, results), each result holding a
    /// waiter until the answer.
    pub replicating: Vec<(WorkerId, Vec<TaskIdx>)>,
    /// Once-cells this worker was told of: loaded, loading, or to load on first need.
    pub cells: FastSet<TaskIdx>,
    /// Tasks assigned here whose chain of pre-assigned followers stopped at this worker's
    /// capacity: extended again when room frees (see `preassign.rs`). At most
    /// `preassign::MAX_STALLED`; a tail not recorded only costs its chain a round trip.
    pub stalled: Vec<TaskIdx>,
    /// Of `inflight`, the pre-assigned tasks still waiting for inputs being made here: they
    /// take no thread yet, so they do not count against the room for ready tasks.
    pub waiting: u32,
}

#[derive(Debug)]
pub(crate) struct Run {
    pub client: ClientId,
    pub client_run: u32,
    /// The client said the run is over.
    pub ended: bool,
    /// Once-cells scoped to this run.
    pub scoped_cells: Vec<TaskIdx>,
    /// The namespace its durable tasks commit to.
    pub namespace: Arc<str>,
}

/// A ready task in a queue: higher priority first, then first come.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ReadyEntry {
    pub priority: i32,
    pub order: std::cmp::Reverse<u64>,
    pub task: TaskIdx,
}

/// A ready queue: tasks with the same restriction and requirements.
pub(crate) type Class = (Restriction, ReqIdx);

/// Tells the first occurrence of each id in a list from repeats: a linear scan for short
/// lists (most tasks have a few inputs), a hash set for long ones (a gather of 100,000).
pub(crate) enum Distinct {
    Few(Vec<TaskIdx>),
    Many(HashSet<TaskIdx>),
}

impl Distinct {
    /// For a list of `len` ids.
    pub fn new(len: usize) -> Distinct {
        if len > 16 {
            Distinct::Many(HashSet::with_capacity(len))
        } else {
            Distinct::Few(Vec::new())
        }
    }

    /// Whether `i` is seen for the first time.
    pub fn first(&mut self, i: TaskIdx) -> bool {
        match self {
            Distinct::Few(v) if v.contains(&i) => false,
            Distinct::Few(v) => {
                v.push(i);
                true
            }
            Distinct::Many(s) => s.insert(i),
        }
    }
}

/// The scheduler's state. See the module docs.
#[derive(Debug, Default)]
pub struct Core {
    pub(crate) tasks: Vec<Task>,
    pub(crate) keys: key_index::KeyIndex,
    pub(crate) workers: BTreeMap<WorkerId, Worker>,
    pub(crate) pools: Vec<Arc<str>>,
    pub(crate) pool_index: FastMap<Arc<str>, PoolIdx>,
    pub(crate) functions: Vec<Arc<str>>,
    pub(crate) function_index: FastMap<Arc<str>, FnIdx>,
    pub(crate) reqs: Vec<Req>,
    pub(crate) req_index: FastMap<Req, ReqIdx>,
    /// The requirement of a task of one function, no once-cell inputs and no resources (most
    /// tasks): found here without building and hashing a [`Req`].
    pub(crate) plain_req: FastMap<FnIdx, ReqIdx>,
    pub(crate) runs: Vec<Run>,
    pub(crate) extra_runs: FastMap<TaskIdx, Vec<u32>>,
    pub(crate) clients: FastMap<ClientId, FastSet<TaskIdx>>,
    pub(crate) ready: BTreeMap<Class, BinaryHeap<ReadyEntry>>,
    pub(crate) warned: HashSet<(ClientId, Class)>,
    pub(crate) seq: u64,
    /// Running mean of task durations, microseconds.
    pub(crate) mean_duration_us: f64,
    /// Assumed transfer bandwidth, bytes per microsecond.
    pub(crate) bandwidth: f64,
    pub(crate) out: Vec<Command>,
    pub(crate) config: CoreConfig,
    /// Names of workers that died while running a task, for the tasks that have any.
    pub(crate) deaths: HashMap<TaskIdx, Vec<Arc<str>>>,
    /// Bytes moved into assigned tasks so far (all, across pools), for their events.
    pub(crate) moved: FastMap<TaskIdx, (u64, u64)>,
    /// Locate requests waiting for results being computed: (client, request, keys).
    pub(crate) pending_locates: Vec<(ClientId, u32, Vec<String>)>,
    /// Task slots freed by forgetting, reused by new tasks (kept sorted, lowest last).
    pub(crate) free_slots: Vec<TaskIdx>,
    /// Tasks done for good after their runs were gone, to forget at the end of the event.
    pub(crate) forget_candidates: Vec<TaskIdx>,
    /// Outputs of durable tasks found done in the progress store, held by the core itself
    /// while something needs them (handed to workers with [`ToWorker::Data`], to clients
    /// inline).
    pub(crate) stored: HashMap<TaskIdx, Arc<Vec<u8>>>,
    /// Submissions waiting for the progress store to say which durable tasks are done.
    pub(crate) lookups: HashMap<u64, submit::Submission>,
    pub(crate) next_lookup: u64,
    /// Whether some connected worker of a pool can run tasks of a requirement: cleared when
    /// workers join, leave or retire.
    pub(crate) pool_can: std::cell::RefCell<HashMap<(PoolIdx, ReqIdx), bool>>,
    /// Runs that outlive their clients.
    pub(crate) detached: detached::DetachedRuns,
    /// The propagate-pools pass's estimates of bytes crossing pools, summed over submissions.
    pub(crate) estimated_cross_pool: u64,
    /// Tasks assigned before their inputs finished, to the worker computing them: the inputs
    /// they still wait for there (see `preassign.rs`).
    pub(crate) preassigned: FastMap<TaskIdx, Vec<TaskIdx>>,
    /// Scratch of [`Core::activate`] (its work list and the tasks it activated), kept so a
    /// submission activating a million tasks does not allocate twice per task.
    pub(crate) activation: (Vec<TaskIdx>, Vec<TaskIdx>),
}

/// A submitted JSON graph, its text freed once read: the memory it held serves the planning
/// and merge that follow.
pub(crate) fn graph_of_json(text: String) -> Result<drover_graph::Graph, String> {
    let started = std::time::Instant::now();
    let graph = drover_graph::Graph::from_json_str(&text).map_err(|e| e.to_string());
    log_decoded("JSON", text.len(), &graph, started);
    graph
}

/// A submitted wire graph, its bytes freed once decoded (as [`graph_of_json`]).
pub(crate) fn graph_of_wire(bytes: Vec<u8>) -> Result<drover_graph::Graph, String> {
    let started = std::time::Instant::now();
    let graph = drover_graph::Graph::from_wire(&bytes).map_err(|e| e.to_string());
    log_decoded("wire", bytes.len(), &graph, started);
    graph
}

/// The debug log's line for a decoded submission (with `Core::submit`'s lines for checking
/// and merging: where a large submission's time goes).
fn log_decoded(
    form: &str,
    bytes: usize,
    graph: &Result<drover_graph::Graph, String>,
    started: std::time::Instant,
) {
    tracing::debug!(
        form,
        bytes,
        tasks = graph.as_ref().map_or(0, |g| g.len()),
        ms = started.elapsed().as_secs_f64() * 1e3,
        "submitted graph decoded"
    );
}

/// Limits of the scheduler's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreConfig {
    /// A task that was running on this many workers that each died is failed as suspicious
    /// rather than tried on another.
    pub max_worker_deaths: u32,
    /// A task whose inputs could not be fetched from holders still connected this many times
    /// in a row fails, naming the input and the holder, instead of trying again.
    pub max_fetch_failures: u32,
    /// A durable task's output is kept in the progress store when at most this many bytes.
    pub max_output: u64,
    /// A detached run's outputs are kept this long after it ended when nobody fetches and
    /// releases them; its record as long again after that.
    pub retention_ms: u64,
    /// This scheduler's tag, the second half of detached run ids (`3-1f2a`), so that a run id
    /// of an earlier scheduler is not taken for another run after a restart.
    pub instance: u16,
    /// Pre-assign tasks to the worker computing all their inputs, before those finish (see
    /// `preassign.rs`): a chain then runs on its worker without a round trip per task.
    pub preassign: bool,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            max_worker_deaths: 3,
            max_fetch_failures: 5,
            max_output: drover_progress::DEFAULT_MAX_OUTPUT as u64,
            retention_ms: 24 * 3600 * 1000,
            instance: 0,
            preassign: true,
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
    /// Results held, counted once per holder (once-cells aside).
    pub held: usize,
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
        if matches!(
            event,
            Event::WorkerJoined { .. }
                | Event::WorkerLeft { .. }
                | Event::Worker(_, FromWorker::Retiring { .. })
        ) {
            self.pool_can.borrow_mut().clear();
        }
        match event {
            Event::WorkerJoined { id, hello } => self.worker_joined(id, hello),
            Event::WorkerLeft { id } => self.worker_left(id),
            Event::ClientJoined { id } => {
                self.clients.entry(id).or_default();
            }
            Event::ClientLeft { id } => {
                self.detached_client_left(id);
                self.client_left(id);
            }
            Event::Tick { now_ms } => self.detached_tick(now_ms),
            Event::Worker(w, msg) => self.worker_message(w, msg),
            Event::Looked { id, found } => self.looked(id, found),
            Event::Client(c, msg) => match msg {
                FromClient::Submit {
                    run,
                    graph_json,
                    wants,
                } => self.submit(c, run, graph_of_json(graph_json), &wants),
                FromClient::SubmitWire { run, graph, wants } => {
                    self.submit(c, run, graph_of_wire(graph), &wants)
                }
                FromClient::Locate { req, keys } => {
                    self.pending_locates.push((c, req, keys));
                }
                FromClient::Release { keys } => self.release_wants(c, &keys),
                FromClient::EndRun { run } => self.end_run(c, run),
                FromClient::ReleaseCells { keys } => self.release_cells(&keys),
                FromClient::Runs { req, request } => self.runs_request(c, req, request),
                // The status is the shell's to answer: it adds what only it sees.
                FromClient::Status { .. } => {}
                // The progress store is the shell's: the server routes these around the core.
                FromClient::Progress { .. } => {}
            },
        }
        self.schedule();
        self.progress_retirements();
        if !self.pending_locates.is_empty() {
            self.answer_locates();
        }
        if !self.forget_candidates.is_empty() {
            self.forget_noted();
        }
        let out = std::mem::take(&mut self.out);
        if self.detached.is_empty() {
            out
        } else {
            self.route_detached(out)
        }
    }

    /// A line on the task `key` names (its state, counts, holders, inputs' states), for
    /// diagnostics; `None` for an unknown key.
    pub fn describe_key(&self, key: &str) -> Option<String> {
        let t = self.slot_of(key)?;
        let task = &self.tasks[t as usize];
        let inputs: Vec<String> = task
            .inputs
            .iter()
            .map(|&i| {
                let x = &self.tasks[i as usize];
                format!("{}={:?}@{:?}", x.key, x.state, x.holders)
            })
            .collect();
        Some(format!(
            "slot {t} {:?} pending {} waiters {} holders {:?} attempts {} runs {:?} inputs [{}]",
            task.state,
            task.pending,
            task.waiters,
            task.holders,
            task.attempts,
            self.runs_of(t).collect::<Vec<_>>(),
            inputs.join(", ")
        ))
    }

    /// Asks for the parts of task `t`'s record that merging and activating a consumer of it
    /// read and write (a hint: a slot the core does not hold is ignored). The records of a
    /// large graph's inputs are anywhere in memory: asked for a few tasks ahead, their
    /// fetches overlap.
    #[inline]
    pub(crate) fn prefetch_task(&self, t: TaskIdx) {
        use drover_graph::prefetch::prefetch;
        if let Some(task) = self.tasks.get(t as usize) {
            prefetch(&task.state);
            prefetch(&task.waiters);
            prefetch(&task.attempts);
            prefetch(&task.consumers);
            prefetch(&task.live_consumers);
            prefetch(&task.cell);
        }
    }

    /// Asks for the memory where slot `t`'s next consumer goes, once its record is in cache
    /// (see [`Core::prefetch_task`]).
    #[inline]
    pub(crate) fn prefetch_consumers(&self, t: TaskIdx) {
        if let Some(task) = self.tasks.get(t as usize) {
            if task.consumers.len() < task.consumers.capacity() {
                let end = task.consumers.as_ptr().wrapping_add(task.consumers.len());
                drover_graph::prefetch::prefetch_ptr(end);
            }
        }
    }

    /// The slot of the task `key` names, if the core knows it.
    pub(crate) fn slot_of(&self, key: &str) -> Option<TaskIdx> {
        self.keys.get(key, &self.tasks)
    }

    /// Why the task `key` names failed, if it is failed.
    pub fn failure_of(&self, key: &str) -> Option<String> {
        let t = self.slot_of(key)?;
        match &self.tasks[t as usize].state {
            State::Failed(why) => Some(why.to_string()),
            _ => None,
        }
    }

    /// Keys of the tasks the core still knows, once-cells aside (which it keeps for good),
    /// sorted: empty once every client left and everything settled.
    pub fn leftover_tasks(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .tasks
            .iter()
            .filter(|t| !t.key.is_empty() && t.cell.is_none())
            .map(|t| t.key.to_string())
            .collect();
        v.sort();
        v
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
                State::Memory => {
                    s.in_memory += 1;
                    if t.cell.is_none() {
                        s.held += t.holders.len();
                    }
                }
                State::Ready => s.ready += 1,
                State::Assigned(_) => s.assigned += 1,
                _ => {}
            }
        }
        s
    }

    /// The results each connected worker holds as far as the scheduler knows (once-cells
    /// aside), sorted: for checking against the workers themselves.
    pub fn believed_holdings(&self) -> BTreeMap<WorkerId, Vec<TaskIdx>> {
        self.workers
            .iter()
            .map(|(&id, w)| {
                let mut v: Vec<TaskIdx> = w.has.iter().copied().collect();
                v.sort_unstable();
                (id, v)
            })
            .collect()
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

    /// Whether some run including `t` has a connected client.
    pub(crate) fn has_connected_run(&self, t: TaskIdx) -> bool {
        self.runs_of(t).any(|r| self.run_connected(r))
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

    pub(crate) fn intern_function(&mut self, name: &str) -> FnIdx {
        if let Some(&f) = self.function_index.get(name) {
            return f;
        }
        let f = self.functions.len() as FnIdx;
        let name: Arc<str> = Arc::from(name);
        self.functions.push(name.clone());
        self.function_index.insert(name, f);
        f
    }

    pub(crate) fn intern_req(&mut self, req: Req) -> ReqIdx {
        if let Some(&r) = self.req_index.get(&req) {
            return r;
        }
        let r = self.reqs.len() as ReqIdx;
        self.reqs.push(req.clone());
        self.req_index.insert(req, r);
        r
    }

    /// The consumable resources of requirement `r`, as amounts.
    pub(crate) fn req_resources(&self, r: ReqIdx) -> Vec<(String, f64)> {
        self.reqs[r as usize]
            .resources
            .iter()
            .map(|(k, bits)| (k.clone(), f64::from_bits(*bits)))
            .collect()
    }

    /// Sends a task event to every live run that includes the task.
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
        let told_below = self.tasks[t as usize].told_below;
        let runs: Vec<u32> = self
            .runs_of(t)
            .filter(|&r| r >= told_below)
            .filter(|&r| !self.runs[r as usize].ended && self.run_connected(r))
            .collect();
        if status == TaskStatus::Finished {
            self.tasks[t as usize].told_below = self.runs.len() as u32;
        }
        if runs.is_empty() {
            return;
        }
        let task = &self.tasks[t as usize];
        let event = TaskEvent {
            run: 0,
            key: task.key.to_string(),
            status,
            worker: worker
                .and_then(|w| self.workers.get(&w))
                .map(|w| w.name.to_string()),
            // Where it was placed, or else the pool of the worker it ran on (the first, for a
            // worker of several).
            pool: task
                .placed_pool
                .or_else(|| {
                    worker.and_then(|w| self.workers.get(&w)).and_then(|w| {
                        w.pools
                            .iter()
                            .min_by_key(|p| &self.pools[**p as usize])
                            .copied()
                    })
                })
                .map(|p| self.pools[p as usize].to_string()),
            output_bytes: if status == TaskStatus::Finished {
                task.size
            } else {
                0
            },
            duration_us,
            moved_bytes,
            cross_pool_bytes,
            error,
            attempts: task.attempts,
            load: false,
            reused: false,
            done_before: false,
        };
        // A copy for each run but the last, which takes the event itself.
        let (&last, others) = runs.split_last().expect("checked above");
        for &r in others {
            let run = &self.runs[r as usize];
            let event = TaskEvent {
                run: run.client_run,
                ..event.clone()
            };
            self.out
                .push(Command::Client(run.client, ToClient::Events(vec![event])));
        }
        let run = &self.runs[last as usize];
        let event = TaskEvent {
            run: run.client_run,
            ..event
        };
        self.out
            .push(Command::Client(run.client, ToClient::Events(vec![event])));
    }

    /// Builds the message that assigns `t` to `w`: each input not held by `w` with every
    /// holder, those in `w`'s pools first.
    pub(crate) fn compute_message(&self, t: TaskIdx, w: WorkerId) -> ToWorker {
        let task = &self.tasks[t as usize];
        let worker = &self.workers[&w];
        let mut sources: Vec<(TaskIdx, WorkerId)> = Vec::new();
        let mut listed = Distinct::new(task.inputs.len());
        for &i in task.inputs.iter() {
            let input = &self.tasks[i as usize];
            if input.cell.is_some() || worker.has.contains(&i) || !listed.first(i) {
                continue;
            }
            let near = |h: &WorkerId| {
                self.workers
                    .get(h)
                    .is_some_and(|x| x.pools.iter().any(|p| worker.pools.contains(p)))
            };
            sources.extend(input.holders.iter().filter(|h| near(h)).map(|&h| (i, h)));
            sources.extend(input.holders.iter().filter(|h| !near(h)).map(|&h| (i, h)));
        }
        ToWorker::Compute(ComputeTask {
            id: t,
            key: task.key.to_string(),
            function: self.functions[task.function as usize].to_string(),
            params: task.params.as_deref().map(str::to_owned),
            inputs: task.inputs.to_vec(),
            sources,
            resources: self.req_resources(task.req),
            priority: task.priority,
            timeout_ms: task.timeout_ms.map(std::num::NonZeroU64::get),
            report_output: task.durable.map(|_| self.config.max_output),
            after: self.preassigned.get(&t).cloned().unwrap_or_default(),
        })
    }
}
