//! The worker process: connects to the scheduler, runs assigned tasks on `nthreads` executor
//! threads (holding their resources while they run), fetches missing inputs from peers, keeps
//! results, and reports completions in batches.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use drover_annotations::Resources;
use drover_protocol::codec::{batch_writer, read_frame, CodecError, MAX_CONTROL_FRAME};
use drover_protocol::endpoint::{connect, say_hello, server_endpoint};
use drover_protocol::tls::Identity;
use drover_protocol::{
    AccessFile, ComputeTask, FromWorker, Hello, PeerInfo, Role, TaskIdx, ToWorker, WorkerHello,
    WorkerId, PROTOCOL_VERSION,
};
use tokio::sync::{mpsc, RwLock};
use tracing::{debug, info, warn};

use crate::cells::CellSlot;
use crate::local::WorkerLocal;
use crate::peer::{serve, Fetcher};
use crate::registry::{Object, RawFn, Registry, TaskContext};
use crate::store::Store;

/// How a worker is started.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// How to reach the scheduler.
    pub access: AccessFile,
    /// What this worker offers: `pool-X` entries put it in pools; others are consumable.
    pub resources: Resources,
    /// Tasks run at once.
    pub nthreads: u32,
    /// Its name in logs and reports.
    pub name: String,
    /// A silent connection is dead after this long.
    pub idle_timeout: Duration,
    /// Notified to retire the worker: it takes no new tasks, finishes its own, hands results
    /// only it holds to other workers, and stops when the scheduler says so (see
    /// [`retire_on_sigterm`]).
    pub retire: Option<Arc<tokio::sync::Notify>>,
    /// Retire after this many tasks, to be replaced by a fresh process (see [`Stopped::Recycled`]).
    pub lifespan_tasks: Option<u64>,
    /// Retire when the process's resident memory exceeds this many bytes (checked every
    /// second), to be replaced by a fresh process.
    pub memory_limit: Option<u64>,
}

/// Why a worker stopped without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The scheduler shut down.
    SchedulerShutDown,
    /// It retired on request (SIGTERM) and handed over its results.
    Retired,
    /// It retired because it reached its task lifespan or memory limit: a supervisor should
    /// start a fresh process in its place.
    Recycled,
}

/// The resident memory of this process in bytes (Linux), if known.
pub fn resident_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A retire signal notified when the process gets SIGTERM (on Unix; never elsewhere).
pub fn retire_on_sigterm() -> Arc<tokio::sync::Notify> {
    let notify = Arc::new(tokio::sync::Notify::new());
    #[cfg(unix)]
    {
        let n = notify.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            if let Ok(mut term) = signal(SignalKind::terminate()) {
                while term.recv().await.is_some() {
                    n.notify_one();
                }
            }
        });
    }
    notify
}

/// Why a worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The access file is unusable.
    #[error("access file: {0}")]
    Access(String),
    /// Setting up the endpoint or connecting failed, or the scheduler refused us.
    #[error(transparent)]
    Endpoint(#[from] drover_protocol::endpoint::EndpointError),
    /// The scheduler connection broke.
    #[error("lost the scheduler: {0}")]
    Lost(String),
}

