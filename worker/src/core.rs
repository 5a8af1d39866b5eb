//! The worker's decisions, as a pure state machine: `handle(event, now) -> commands`, like the
//! scheduler's core. No sockets, threads, clocks or bytes here: the shell ([`crate::runtime`])
//! turns frames, executor threads, fetches and timers into [`Event`]s and carries out the
//! [`Command`]s; the deterministic simulation drives the same core with a simulated network.
//!
//! What it decides:
//! * **Queueing.** Assigned tasks whose inputs are all here wait in a queue, highest priority
//!   first, then first come; a task is handed to the executor threads when a thread and its
//!   consumable resources are free. Tasks without resources are handed over up to
//!   [`THREAD_QUEUE`] per thread ahead, so a thread that finishes one finds the next at once,
//!   and topped up once half of those are done (a thread that drained them is woken once per
//!   batch, not once per task).
//! * **Fetching.** An input not here is fetched from its sources (the holders the scheduler
//!   named, best first), all inputs wanted from one peer in one request. An input being fetched
//!   for one task is not fetched again for another. A source that fails (the peer does not hold
//!   it, cannot be reached, or left) is skipped for the next; a task some input of which has no
//!   source left is given back to the scheduler ([`FromWorker::InputsLost`]) with every failed
//!   (input, holder) pair, so the scheduler corrects what it believes. A peer the scheduler says
//!   is gone is never dialled again, and fetches in flight from it fail at once.
//! * **Pre-assigned tasks.** A task whose [`ComputeTask::after`] names inputs being made here
//!   waits for them here, neither fetched nor reported: each result made here starts its
//!   followers in the same step. If such an input ends without a result (failed, timed out,
//!   given back), its followers are dropped silently, transitively, as the scheduler drops the
//!   same ones when it hears of the input; a follower that arrives after its input failed is
//!   dropped on arrival.
//! * **Keeping and freeing.** The store holds this worker's results and the replicas it
//!   fetched; each is reported to the scheduler when it arrives ([`FromWorker::Finished`],
//!   [`FromWorker::Fetched`], [`FromWorker::Replicated`]), and dropped when the scheduler says
//!   [`ToWorker::Free`], except that a task queued here keeps the inputs it needs until it
//!   starts. A fetched result nobody here needs any more is not kept.
//! * **Timeouts.** A task running past its timeout is reported failed at its deadline and its
//!   late result is dropped. A function that has not returned [`THREAD_GRACE`] after its
//!   deadline ignored it: its thread is given up ([`Command::ThreadLost`]: the shell starts a
//!   replacement, so it no longer counts against the threads) and logged; its resources stay
//!   taken until it returns. Past [`CoreConfig::max_lost_threads`] given up, the worker retires
//!   to be replaced by a fresh process.
//! * **Start reports.** A start is reported only if the task still runs [`START_REPORT_DELAY`]
//!   later, so a short task costs one message.
//! * **Retirement.** SIGTERM, the task lifespan or the memory limit retire the worker: it says
//!   so, takes no new work from the scheduler's side, and exits when the scheduler says
//!   [`ToWorker::Retired`].

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use drover_protocol::{CellSpec, ComputeTask, FromWorker, PeerInfo, TaskIdx, ToWorker, WorkerId};

use crate::context::timeout_message;

/// The core's hot tables, keyed by small integers: a fast hash (foldhash), not SipHash.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
/// A set of the core's hot tables (see [`FastMap`]).
type FastSet<T> = HashSet<T, foldhash::fast::RandomState>;

/// A job's number on this worker: each hand-over of a task to the threads is a new job.
pub type JobId = u64;
/// A fetch's number on this worker.
pub type FetchId = u64;

/// Resource-free tasks handed to the executor threads ahead, per thread.
pub const THREAD_QUEUE: u32 = 16;
/// A start is reported if the task still runs this long after it began.
pub const START_REPORT_DELAY: Duration = Duration::from_millis(50);

/// The worker's fixed settings.
#[derive(Debug, Clone, Default)]
pub struct CoreConfig {
    /// Tasks run at once.
    pub nthreads: u32,
    /// Consumable resources and their amounts (pools are not consumed and not listed).
    pub resources: Vec<(String, f64)>,
    /// Retire after this many tasks, to be replaced by a fresh process.
    pub lifespan_tasks: Option<u64>,
    /// Retire when the process's resident memory passes this many bytes.
    pub memory_limit: Option<u64>,
    /// Retire when more threads than this were given up (their functions ignored their
    /// timeouts); 0 means `max(4, nthreads)`.
    pub max_lost_threads: u32,
}

/// How long after its deadline a function may take to return before its thread is given up.
pub const THREAD_GRACE: Duration = Duration::from_millis(500);

/// Something that happened, fed to [`WorkerCore::handle`].
#[derive(Debug)]
pub enum Event {
    /// A frame of messages from the scheduler.
    Scheduler(Vec<ToWorker>),
    /// An executor thread began a job.
    JobStarted {
        /// The job.
        job: JobId,
    },
    /// A job ended: its output's size (the shell holds the bytes until told to
    /// [`Command::Keep`] them), or its error.
    JobDone {
        /// The job.
        job: JobId,
        /// Output size, or the error.
        result: Result<u64, String>,
        /// How long the function ran, in microseconds.
        duration_us: u64,
    },
    /// A once-cell load ended on a thread (eager, or for a job).
    Loaded {
        /// The cell.
        cell: TaskIdx,
        /// Load time in microseconds.
        duration_us: u64,
        /// Bytes that came over the wire for it.
        bytes: u64,
        /// Why it failed, if it did.
        error: Option<String>,
    },
    /// A fetch ended. `got` arrived (the shell holds their bytes until told to keep them);
    /// `failed` could not be had from that peer, for `error`.
    Fetched {
        /// The fetch.
        fetch: FetchId,
        /// (result, size) that arrived.
        got: Vec<(TaskIdx, u64)>,
        /// Results the peer did not send.
        failed: Vec<TaskIdx>,
        /// Why they were not sent.
        error: String,
    },
    /// Time passed: check deadlines and due reports (see [`WorkerCore::next_wakeup`]).
    Tick,
    /// Retire on request (SIGTERM): finish, hand over, exit.
    Retire,
    /// The process's resident memory now, in bytes.
    Memory(u64),
}

