//! The worker's shell: connects to the scheduler, opens its lifeline, and carries out what the
//! pure [`crate::core::WorkerCore`] decides: it feeds the core frames from the scheduler,
//! reports of the executor threads ([`crate::exec`]), finished fetches and timer ticks, and does
//! what the core says (send, keep or drop results, hand jobs to threads, fetch from peers, load
//! once-cells, exit).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use drover_annotations::Resources;
use drover_protocol::codec::{batch_writer, read_frame, CodecError, MAX_CONTROL_FRAME};
use drover_protocol::endpoint::{connect, say_hello, server_endpoint};
use drover_protocol::tls::Identity;
use drover_protocol::{
    AccessFile, CellSpec, Hello, Role, TaskIdx, ToWorker, WorkerHello, WorkerId, PROTOCOL_VERSION,
};
use tokio::sync::mpsc;
use tracing::{info, warn};

pub use crate::context::timeout_message;
use crate::core::{Command, CoreConfig, Event, Exit, FetchId, WorkerCore};
use crate::exec::{load_cell, CellInput, Executors, ThreadMsg, Work};
use crate::local::WorkerLocal;
use crate::peer::{serve, Fetcher};
use crate::registry::Registry;
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

/// Runs a worker until the scheduler goes away. `Ok` when the scheduler shut down cleanly.
pub async fn run_worker(config: WorkerConfig, registry: Registry) -> Result<Stopped, WorkerError> {
    run_worker_notify(config, registry, None).await
}