/// The local address this machine uses to reach `remote`: what peers should dial.
fn local_ip_towards(remote: SocketAddr) -> IpAddr {
    let any: SocketAddr = if remote.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("valid");
    std::net::UdpSocket::bind(any)
        .and_then(|s| s.connect(remote).map(|_| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .unwrap_or(any.ip())
}

/// The line a recycling worker prints on stdout so that its supervisor starts its successor
/// before it leaves.
pub const RECYCLING_LINE: &str = "drover-worker: recycling";

fn announce_recycling() {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{RECYCLING_LINE}");
    let _ = out.flush();
}

/// How often still-running tasks are reported as started.
const START_REPORT_TICK: Duration = Duration::from_millis(50);

/// Loop outcomes that are not errors.
const RETIRED: &str = "retired";
const RECYCLED: &str = "recycled";

/// A task on its way to an executor thread.
struct Job {
    /// This run's number on this worker (a retried task runs again under a new one).
    seq: u64,
    task: ComputeTask,
    func: Option<Arc<RawFn>>,
    inputs: Vec<Bytes>,
    fetched: Vec<(TaskIdx, WorkerId, u64)>,
    /// Once-cell inputs: (position, cell id, slot).
    cells: Vec<(usize, TaskIdx, Arc<CellSlot>)>,
}

/// What an executor thread reports.
struct Done {
    seq: u64,
    task: ComputeTask,
    result: Result<Bytes, String>,
    duration_us: u64,
    fetched: Vec<(TaskIdx, WorkerId, u64)>,
}

/// Messages from executor threads.
enum ThreadMsg {
    /// A task with a timeout started; it must end by `deadline`.
    /// A task started; with a timeout, it must end by `deadline`.
    Started {
        seq: u64,
        id: TaskIdx,
        /// (timeout in ms, deadline), for tasks with a timeout.
        limit: Option<(u64, Instant)>,
    },
    /// A task ended.
    Done(Done),
    /// A once-cell load ended.
    Loaded(FromWorker),
}

/// The report of a load this thread ran.
fn load_report(id: TaskIdx, slot: &CellSlot, duration_us: u64, error: Option<&str>) -> ThreadMsg {
    ThreadMsg::Loaded(FromWorker::Loaded {
        id,
        duration_us,
        bytes: slot.wire_bytes(),
        error: error.map(str::to_owned),
    })
}

/// Whether input `i` is one of a job's once-cells.
fn is_cell(cells: &[(usize, TaskIdx, Arc<CellSlot>)], i: TaskIdx) -> bool {
    cells.iter().any(|(_, c, _)| *c == i)
}

/// A job's input bytes in order (empty for once-cells, whose objects come later), or `None` if
/// some result is not in the store.
fn job_inputs(
    task: &ComputeTask,
    cells: &[(usize, TaskIdx, Arc<CellSlot>)],
    store: &Store,
) -> Option<Vec<Bytes>> {
    task.inputs
        .iter()
        .map(|&(i, _)| {
            if is_cell(cells, i) {
                Some(Bytes::new())
            } else {
                store.get(i)
            }
        })
        .collect()
}

/// A context for running a loader.
fn load_context(local: &Arc<WorkerLocal>, key: &str) -> TaskContext {
    TaskContext {
        key: key.to_owned(),
        worker_id: local.id(),
        worker_name: local.name().to_owned(),
        deadline: None,
        timeout: None,
        worker: local.clone(),
        objects: Vec::new(),
    }
}

/// Gets the once-cell inputs of a job (loading them if needed, reporting the loads), as the
/// positional objects its function receives.
fn resolve_cells(
    job: &Job,
    local: &Arc<WorkerLocal>,
    out: &mpsc::UnboundedSender<ThreadMsg>,
) -> Result<Vec<Option<Object>>, String> {
    if job.cells.is_empty() {
        return Ok(Vec::new());
    }
    let mut objects: Vec<Option<Object>> = vec![None; job.inputs.len()];
    for (pos, id, slot) in &job.cells {
        let outcome = slot.get_reporting(
            || load_context(local, &slot.key),
            |us, error| {
                let _ = out.send(load_report(*id, slot, us, error));
            },
        );
        match outcome {
            Ok((object, _)) => objects[*pos] = Some(object),
            Err((e, _)) => {
                return Err(format!(
                    "once-cell {:?} failed to load on worker {:?}: {e}",
                    slot.key,
                    local.name()
                ))
            }
        }
    }
    Ok(objects)
}

/// How a timeout is reported, by the worker or by a function that stops itself at its deadline.
pub fn timeout_message(timeout: Duration) -> String {
    format!("task timed out after {} s", timeout.as_secs_f64())
}

/// Local queue entry: higher priority first, then arrival order.
struct Queued {
    priority: i32,
    seq: Reverse<u64>,
    task: ComputeTask,
}
impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.priority, self.seq) == (o.priority, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.priority, self.seq).cmp(&(o.priority, o.seq))
    }
}