/// A task handed to an executor thread: its inputs are in the store (once-cells aside).
#[derive(Debug, Clone)]
pub struct Job {
    /// The job's number.
    pub job: JobId,
    /// The task.
    pub task: ComputeTask,
    /// Inputs that are once-cells: (position, cell id).
    pub cells: Vec<(usize, TaskIdx)>,
}

/// Why the session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Retired on request and handed over.
    Retired,
    /// Retired at its lifespan or memory limit: a fresh process should replace it.
    Recycled,
}

/// Something for the shell to do, returned by [`WorkerCore::handle`] in order.
#[derive(Debug)]
pub enum Command {
    /// Send these to the scheduler, as one frame (the shell adds to `Finished` the output of a
    /// task whose `report_output` asks for it).
    Send(Vec<FromWorker>),
    /// Store the bytes of these results just reported by [`Event::JobDone`] or
    /// [`Event::Fetched`], or handed over by [`ToWorker::Data`] (bytes not kept are dropped).
    Keep(Vec<TaskIdx>),
    /// Hand this job to the executor threads (taking its inputs from the store now).
    Run(Job),
    /// Fetch these results from a peer; answer with [`Event::Fetched`].
    Fetch {
        /// The fetch's number.
        fetch: FetchId,
        /// Whom from.
        peer: PeerInfo,
        /// Which results.
        ids: Vec<TaskIdx>,
    },
    /// Remove these results from the store.
    Drop(Vec<TaskIdx>),
    /// This peer is gone: close any connection to it (fetches from it already failed here).
    ForgetPeer(WorkerId),
    /// Know this once-cell (and load it now on its own thread if it says so).
    Cell(CellSpec),
    /// Drop these once-cells' objects (a later use loads them again).
    DropCells(Vec<TaskIdx>),
    /// The function of this job ignored its timeout: give up its thread (start another in its
    /// place; the stuck one ends when the function returns, without taking more work).
    ThreadLost(JobId),
    /// Tell the supervisor to start this worker's successor now.
    Recycling,
    /// End the session.
    Exit(Exit),
}

/// A result in the store (its bytes are the shell's).
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The scheduler no longer counts it as held here: drop it when no queued task needs it.
    freed: bool,
    /// Queued or fetching tasks here that need it.
    pins: u32,
}

/// A task assigned here and not yet handed to a thread.
#[derive(Debug)]
struct Pending {
    task: ComputeTask,
    order: u64,
    /// Inputs still to arrive.
    missing: u32,
    /// (input, holder) pairs that failed so far.
    lost: Vec<(TaskIdx, WorkerId)>,
    error: String,
}

/// An input being fetched for tasks here.
#[derive(Debug, Default)]
struct Wanted {
    /// The fetch getting it, if one is in flight.
    fetch: Option<FetchId>,
    /// Pending tasks waiting for it.
    waiters: Vec<TaskIdx>,
}

#[derive(Debug)]
enum Purpose {
    /// Inputs of tasks here; bytes moved are counted for `first`.
    Inputs { first: TaskIdx },
    /// Copies of a retiring worker's results; `here` were here already.
    Replicate { here: Vec<TaskIdx> },
}

#[derive(Debug)]
struct FetchState {
    peer: WorkerId,
    ids: Vec<TaskIdx>,
    purpose: Purpose,
    /// When it was asked for (the time of the event that started it).
    started: Option<Instant>,
}

/// A job on the threads.
#[derive(Debug)]
struct Running {
    task: TaskIdx,
    resources: Vec<(String, f64)>,
    timeout_ms: Option<u64>,
    deadline: Option<Instant>,
    /// Reported as timed out already: its result is dropped when it comes.
    abandoned: bool,
    /// Its thread was given up (see [`Command::ThreadLost`]).
    lost: bool,
    /// Its start is to be reported (it began and was not reported yet).
    unreported: bool,
}

/// Queue entry: higher priority first, then arrival.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Queued {
    priority: i32,
    order: Reverse<u64>,
    task: TaskIdx,
}

