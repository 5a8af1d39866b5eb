//! A seeded, deterministic simulation of a whole Drover cluster (DESIGN.md section 8).
//!
//! The real scheduler core and real worker cores run together, wired through a simulated
//! network and clock: every message is delayed, streams keep their order (as QUIC's do) while
//! different connections interleave freely, and messages are lost with their connection. Around
//! them the simulation plays what the shells and the world do: executor threads (task
//! durations, once-cell loads), peer fetches, clients (submitting random graphs with pools,
//! once-cells, shared and redefined keys; leaving; fetching their outputs), and faults: workers
//! killed (noticed by their lifeline), cut off by a partition (noticed at the idle timeout),
//! retired by SIGTERM, recycled at their lifespan; tasks that fail, panic, flake, time out or
//! kill their worker.
//!
//! After every step it checks the invariants: the scheduler core's ([`Core::check`]: counts,
//! cross-references, nothing waits for a result nobody holds or will make) and each worker
//! core's; that no task runs on a worker without its function, and that a job's inputs are all
//! there. At the end: every run of a client that stayed ended, with every task's status and
//! every output equal to a reference evaluation of its graph; once all clients left, memory
//! returned (no result held anywhere, no task left but once-cells) and no resource is in use.
//!
//! Everything random comes from one seed, so a failing seed replays exactly:
//! `cargo bench --bench simulate -- --seed N --trace`.

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use drover_protocol::{
    CellSpec, FromClient, FromWorker, TaskIdx, TaskStatus, ToClient, ToWorker, WorkerHello,
    WorkerId,
};
use drover_scheduler::core::{Command as SCommand, Core, CoreConfig, Event as SEvent};
use drover_worker::core::{
    Command as WCommand, CoreConfig as WConfig, Event as WEvent, Exit, Job, JobId, WorkerCore,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Microseconds of simulated time.
type Micros = u64;

const MS: Micros = 1_000;
const SEC: Micros = 1_000_000;
/// How long a silent connection lives (the QUIC idle timeout).
const IDLE_TIMEOUT: Micros = 3 * SEC;
/// Simulated time after which a run still going counts as hung.
const TIME_LIMIT: Micros = 30 * 60 * SEC;
/// Steps after which the simulation counts as hung (a livelock of messages).
const STEP_LIMIT: u64 = 2_000_000;
/// Bytes per microsecond between workers.
const BANDWIDTH: u64 = 1_000;

/// What a simulation did.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Events processed.
    pub steps: u64,
    /// Simulated time at the end, in milliseconds.
    pub sim_ms: u64,
    /// Runs that ended and were checked against the reference.
    pub runs_checked: u32,
    /// Runs whose client left before they ended.
    pub runs_abandoned: u32,
    /// Submissions refused for redefining a key a live run used.
    pub rejected: u32,
    /// Tasks that ran (jobs started), over all workers.
    pub jobs: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u32>,
    /// Paths of the protocol taken, by kind (fetches, lost inputs, handoffs, ...).
    pub paths: BTreeMap<&'static str, u32>,
}

impl Outcome {
    /// Adds another outcome's counts to this one.
    pub fn add(&mut self, o: &Outcome) {
        self.steps += o.steps;
        self.runs_checked += o.runs_checked;
        self.runs_abandoned += o.runs_abandoned;
        self.rejected += o.rejected;
        self.jobs += o.jobs;
        for (k, v) in &o.faults {
            *self.faults.entry(k).or_default() += v;
        }
        for (k, v) in &o.paths {
            *self.paths.entry(k).or_default() += v;
        }
    }
}

/// Why a simulation failed: what broke, the command that replays it, and the trace (with
/// tracing on).
#[derive(Debug)]
pub struct Failure {
    /// What broke.
    pub message: String,
    /// The seed.
    pub seed: u64,
    /// Trace lines (empty unless tracing).
    pub trace: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "simulation seed {} failed: {}", self.seed, self.message)?;
        write!(
            f,
            "replay: cargo bench --bench simulate -- --seed {} --trace",
            self.seed
        )
    }
}

/// Runs the simulation of `seed`; with `trace`, records every step.
pub fn simulate(seed: u64, trace: bool) -> Result<Outcome, Failure> {
    let mut w = World::new(seed, trace);
    let r = w.run();
    match r {
        Ok(()) => Ok(w.outcome),
        Err(message) => Err(Failure {
            message,
            seed,
            trace: std::mem::take(&mut w.trace),
        }),
    }
}

/// Runs seeds `first..first + count`; returns the summed outcome of those that passed and the
/// failures.
pub fn simulate_many(first: u64, count: u64) -> (Outcome, Vec<Failure>) {
    let mut totals = Outcome::default();
    let mut failed = Vec::new();
    for seed in first..first + count {
        match simulate(seed, false) {
            Ok(o) => totals.add(&o),
            Err(f) => failed.push(f),
        }
    }
    (totals, failed)
}

/// The whole trace of `seed`'s simulation (or of its failure).
pub fn trace(seed: u64) -> Vec<String> {
    let mut w = World::new(seed, true);
    let r = w.run();
    let mut t = std::mem::take(&mut w.trace);
    if let Err(e) = r {
        t.push(e);
    }
    t
}

// ---------------------------------------------------------------------------------------------
// Graphs and their reference evaluation.

/// One task of a generated graph.
#[derive(Debug, Clone)]
struct GenTask {
    key: String,
    function: &'static str,
    params: String,
    inputs: Vec<usize>,
    pool: Option<&'static str>,
    any_pool: bool,
    /// Once-cell: (lazy, run lifetime).
    cell: Option<(bool, bool)>,
    retries: u32,
    timeout_ms: Option<u64>,
    gpu: bool,
    /// Committed to the progress store when it finishes; skipped when found done.
    durable: bool,
}

/// What a task must end as.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Value(u64),
    Fail,
}

#[derive(Debug, Clone)]
struct GenGraph {
    tasks: Vec<GenTask>,
}