pub(crate) fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}

fn spawn_executors(
    n: u32,
    local: &Arc<WorkerLocal>,
    id: WorkerId,
    out: mpsc::UnboundedSender<ThreadMsg>,
) -> std::sync::mpsc::Sender<Job> {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..n {
        let (rx, out, local) = (rx.clone(), out.clone(), local.clone());
        let name = local.name().to_owned();
        std::thread::Builder::new()
            .name(format!("drover-exec-{i}"))
            .spawn(move || loop {
                let job = match rx.lock().map(|r| r.recv()) {
                    Ok(Ok(job)) => job,
                    _ => return,
                };
                // Once-cells first: a load is its own step, reported and timed apart.
                let objects = resolve_cells(&job, &local, &out);
                let start = Instant::now();
                let deadline = job
                    .task
                    .timeout_ms
                    .map(|ms| start + Duration::from_millis(ms));
                let _ = out.send(ThreadMsg::Started {
                    seq: job.seq,
                    id: job.task.id,
                    limit: job.task.timeout_ms.zip(deadline),
                });
                let result = match (&job.func, objects) {
                    (None, _) => Err(format!(
                        "worker {name:?} has no function {:?}",
                        job.task.function
                    )),
                    (_, Err(e)) => Err(e),
                    (Some(f), Ok(objects)) => {
                        let ctx = TaskContext {
                            key: job.task.key.clone(),
                            worker_id: id,
                            worker_name: name.clone(),
                            deadline,
                            timeout: job.task.timeout_ms.map(Duration::from_millis),
                            worker: local.clone(),
                            objects,
                        };
                        match catch_unwind(AssertUnwindSafe(|| {
                            f(&ctx, job.task.params.as_deref(), &job.inputs)
                        })) {
                            Ok(r) => r.map(Bytes::from),
                            Err(p) => Err(format!("task panicked: {}", panic_message(p))),
                        }
                    }
                };
                let duration_us = start.elapsed().as_micros() as u64;
                let done = Done {
                    seq: job.seq,
                    task: job.task,
                    result,
                    duration_us,
                    fetched: job.fetched,
                };
                if out.send(ThreadMsg::Done(done)).is_err() {
                    return;
                }
            })
            .expect("spawn executor thread");
    }
    tx
}

/// Runs a worker until the scheduler goes away. `Ok` when the scheduler shut down cleanly.
pub async fn run_worker(config: WorkerConfig, registry: Registry) -> Result<Stopped, WorkerError> {
    run_worker_notify(config, registry, None).await
}

/// The worker's own state for its life, with the start hooks run.
fn start_worker(config: &WorkerConfig, registry: &Registry) -> Arc<WorkerLocal> {
    let local = Arc::new(WorkerLocal::new(&config.name, config.resources.clone()));
    registry.run_start_hooks(&local);
    local
}

/// Runs a worker, and when the scheduler cannot be reached or the connection is lost, tries
/// again with backoff (0.5 s doubling to 5 s) for up to `patience` before giving up. Each new
/// connection is a fresh worker: results held before are gone (the scheduler recomputes what it
/// still needs). `Ok` when the scheduler shut down cleanly; a refusal (wrong token, wrong
/// certificate) is final at once.
pub async fn run_worker_reconnecting(
    config: WorkerConfig,
    registry: Registry,
    patience: Duration,
) -> Result<Stopped, WorkerError> {
    let local = start_worker(&config, &registry);
    let result = reconnecting(config, &registry, &local, patience).await;
    registry.run_exit_hooks(&local);
    result
}