/// The worker's own state for its life, with the start hooks run.
fn start_worker(config: &WorkerConfig, registry: &Registry) -> Arc<WorkerLocal> {
    let local = Arc::new(
        WorkerLocal::new(&config.name, config.resources.clone())
            .with_memory_limit(config.memory_limit),
    );
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
    // Patience counts from the start (never connected yet) or from the loss of a connection;
    // a connection attempt is cut short when it runs out.
    let mut lost_since: Option<Instant> = Some(Instant::now());
    let mut backoff = Duration::from_millis(500);
    let give_up = |error: &dyn std::fmt::Display| {
        WorkerError::Lost(format!(
            "gave up after {:.0} s without the scheduler at {}: {error}",
            patience.as_secs_f64(),
            config.access.address
        ))
    };
    loop {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let mut attempt = Box::pin(session(
            config.clone(),
            registry.clone(),
            local.clone(),
            Some(tx),
        ));
        // With no patience, one attempt runs its course.
        let deadline = lost_since
            .filter(|_| !patience.is_zero())
            .map(|s| s + patience)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600 * 24 * 365));
        let result = tokio::select! {
            r = &mut attempt => {
                if rx.try_recv().is_ok() {
                    lost_since = None; // it was connected: the outage starts now
                    backoff = Duration::from_millis(500);
                }
                r
            }
            joined = &mut rx => {
                if joined.is_ok() {
                    lost_since = None;
                    backoff = Duration::from_millis(500);
                }
                attempt.await
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                return Err(give_up(&"no answer in time"));
            }
        };
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
        let left = patience.saturating_sub(since.elapsed());
        if left.is_zero() {
            return Err(give_up(&error));
        }
        warn!(%error, retry_in = ?backoff.min(left), "scheduler unreachable; retrying");
        tokio::time::sleep(backoff.min(left)).await;
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
    // The data path for large results: TCP keyed by a TLS handshake, same address and certificate. Without it
    // (the port cannot be had) everything goes on QUIC.
    let data = match drover_protocol::data::listen(&identity, peer_addr.ip()).await {
        Ok((listener, acceptor)) => listener.local_addr().ok().map(|a| (a, listener, acceptor)),
        Err(e) => {
            warn!(error = %e, "no data path: large results go on QUIC");
            None
        }
    };
    let data_addr = data.as_ref().map(|(a, _, _)| *a);
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
            data_addr,
        }),
    };
    let session = say_hello(&conn, &hello).await?;
    let id = session.id;
    // Held open for the session: when this process dies the scheduler sees it close at once.
    let _lifeline =
        drover_protocol::lifeline::open_if_offered(sched_addr, session.lifeline.as_ref()).await;
    me.set_id(id);
    info!(worker = id, name = %config.name, %peer_addr, scheduler = %sched_addr, "worker connected");
    if let Some(ready) = ready {
        let _ = ready.send(id);
    }

    let store = Arc::new(Store::new());
    if let Some((budget, _)) = me.memory_budget() {
        // Recycled buffers are memory too: at most a quarter of what this worker may use.
        crate::buffers::set_limit(
            usize::try_from(budget / 4)
                .unwrap_or(usize::MAX)
                .min(crate::buffers::POOL_LIMIT),
        );
    }
    let token: Arc<str> = Arc::from(config.access.token.as_str());
    tokio::spawn(serve(
        endpoint.clone(),
        store.clone(),
        token.clone(),
        data.is_some(),
    ));
    // Ends with this session (a worker that reconnects listens anew).
    let _data_server = data.map(|(_, listener, acceptor)| {
        AbortOnDrop(tokio::spawn(crate::peer::serve_data(
            listener,
            acceptor,
            store.clone(),
            token.clone(),
        )))
    });
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    tokio::spawn(batch_writer(session.send, out_rx));
    let (thread_tx, mut thread_rx) = mpsc::unbounded_channel::<ThreadMsg>();
    let nthreads = config.nthreads.max(1);
    let jobs = Executors::start(nthreads, &me, thread_tx.clone());
    let fetcher = Arc::new(Fetcher::new(
        endpoint.clone(),
        config.access.token.clone(),
        config.idle_timeout,
    ));
    let (fetch_tx, mut fetch_rx) = mpsc::unbounded_channel::<FetchResult>();
    let mut frames = forward_frames(session.recv);
    let mut core = WorkerCore::new(
        id,
        CoreConfig {
            nthreads,
            resources: config
                .resources
                .consumable()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            lifespan_tasks: config.lifespan_tasks,
            memory_limit: config.memory_limit,
            max_lost_threads: 0,
        },
    );
    let mut shell = Shell {
        trimmer: drover_protocol::memory::Trimmer::start(Duration::from_secs(1)),
        id,
        me: me.clone(),
        registry,
        store,
        fetcher,
        jobs,
        thread_tx,
        fetch_tx,
        out_tx,
        cells: HashMap::new(),
        bytes: HashMap::default(),
        job_tasks: HashMap::default(),
        report_output: HashMap::default(),
    };
    let retire = config.retire.clone().unwrap_or_default();
    // Memory is sampled every second (with a limit) or every STATS_EVERY (for the reports).
    let mut memory_check = tokio::time::interval(if config.memory_limit.is_some() {
        Duration::from_secs(1)
    } else {
        crate::core::STATS_EVERY
    });
    let outcome: Result<Exit, Option<String>> = loop {
        let wake = core.next_wakeup();
        let event = tokio::select! {
            _ = retire.notified() => {
                info!(worker = id, "retiring: finishing my tasks and handing over my results");
                Event::Retire
            }
            _ = memory_check.tick() => match trim_and_measure() {
                Some(rss) => Event::Memory(rss),
                None => continue,
            },
            _ = sleep_until(wake), if wake.is_some() => Event::Tick,
            frame = frames.recv() => match frame {
                Some(Ok(Some(mut batch))) => {
                    // Stored outputs handed over: their bytes wait here for the core's Keep.
                    for m in &mut batch {
                        if let ToWorker::Data(items) = m {
                            for (i, data) in items {
                                shell.bytes.insert(*i, Bytes::from(std::mem::take(data)));
                            }
                        }
                    }
                    Event::Scheduler(batch)
                }
                Some(Ok(None)) | None => break Err(conn.close_reason().map(|r| r.to_string())),
                // A stream error only says "connection lost": the close reason says why.
                Some(Err(CodecError::Stream(e))) => {
                    break Err(Some(conn.close_reason().map_or(e, |r| r.to_string())))
                }
                Some(Err(e)) => {
                    warn!(error = %e, "bad frame from the scheduler");
                    conn.close(quinn::VarInt::from_u32(2), e.to_string().as_bytes());
                    break Err(Some(e.to_string()));
                }
            },
            Some(msg) = thread_rx.recv() => shell.thread_event(msg),
            Some(f) = fetch_rx.recv() => {
                let got = f.got.into_iter().map(|(i, b)| {
                    let size = b.len() as u64;
                    shell.bytes.insert(i, b);
                    (i, size)
                }).collect();
                Event::Fetched { fetch: f.fetch, got, failed: f.failed, error: f.error }
            }
        };
        let now = Instant::now();
        let mut commands = core.handle(event, now);
        // What the threads reported meanwhile is handled now too, and all of it carried out
        // at once: one send to the scheduler and one hand-over to the threads per round.
        for _ in 0..MAX_THREAD_EVENTS {
            let Ok(msg) = thread_rx.try_recv() else {
                break;
            };
            commands.extend(core.handle(shell.thread_event(msg), now));
        }
        if let Some(exit) = shell.apply(commands) {
            info!(worker = id, "retired: exiting");
            break Ok(exit);
        }
    };
    endpoint.close(quinn::VarInt::from_u32(0), b"worker stopping");
    match outcome {
        Ok(Exit::Retired) => Ok(Stopped::Retired),
        Ok(Exit::Recycled) => Ok(Stopped::Recycled),
        Err(Some(reason)) if !reason.contains(drover_protocol::SHUTDOWN_REASON) => {
            Err(WorkerError::Lost(reason))
        }
        Err(_) => {
            info!(worker = id, "scheduler shut down; worker exiting");
            Ok(Stopped::SchedulerShutDown)
        }
    }
}