fn mix(mut h: u64, x: u64) -> u64 {
    h ^= x
        .wrapping_add(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(h << 6)
        .wrapping_add(h >> 2);
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

fn hash_str(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The value a function computes from its params and input values.
fn compute(function: &str, params: &str, inputs: &[u64]) -> u64 {
    let mut h = mix(hash_str(function), hash_str(params));
    for &i in inputs {
        h = mix(h, i);
    }
    h
}

/// Output size of a value, in bytes (for transfer times).
fn size_of(value: u64) -> u64 {
    1 + value % 40_000
}

impl GenGraph {
    /// A random DAG: pools, any-pool tasks, once-cells, failing and flaky functions.
    fn random(rng: &mut StdRng, prefix: &str) -> GenGraph {
        let n = rng.gen_range(3..=22);
        let mut tasks: Vec<GenTask> = Vec::with_capacity(n + 2);
        let ncells = if rng.gen_bool(0.4) {
            rng.gen_range(1..=2)
        } else {
            0
        };
        for c in 0..ncells {
            let pool = match rng.gen_range(0..4) {
                0 => Some("A"),
                1 => Some("B"),
                _ => None,
            };
            let bad = rng.gen_bool(0.05);
            tasks.push(GenTask {
                key: format!("{prefix}cell{c}"),
                function: "load",
                params: format!("{}{}", if bad { "bad" } else { "m" }, rng.gen_range(0..3)),
                inputs: vec![],
                pool,
                any_pool: false,
                cell: Some((rng.gen_bool(0.5), rng.gen_bool(0.3))),
                retries: 0,
                timeout_ms: None,
                gpu: false,
                durable: false,
            });
        }
        for i in 0..n {
            let roll = rng.gen_range(0..100);
            let (function, retries, timeout_ms) = match roll {
                0..=2 => ("fail", 0, None),
                3..=6 => ("flaky", 1, None),
                7..=8 => ("slow", 0, Some(100)),
                9 if rng.gen_bool(0.3) => ("kill", 0, None),
                10..=19 => ("g", 0, None),
                _ => ("f", 0, None),
            };
            let mut inputs = Vec::new();
            let earlier = tasks.len();
            if earlier > 0 {
                for _ in 0..rng.gen_range(0..=3) {
                    let j = rng.gen_range(0..earlier);
                    // Users of a cell: at most one cell, and (if pooled) not pinned elsewhere.
                    if tasks[j].cell.is_some()
                        && inputs.iter().any(|&x: &usize| tasks[x].cell.is_some())
                    {
                        continue;
                    }
                    inputs.push(j);
                }
            }
            let cell_pool = inputs
                .iter()
                .find_map(|&j| tasks[j].cell.is_some().then_some(tasks[j].pool))
                .flatten();
            let (pool, any_pool) = match (cell_pool, rng.gen_range(0..10)) {
                (Some(p), _) => (Some(p), false),
                (None, 0 | 1) => (Some("A"), false),
                (None, 2) => (Some("B"), false),
                (None, 3) => (None, true),
                _ => (None, false),
            };
            let uses_cell = inputs.iter().any(|&j| tasks[j].cell.is_some());
            tasks.push(GenTask {
                key: format!("{prefix}t{i}"),
                function,
                params: format!("p{}", rng.gen_range(0..1000)),
                inputs,
                pool,
                any_pool: any_pool && !uses_cell,
                cell: None,
                retries,
                timeout_ms,
                gpu: rng.gen_bool(0.08),
                durable: rng.gen_bool(0.25),
            });
        }
        GenGraph { tasks }
    }

    fn json(&self) -> String {
        let tasks: Vec<serde_json::Value> = self
            .tasks
            .iter()
            .map(|t| {
                let mut v = serde_json::json!({
                    "key": t.key,
                    "function": t.function,
                    "params": t.params,
                });
                let m = v.as_object_mut().expect("object");
                if !t.inputs.is_empty() {
                    let ins: Vec<&str> = t
                        .inputs
                        .iter()
                        .map(|&i| self.tasks[i].key.as_str())
                        .collect();
                    m.insert("inputs".into(), serde_json::json!(ins));
                }
                if let Some(p) = t.pool {
                    m.insert("pool".into(), serde_json::json!(p));
                }
                if t.any_pool {
                    m.insert("any_pool".into(), serde_json::json!(true));
                }
                if let Some((lazy, run)) = t.cell {
                    let mut c = serde_json::Map::new();
                    if lazy {
                        c.insert("lazy".into(), serde_json::json!(true));
                    }
                    if run {
                        c.insert("lifetime".into(), serde_json::json!("run"));
                    }
                    m.insert("once_cell".into(), serde_json::Value::Object(c));
                }
                if t.retries > 0 {
                    m.insert("retries".into(), serde_json::json!(t.retries));
                }
                if let Some(ms) = t.timeout_ms {
                    m.insert("timeout".into(), serde_json::json!(ms as f64 / 1000.0));
                }
                if t.gpu {
                    m.insert("resources".into(), serde_json::json!({"gpu": 1}));
                }
                if t.durable {
                    m.insert("durable".into(), serde_json::json!(true));
                }
                v
            })
            .collect();
        serde_json::json!({ "tasks": tasks }).to_string()
    }

    /// Each task's expected outcome.
    fn reference(&self) -> BTreeMap<String, Expect> {
        let mut out: Vec<Expect> = Vec::with_capacity(self.tasks.len());
        for t in &self.tasks {
            let inputs: Option<Vec<u64>> = t
                .inputs
                .iter()
                .map(|&i| match &out[i] {
                    Expect::Value(v) => Some(*v),
                    Expect::Fail => None,
                })
                .collect();
            let e = match (t.function, inputs) {
                (_, None) => Expect::Fail,
                ("load", _) if t.params.starts_with("bad") => Expect::Fail,
                ("fail" | "slow" | "kill", _) => Expect::Fail,
                (f, Some(ins)) => Expect::Value(compute(f, &t.params, &ins)),
            };
            out.push(e);
        }
        self.tasks
            .iter()
            .zip(out)
            .map(|(t, e)| (t.key.clone(), e))
            .collect()
    }

    /// Keys of sinks (tasks nothing consumes), once-cells aside.
    fn sinks(&self) -> Vec<String> {
        let mut used = vec![false; self.tasks.len()];
        for t in &self.tasks {
            for &i in &t.inputs {
                used[i] = true;
            }
        }
        self.tasks
            .iter()
            .enumerate()
            .filter(|(i, t)| !used[*i] && t.cell.is_none())
            .map(|(_, t)| t.key.clone())
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The world.

/// A worker machine: a process slot that gets a session at a time.
#[derive(Debug)]
struct Machine {
    name: String,
    pools: Vec<&'static str>,
    gpu: bool,
    functions: Vec<&'static str>,
    nthreads: u32,
    lifespan: Option<u64>,
    session: Option<WorkerId>,
    /// Loaded once-cells of the current process: key → (params, value, ready at).
    cells: BTreeMap<String, (String, u64, Micros)>,
    /// No process runs (killed, waiting for its restart), or it was replaced for good.
    down: bool,
    retired_for_good: bool,
}

/// A worker session: one connection's worker core and what its shell holds.
struct Session {
    machine: usize,
    core: WorkerCore,
    store: BTreeMap<TaskIdx, u64>,
    /// Values just reported to the core, kept if it says so.
    holding: BTreeMap<TaskIdx, u64>,
    cells: BTreeMap<TaskIdx, CellSpec>,
    /// Jobs handed over, with their stored input values taken at hand-over (as the shell
    /// takes their bytes), waiting for a thread.
    waiting_jobs: VecDeque<(Job, BTreeMap<TaskIdx, u64>)>,
    threads_busy: u32,
    /// job → (task, outcome), for jobs on threads.
    running: BTreeMap<JobId, (TaskIdx, Result<u64, String>)>,
    tick_at: Option<Micros>,
    /// Ended on this side (killed, timed out, exited).
    gone: bool,
    /// Cut off: nothing reaches it or leaves it.
    cut: bool,
    /// Until when its messages are held back (a short network hiccup).
    hold_until: Micros,
    /// Durable tasks on its threads whose output goes with their result.
    report_output: BTreeMap<TaskIdx, ()>,
}

#[derive(Debug, Clone, PartialEq)]
enum ClientState {
    Waiting,
    Running,
    Fetching,
    Done,
    Rejected,
    Left,
}

struct Client {
    graph: GenGraph,
    json: String,
    wants: Vec<String>,
    expect: BTreeMap<String, Expect>,
    state: ClientState,
    tasks: u32,
    statuses: BTreeMap<String, (TaskStatus, Option<String>)>,
    outputs: BTreeMap<String, u64>,
    locate_tries: u32,
    next_req: u32,
    /// When it submits.
    start: Micros,
    /// The same graph again once done (back to back).
    again: bool,
    runs_done: u32,
}

#[derive(Debug)]
enum Ev {
    /// Frames to the scheduler from a worker session or a client, in order.
    FromWorker(WorkerId, Vec<FromWorker>),
    FromClient(u32, Vec<FromClient>),
    WorkerLeft(WorkerId),
    ClientLeft(u32),
    /// The progress store's answers to lookups, for the scheduler.
    Looked(Vec<SEvent>),
    ToWorker(WorkerId, Vec<ToWorker>),
    ToClient(u32, Vec<ToClient>),
    JobStart(WorkerId, JobId, TaskIdx, bool),
    JobEnd(WorkerId, JobId),
    Loaded(WorkerId, TaskIdx, u64, Option<String>),
    FetchArrive(WorkerId, u64, WorkerId, Vec<TaskIdx>),
    FetchDone(WorkerId, u64, Vec<(TaskIdx, u64)>, Vec<TaskIdx>, String),
    ClientFetch(
        u32,
        u32,
        Vec<(String, Option<(TaskIdx, WorkerId)>)>,
        BTreeMap<String, Vec<u8>>,
    ),
    Relocate(u32, u32),
    Tick(WorkerId),
    StartSession(usize),
    EndSession(WorkerId),
    Submit(u32),
    Fault(Fault),
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill(usize),
    Partition(usize, Micros),
    /// Two machines cannot reach each other (both still reach the scheduler), for a while.
    PeerCut(usize, usize, Micros),
    Retire(usize),
    ClientLeaves(u32),
}

struct World {
    rng: StdRng,
    now: Micros,
    base: Instant,
    seq: u64,
    queue: BinaryHeap<Reverse<(Micros, u64)>>,
    events: BTreeMap<u64, Ev>,
    core: Core,
    /// Sessions the scheduler counts as connected.
    sched_workers: BTreeSet<WorkerId>,
    sched_clients: BTreeSet<u32>,
    machines: Vec<Machine>,
    sessions: BTreeMap<WorkerId, Session>,
    clients: BTreeMap<u32, Client>,
    next_worker_id: WorkerId,
    /// Last delivery time per directed stream: (to scheduler?, id).
    tails: BTreeMap<(bool, u32), Micros>,
    /// Flaky keys that failed once already.
    flaked: BTreeSet<String>,
    /// Per key, how many workers died while the scheduler had it assigned to them.
    deaths: BTreeMap<String, u32>,
    /// What the scheduler sent each worker to compute and has not heard the outcome of.
    sched_assigned: BTreeMap<WorkerId, BTreeMap<TaskIdx, String>>,
    /// Pairs of machines that cannot reach each other, until when.
    peer_cuts: BTreeMap<(usize, usize), Micros>,
    /// The scheduler's progress store (durable graph tasks).
    store: drover_progress::MemStore,
    trace_on: bool,
    trace: Vec<String>,
    outcome: Outcome,
}

impl World {
    fn new(seed: u64, trace_on: bool) -> World {
        let mut rng = StdRng::seed_from_u64(seed);
        let nmachines = rng.gen_range(2..=5);
        let mut machines = Vec::new();
        for i in 0..nmachines {
            // Pools A and B always have a worker with every function; others vary.
            let pools: Vec<&'static str> = match i {
                0 => vec!["A"],
                1 => vec!["B"],
                _ => match rng.gen_range(0..4) {
                    0 => vec!["A"],
                    1 => vec!["B"],
                    2 => vec!["A", "B"],
                    _ => vec![],
                },
            };
            let all = i < 2 || rng.gen_bool(0.5);
            let mut functions = vec!["f", "fail", "flaky", "slow", "kill", "load"];
            if all {
                functions.push("g");
            }
            machines.push(Machine {
                name: format!("m{i}"),
                pools,
                gpu: i < 2 || rng.gen_bool(0.3),
                functions,
                nthreads: rng.gen_range(1..=3),
                lifespan: rng.gen_bool(0.2).then(|| rng.gen_range(3..=20)),
                session: None,
                cells: BTreeMap::new(),
                down: false,
                retired_for_good: false,
            });
        }
        let mut w = World {
            rng,
            now: 0,
            base: Instant::now(),
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            core: Core::with_config(CoreConfig::default()),
            sched_workers: BTreeSet::new(),
            sched_clients: BTreeSet::new(),
            machines,
            sessions: BTreeMap::new(),
            clients: BTreeMap::new(),
            next_worker_id: 0,
            tails: BTreeMap::new(),
            flaked: BTreeSet::new(),
            deaths: BTreeMap::new(),
            sched_assigned: BTreeMap::new(),
            peer_cuts: BTreeMap::new(),
            store: drover_progress::MemStore::new(),
            trace_on,
            trace: Vec::new(),
            outcome: Outcome::default(),
        };
        for m in 0..w.machines.len() {
            let at = w.rng.gen_range(0..50 * MS);
            w.at(at, Ev::StartSession(m));
        }
        // Clients: random graphs; some share keys (the same prefix), some redefine them.
        let nclients = w.rng.gen_range(1..=4);
        let mut graphs: Vec<GenGraph> = Vec::new();
        for c in 0..nclients {
            let graph = match (c, w.rng.gen_range(0..4)) {
                (c, 0) if c > 0 => graphs[w.rng.gen_range(0..graphs.len())].clone(),
                (c, 1) if c > 0 => {
                    // A variant: one task redefined (other params), the rest shared.
                    let mut g = graphs[w.rng.gen_range(0..graphs.len())].clone();
                    let k = w.rng.gen_range(0..g.tasks.len());
                    g.tasks[k].params.push('x');
                    g
                }
                _ => GenGraph::random(&mut w.rng, if c % 2 == 0 { "" } else { "c" }),
            };
            graphs.push(graph.clone());
            let start = w.rng.gen_range(20 * MS..3 * SEC);
            let json = graph.json();
            w.clients.insert(
                c,
                Client {
                    wants: graph.sinks(),
                    expect: graph.reference(),
                    graph,
                    json,
                    state: ClientState::Waiting,
                    tasks: 0,
                    statuses: BTreeMap::new(),
                    outputs: BTreeMap::new(),
                    locate_tries: 0,
                    next_req: 0,
                    start,
                    again: w.rng.gen_bool(0.3),
                    runs_done: 0,
                },
            );
            w.at(start, Ev::Submit(c));
        }
        // Faults.
        for _ in 0..w.rng.gen_range(0..=5) {
            let at = w.rng.gen_range(50 * MS..8 * SEC);
            let m = w.rng.gen_range(0..w.machines.len());
            let fault = match w.rng.gen_range(0..12) {
                10 | 11 => {
                    let other = w.rng.gen_range(0..w.machines.len());
                    Fault::PeerCut(m, other, w.rng.gen_range(100 * MS..3 * SEC))
                }
                0..=3 => Fault::Kill(m),
                4..=5 => Fault::Partition(
                    m,
                    if w.rng.gen_bool(0.5) {
                        w.rng.gen_range(10 * MS..IDLE_TIMEOUT / 2)
                    } else {
                        w.rng.gen_range(IDLE_TIMEOUT + SEC..3 * IDLE_TIMEOUT)
                    },
                ),
                6..=7 => Fault::Retire(m),
                _ => Fault::ClientLeaves(w.rng.gen_range(0..nclients)),
            };
            w.at(at, Ev::Fault(fault));
        }
        w
    }

    fn at(&mut self, t: Micros, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((t, self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn log(&mut self, f: impl FnOnce() -> String) {
        if self.trace_on {
            let line = format!("{:>10.3} ms  {}", self.now as f64 / 1000.0, f());
            self.trace.push(line);
        }
    }

    fn instant(&self) -> Instant {
        self.base + Duration::from_micros(self.now)
    }

    fn latency(&mut self) -> Micros {
        self.rng.gen_range(50..2_000)
    }

    /// Schedules a frame on the directed stream (`to_scheduler`, `id`), after those before it.
    fn send(&mut self, to_scheduler: bool, id: u32, ev: Ev, hold_until: Micros) {
        let lat = self.latency();
        let tail = self.tails.get(&(to_scheduler, id)).copied().unwrap_or(0);
        let t = (self.now + lat).max(tail + 1).max(hold_until);
        self.tails.insert((to_scheduler, id), t);
        self.at(t, ev);
    }

    fn run(&mut self) -> Result<(), String> {
        let mut final_phase = false;
        while let Some(Reverse((t, seq))) = self.queue.pop() {
            let ev = self.events.remove(&seq).expect("scheduled");
            self.now = t;
            self.outcome.steps += 1;
            if self.outcome.steps > STEP_LIMIT {
                return Err(format!("more than {STEP_LIMIT} steps: a livelock?"));
            }
            if self.now > TIME_LIMIT {
                return Err(self.hang_report("the time limit passed"));
            }
            self.step(ev)?;
            if !final_phase
                && self.clients.values().all(|c| {
                    matches!(
                        c.state,
                        ClientState::Done | ClientState::Rejected | ClientState::Left
                    )
                })
            {
                // Everyone is done: the clients leave, and memory must return.
                final_phase = true;
                let ids: Vec<u32> = self.clients.keys().copied().collect();
                for c in ids {
                    if self.clients[&c].state != ClientState::Left {
                        self.clients.get_mut(&c).expect("client").state = ClientState::Left;
                        let d = self.rng.gen_range(100..2_000);
                        self.at(self.now + d, Ev::ClientLeft(c));
                    }
                }
            }
            if final_phase && self.queue_has_only_idle_work() {
                break;
            }
        }
        self.outcome.sim_ms = self.now / MS;
        if !final_phase {
            return Err(self.hang_report("nothing left to happen"));
        }
        self.final_checks()
    }

    /// Only ticks, restarts and faults remain: nothing more will change the state.
    fn queue_has_only_idle_work(&self) -> bool {
        self.events.values().all(|e| {
            matches!(
                e,
                Ev::Fault(_) | Ev::StartSession(_) | Ev::Tick(_) | Ev::Submit(_)
            )
        }) && self
            .sessions
            .values()
            .all(|s| s.gone || s.running.is_empty())
    }

    fn hang_report(&self, why: &str) -> String {
        let mut s = format!("{why} at {} ms, runs still going:", self.now / MS);
        for (id, c) in &self.clients {
            if matches!(
                c.state,
                ClientState::Running | ClientState::Fetching | ClientState::Waiting
            ) {
                let missing: Vec<&String> = c
                    .expect
                    .keys()
                    .filter(|k| !c.statuses.contains_key(*k))
                    .collect();
                let _ = write!(s, "\n  client {id} ({:?}) lacks {missing:?}", c.state);
                for k in missing.iter().take(5) {
                    let _ = write!(
                        s,
                        "\n    {k}: {}",
                        self.core.describe_key(k).unwrap_or_default()
                    );
                }
            }
        }
        let _ = write!(
            s,
            "\n  workers: {:?}",
            self.sessions
                .iter()
                .filter(|(_, x)| !x.gone)
                .map(|(id, x)| (id, &self.machines[x.machine].name))
                .collect::<Vec<_>>()
        );
        s
    }

    fn final_checks(&mut self) -> Result<(), String> {
        if let Err(e) = self.core.check() {
            return Err(format!("at the end: {e}"));
        }
        let st = self.core.stats();
        if st.held > 0 {
            return Err(format!(
                "every client left, yet the scheduler counts {} results held",
                st.held
            ));
        }
        if let Some(k) = self.core.leftover_tasks().first() {
            return Err(format!(
                "every client left, yet the scheduler still has task {k}"
            ));
        }
        // What the scheduler believes each connected worker holds is what it holds.
        let believed = self.core.believed_holdings();
        for (id, held) in &believed {
            let actual = self
                .sessions
                .get(id)
                .map(|s| s.core.held())
                .unwrap_or_default();
            if &actual != held {
                return Err(format!(
                    "the scheduler believes worker {id} holds {held:?}; it holds {actual:?}"
                ));
            }
        }
        for (id, s) in &self.sessions {
            if s.gone {
                continue;
            }
            if !s.store.is_empty() {
                return Err(format!(
                    "every client left, yet worker {id} still holds {:?}",
                    s.store.keys().collect::<Vec<_>>()
                ));
            }
            let (jobs, used) = s.core.busy();
            if jobs > 0 || used > 0.0 {
                return Err(format!(
                    "worker {id} still has {jobs} jobs and {used} resources in use at the end"
                ));
            }
        }
        Ok(())
    }

    fn step(&mut self, ev: Ev) -> Result<(), String> {
        match ev {
            Ev::FromWorker(w, msgs) => {
                if !self.sched_workers.contains(&w) {
                    return Ok(()); // its connection is over for the scheduler
                }
                let assigned = self.sched_assigned.entry(w).or_default();
                for m in &msgs {
                    if let FromWorker::Finished { id, .. }
                    | FromWorker::Failed { id, .. }
                    | FromWorker::InputsLost { id, .. } = m
                    {
                        assigned.remove(id);
                    }
                    let path = match m {
                        FromWorker::InputsLost { lost, .. }
                            if lost.iter().any(|&(_, h)| h == w) =>
                        {
                            "inputs lost (held here per the scheduler)"
                        }
                        FromWorker::InputsLost { .. } => "inputs lost",
                        FromWorker::Replicated { failed: true, .. } => "handoffs failed",
                        FromWorker::Replicated { .. } => "handoffs",
                        FromWorker::Failed { error, .. } if error.contains("timed out") => {
                            "timeouts"
                        }
                        FromWorker::Retiring { .. } => "retirements",
                        FromWorker::Returned(_) => "tasks given back",
                        _ => "",
                    };
                    if !path.is_empty() {
                        *self.outcome.paths.entry(path).or_default() += 1;
                    }
                }
                self.log(|| format!("sched <- w{w}: {msgs:?}"));
                let events = msgs.into_iter().map(|m| SEvent::Worker(w, m)).collect();
                self.deliver_to_scheduler(events)
            }
            Ev::FromClient(c, msgs) => {
                if !self.sched_clients.contains(&c) {
                    return Ok(());
                }
                self.log(|| format!("sched <- c{c}: {}", short(&msgs)));
                let events = msgs.into_iter().map(|m| SEvent::Client(c, m)).collect();
                self.deliver_to_scheduler(events)
            }
            Ev::WorkerLeft(w) => {
                if self.sched_workers.remove(&w) {
                    for key in self
                        .sched_assigned
                        .remove(&w)
                        .unwrap_or_default()
                        .into_values()
                    {
                        *self.deaths.entry(key).or_default() += 1;
                    }
                    self.log(|| format!("sched: worker {w} left"));
                    self.deliver_to_scheduler(vec![SEvent::WorkerLeft { id: w }])?;
                }
                Ok(())
            }
            Ev::Looked(events) => self.deliver_to_scheduler(events),
            Ev::ClientLeft(c) => {
                if self.sched_clients.remove(&c) {
                    self.log(|| format!("sched: client {c} left"));
                    self.deliver_to_scheduler(vec![SEvent::ClientLeft { id: c }])?;
                }
                Ok(())
            }
            Ev::ToWorker(w, mut msgs) => {
                if self.sessions.get(&w).is_none_or(|s| s.gone || s.cut) {
                    return Ok(());
                }
                // Stored outputs handed over: their values wait for the core's Keep.
                let s = self.sessions.get_mut(&w).expect("checked");
                for m in &mut msgs {
                    if let ToWorker::Data(items) = m {
                        for (i, bytes) in items {
                            s.holding.insert(*i, decode_value(bytes)?);
                        }
                        *self
                            .outcome
                            .paths
                            .entry("stored outputs handed over")
                            .or_default() += 1;
                    }
                }

                self.log(|| format!("w{w} <- sched: {msgs:?}"));
                self.worker_event(w, WEvent::Scheduler(msgs))
            }
            Ev::ToClient(c, msgs) => self.client_messages(c, msgs),
            Ev::JobStart(w, job, task, kill) => {
                if self.sessions.get(&w).is_none_or(|s| s.gone) {
                    return Ok(());
                }
                self.outcome.jobs += 1;
                if kill {
                    let m = self.sessions[&w].machine;
                    self.log(|| format!("w{w}: task {task} kills its worker"));
                    self.kill(m);
                    return Ok(());
                }
                self.worker_event(w, WEvent::JobStarted { job })
            }
            Ev::JobEnd(w, job) => {
                let Some(s) = self.sessions.get_mut(&w) else {
                    return Ok(());
                };
                if s.gone {
                    return Ok(());
                }
                let (task, result) = s.running.remove(&job).expect("running job");
                s.threads_busy -= 1;
                let result = result.map(|v| {
                    s.holding.insert(task, v);
                    size_of(v)
                });
                self.worker_event(
                    w,
                    WEvent::JobDone {
                        job,
                        result,
                        duration_us: 10,
                    },
                )?;
                self.start_jobs(w)
            }
            Ev::Loaded(w, cell, us, error) => {
                if self.sessions.get(&w).is_none_or(|s| s.gone) {
                    return Ok(());
                }
                self.worker_event(
                    w,
                    WEvent::Loaded {
                        cell,
                        duration_us: us,
                        bytes: 0,
                        error,
                    },
                )
            }
            Ev::FetchArrive(w, fetch, peer, ids) => self.serve_fetch(w, fetch, peer, ids),
            Ev::FetchDone(w, fetch, got, failed, error) => {
                let Some(s) = self.sessions.get_mut(&w) else {
                    return Ok(());
                };
                if s.gone {
                    return Ok(());
                }
                let got: Vec<(TaskIdx, u64)> = got
                    .into_iter()
                    .map(|(i, v)| {
                        s.holding.insert(i, v);
                        (i, size_of(v))
                    })
                    .collect();
                self.log(|| {
                    format!("w{w}: fetch {fetch} done: got {got:?} failed {failed:?} {error}")
                });
                self.worker_event(
                    w,
                    WEvent::Fetched {
                        fetch,
                        got,
                        failed,
                        error,
                    },
                )
            }
            Ev::ClientFetch(c, req, found, inline) => self.client_fetch(c, req, found, inline),
            Ev::Relocate(c, req) => {
                let client = &self.clients[&c];
                if client.state == ClientState::Fetching && client.next_req == req {
                    self.locate(c);
                }
                Ok(())
            }
            Ev::Tick(w) => {
                let Some(s) = self.sessions.get_mut(&w) else {
                    return Ok(());
                };
                if s.gone || s.tick_at != Some(self.now) {
                    return Ok(());
                }
                s.tick_at = None;
                self.worker_event(w, WEvent::Tick)
            }
            Ev::StartSession(m) => self.start_session(m),
            Ev::EndSession(w) => {
                if self.sessions.get(&w).is_some_and(|s| !s.gone) {
                    self.log(|| format!("w{w}: the session timed out"));
                    let s = self.sessions.get_mut(&w).expect("checked");
                    s.gone = true;
                    let m = s.machine;
                    if self.machines[m].session == Some(w) {
                        self.machines[m].session = None;
                    }
                }
                Ok(())
            }
            Ev::Submit(c) => {
                let client = self.clients.get_mut(&c).expect("client");
                if client.state == ClientState::Left {
                    return Ok(());
                }
                client.state = ClientState::Running;
                client.statuses.clear();
                client.outputs.clear();
                client.tasks = 0;
                let msg = FromClient::Submit {
                    run: client.runs_done + 1,
                    graph_json: client.json.clone(),
                    wants: client.wants.clone(),
                };
                if self.sched_clients.insert(c) {
                    self.deliver_to_scheduler(vec![SEvent::ClientJoined { id: c }])?;
                }
                self.send(true, 1_000_000 + c, Ev::FromClient(c, vec![msg]), 0);
                Ok(())
            }
            Ev::Fault(f) => self.fault(f),
        }
    }

    fn fault(&mut self, f: Fault) -> Result<(), String> {
        match f {
            Fault::Kill(m) => {
                if self.machines[m].down || self.machines[m].retired_for_good {
                    return Ok(());
                }
                *self.outcome.faults.entry("kill").or_default() += 1;
                self.log(|| format!("fault: kill machine {m}"));
                self.kill(m);
            }
            Fault::Partition(m, d) => {
                let Some(w) = self.machines[m].session else {
                    return Ok(());
                };
                *self.outcome.faults.entry("partition").or_default() += 1;
                self.log(|| format!("fault: partition machine {m} (w{w}) for {} ms", d / MS));
                if d < IDLE_TIMEOUT {
                    // A hiccup: QUIC retransmits; its messages are only late.
                    let until = self.now + d;
                    // Frames keep their order: a second hiccup never lets later frames
                    // overtake those held by the first.
                    if let Some(s) = self.sessions.get_mut(&w) {
                        s.hold_until = s.hold_until.max(until);
                    }
                    for to_scheduler in [false, true] {
                        let t = self.tails.entry((to_scheduler, w)).or_insert(0);
                        *t = (*t).max(until);
                    }
                } else {
                    if let Some(s) = self.sessions.get_mut(&w) {
                        s.cut = true;
                    }
                    self.at(self.now + IDLE_TIMEOUT, Ev::WorkerLeft(w));
                    self.at(self.now + IDLE_TIMEOUT, Ev::EndSession(w));
                    self.at(self.now + d, Ev::StartSession(m));
                }
            }
            Fault::PeerCut(a, b, d) => {
                if a == b {
                    return Ok(());
                }
                *self.outcome.faults.entry("peer cut").or_default() += 1;
                self.log(|| {
                    format!(
                        "fault: machines {a} and {b} cannot reach each other for {} ms",
                        d / MS
                    )
                });
                self.peer_cuts.insert((a.min(b), a.max(b)), self.now + d);
            }
            Fault::Retire(m) => {
                let Some(w) = self.machines[m].session else {
                    return Ok(());
                };
                *self.outcome.faults.entry("retire").or_default() += 1;
                self.log(|| format!("fault: SIGTERM to machine {m} (w{w})"));
                self.worker_event(w, WEvent::Retire)?;
            }
            Fault::ClientLeaves(c) => {
                let client = self.clients.get_mut(&c).expect("client");
                if matches!(client.state, ClientState::Running | ClientState::Fetching) {
                    *self.outcome.faults.entry("client leaves").or_default() += 1;
                    client.state = ClientState::Left;
                    self.outcome.runs_abandoned += 1;
                    self.log(|| format!("fault: client {c} leaves"));
                    let d = self.rng.gen_range(200..2_000);
                    self.at(self.now + d, Ev::ClientLeft(c));
                }
            }
        }
        Ok(())
    }

    /// The machine's process dies: its session ends, the scheduler hears of it through the
    /// lifeline, and a supervisor starts a new process shortly.
    fn kill(&mut self, m: usize) {
        let machine = &mut self.machines[m];
        machine.down = true;
        machine.cells.clear();
        if let Some(w) = machine.session.take() {
            let cut = self.sessions.get(&w).is_some_and(|s| s.cut);
            if let Some(s) = self.sessions.get_mut(&w) {
                s.gone = true;
            }
            let notice = if cut {
                self.now + IDLE_TIMEOUT
            } else {
                // The lifeline closes at once; the scheduler drains what was in flight first.
                let in_flight = self.tails.get(&(true, w)).copied().unwrap_or(0);
                (self.now + self.rng.gen_range(200..2_000)).max(in_flight + 1)
            };
            self.at(notice, Ev::WorkerLeft(w));
        }
        let restart = self.rng.gen_range(50 * MS..500 * MS);
        self.at(self.now + restart, Ev::StartSession(m));
    }

    fn start_session(&mut self, m: usize) -> Result<(), String> {
        let machine = &mut self.machines[m];
        if machine.retired_for_good {
            return Ok(());
        }
        if let Some(old) = machine.session {
            if self.sessions.get(&old).is_some_and(|s| !s.gone) {
                return Ok(()); // still connected
            }
        }
        machine.down = false;
        let id = self.next_worker_id;
        self.next_worker_id += 1;
        machine.session = Some(id);
        let mut resources: Vec<(String, f64)> = machine
            .pools
            .iter()
            .map(|p| (format!("pool-{p}"), 1.0))
            .collect();
        if machine.gpu {
            resources.push(("gpu".into(), 1.0));
        }
        let hello = WorkerHello {
            name: machine.name.clone(),
            resources,
            nthreads: machine.nthreads,
            peer_addr: "127.0.0.1:1".parse().expect("addr"),
            peer_cert: vec![],
            data_addr: None,
            functions: machine.functions.iter().map(|f| f.to_string()).collect(),
        };
        let core = WorkerCore::new(
            id,
            WConfig {
                nthreads: machine.nthreads,
                resources: if machine.gpu {
                    vec![("gpu".into(), 1.0)]
                } else {
                    vec![]
                },
                lifespan_tasks: machine.lifespan,
                memory_limit: None,
                max_lost_threads: 0,
            },
        );
        self.sessions.insert(
            id,
            Session {
                machine: m,
                core,
                store: BTreeMap::new(),
                holding: BTreeMap::new(),
                cells: BTreeMap::new(),
                waiting_jobs: VecDeque::new(),
                threads_busy: 0,
                running: BTreeMap::new(),
                tick_at: None,
                gone: false,
                cut: false,
                hold_until: 0,
                report_output: BTreeMap::new(),
            },
        );
        self.log(|| format!("machine {m} joins as w{id}"));
        self.sched_workers.insert(id);
        self.deliver_to_scheduler(vec![SEvent::WorkerJoined { id, hello }])
    }

    /// Feeds events to the scheduler core, checks it, and sends what it says, one frame per
    /// destination.
    fn deliver_to_scheduler(&mut self, events: Vec<SEvent>) -> Result<(), String> {
        let mut cmds = Vec::new();
        for e in events {
            let what = if self.trace_on {
                format!("{e:?}")
            } else {
                String::new()
            };
            cmds.extend(self.core.handle(e));
            if let Err(broken) = self.core.check() {
                return Err(format!("scheduler invariant broken after {what}: {broken}"));
            }
        }
        let mut to_workers: BTreeMap<WorkerId, Vec<ToWorker>> = BTreeMap::new();
        let mut to_clients: BTreeMap<u32, Vec<ToClient>> = BTreeMap::new();
        let mut looked = Vec::new();
        for c in cmds {
            match c {
                SCommand::Worker(w, m) => to_workers.entry(w).or_default().push(m),
                SCommand::Client(c, m) => to_clients.entry(c).or_default().push(m),
                SCommand::Lookup {
                    id,
                    namespace,
                    keys,
                } => {
                    let found = drover_progress::done_for(&self.store, &namespace, &keys)
                        .expect("memory store");
                    *self.outcome.paths.entry("durable lookups").or_default() += 1;
                    let hits = found.iter().filter(|f| f.is_some()).count() as u32;
                    *self.outcome.paths.entry("durable found done").or_default() += hits;
                    looked.push(SEvent::Looked {
                        id,
                        found: Ok(found),
                    });
                }
                SCommand::Commit {
                    namespace,
                    key,
                    version,
                    definition,
                    output,
                } => {
                    // Durable at once here (the real server holds client messages until it is).
                    let r = drover_progress::Request {
                        namespace,
                        key,
                        op: drover_progress::Op::Record {
                            version,
                            definition,
                            by: "scheduler".into(),
                            output,
                        },
                    };
                    drover_progress::apply(&self.store, &[r], self.now / MS, 1 << 20)
                        .expect("memory store");
                    *self.outcome.paths.entry("durable commits").or_default() += 1;
                }
            }
        }
        if !looked.is_empty() {
            let d = self.rng.gen_range(100..3_000);
            self.at(self.now + d, Ev::Looked(looked));
        }
        for (w, msgs) in to_workers {
            if !self.sched_workers.contains(&w) {
                continue;
            }
            let assigned = self.sched_assigned.entry(w).or_default();
            for m in &msgs {
                if let ToWorker::Compute(t) = m {
                    assigned.insert(t.id, t.key.clone());
                    if !t.after.is_empty() {
                        *self.outcome.paths.entry("pre-assigned").or_default() += 1;
                    }
                }
                if let ToWorker::Free(ids) = m {
                    let pinned = self.sessions.get(&w).is_some_and(|s| {
                        s.core.stored().iter().any(|i| ids.contains(i))
                            && !s.core.held().iter().any(|i| ids.contains(i))
                    });
                    if pinned {
                        *self
                            .outcome
                            .paths
                            .entry("frees of uncounted copies")
                            .or_default() += 1;
                    }
                }
            }
            let hold = self.sessions.get(&w).map_or(0, |s| s.hold_until);
            self.send(false, w, Ev::ToWorker(w, msgs), hold);
        }
        for (c, msgs) in to_clients {
            if self.sched_clients.contains(&c) {
                self.send(false, 1_000_000 + c, Ev::ToClient(c, msgs), 0);
            }
        }
        Ok(())
    }

    /// Feeds an event to worker session `w`'s core, checks it, and carries out its commands.
    fn worker_event(&mut self, w: WorkerId, e: WEvent) -> Result<(), String> {
        let now = self.instant();
        let s = self.sessions.get_mut(&w).expect("session");
        let what = if self.trace_on {
            format!("{e:?}")
        } else {
            String::new()
        };
        let cmds = s.core.handle(e, now);
        if let Err(broken) = s.core.check() {
            return Err(format!(
                "worker {w} invariant broken after {what}: {broken}"
            ));
        }
        for c in cmds {
            self.worker_command(w, c)?;
        }
        if let Some(s) = self.sessions.get_mut(&w) {
            s.holding.clear();
            if let Some(at) = s.core.next_wakeup() {
                let at = at.saturating_duration_since(self.base).as_micros() as Micros;
                let at = at.max(self.now);
                if s.tick_at.is_none_or(|t| at < t) {
                    s.tick_at = Some(at);
                    self.at(at, Ev::Tick(w));
                }
            }
        }
        Ok(())
    }

    fn worker_command(&mut self, w: WorkerId, c: WCommand) -> Result<(), String> {
        let (m, cut, hold) = {
            let s = &self.sessions[&w];
            (s.machine, s.cut, s.hold_until)
        };
        if let WCommand::Send(mut msgs) = c {
            // As the shell does: durable tasks' outputs go with their results.
            let s = self.sessions.get_mut(&w).expect("session");
            for m in &mut msgs {
                if let FromWorker::Finished { id, output, .. } = m {
                    if s.report_output.remove(id).is_some() {
                        *output = s.store.get(id).map(|v| v.to_le_bytes().to_vec());
                    }
                }
            }
            if !cut {
                self.log(|| format!("w{w} -> sched: {msgs:?}"));
                self.send(true, w, Ev::FromWorker(w, msgs), hold);
            }
            return Ok(());
        }
        if let WCommand::Exit(exit) = c {
            self.log(|| format!("w{w} exits: {exit:?}"));
            self.sessions.get_mut(&w).expect("session").gone = true;
            let lat = self.rng.gen_range(50..2_000);
            self.at(self.now + lat, Ev::WorkerLeft(w));
            let machine = &mut self.machines[m];
            machine.session = None;
            machine.cells.clear();
            match exit {
                Exit::Recycled => machine.retired_for_good = true,
                Exit::Retired => {
                    // Its operator starts it again later.
                    let d = self.rng.gen_range(100 * MS..2 * SEC);
                    self.at(self.now + d, Ev::StartSession(m));
                }
            }
            return Ok(());
        }
        let s = self.sessions.get_mut(&w).expect("session");
        match c {
            WCommand::Send(_) | WCommand::Exit(_) => unreachable!("handled above"),
            WCommand::Keep(ids) => {
                for i in ids {
                    let v = *s.holding.get(&i).ok_or_else(|| {
                        format!("worker {w} was told to keep {i}, which it was not handed")
                    })?;
                    s.store.insert(i, v);
                }
            }
            WCommand::Drop(ids) => {
                for i in ids {
                    s.store.remove(&i);
                }
            }
            WCommand::Run(job) => {
                let machine = &self.machines[m];
                if !machine.functions.contains(&job.task.function.as_str()) {
                    return Err(format!(
                        "task {:?} ran on worker {w} ({}), which lacks function {:?}",
                        job.task.key, machine.name, job.task.function
                    ));
                }
                if job.task.report_output.is_some() {
                    s.report_output.insert(job.task.id, ());
                }
                // The shell takes the inputs' bytes now: later drops do not affect the job.
                let mut taken = BTreeMap::new();
                for &i in &job.task.inputs {
                    if s.cells.contains_key(&i) {
                        continue;
                    }
                    match s.store.get(&i) {
                        Some(v) => {
                            taken.insert(i, *v);
                        }
                        None => {
                            return Err(format!(
                                "job for {:?} on worker {w}: input {i} is not in its store",
                                job.task.key
                            ))
                        }
                    }
                }
                s.waiting_jobs.push_back((job, taken));
                self.start_jobs(w)?;
            }
            WCommand::Fetch { fetch, peer, ids } => {
                let hold = s.hold_until;
                let lat = self.rng.gen_range(50..2_000);
                let peer_hold = self.sessions.get(&peer.id).map_or(0, |p| p.hold_until);
                let t = (self.now + lat).max(hold).max(peer_hold);
                self.at(t, Ev::FetchArrive(w, fetch, peer.id, ids));
            }
            // Simulated threads are not counted: a replacement is free.
            WCommand::ForgetPeer(_) | WCommand::ThreadLost(_) => {}
            WCommand::Cell(spec) => {
                let load_now = spec.load_now;
                let (id, key, params) = (spec.id, spec.key.clone(), spec.params.clone());
                s.cells.insert(spec.id, spec);
                if load_now {
                    let params = unquote(params.as_deref());
                    let ready = self.load_cell(m, &key, &params);
                    if let Some((at, error)) = ready {
                        self.at(at, Ev::Loaded(w, id, 10, error));
                    } else {
                        self.at(self.now, Ev::Loaded(w, id, 0, None));
                    }
                }
            }
            WCommand::DropCells(ids) => {
                for i in ids {
                    if let Some(spec) = s.cells.get(&i) {
                        self.machines[m].cells.remove(&spec.key);
                    }
                }
            }
            WCommand::Recycling => {
                // Its supervisor starts a successor process at once (a new slot).
                let old = &self.machines[m];
                let successor = Machine {
                    name: format!("{}'", old.name),
                    pools: old.pools.clone(),
                    gpu: old.gpu,
                    functions: old.functions.clone(),
                    nthreads: old.nthreads,
                    lifespan: old.lifespan,
                    session: None,
                    cells: BTreeMap::new(),
                    down: false,
                    retired_for_good: false,
                };
                self.machines.push(successor);
                let n = self.machines.len() - 1;
                let d = self.rng.gen_range(20 * MS..300 * MS);
                self.at(self.now + d, Ev::StartSession(n));
                *self.outcome.faults.entry("recycle").or_default() += 1;
            }
        }
        Ok(())
    }

    /// Starts loading a once-cell on machine `m` unless loaded or loading: returns when the
    /// load ends and its error, or `None` if it was loaded already.
    fn load_cell(&mut self, m: usize, key: &str, params: &str) -> Option<(Micros, Option<String>)> {
        let machine = &self.machines[m];
        if let Some((p, _, ready)) = machine.cells.get(key) {
            if p == params && *ready <= self.now {
                return None;
            }
            if p == params {
                return Some((*ready, None));
            }
        }
        let took = self.rng.gen_range(5 * MS..50 * MS);
        let at = self.now + took;
        if params.starts_with("bad") {
            return Some((at, Some("the model file is corrupt".into())));
        }
        let value = compute("load", params, &[]);
        self.machines[m]
            .cells
            .insert(key.to_owned(), (params.to_owned(), value, at));
        Some((at, None))
    }

    /// Hands waiting jobs to free threads: reads their inputs now, as the shell does.
    fn start_jobs(&mut self, w: WorkerId) -> Result<(), String> {
        loop {
            let s = self.sessions.get_mut(&w).expect("session");
            let m = s.machine;
            if s.gone || s.threads_busy >= self.machines[m].nthreads {
                return Ok(());
            }
            let Some((job, taken)) = s.waiting_jobs.pop_front() else {
                return Ok(());
            };
            s.threads_busy += 1;
            let mut values = Vec::new();
            let mut error = None;
            let mut start = self.now;
            for &i in &job.task.inputs {
                let s = &self.sessions[&w];
                if let Some(spec) = s.cells.get(&i) {
                    let (key, params) = (spec.key.clone(), unquote(spec.params.as_deref()));
                    match self.load_cell(m, &key, &params) {
                        Some((at, Some(e))) => {
                            self.at(at, Ev::Loaded(w, i, 10, Some(e.clone())));
                            error = Some(format!("once-cell {key:?} failed to load: {e}"));
                            start = start.max(at);
                        }
                        Some((at, None)) => {
                            if self.machines[m].cells[&key].2 == at {
                                self.at(at, Ev::Loaded(w, i, 10, None));
                            }
                            start = start.max(at);
                            values.push(self.machines[m].cells[&key].1);
                        }
                        None => values.push(self.machines[m].cells[&key].1),
                    }
                    continue;
                }
                values.push(taken[&i]);
            }
            let f = job.task.function.as_str();
            let key = job.task.key.clone();
            let result = match (error, f) {
                (Some(e), _) => Err(e),
                (None, "fail") => Err("task panicked: boom".to_owned()),
                (None, "flaky") if self.flaked.insert(key.clone()) => Err("flaky".to_owned()),
                (None, f) => Ok(compute(f, &unquote(job.task.params.as_deref()), &values)),
            };
            let duration = match f {
                "slow" => 3 * job.task.timeout_ms.unwrap_or(100) * MS,
                _ => self.rng.gen_range(MS..30 * MS),
            };
            let kill = f == "kill";
            let s = self.sessions.get_mut(&w).expect("session");
            s.running.insert(job.job, (job.task.id, result));
            self.at(start, Ev::JobStart(w, job.job, job.task.id, kill));
            self.at(start + duration, Ev::JobEnd(w, job.job));
        }
    }

    /// A fetch request reaches its peer: it answers from its store, if it can be reached.
    fn serve_fetch(
        &mut self,
        w: WorkerId,
        fetch: u64,
        peer: WorkerId,
        ids: Vec<TaskIdx>,
    ) -> Result<(), String> {
        if self.sessions.get(&w).is_none_or(|s| s.gone) {
            return Ok(());
        }
        let me = self.sessions[&w].machine;
        let pair_cut = self.sessions.get(&peer).is_some_and(|p| {
            let pair = (me.min(p.machine), me.max(p.machine));
            self.peer_cuts
                .get(&pair)
                .is_some_and(|&until| until > self.now)
        });
        let me_cut = self.sessions[&w].cut || pair_cut;
        *self.outcome.paths.entry("peer fetches").or_default() += 1;
        let lat = self.rng.gen_range(50..2_000);
        let (got, failed, error, delay) = match self.sessions.get(&peer) {
            Some(p) if !p.gone && !p.cut && !me_cut => {
                let mut got = Vec::new();
                let mut failed = Vec::new();
                let mut bytes = 0;
                for i in ids {
                    match p.store.get(&i) {
                        Some(v) => {
                            bytes += size_of(*v);
                            got.push((i, *v));
                        }
                        None => failed.push(i),
                    }
                }
                let error = if failed.is_empty() {
                    String::new()
                } else {
                    format!("worker {peer} does not hold result {}", failed[0])
                };
                (got, failed, error, lat + bytes / BANDWIDTH)
            }
            Some(p) if p.cut || me_cut => (vec![], ids, "timed out".to_owned(), IDLE_TIMEOUT),
            _ => (vec![], ids, "connection refused".to_owned(), lat),
        };
        self.at(
            self.now + delay,
            Ev::FetchDone(w, fetch, got, failed, error),
        );
        Ok(())
    }

    fn client_messages(&mut self, c: u32, msgs: Vec<ToClient>) -> Result<(), String> {
        self.log(|| {
            let shown: Vec<String> = msgs
                .iter()
                .map(|m| match m {
                    ToClient::Events(e) => format!(
                        "events {:?}",
                        e.iter()
                            .map(|e| (&e.key, e.status, e.run, e.reused))
                            .collect::<Vec<_>>()
                    ),
                    other => format!("{other:?}"),
                })
                .collect();
            format!("c{c} <- sched: {}", shown.join(", "))
        });
        let now = self.now;
        let client = self.clients.get_mut(&c).expect("client");
        if matches!(
            client.state,
            ClientState::Left | ClientState::Rejected | ClientState::Done
        ) {
            return Ok(());
        }
        let mut locate = false;
        let mut located = Vec::new();
        let current = client.runs_done + 1;
        for m in msgs {
            match m {
                ToClient::Accepted { tasks, run } if run == current => client.tasks = tasks,
                ToClient::Accepted { .. } => {}
                ToClient::Rejected { error, .. } => {
                    if !error.contains("redefines") {
                        return Err(format!("client {c}'s valid graph was rejected: {error}"));
                    }
                    client.state = ClientState::Rejected;
                    self.outcome.rejected += 1;
                    return Ok(());
                }
                ToClient::Events(events) => {
                    for e in events {
                        if e.load || e.run != current || !client.expect.contains_key(&e.key) {
                            continue;
                        }
                        if e.reused {
                            *self.outcome.paths.entry("reused results").or_default() += 1;
                        }
                        if e.status == TaskStatus::Skipped {
                            *self.outcome.paths.entry("skipped tasks").or_default() += 1;
                        }
                        client
                            .statuses
                            .insert(e.key.clone(), (e.status, e.error.clone()));
                    }
                }
                // The simulated clients submit attached runs only.
                ToClient::Warning(_)
                | ToClient::Progress { .. }
                | ToClient::Runs { .. }
                | ToClient::RunEnded { .. }
                | ToClient::Status { .. } => {}
                ToClient::Located {
                    req, found, inline, ..
                } => {
                    if client.state == ClientState::Fetching && req == client.next_req {
                        located.push((req, found, inline.into_iter().collect()));
                    }
                }
            }
        }
        let client = self.clients.get_mut(&c).expect("client");
        if client.state == ClientState::Running
            && client.tasks > 0
            && client.statuses.len() as u32 >= client.tasks
        {
            // The run ended: check every task's status.
            for (k, want) in &client.expect {
                if client
                    .graph
                    .tasks
                    .iter()
                    .any(|t| &t.key == k && t.cell.is_some())
                {
                    continue;
                }
                let Some((got, error)) = client.statuses.get(k) else {
                    return Err(format!("client {c}: no status for {k}"));
                };
                let ok = match want {
                    // Not run: only if nothing of the run needs it (not wanted, and everything
                    // it feeds was done or skipped too, or was made again after a loss and
                    // failed then as suspicious, rightly, before this one was needed).
                    _ if *got == TaskStatus::Skipped => {
                        let graph = &client.graph.tasks;
                        let me = graph.iter().position(|t| &t.key == k).expect("a task");
                        let mut consumers = graph.iter().filter(|t| t.inputs.contains(&me));
                        !client.wants.contains(k)
                            && graph.iter().any(|t| t.inputs.contains(&me))
                            && consumers.all(|t| {
                                t.cell.is_none()
                                    && client.statuses.get(&t.key).is_some_and(|(s, e)| {
                                        matches!(s, TaskStatus::Finished | TaskStatus::Skipped)
                                            || suspicion_is_founded(
                                                e.as_deref(),
                                                &t.key,
                                                &self.deaths,
                                            )
                                    })
                            })
                    }
                    Expect::Value(_) => {
                        *got == TaskStatus::Finished
                            || suspicion_is_founded(error.as_deref(), k, &self.deaths)
                    }
                    Expect::Fail => *got == TaskStatus::Failed,
                };
                if !ok {
                    return Err(format!(
                        "client {c}: task {k} ended {got:?} ({error:?}); the reference says {want:?}"
                    ));
                }
            }
            client.state = ClientState::Fetching;
            locate = true;
        }
        for (req, found, inline) in located {
            let d = self.rng.gen_range(100..3_000);
            self.at(now + d, Ev::ClientFetch(c, req, found, inline));
        }
        if locate {
            self.locate(c);
        }
        Ok(())
    }

    fn locate(&mut self, c: u32) {
        let client = self.clients.get_mut(&c).expect("client");
        client.next_req += 1;
        client.locate_tries += 1;
        let keys: Vec<String> = client
            .wants
            .iter()
            .filter(|k| {
                matches!(client.expect[*k], Expect::Value(_)) && !client.outputs.contains_key(*k)
            })
            .cloned()
            .collect();
        let req = client.next_req;
        let run = client.runs_done + 1;
        let msgs = vec![FromClient::EndRun { run }, FromClient::Locate { req, keys }];
        self.send(true, 1_000_000 + c, Ev::FromClient(c, msgs), 0);
    }

    /// The client fetches its outputs from the holders named; what cannot be had is located
    /// again (the scheduler makes it again if it was lost).
    fn client_fetch(
        &mut self,
        c: u32,
        req: u32,
        found: Vec<(String, Option<(TaskIdx, WorkerId)>)>,
        inline: BTreeMap<String, Vec<u8>>,
    ) -> Result<(), String> {
        let mut missing = 0;
        let mut unreachable = false;
        for (key, at) in found {
            let value = match inline.get(&key) {
                Some(bytes) => Some(decode_value(bytes)?),
                None => at.and_then(|(id, w)| {
                    let s = self.sessions.get(&w)?;
                    unreachable |= s.cut;
                    (!s.gone && !s.cut)
                        .then(|| s.store.get(&id).copied())
                        .flatten()
                }),
            };
            let client = self.clients.get_mut(&c).expect("client");
            if client.state != ClientState::Fetching || req != client.next_req {
                return Ok(());
            }
            // Lost after the run ended, made again, and failed then as suspicious (rightly):
            // there is no output to fetch any more.
            if value.is_none()
                && suspicion_is_founded(self.core.failure_of(&key).as_deref(), &key, &self.deaths)
            {
                client.outputs.insert(key, 0);
                continue;
            }
            match value {
                Some(v) => {
                    if client.expect[&key] != Expect::Value(v) {
                        return Err(format!(
                            "client {c}: output of {key} is {v}; the reference says {:?}",
                            client.expect[&key]
                        ));
                    }
                    client.outputs.insert(key, v);
                }
                None => missing += 1,
            }
        }
        let client = self.clients.get_mut(&c).expect("client");
        if missing == 0 {
            self.outcome.runs_checked += 1;
            client.runs_done += 1;
            if client.again && client.runs_done == 1 {
                // The same graph again, back to back.
                client.state = ClientState::Waiting;
                let d = self.rng.gen_range(MS..500 * MS);
                self.at(self.now + d, Ev::Submit(c));
            } else {
                client.state = ClientState::Done;
                let wants = client.wants.clone();
                self.send(
                    true,
                    1_000_000 + c,
                    Ev::FromClient(c, vec![FromClient::Release { keys: wants }]),
                    0,
                );
            }
        } else if client.locate_tries > 20 {
            let lacking: Vec<String> = client
                .wants
                .iter()
                .filter(|k| {
                    matches!(client.expect[*k], Expect::Value(_))
                        && !client.outputs.contains_key(*k)
                })
                .map(|k| format!("{k}: {}", self.core.describe_key(k).unwrap_or_default()))
                .collect();
            return Err(format!(
                "client {c}: {missing} outputs could not be fetched after 20 tries: {lacking:?}"
            ));
        } else {
            // As the real client: a fetch from an unreachable holder fails at the idle
            // timeout; it locates again after a backoff.
            let tries = client.locate_tries;
            let wait = if unreachable { IDLE_TIMEOUT } else { 0 }
                + ((100 * MS) << tries.min(5)).min(2 * SEC);
            self.at(self.now + wait, Ev::Relocate(c, req));
        }
        Ok(())
    }
}

/// Whether a task (`key`) failed as suspicious, or because an input upstream did, and that
/// task really was assigned to as many workers that died as the scheduler allows (3). Of a
/// worker that dies before it reports a start the scheduler knows only which tasks it had, and
/// guesses which of them ran (its run order among those with their inputs there), so a task
/// that ran beside a killer may be blamed; the simulation accepts such suspicion only when the
/// task was there at each of those deaths.
fn suspicion_is_founded(error: Option<&str>, key: &str, deaths: &BTreeMap<String, u32>) -> bool {
    let Some(error) = error else {
        return false;
    };
    let Some(at) = error.find("suspicious task") else {
        return false;
    };
    // The innermost `input "X" failed: ` before it names the suspect; none: the task itself.
    let before = &error[..at];
    let suspect = before
        .rfind("input \"")
        .and_then(|i| {
            let rest = &before[i + 7..];
            rest.find('"').map(|j| &rest[..j])
        })
        .unwrap_or(key);
    deaths.get(suspect).copied().unwrap_or(0) >= CoreConfig::default().max_worker_deaths
}

/// A simulated output as stored (8 bytes, little-endian).
fn decode_value(bytes: &[u8]) -> Result<u64, String> {
    let b: [u8; 8] = bytes.try_into().map_err(|_| {
        format!(
            "a stored output of {} bytes is not a simulated value",
            bytes.len()
        )
    })?;
    Ok(u64::from_le_bytes(b))
}

/// Params as the generator wrote them: JSON strings, unquoted.
fn unquote(params: Option<&str>) -> String {
    params
        .and_then(|p| serde_json::from_str::<String>(p).ok())
        .unwrap_or_default()
}

/// A short form of client messages for the trace (graphs are long).
fn short(msgs: &[FromClient]) -> String {
    msgs.iter()
        .map(|m| match m {
            FromClient::Submit { run, wants, .. } => format!("Submit(run {run}, wants {wants:?})"),
            other => format!("{other:?}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