async fn reconnecting(
    config: WorkerConfig,
    registry: &Registry,
    local: &Arc<WorkerLocal>,
    patience: Duration,
) -> Result<Stopped, WorkerError> {
    let mut lost_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(500);
    loop {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let result = session(config.clone(), registry.clone(), local.clone(), Some(tx)).await;
        if rx.await.is_ok() {
            // It was connected: the outage starts now.
            lost_since = None;
            backoff = Duration::from_millis(500);
        }
        let error = match result {
            Ok(stopped) => return Ok(stopped),
            Err(e @ WorkerError::Access(_)) => return Err(e),
            Err(WorkerError::Endpoint(
                e @ (drover_protocol::endpoint::EndpointError::Refused { .. }
                | drover_protocol::endpoint::EndpointError::Certificate { .. }),
            )) => return Err(WorkerError::Endpoint(e)),
            Err(e) => e,
        };
        let since = *lost_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= patience {
            return Err(WorkerError::Lost(format!(
                "gave up after {:.0} s without the scheduler at {}: {error}",
                patience.as_secs_f64(),
                config.access.address
            )));
        }
        warn!(%error, retry_in = ?backoff, "scheduler unreachable; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// [`run_worker`], sending the worker's id on `ready` once the scheduler accepted it.
pub async fn run_worker_notify(
    config: WorkerConfig,
    registry: Registry,
    ready: Option<tokio::sync::oneshot::Sender<WorkerId>>,
) -> Result<Stopped, WorkerError> {
    let local = start_worker(&config, &registry);
    let result = session(config, registry.clone(), local.clone(), ready).await;
    registry.run_exit_hooks(&local);
    result
}

/// One connection to the scheduler, from hello to its end.
async fn session(
    config: WorkerConfig,
    registry: Registry,
    me: Arc<WorkerLocal>,
    ready: Option<tokio::sync::oneshot::Sender<WorkerId>>,
) -> Result<Stopped, WorkerError> {
    let sched_addr = config.access.socket_addr().map_err(WorkerError::Access)?;
    let sched_cert = config.access.cert_der().map_err(WorkerError::Access)?;
    let identity = Identity::generate().map_err(|e| WorkerError::Access(e.to_string()))?;
    let bind = SocketAddr::new(local_ip_towards(sched_addr), 0);
    let endpoint = server_endpoint(&identity, bind, config.idle_timeout)?;
    let peer_addr = endpoint
        .local_addr()
        .map_err(|e| WorkerError::Access(e.to_string()))?;
    let conn = connect(&endpoint, sched_addr, &sched_cert, config.idle_timeout).await?;
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        token: config.access.token.clone(),
        role: Role::Worker(WorkerHello {
            name: config.name.clone(),
            resources: config
                .resources
                .iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            nthreads: config.nthreads.max(1),
            peer_addr,
            peer_cert: identity.cert.clone(),
            functions: registry.names(),
        }),
    };
    let session = say_hello(&conn, &hello).await?;
    let id = session.id;
    me.set_id(id);
    info!(worker = id, name = %config.name, %peer_addr, scheduler = %sched_addr, "worker connected");
    if let Some(ready) = ready {
        let _ = ready.send(id);
    }

    let store = Arc::new(Store::new());
    let token: Arc<str> = Arc::from(config.access.token.as_str());
    tokio::spawn(serve(endpoint.clone(), store.clone(), token.clone()));
    let (out_tx, out_rx) = mpsc::unbounded_channel::<Vec<FromWorker>>();
    tokio::spawn(batch_writer(session.send, out_rx));
    let (thread_tx, mut thread_rx) = mpsc::unbounded_channel::<ThreadMsg>();
    let jobs = spawn_executors(config.nthreads.max(1), &me, id, thread_tx.clone());
    // Once-cells this session's scheduler told us of, by its ids.
    let mut cell_ids: HashMap<TaskIdx, Arc<CellSlot>> = HashMap::new();
    // Timeouts: runs with a deadline, the timers' channel, and runs already reported as timed
    // out whose threads have not returned yet (their results are dropped).
    let mut timed: HashMap<u64, (TaskIdx, u64)> = HashMap::new();
    let mut abandoned: std::collections::HashSet<u64> = Default::default();
    let (expired_tx, mut expired_rx) = mpsc::unbounded_channel::<u64>();
    let mut run_seq: u64 = 0;
    let fetcher = Arc::new(Fetcher::new(
        endpoint.clone(),
        config.access.token.clone(),
        config.idle_timeout,
    ));
    let peers: Arc<RwLock<HashMap<WorkerId, PeerInfo>>> = Arc::default();
    let (ready_tx, mut ready_rx) =
        mpsc::unbounded_channel::<Result<Job, (ComputeTask, FromWorker)>>();

    let mut local = Local {
        queue: BinaryHeap::new(),
        seq: 0,
        running: 0,
        nthreads: config.nthreads.max(1),
        capacity: config
            .resources
            .consumable()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        used: HashMap::new(),
    };
    let mut recv = session.recv;
    let frames = async move {
        // Frames from the scheduler, forwarded so the select below stays cancel-safe.
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let r = read_frame::<Vec<ToWorker>>(&mut recv, MAX_CONTROL_FRAME).await;
                let end = !matches!(r, Ok(Some(_)));
                if tx.send(r).is_err() || end {
                    return;
                }
            }
        });
        rx
    };
    let mut frames = frames.await;
    let retire = config.retire.clone().unwrap_or_default();
    let mut retiring = false;
    let mut retired = false;
    // Set when retiring for a lifespan or memory limit: the process should be replaced.
    let mut recycle = false;
    let mut tasks_done: u64 = 0;
    let mut memory_check = tokio::time::interval(Duration::from_secs(1));
    // Tasks started but not yet reported as started. The scheduler counts workers that die
    // while running a task; a task that ends within a tick needs no report (its result says it
    // ran), which keeps short tasks at one message each. A worker dying within a tick of a
    // start is judged by its run order instead.
    let mut unreported: HashMap<u64, TaskIdx> = HashMap::new();
    let mut start_reports = tokio::time::interval(START_REPORT_TICK);
    start_reports.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (replicated_tx, mut replicated_rx) = mpsc::unbounded_channel::<FromWorker>();
    let outcome = loop {
        tokio::select! {
            _ = retire.notified(), if !retiring || recycle => {
                // SIGTERM, also while recycling: no successor will come, leave as soon as the
                // results are handed over (or, with nobody to take them, given up).
                info!(worker = id, "retiring: finishing my tasks and handing over my results");
                retiring = true;
                recycle = false;
                let _ = out_tx.send(vec![FromWorker::Retiring { successor: false }]);
            }
            _ = start_reports.tick(), if !unreported.is_empty() => {
                let started: Vec<FromWorker> = unreported.drain().map(|(_, id)| FromWorker::Started(id)).collect();
                let _ = out_tx.send(started);
            }
            _ = memory_check.tick(), if config.memory_limit.is_some() && !retiring => {
                let limit = config.memory_limit.unwrap_or(u64::MAX);
                if let Some(rss) = resident_memory().filter(|&rss| rss > limit) {
                    warn!(worker = id, rss, limit, "memory limit exceeded: retiring to be replaced by a fresh process");
                    retiring = true;
                    recycle = true;
                    announce_recycling();
                    let _ = out_tx.send(vec![FromWorker::Retiring { successor: true }]);
                }
            }
            Some(msg) = replicated_rx.recv() => {
                let _ = out_tx.send(vec![msg]);
            }
            frame = frames.recv() => match frame {
                Some(Ok(Some(batch))) => {
                    for msg in batch {
                        match msg {
                            ToWorker::Compute(task) => {
                                local.seq += 1;
                                local.queue.push(Queued { priority: task.priority, seq: Reverse(local.seq), task });
                            }
                            ToWorker::Free(ids) => ids.into_iter().for_each(|i| store.remove(i)),
                            ToWorker::Peers(list) => {
                                let mut p = peers.write().await;
                                for info in list {
                                    p.insert(info.id, info);
                                }
                            }
                            ToWorker::PeerGone(w) => {
                                peers.write().await.remove(&w);
                                fetcher.forget(w).await;
                            }
                            ToWorker::Replicate { from, ids } => {
                                let (store, fetcher, peers, tx) = (store.clone(), fetcher.clone(), peers.clone(), replicated_tx.clone());
                                tokio::spawn(async move {
                                    let wanted: Vec<(TaskIdx, WorkerId)> = ids.iter().map(|&i| (i, from)).collect();
                                    let msg = match fetch_inputs(&store, &fetcher, &peers, &wanted).await {
                                        Ok(got) => FromWorker::Replicated { from, ids: got.iter().map(|(i, _, _)| *i).collect(), failed: false },
                                        Err((_, e)) => {
                                            warn!(from, error = %e, "could not copy a retiring worker's results");
                                            FromWorker::Replicated { from, ids: Vec::new(), failed: true }
                                        }
                                    };
                                    let _ = tx.send(msg);
                                });
                            }
                            ToWorker::Retired => retired = true,
                            ToWorker::Cell(spec) => {
                                let slot = me.cells.slot(&spec.key, &spec.function, spec.params.as_deref(), spec.retries, registry.loader(&spec.function));
                                cell_ids.insert(spec.id, slot.clone());
                                if spec.load_now && slot.is_loaded() {
                                    // Already here (loaded for an earlier scheduler session): say so.
                                    let _ = out_tx.send(vec![FromWorker::Loaded { id: spec.id, duration_us: 0, bytes: 0, error: None }]);
                                } else if spec.load_now {
                                    let (me, out) = (me.clone(), thread_tx.clone());
                                    // Its own thread: eager loads overlap the tasks running now.
                                    // Only a load it runs itself is reported (a task may beat it).
                                    std::thread::spawn(move || {
                                        let _ = slot.get_reporting(|| load_context(&me, &slot.key), |us, error| {
                                            let _ = out.send(load_report(spec.id, &slot, us, error));
                                        });
                                    });
                                }
                            }
                            ToWorker::DropCells(ids) => {
                                for i in ids {
                                    if let Some(slot) = cell_ids.remove(&i) {
                                        if me.cells.drop_key(&slot.key) {
                                            info!(worker = id, cell = %slot.key, "dropped once-cell");
                                        }
                                    }
                                }
                            }
                        }
                    }
                    if retired {
                        info!(worker = id, "retired: exiting");
                        break Some(if recycle { RECYCLED } else { RETIRED }.to_owned());
                    }
                }
                Some(Ok(None)) | None => break conn.close_reason().map(|r| r.to_string()),
                // A stream error only says "connection lost": the close reason says why.
                Some(Err(CodecError::Stream(e))) => {
                    break Some(conn.close_reason().map_or(e, |r| r.to_string()))
                }
                Some(Err(e)) => {
                    warn!(error = %e, "bad frame from the scheduler");
                    conn.close(quinn::VarInt::from_u32(2), e.to_string().as_bytes());
                    break Some(e.to_string());
                }
            },
            Some(msg) = thread_rx.recv() => {
                let done = match msg {
                    ThreadMsg::Started { seq, id, limit } => {
                        // Reported if still running at the next tick (see `unreported`).
                        unreported.insert(seq, id);
                        if let Some((timeout_ms, deadline)) = limit {
                            timed.insert(seq, (id, timeout_ms));
                            let tx = expired_tx.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep_until(deadline.into()).await;
                                let _ = tx.send(seq);
                            });
                        }
                        continue;
                    }
                    ThreadMsg::Done(done) => done,
                    ThreadMsg::Loaded(report) => {
                        if let FromWorker::Loaded { id: cell, duration_us, error, .. } = &report {
                            info!(worker = id, cell, duration_us, ok = error.is_none(), "once-cell load ended");
                        }
                        let _ = out_tx.send(vec![report]);
                        continue;
                    }
                };
                local.release(&done.task);
                timed.remove(&done.seq);
                unreported.remove(&done.seq);
                if abandoned.remove(&done.seq) {
                    // Reported as timed out already: drop the late result; its thread is free.
                    debug!(key = %done.task.key, "a timed-out task returned; its result is dropped");
                } else {
                    debug!(key = %done.task.key, ok = done.result.is_ok(), "task done");
                    tasks_done += 1;
                    let msg = match done.result {
                        Ok(bytes) => {
                            let size = bytes.len() as u64;
                            store.put(done.task.id, bytes);
                            FromWorker::Finished { id: done.task.id, size, duration_us: done.duration_us, fetched: done.fetched }
                        }
                        Err(error) => {
                            debug!(key = %done.task.key, %error, "task failed");
                            FromWorker::Failed { id: done.task.id, error, duration_us: done.duration_us }
                        }
                    };
                    let _ = out_tx.send(vec![msg]);
                    // After reporting the task, so what depends on it is not held up.
                    if config.lifespan_tasks.is_some_and(|n| tasks_done >= n) && !retiring {
                        info!(worker = id, tasks_done, "lifespan reached: retiring to be replaced by a fresh process");
                        retiring = true;
                        recycle = true;
                        announce_recycling();
                        let _ = out_tx.send(vec![FromWorker::Retiring { successor: true }]);
                    }
                }
            }
            Some(seq) = expired_rx.recv() => {
                // Still running at its deadline: report it failed now and drop whatever its
                // thread returns later (a `command` task's process is killed at the deadline).
                // Its thread and resources stay taken until the function returns.
                if let Some((id, timeout_ms)) = timed.remove(&seq) {
                    abandoned.insert(seq);
                    let error = timeout_message(Duration::from_millis(timeout_ms));
                    let _ = out_tx.send(vec![FromWorker::Failed { id, error, duration_us: timeout_ms * 1000 }]);
                }
            }
            Some(ready) = ready_rx.recv() => match ready {
                Ok(job) => { let _ = jobs.send(job); }
                Err((task, msg)) => {
                    local.release(&task);
                    let _ = out_tx.send(vec![msg]);
                }
            },
        }
        // Start what fits: a free thread and the task's resources.
        while let Some(task) = local.next_runnable() {
            let func = registry.get(&task.function).cloned();
            let cells: Vec<(usize, TaskIdx, Arc<CellSlot>)> = if cell_ids.is_empty() {
                Vec::new()
            } else {
                task.inputs
                    .iter()
                    .enumerate()
                    .filter_map(|(pos, (i, _))| cell_ids.get(i).map(|s| (pos, *i, s.clone())))
                    .collect()
            };
            let missing: Vec<(TaskIdx, WorkerId)> = task
                .inputs
                .iter()
                .copied()
                .filter(|(i, _)| !is_cell(&cells, *i) && !store.contains(*i))
                .collect();
            if missing.is_empty() {
                let inputs = job_inputs(&task, &cells, &store).expect("checked above");
                run_seq += 1;
                let _ = jobs.send(Job {
                    seq: run_seq,
                    task,
                    func,
                    inputs,
                    fetched: Vec::new(),
                    cells,
                });
                continue;
            }
            let (store, fetcher, peers, ready_tx) = (
                store.clone(),
                fetcher.clone(),
                peers.clone(),
                ready_tx.clone(),
            );
            run_seq += 1;
            let seq = run_seq;
            tokio::spawn(async move {
                let r = fetch_inputs(&store, &fetcher, &peers, &missing).await;
                let _ = ready_tx.send(match r {
                    Ok(fetched) => match job_inputs(&task, &cells, &store) {
                        Some(inputs) => Ok(Job {
                            seq,
                            task,
                            func,
                            inputs,
                            fetched,
                            cells,
                        }),
                        None => {
                            let msg = FromWorker::Failed {
                                id: task.id,
                                error: "an input was freed while fetching".to_owned(),
                                duration_us: 0,
                            };
                            Err((task, msg))
                        }
                    },
                    Err((holder, error)) => {
                        warn!(key = %task.key, holder, %error, "cannot fetch inputs");
                        let msg = FromWorker::InputsLost {
                            id: task.id,
                            holder,
                            error,
                        };
                        Err((task, msg))
                    }
                });
            });
        }
    };
    endpoint.close(quinn::VarInt::from_u32(0), b"worker stopping");
    match outcome.as_deref() {
        Some(RETIRED) => Ok(Stopped::Retired),
        Some(RECYCLED) => Ok(Stopped::Recycled),
        Some(reason) if !reason.contains(drover_protocol::SHUTDOWN_REASON) => {
            Err(WorkerError::Lost(reason.to_owned()))
        }
        _ => {
            info!(worker = id, "scheduler shut down; worker exiting");
            Ok(Stopped::SchedulerShutDown)
        }
    }
}