/// Messages from the executor threads handled in one round of the worker's loop, at most.
const MAX_THREAD_EVENTS: usize = 256;

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Frames from the scheduler, read on their own task so the select above stays cancel-safe.
fn forward_frames(
    mut recv: quinn::RecvStream,
) -> mpsc::UnboundedReceiver<Result<Option<Vec<ToWorker>>, CodecError>> {
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
}

/// A fetch's outcome, for the core.
struct FetchResult {
    fetch: FetchId,
    got: Vec<(TaskIdx, Bytes)>,
    failed: Vec<TaskIdx>,
    error: String,
}

/// What carries out the core's commands.
struct Shell {
    /// Freed results give their memory back.
    trimmer: drover_protocol::memory::Trimmer,
    id: WorkerId,
    me: Arc<WorkerLocal>,
    registry: Registry,
    store: Arc<Store>,
    fetcher: Arc<Fetcher>,
    jobs: Executors,
    thread_tx: mpsc::UnboundedSender<ThreadMsg>,
    fetch_tx: mpsc::UnboundedSender<FetchResult>,
    out_tx: mpsc::UnboundedSender<Vec<drover_protocol::FromWorker>>,
    /// Once-cells this session's scheduler told us of, by its ids.
    cells: HashMap<TaskIdx, (CellSpec, CellInput)>,
    /// Bytes just reported to the core, kept only if it says [`Command::Keep`].
    bytes: HashMap<TaskIdx, Bytes, foldhash::fast::RandomState>,
    /// The task of each job on the threads.
    job_tasks: HashMap<crate::core::JobId, TaskIdx, foldhash::fast::RandomState>,
    /// Durable tasks on the threads whose output goes with their result, up to this size.
    report_output: HashMap<TaskIdx, u64, foldhash::fast::RandomState>,
}

impl Shell {
    /// Carries out `commands` in order; `Some` when the session is to end.
    /// The core's event for a message from the executor threads (a result's bytes wait in
    /// `bytes` for the core's `Keep`).
    fn thread_event(&mut self, msg: ThreadMsg) -> Event {
        match msg {
            ThreadMsg::Started(job) => Event::JobStarted { job },
            ThreadMsg::Done {
                job,
                result,
                duration_us,
            } => {
                let task = self.job_tasks.remove(&job);
                tracing::debug!(job, task, ok = result.is_ok(), "task done");
                Event::JobDone {
                    job,
                    result: result.map(|bytes| {
                        let size = bytes.len() as u64;
                        if let Some(t) = task {
                            self.bytes.insert(t, bytes);
                        }
                        size
                    }),
                    duration_us,
                }
            }
            ThreadMsg::Loaded {
                cell,
                duration_us,
                bytes,
                error,
            } => {
                info!(
                    worker = self.id,
                    cell,
                    duration_us,
                    ok = error.is_none(),
                    "once-cell load ended"
                );
                Event::Loaded {
                    cell,
                    duration_us,
                    bytes,
                    error,
                }
            }
        }
    }