/// How often a worker tells the scheduler its memory and fetch time (when sampled).
pub const STATS_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// The worker's state. See the module docs.
#[derive(Debug)]
pub struct WorkerCore {
    id: WorkerId,
    config: CoreConfig,
    /// The time of the event being handled.
    now: Option<Instant>,
    /// Microseconds spent fetching inputs since the last [`FromWorker::Stats`].
    fetch_us: u64,
    /// When the last [`FromWorker::Stats`] went.
    last_stats: Option<Instant>,
    peers: BTreeMap<WorkerId, PeerInfo>,
    cells: FastSet<TaskIdx>,
    store: FastMap<TaskIdx, Entry>,
    pending: FastMap<TaskIdx, Pending>,
    queue: BinaryHeap<Queued>,
    wanted: FastMap<TaskIdx, Wanted>,
    /// Results being made here (queued or running) that pending tasks here wait for
    /// ([`ComputeTask::after`]), with those tasks, one entry per input occurrence.
    after: FastMap<TaskIdx, Vec<TaskIdx>>,
    fetches: FastMap<FetchId, FetchState>,
    jobs: FastMap<JobId, Running>,
    used: HashMap<String, f64>,
    next_order: u64,
    next_job: JobId,
    next_fetch: FetchId,
    report_due: Option<Instant>,
    tasks_done: u64,
    retiring: bool,
    /// Jobs whose threads were given up and that still run.
    lost_running: usize,
    /// Threads given up since the worker began.
    lost_total: u64,
    recycle: bool,
    /// Filled during one `handle`.
    out: Vec<FromWorker>,
    cmds: Vec<Command>,
    /// Fetches started during one `handle`, by peer (one request per peer).
    batch: BTreeMap<WorkerId, FetchId>,
    drops: Vec<TaskIdx>,
}

impl WorkerCore {
    /// A worker that the scheduler knows as `id`.
    pub fn new(id: WorkerId, config: CoreConfig) -> WorkerCore {
        WorkerCore {
            id,
            config: CoreConfig {
                nthreads: config.nthreads.max(1),
                ..config
            },
            now: None,
            fetch_us: 0,
            last_stats: None,
            peers: BTreeMap::new(),
            cells: Default::default(),
            store: Default::default(),
            pending: Default::default(),
            queue: BinaryHeap::new(),
            wanted: Default::default(),
            after: Default::default(),
            fetches: Default::default(),
            jobs: Default::default(),
            used: HashMap::new(),
            next_order: 0,
            next_job: 0,
            next_fetch: 0,
            report_due: None,
            tasks_done: 0,
            retiring: false,
            lost_running: 0,
            lost_total: 0,
            recycle: false,
            out: Vec::new(),
            cmds: Vec::new(),
            batch: BTreeMap::new(),
            drops: Vec::new(),
        }
    }