/// Fetches `missing` (input, holder) into the store; returns what came from where, or the
/// holder a fetch failed from.
async fn fetch_inputs(
    store: &Store,
    fetcher: &Fetcher,
    peers: &RwLock<HashMap<WorkerId, PeerInfo>>,
    missing: &[(TaskIdx, WorkerId)],
) -> Result<Vec<(TaskIdx, WorkerId, u64)>, (WorkerId, String)> {
    let mut by_holder: HashMap<WorkerId, Vec<TaskIdx>> = HashMap::new();
    for &(i, w) in missing {
        let ids = by_holder.entry(w).or_default();
        if !ids.contains(&i) {
            ids.push(i);
        }
    }
    let mut fetched = Vec::new();
    for (holder, ids) in by_holder {
        let peer = peers.read().await.get(&holder).cloned().ok_or_else(|| {
            (
                holder,
                format!("worker {holder} holding results {ids:?} is unknown here"),
            )
        })?;
        for (id, bytes) in fetcher.fetch(&peer, &ids).await.map_err(|e| (holder, e))? {
            fetched.push((id, holder, bytes.len() as u64));
            store.put(id, bytes);
        }
    }
    Ok(fetched)
}

/// The local run queue with thread and resource accounting.
///
/// A task that holds resources is handed to the executor threads only when a thread and its
/// resources are free. Tasks without resources are handed over up to [`THREAD_QUEUE`] per thread
/// ahead, so a thread finishing one finds the next without waiting for a round trip through this
/// loop (the thread count still bounds how many run at once).
struct Local {
    queue: BinaryHeap<Queued>,
    seq: u64,
    /// Tasks handed to the threads and not done.
    running: u32,
    nthreads: u32,
    capacity: HashMap<String, f64>,
    used: HashMap<String, f64>,
}

/// Resource-free tasks handed to the executor threads ahead, per thread.
const THREAD_QUEUE: u32 = 16;

impl Local {
    /// Takes the best queued task if it may start now, and holds what it needs.
    fn next_runnable(&mut self) -> Option<ComputeTask> {
        let top = self.queue.peek()?;
        let limit = if top.task.resources.is_empty() {
            self.nthreads * THREAD_QUEUE
        } else {
            self.nthreads
        };
        if self.running >= limit {
            return None;
        }
        let fits = top.task.resources.iter().all(|(name, need)| {
            let cap = self.capacity.get(name).copied().unwrap_or(0.0);
            self.used.get(name).copied().unwrap_or(0.0) + need <= cap + 1e-9
        });
        if !fits && self.running > 0 {
            return None; // wait for running tasks to give resources back
        }
        let task = self.queue.pop()?.task;
        for (name, need) in &task.resources {
            *self.used.entry(name.clone()).or_default() += need;
        }
        self.running += 1;
        Some(task)
    }

    fn release(&mut self, task: &ComputeTask) {
        self.running -= 1;
        for (name, need) in &task.resources {
            if let Some(u) = self.used.get_mut(name) {
                *u = (*u - need).max(0.0);
            }
        }
    }
}