    fn apply(&mut self, commands: Vec<Command>) -> Option<Exit> {
        let mut exit = None;
        // Jobs go to the threads together, after the loop (one wake, not one per job), and
        // messages to the scheduler in one batch, after what they report is kept.
        let mut work = Vec::new();
        let mut sends = Vec::new();
        for c in commands {
            match c {
                Command::Send(mut msgs) => {
                    // Durable tasks' outputs go with their results (the store has them now).
                    for m in &mut msgs {
                        if let drover_protocol::FromWorker::Finished {
                            id, size, output, ..
                        } = m
                        {
                            if let Some(limit) = self.report_output.remove(id) {
                                if *size <= limit {
                                    *output = self.store.get(*id).map(|b| b.to_vec());
                                }
                            }
                        }
                    }
                    if sends.is_empty() {
                        sends = msgs;
                    } else {
                        sends.append(&mut msgs);
                    }
                }
                Command::Keep(ids) => {
                    for i in ids {
                        if let Some(b) = self.bytes.remove(&i) {
                            self.store.put(i, b);
                        }
                    }
                }
                Command::Drop(ids) => {
                    ids.into_iter().for_each(|i| self.store.remove(i));
                    self.trimmer.freed();
                }
                Command::Run(job) => {
                    let inputs: Result<Vec<Bytes>, String> = job
                        .task
                        .inputs
                        .iter()
                        .map(|&i| {
                            if self.cells.contains_key(&i) {
                                Ok(Bytes::new())
                            } else {
                                self.store.get(i).ok_or_else(|| {
                                    format!("input {i} vanished from worker {}'s store", self.id)
                                })
                            }
                        })
                        .collect();
                    let cells = job
                        .cells
                        .iter()
                        .filter_map(|&(pos, i)| {
                            self.cells.get(&i).map(|(_, c)| (pos, i, c.clone()))
                        })
                        .collect();
                    let func = self.registry.get(&job.task.function).cloned();
                    self.job_tasks.insert(job.job, job.task.id);
                    if let Some(limit) = job.task.report_output {
                        self.report_output.insert(job.task.id, limit);
                    }
                    work.push(Work {
                        job,
                        func,
                        inputs,
                        cells,
                    });
                }
                Command::Fetch { fetch, peer, ids } => {
                    let (fetcher, tx) = (self.fetcher.clone(), self.fetch_tx.clone());
                    tokio::spawn(async move {
                        let f = fetcher.fetch_partial(&peer, &ids).await;
                        let _ = tx.send(FetchResult {
                            fetch,
                            got: f.got,
                            failed: f.missing,
                            error: f.error.unwrap_or_default(),
                        });
                    });
                }
                Command::ForgetPeer(w) => {
                    let fetcher = self.fetcher.clone();
                    tokio::spawn(async move { fetcher.forget(w).await });
                }
                Command::Cell(spec) => self.cell(spec),
                Command::DropCells(ids) => {
                    // The objects go (their Drop runs once no task holds them); the specs
                    // stay, so a task here that still uses one loads it again.
                    for i in ids {
                        if let Some((spec, _)) = self.cells.get(&i) {
                            if self.me.cells.drop_key(&spec.key) {
                                info!(worker = self.id, cell = %spec.key, "dropped once-cell");
                            }
                        }
                    }
                }
                Command::ThreadLost(job) => {
                    if self.jobs.give_up(job) {
                        tracing::warn!(job, "started a thread in place of one given up");
                    }
                }
                Command::Recycling => announce_recycling(),
                Command::Exit(e) => exit = Some(e),
            }
        }
        self.jobs.send(work);
        if !sends.is_empty() {
            let _ = self.out_tx.send(sends);
        }
        self.bytes.clear();
        if self.bytes.capacity() > 1024 {
            self.bytes.shrink_to_fit();
        }
        exit
    }

    /// Learns a once-cell; an eager one loads now on its own thread, overlapping the tasks
    /// running, and only a load it runs itself is reported (a task may beat it to it).
    fn cell(&mut self, spec: CellSpec) {
        let slot = self
            .me
            .cells
            .slot(&spec.key, &spec.function, spec.params.as_deref());
        let input = CellInput {
            slot: slot.clone(),
            loader: self.registry.loader(&spec.function),
            retries: spec.retries,
        };
        if spec.load_now && slot.is_loaded() {
            // Already here (loaded for an earlier scheduler session): say so.
            let _ = self.thread_tx.send(ThreadMsg::Loaded {
                cell: spec.id,
                duration_us: 0,
                bytes: 0,
                error: None,
            });
        } else if spec.load_now {
            let (me, out, input, id) = (
                self.me.clone(),
                self.thread_tx.clone(),
                input.clone(),
                spec.id,
            );
            std::thread::spawn(move || {
                let _ = load_cell(id, &input, &me, &out);
            });
        }
        self.cells.insert(spec.id, (spec, input));
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Frees recycled buffers idle too long, then measures the resident memory.
fn trim_and_measure() -> Option<u64> {
    crate::buffers::trim();
    resident_memory()
}