    /// Handles one event and returns what to do, in order.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Command> {
        self.now = Some(now);
        match event {
            Event::Scheduler(msgs) => {
                for m in msgs {
                    self.message(m);
                }
            }
            Event::JobStarted { job } => {
                if let Some(r) = self.jobs.get_mut(&job) {
                    r.deadline = r.timeout_ms.map(|ms| now + Duration::from_millis(ms));
                    r.unreported = true;
                    self.report_due.get_or_insert(now + START_REPORT_DELAY);
                }
            }
            Event::JobDone {
                job,
                result,
                duration_us,
            } => self.job_done(job, result, duration_us),
            Event::Loaded {
                cell,
                duration_us,
                bytes,
                error,
            } => self.out.push(FromWorker::Loaded {
                id: cell,
                duration_us,
                bytes,
                error,
            }),
            Event::Fetched {
                fetch,
                got,
                failed,
                error,
            } => self.fetched(fetch, got, &failed, &error),
            Event::Tick => self.tick(now),
            Event::Retire => {
                if !self.retiring || self.recycle {
                    // Also while recycling: no successor will come; leave once handed over.
                    self.retiring = true;
                    self.recycle = false;
                    self.out.push(FromWorker::Retiring { successor: false });
                }
            }
            Event::Memory(rss) => {
                if self.config.memory_limit.is_some_and(|l| rss > l) && !self.retiring {
                    tracing::warn!(worker = self.id, rss, limit = ?self.config.memory_limit, "memory limit exceeded: retiring to be replaced by a fresh process");
                    self.recycle();
                }
                // For the dashboard and `drover status`: at most every STATS_EVERY.
                if self
                    .last_stats
                    .is_none_or(|t| now.saturating_duration_since(t) >= STATS_EVERY)
                {
                    self.last_stats = Some(now);
                    self.out.push(FromWorker::Stats {
                        rss_bytes: rss,
                        fetch_us: std::mem::take(&mut self.fetch_us),
                    });
                }
            }
        }
        self.try_start();
        self.flush()
    }

    /// When the core next needs a [`Event::Tick`]: the nearest deadline or due start report.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.jobs
            .values()
            .filter(|r| !r.lost)
            .filter_map(|r| match r.abandoned {
                false => r.deadline,
                true => r.deadline.map(|d| d + THREAD_GRACE),
            })
            .chain(self.report_due)
            .min()
    }

    /// Results in the store that the scheduler counts as held here, sorted.
    pub fn held(&self) -> Vec<TaskIdx> {
        let mut v: Vec<TaskIdx> = self
            .store
            .iter()
            .filter(|(_, e)| !e.freed)
            .map(|(&id, _)| id)
            .collect();
        v.sort_unstable();
        v
    }

    /// Every result in the store (freed ones kept for a queued task included), sorted.
    pub fn stored(&self) -> Vec<TaskIdx> {
        let mut v: Vec<TaskIdx> = self.store.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Jobs on the threads (abandoned ones included) and resources they hold.
    pub fn busy(&self) -> (usize, f64) {
        (self.jobs.len(), self.used.values().sum())
    }

    /// Recomputes the core's cross-references and says where they disagree: each stored
    /// result's pins equal the queued or fetching tasks here that took it, each awaited input
    /// has a fetch under way and only pending tasks wait for it, each pending task's missing
    /// count matches, and resources held match the jobs on the threads. For tests and the
    /// simulation.
    pub fn check(&self) -> Result<(), String> {
        let mut pins: HashMap<TaskIdx, u32> = HashMap::new();
        let mut awaited: HashMap<TaskIdx, u32> = HashMap::new();
        for (i, w) in &self.wanted {
            if !w.fetch.is_some_and(|f| self.fetches.contains_key(&f)) && !w.waiters.is_empty() {
                return Err(format!("input {i} is awaited with no fetch under way"));
            }
            for t in &w.waiters {
                if !self.pending.contains_key(t) {
                    return Err(format!("task {t} waits for {i} but is not pending here"));
                }
                *awaited.entry(*t).or_default() += 1;
            }
        }
        for (i, ws) in &self.after {
            // Timed out and not reported yet counts as being made: its waiters go with the
            // report.
            let unreported = self.jobs.values().any(|r| r.task == *i && !r.lost);
            if !(self.pending.contains_key(i) || unreported) || ws.is_empty() {
                return Err(format!(
                    "tasks {ws:?} wait for {i}, which is not being made here"
                ));
            }
            for t in ws {
                if !self.pending.contains_key(t) {
                    return Err(format!("task {t} waits for {i} but is not pending here"));
                }
                *awaited.entry(*t).or_default() += 1;
            }
        }
        for (t, p) in &self.pending {
            let mut here = 0;
            for i in &p.task.inputs {
                if self.cells.contains(i) {
                    continue;
                }
                let waits = self.wanted.get(i).is_some_and(|w| w.waiters.contains(t))
                    || self.after.get(i).is_some_and(|w| w.contains(t));
                if !waits {
                    if !self.store.contains_key(i) {
                        return Err(format!("task {t}'s input {i} is neither here nor awaited"));
                    }
                    *pins.entry(*i).or_default() += 1;
                    here += 1;
                }
            }
            let missing = awaited.get(t).copied().unwrap_or(0);
            if p.missing != missing
                || p.task
                    .inputs
                    .iter()
                    .filter(|i| !self.cells.contains(i))
                    .count() as u32
                    != here + missing
            {
                return Err(format!(
                    "task {t} counts {} missing inputs; {missing} are awaited",
                    p.missing
                ));
            }
        }
        for (i, e) in &self.store {
            let want = pins.get(i).copied().unwrap_or(0);
            if e.pins != want {
                return Err(format!(
                    "result {i} has {} pins; {want} queued tasks took it",
                    e.pins
                ));
            }
            if e.freed && e.pins == 0 {
                return Err(format!("result {i} is freed and unused but still stored"));
            }
        }
        let mut used: HashMap<&str, f64> = HashMap::new();
        for r in self.jobs.values() {
            for (name, need) in &r.resources {
                *used.entry(name).or_default() += need;
            }
        }
        for (name, u) in &self.used {
            if (used.get(name.as_str()).copied().unwrap_or(0.0) - u).abs() > 1e-6 {
                return Err(format!(
                    "resource {name} counts {u} in use; the jobs hold {:?}",
                    used.get(name.as_str())
                ));
            }
        }
        Ok(())
    }

    fn message(&mut self, m: ToWorker) {
        match m {
            ToWorker::Compute(task) => self.assigned(task),
            ToWorker::Free(ids) => {
                for id in ids {
                    if let Some(e) = self.store.get_mut(&id) {
                        e.freed = true;
                        if e.pins == 0 {
                            self.store.remove(&id);
                            self.drops.push(id);
                        }
                    }
                }
                self.shrink();
            }
            ToWorker::Peers(list) => {
                for p in list {
                    self.peers.insert(p.id, p);
                }
            }
            ToWorker::PeerGone(w) => self.peer_gone(w),
            ToWorker::Replicate { from, ids } => self.replicate(from, ids),
            ToWorker::Retired => {
                let exit = if self.recycle {
                    Exit::Recycled
                } else {
                    Exit::Retired
                };
                self.cmds.push(Command::Exit(exit));
            }
            ToWorker::Cell(spec) => {
                self.cells.insert(spec.id);
                self.cmds.push(Command::Cell(spec));
            }
            // The objects go; the ids stay known as once-cells (they are never reused), so a
            // task here that still uses one loads it again.
            ToWorker::DropCells(ids) => self.cmds.push(Command::DropCells(ids)),
            // Stored outputs the scheduler hands over: held here as if made here (it counts
            // this worker as holding them already). Their bytes are the shell's.
            ToWorker::Data(items) => {
                let keep: Vec<TaskIdx> = items
                    .into_iter()
                    .filter_map(|(i, _)| self.arrived(i).then_some(i))
                    .collect();
                if !keep.is_empty() {
                    self.cmds.push(Command::Keep(keep));
                }
            }
        }
    }

    /// A task arrives: queue it, or fetch what it lacks first.
    fn assigned(&mut self, mut task: ComputeTask) {
        let id = task.id;
        // By input, each input's holders still best first (the sort is stable): a task with
        // many inputs finds an input's sources by a binary search.
        task.sources.sort_by_key(|&(i, _)| i);
        if self.pending.contains_key(&id) {
            tracing::warn!(
                task = id,
                "assigned again while queued here; ignoring the repeat"
            );
            return;
        }
        if self.recycle {
            // Sent before the scheduler heard this worker retires: the successor runs it.
            self.out.push(FromWorker::Returned(vec![id]));
            return;
        }
        // Inputs made here: each must still be on its way (queued or running), else it ended
        // without a result and the scheduler drops this task too.
        if let Some(&gone) = task
            .after
            .iter()
            .find(|&&i| !self.store.contains_key(&i) && !self.making(i))
        {
            tracing::debug!(
                task = id,
                input = gone,
                "dropping a task whose input made here failed"
            );
            return;
        }
        self.next_order += 1;
        let mut missing: Vec<TaskIdx> = Vec::new();
        let mut made_here = 0;
        for &i in &task.inputs {
            if self.cells.contains(&i) {
                continue;
            }
            match self.store.get_mut(&i) {
                Some(e) => e.pins += 1,
                None if task.after.contains(&i) => {
                    self.after.entry(i).or_default().push(id);
                    made_here += 1;
                }
                None => missing.push(i),
            }
        }
        let p = Pending {
            missing: missing.len() as u32 + made_here,
            task,
            order: self.next_order,
            lost: Vec::new(),
            error: String::new(),
        };
        self.pending.insert(id, p);
        if missing.is_empty() && made_here == 0 {
            self.enqueue(id);
            return;
        }
        for i in missing {
            self.want(id, i);
        }
    }

    /// Task `t` no longer waits here for input `i` being made here (one occurrence); `false` if
    /// it did not.
    fn stop_waiting_after(&mut self, i: TaskIdx, t: TaskIdx) -> bool {
        let Some(ws) = self.after.get_mut(&i) else {
            return false;
        };
        let Some(pos) = ws.iter().position(|&y| y == t) else {
            return false;
        };
        ws.swap_remove(pos);
        if ws.is_empty() {
            self.after.remove(&i);
        }
        true
    }

    /// Whether task `i` is queued or running here and may still make its result.
    fn making(&self, i: TaskIdx) -> bool {
        self.pending.contains_key(&i) || self.jobs.values().any(|r| r.task == i && !r.abandoned)
    }

    /// Task `t` ended here without a result (reported failed, timed out or given back): the
    /// tasks waiting here for it are dropped, and those waiting for them, all the way down;
    /// the scheduler drops the same ones when it hears of `t`.
    fn drop_after(&mut self, t: TaskIdx) {
        if self.after.is_empty() {
            return;
        }
        let mut stack = vec![t];
        while let Some(x) = stack.pop() {
            for d in self.after.remove(&x).unwrap_or_default() {
                let Some(p) = self.pending.remove(&d) else {
                    continue; // listed twice: dropped already
                };
                tracing::debug!(
                    task = d,
                    input = x,
                    "dropping a task whose input made here failed"
                );
                // (Its waits for `x` went with `x`'s entry; `x` has no result here to unpin.)
                self.release_inputs(d, &p.task.inputs);
                stack.push(d);
            }
        }
    }

    fn enqueue(&mut self, id: TaskIdx) {
        let p = &self.pending[&id];
        self.queue.push(Queued {
            priority: p.task.priority,
            order: Reverse(p.order),
            task: id,
        });
    }

    /// Task `t` needs input `i`, which is not here: join a fetch of it, or start one from the
    /// task's next source, or give the task up.
    fn want(&mut self, t: TaskIdx, i: TaskIdx) {
        let in_flight = self.wanted.get(&i).and_then(|w| w.fetch);
        if in_flight.is_some_and(|f| self.fetches.contains_key(&f)) {
            self.wanted.entry(i).or_default().waiters.push(t);
            return;
        }
        let Some(holder) = self.next_source(t, i) else {
            self.give_up(t, i);
            return;
        };
        let fetch = match self.batch.get(&holder) {
            Some(&f) => f,
            None => {
                self.next_fetch += 1;
                let f = self.next_fetch;
                self.batch.insert(holder, f);
                self.fetches.insert(
                    f,
                    FetchState {
                        peer: holder,
                        ids: Vec::new(),
                        purpose: Purpose::Inputs { first: t },
                        started: self.now,
                    },
                );
                f
            }
        };
        self.fetches
            .get_mut(&fetch)
            .expect("batched fetch exists")
            .ids
            .push(i);
        let w = self.wanted.entry(i).or_default();
        w.fetch = Some(fetch);
        w.waiters.push(t);
    }

    /// The first source of `i` for `t` that has not failed and is a known, live peer; sources
    /// that are unknown here count as failed.
    fn next_source(&mut self, t: TaskIdx, i: TaskIdx) -> Option<WorkerId> {
        let me = self.id;
        let p = self.pending.get_mut(&t)?;
        let from = p.task.sources.partition_point(|&(input, _)| input < i);
        let to = from + p.task.sources[from..].partition_point(|&(input, _)| input == i);
        for &(_, holder) in &p.task.sources[from..to] {
            if p.lost.contains(&(i, holder)) {
                continue;
            }
            if holder != me && self.peers.contains_key(&holder) {
                return Some(holder);
            }
            p.lost.push((i, holder));
            p.error = if holder == me {
                format!("result {i} is not held by this worker")
            } else {
                format!("worker {holder} holding result {i} is gone")
            };
        }
        if from == to {
            // Named as held here, yet not here: the scheduler must correct its belief.
            p.lost.push((i, me));
            p.error = format!("result {i} is not held by this worker");
        }
        None
    }

    /// `t` cannot get input `i` from anywhere: hand it back to the scheduler.
    fn give_up(&mut self, t: TaskIdx, i: TaskIdx) {
        let Some(p) = self.pending.remove(&t) else {
            return;
        };
        tracing::warn!(key = %p.task.key, input = i, error = %p.error, "cannot fetch an input; giving the task back");
        self.release_inputs(t, &p.task.inputs);
        self.out.push(FromWorker::InputsLost {
            id: t,
            lost: p.lost,
            error: p.error,
        });
        self.drop_after(t);
    }

    /// Pending task `t` (of these inputs) left: each input occurrence is either awaited
    /// (listed among its waiters, fetched or made here) or here and pinned by it: undoes
    /// whichever it is.
    fn release_inputs(&mut self, t: TaskIdx, inputs: &[TaskIdx]) {
        for &input in inputs {
            if self.cells.contains(&input) {
                continue;
            }
            let awaited = self.wanted.get_mut(&input).and_then(|w| {
                let pos = w.waiters.iter().position(|&x| x == t)?;
                w.waiters.swap_remove(pos);
                Some(())
            });
            if awaited.is_none() && !self.stop_waiting_after(input, t) {
                self.unpin(input);
            }
        }
    }

    /// One pin less on `i` (a task that needed it started or left); drops a freed result
    /// nobody here needs any more.
    fn unpin(&mut self, i: TaskIdx) {
        if let Some(e) = self.store.get_mut(&i) {
            e.pins = e.pins.saturating_sub(1);
            if e.freed && e.pins == 0 {
                self.store.remove(&i);
                self.drops.push(i);
            }
        }
    }

    fn fetched(
        &mut self,
        fetch: FetchId,
        got: Vec<(TaskIdx, u64)>,
        failed: &[TaskIdx],
        error: &str,
    ) {
        let Some(f) = self.fetches.remove(&fetch) else {
            return; // failed already (its peer left): what it brings is not kept
        };
        let mut took_us = 0;
        if let (Some(started), Some(now)) = (f.started, self.now) {
            took_us = now.saturating_duration_since(started).as_micros() as u64;
            self.fetch_us = self.fetch_us.saturating_add(took_us);
        }
        match f.purpose {
            Purpose::Replicate { here } => {
                let mut ids = here;
                let mut keep = Vec::new();
                for (i, _) in got {
                    if self.arrived(i) {
                        keep.push(i);
                    }
                    if let Some(e) = self.store.get_mut(&i) {
                        e.freed = false; // counted as held here again by this reply
                    }
                    ids.push(i);
                }
                if !keep.is_empty() {
                    self.cmds.push(Command::Keep(keep));
                }
                if !failed.is_empty() {
                    tracing::warn!(from = f.peer, %error, "could not copy some of a retiring worker's results");
                }
                self.out.push(FromWorker::Replicated {
                    from: f.peer,
                    ids,
                    failed: !failed.is_empty(),
                });
            }
            Purpose::Inputs { first } => {
                let mut keep = Vec::new();
                let mut report: BTreeMap<TaskIdx, Vec<(TaskIdx, WorkerId, u64)>> = BTreeMap::new();
                for (i, size) in got {
                    let to = match self.wanted.get(&i) {
                        Some(w) if w.waiters.contains(&first) => first,
                        Some(w) if !w.waiters.is_empty() => w.waiters[0],
                        _ => continue, // nobody here needs it now: not kept, not reported
                    };
                    if self.arrived(i) {
                        keep.push(i);
                        report.entry(to).or_default().push((i, f.peer, size));
                    }
                }
                if !keep.is_empty() {
                    self.cmds.push(Command::Keep(keep));
                }
                for (task, inputs) in report {
                    self.out.push(FromWorker::Fetched {
                        task,
                        inputs,
                        fetch_us: std::mem::take(&mut took_us),
                    });
                }
                self.fetch_failed(f.peer, failed, error);
            }
        }
    }

    /// Result `i` is here now (made, fetched or copied): stores it unless it was here already
    /// (then `false`), and hands it to every task waiting for it.
    fn arrived(&mut self, i: TaskIdx) -> bool {
        let mut waiters = self
            .wanted
            .remove(&i)
            .map(|w| w.waiters)
            .unwrap_or_default();
        if let Some(made_here) = self.after.remove(&i) {
            waiters.extend(made_here);
        }
        let new = !self.store.contains_key(&i);
        let e = self.store.entry(i).or_insert(Entry {
            freed: false,
            pins: 0,
        });
        e.pins += waiters.len() as u32;
        for t in waiters {
            if let Some(p) = self.pending.get_mut(&t) {
                p.missing -= 1;
                if p.missing == 0 {
                    self.enqueue(t);
                }
            }
        }
        new
    }

    /// Fetching `ids` from `peer` failed: each waiting task tries its next source.
    fn fetch_failed(&mut self, peer: WorkerId, ids: &[TaskIdx], error: &str) {
        for &i in ids {
            let Some(w) = self.wanted.get_mut(&i) else {
                continue;
            };
            if w.fetch.is_some_and(|f| self.fetches.contains_key(&f)) {
                continue; // another fetch of it is under way
            }
            w.fetch = None;
            let waiters = std::mem::take(&mut w.waiters);
            self.wanted.remove(&i);
            for t in waiters {
                let Some(p) = self.pending.get_mut(&t) else {
                    continue;
                };
                p.lost.push((i, peer));
                p.error = format!("fetching result {i} from worker {peer}: {error}");
                self.want(t, i);
            }
        }
    }

    fn peer_gone(&mut self, w: WorkerId) {
        self.peers.remove(&w);
        self.cmds.push(Command::ForgetPeer(w));
        let mut gone: Vec<(FetchId, FetchState)> = Vec::new();
        let ids: Vec<FetchId> = self
            .fetches
            .iter()
            .filter(|(_, f)| f.peer == w)
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            if let Some(f) = self.fetches.remove(&id) {
                gone.push((id, f));
            }
        }
        gone.sort_by_key(|(id, _)| *id);
        for (_, f) in gone {
            match f.purpose {
                Purpose::Replicate { here } => self.out.push(FromWorker::Replicated {
                    from: w,
                    ids: here,
                    failed: true,
                }),
                Purpose::Inputs { .. } => self.fetch_failed(w, &f.ids, "the worker left"),
            }
        }
    }

    fn replicate(&mut self, from: WorkerId, ids: Vec<TaskIdx>) {
        let (here, fetch): (Vec<TaskIdx>, Vec<TaskIdx>) = ids
            .into_iter()
            .partition(|i| self.store.get(i).is_some_and(|e| !e.freed));
        let Some(peer) = self.peers.get(&from).cloned().filter(|_| !fetch.is_empty()) else {
            self.out.push(FromWorker::Replicated {
                from,
                failed: !fetch.is_empty(),
                ids: here,
            });
            return;
        };
        // What is here already counts as copied; the rest comes in one request.
        self.next_fetch += 1;
        let f = self.next_fetch;
        self.fetches.insert(
            f,
            FetchState {
                peer: from,
                ids: fetch.clone(),
                purpose: Purpose::Replicate { here },
                started: self.now,
            },
        );
        self.cmds.push(Command::Fetch {
            fetch: f,
            peer,
            ids: fetch,
        });
    }

    fn job_done(&mut self, job: JobId, result: Result<u64, String>, duration_us: u64) {
        let Some(r) = self.jobs.remove(&job) else {
            return;
        };
        if r.lost {
            self.lost_running -= 1;
        }
        self.release(&r.resources);
        if r.lost {
            tracing::info!(
                task = r.task,
                "the function of a task whose thread was given up returned at last"
            );
            return;
        }
        if r.abandoned {
            // Stopped after its deadline (and before its thread was given up): failed with
            // its own timeout error if it has one, its result dropped.
            let timeout = timeout_message(Duration::from_millis(r.timeout_ms.unwrap_or(0)));
            let error = match result {
                Err(e) if e.starts_with(&timeout) => e,
                _ => timeout,
            };
            self.failed(r.task, error, r.timeout_ms.unwrap_or(0) * 1000);
            self.count_done();
            return;
        }
        match result {
            Ok(size) => {
                self.arrived(r.task);
                if let Some(e) = self.store.get_mut(&r.task) {
                    e.freed = false; // counted as held here again by this report
                }
                self.cmds.push(Command::Keep(vec![r.task]));
                // A durable task's output is added by the shell, which has its bytes.
                self.out.push(FromWorker::Finished {
                    id: r.task,
                    size,
                    duration_us,
                    output: None,
                });
            }
            Err(error) => self.failed(r.task, error, duration_us),
        }
        self.count_done();
    }

    /// Reports task `t` failed; the tasks waiting here for its result go with it.
    fn failed(&mut self, t: TaskIdx, error: String, duration_us: u64) {
        self.out.push(FromWorker::Failed {
            id: t,
            error,
            duration_us,
        });
        self.drop_after(t);
    }

    fn count_done(&mut self) {
        self.tasks_done += 1;
        if self
            .config
            .lifespan_tasks
            .is_some_and(|n| self.tasks_done >= n)
            && !self.retiring
        {
            tracing::info!(
                worker = self.id,
                tasks_done = self.tasks_done,
                "lifespan reached: retiring to be replaced by a fresh process"
            );
            self.recycle();
        }
    }

    /// Gives back the room of tables that emptied (at most a quarter full).
    fn shrink(&mut self) {
        fn map<K: std::hash::Hash + Eq, V, S: std::hash::BuildHasher>(m: &mut HashMap<K, V, S>) {
            if m.capacity() > 4 * m.len() + 64 {
                m.shrink_to_fit();
            }
        }
        map(&mut self.store);
        map(&mut self.pending);
        map(&mut self.wanted);
        map(&mut self.after);
        map(&mut self.fetches);
        map(&mut self.jobs);
        if self.queue.capacity() > 4 * self.queue.len() + 64 {
            self.queue.shrink_to_fit();
        }
    }

    fn recycle(&mut self) {
        self.retiring = true;
        self.recycle = true;
        self.cmds.push(Command::Recycling);
        self.out.push(FromWorker::Retiring { successor: true });
        self.give_back_unstarted();
    }

    /// Retiring for a fresh process: every task assigned here that was not handed to the
    /// threads goes back to the scheduler ([`FromWorker::Returned`]), so the lifespan bounds
    /// what one process runs and the successor starts them.
    fn give_back_unstarted(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut ids: Vec<(u64, TaskIdx)> =
            self.pending.iter().map(|(&t, p)| (p.order, t)).collect();
        ids.sort_unstable();
        for &(_, t) in &ids {
            let p = self.pending.remove(&t).expect("listed from pending");
            self.release_inputs(t, &p.task.inputs);
        }
        self.queue.clear();
        debug_assert!(self.after.is_empty());
        self.out.push(FromWorker::Returned(
            ids.into_iter().map(|(_, t)| t).collect(),
        ));
    }

    fn tick(&mut self, now: Instant) {
        let mut expired: Vec<(JobId, TaskIdx, u64)> = self
            .jobs
            .iter()
            .filter(|(_, r)| !r.abandoned && r.deadline.is_some_and(|d| d <= now))
            .map(|(&j, r)| (j, r.task, r.timeout_ms.unwrap_or(0)))
            .collect();
        expired.sort_unstable();
        // Past the deadline: failed once the function stops, or once its thread is given up.
        for (job, _, _) in expired {
            if let Some(r) = self.jobs.get_mut(&job) {
                r.abandoned = true;
                r.unreported = false;
            }
        }
        let mut stuck: Vec<(JobId, TaskIdx)> = self
            .jobs
            .iter()
            .filter(|(_, r)| {
                r.abandoned && !r.lost && r.deadline.is_some_and(|d| d + THREAD_GRACE <= now)
            })
            .map(|(&j, r)| (j, r.task))
            .collect();
        stuck.sort_unstable();
        for (job, task) in stuck {
            let mut timeout_ms = 0;
            if let Some(r) = self.jobs.get_mut(&job) {
                r.lost = true;
                timeout_ms = r.timeout_ms.unwrap_or(0);
            }
            self.lost_running += 1;
            self.lost_total += 1;
            let error = format!(
                "{}; its function did not stop, so its thread was given up ({} on this worker)",
                timeout_message(Duration::from_millis(timeout_ms)),
                self.lost_total
            );
            self.failed(task, error, timeout_ms * 1000);
            self.count_done();
            tracing::warn!(
                worker = self.id,
                task,
                given_up = self.lost_total,
                "a task's function ignored its timeout: its thread is given up and replaced"
            );
            self.cmds.push(Command::ThreadLost(job));
            let limit = match self.config.max_lost_threads {
                0 => self.config.nthreads.max(4),
                n => n,
            };
            if self.lost_total > u64::from(limit) && !self.retiring {
                tracing::warn!(
                    worker = self.id,
                    given_up = self.lost_total,
                    limit,
                    "too many threads given up: retiring to be replaced by a fresh process"
                );
                self.recycle();
            }
        }
        if self.report_due.is_some_and(|d| d <= now) {
            self.report_due = None;
            let mut started: Vec<(JobId, TaskIdx)> = self
                .jobs
                .iter_mut()
                .filter(|(_, r)| r.unreported)
                .map(|(&j, r)| {
                    r.unreported = false;
                    (j, r.task)
                })
                .collect();
            started.sort_unstable();
            self.out
                .extend(started.into_iter().map(|(_, t)| FromWorker::Started(t)));
        }
    }

    /// Hands queued tasks to the threads while a thread and their resources are free.
    fn try_start(&mut self) {
        // Resource-free tasks are topped up in batches: none while more than half of the
        // threads' queue is still ahead of them, then up to the full queue. A thread that
        // drained its queue is then woken once per batch, not once per task.
        let mut topping_up = false;
        while let Some(top) = self.queue.peek() {
            let Some(p) = self.pending.get(&top.task) else {
                self.queue.pop(); // given up since
                continue;
            };
            // Jobs whose threads were given up run on threads of their own.
            let running = (self.jobs.len() - self.lost_running) as u32;
            let limit = if p.task.resources.is_empty() {
                self.config.nthreads * THREAD_QUEUE
            } else {
                self.config.nthreads
            };
            if running >= limit {
                return;
            }
            if p.task.resources.is_empty() && !topping_up {
                if running > limit / 2 {
                    return;
                }
                topping_up = true;
            }
            let fits = p.task.resources.iter().all(|(name, need)| {
                let cap = self
                    .config
                    .resources
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or(0.0, |(_, a)| *a);
                self.used.get(name).copied().unwrap_or(0.0) + need <= cap + 1e-9
            });
            if !fits && running > 0 {
                return; // wait for running tasks to give resources back
            }
            let id = self.queue.pop().expect("peeked").task;
            let p = self.pending.remove(&id).expect("queued tasks are pending");
            for (name, need) in &p.task.resources {
                *self.used.entry(name.clone()).or_default() += need;
            }
            self.next_job += 1;
            let job = self.next_job;
            let cells: Vec<(usize, TaskIdx)> = p
                .task
                .inputs
                .iter()
                .enumerate()
                .filter(|(_, i)| self.cells.contains(i))
                .map(|(pos, &i)| (pos, i))
                .collect();
            self.jobs.insert(
                job,
                Running {
                    task: id,
                    resources: p.task.resources.clone(),
                    timeout_ms: p.task.timeout_ms,
                    deadline: None,
                    abandoned: false,
                    lost: false,
                    unreported: false,
                },
            );
            let inputs = p.task.inputs.clone();
            // The drops that unpinning may cause go out after this job took its inputs.
            self.flush_drops();
            self.cmds.push(Command::Run(Job {
                job,
                task: p.task,
                cells,
            }));
            for i in inputs {
                if !self.cells.contains(&i) {
                    self.unpin(i);
                }
            }
        }
    }

    fn release(&mut self, resources: &[(String, f64)]) {
        for (name, need) in resources {
            if let Some(u) = self.used.get_mut(name) {
                *u = (*u - need).max(0.0);
            }
        }
    }

    fn flush_drops(&mut self) {
        if !self.drops.is_empty() {
            self.cmds
                .push(Command::Drop(std::mem::take(&mut self.drops)));
        }
    }

    /// The commands of this `handle`: fetches batched per peer, drops, then one frame to the
    /// scheduler last, so that what it reports is in the store before anyone is told of it.
    fn flush(&mut self) -> Vec<Command> {
        for (peer, fetch) in std::mem::take(&mut self.batch) {
            let Some(info) = self.peers.get(&peer).cloned() else {
                continue;
            };
            if let Some(f) = self.fetches.get(&fetch) {
                self.cmds.push(Command::Fetch {
                    fetch,
                    peer: info,
                    ids: f.ids.clone(),
                });
            }
        }
        self.flush_drops();
        if !self.out.is_empty() {
            self.cmds.push(Command::Send(std::mem::take(&mut self.out)));
        }
        std::mem::take(&mut self.cmds)
    }
}

#[cfg(test)]
mod tests;
