//! The scheduler's QUIC shell. One task owns the [`Core`]; every connection has a reader task
//! that turns frames into [`Event`]s and a writer task that sends the commands for it, batching
//! everything queued into one frame.
//!
//! State dir: `scheduler.crt` and `scheduler.key` (the self-signed identity), `token` (the
//! secret) and `access.json` (address, certificate, token; mode 0600). Made on first start,
//! reused after.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use drover_protocol::access::{readable_by_others, write_private};
use drover_protocol::codec::{
    batch_writer, read_frame, write_frame, CodecError, MAX_BATCH, MAX_CONTROL_FRAME,
};
use drover_protocol::endpoint::read_hello;
use drover_protocol::lifeline::LifelineServer;
use drover_protocol::tls::Identity;
use drover_protocol::{
    tokens_equal, AccessFile, FromClient, FromWorker, Hello, Role, ToClient, ToWorker, Welcome,
    WorkerHello, PROTOCOL_VERSION,
};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::core::{ClientId, Command, Core, CoreConfig, Event};
use crate::progress::ProgressService;

/// How the scheduler is started.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where the identity, token and `access.json` live.
    pub state_dir: PathBuf,
    /// Host written into `access.json` (default: the listen host, or this machine's host name
    /// when listening on all interfaces).
    pub advertise: Option<String>,
    /// A connection silent this long is dead.
    pub idle_timeout: Duration,
    /// Limits of the scheduling rules.
    pub core: CoreConfig,
    /// The largest output a done key of the progress store keeps, in bytes.
    pub max_output: usize,
    /// The progress store's file and who may share it; default `STATE/progress.redb`, this
    /// scheduler alone. (A local cluster uses the embedded store of its directory, shared with
    /// the processes of the machine.)
    pub progress_store: Option<(PathBuf, drover_progress::Sharing)>,
    /// Refuse to start when a secret file (`scheduler.key`, `token`) is readable by other
    /// users, instead of warning and making it private.
    pub strict_permissions: bool,
    /// Serve the web dashboard and `/metrics` here (`None`: no dashboard). With `named`
    /// false (the default address) a taken address falls back to a free port; a named one
    /// that is taken stops the start.
    pub dashboard: Option<(SocketAddr, bool)>,
}

/// Errors starting the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The state dir could not be used.
    #[error("state dir {dir}: {error}")]
    StateDir {
        /// The directory.
        dir: String,
        /// What failed.
        error: String,
    },
    /// Binding or TLS setup failed.
    #[error(transparent)]
    Endpoint(#[from] drover_protocol::endpoint::EndpointError),
    /// The progress store cannot be opened (corrupt, foreign, or in use by another process).
    #[error(transparent)]
    Progress(#[from] drover_progress::StoreError),
    /// The dashboard's address cannot be bound.
    #[error("{0}")]
    Dashboard(String),
}

/// A running scheduler.
#[derive(Debug)]
pub struct Scheduler {
    /// Held while this scheduler lives: no other one starts on its state dir.
    _lock: crate::state_lock::StateLock,
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    access_path: PathBuf,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The state dir's secret files (the TLS key and the token; `access.json` is written private at
/// every start).
const SECRET_FILES: [&str; 2] = ["scheduler.key", "token"];

/// Checks that no secret file of `dir` is readable by other users: each one that is gets a
/// warning and is made private (mode 0600), or, when `strict`, stops the start naming each.
fn secure_secrets(dir: &Path, strict: bool) -> Result<(), StartError> {
    let mut open = Vec::new();
    for name in SECRET_FILES {
        let path = dir.join(name);
        if !readable_by_others(&path) {
            continue;
        }
        let mode = file_mode(&path);
        if strict {
            open.push(format!("{} (mode {mode:o})", path.display()));
            continue;
        }
        match make_private(&path) {
            Ok(()) => {
                warn!(path = %path.display(), mode = %format!("{mode:o}"), "a secret file was readable by other users; it is now private (mode 600)")
            }
            Err(e) => {
                warn!(path = %path.display(), mode = %format!("{mode:o}"), error = %e, "a secret file is readable by other users and could not be made private")
            }
        }
    }
    if open.is_empty() {
        return Ok(());
    }
    Err(StartError::StateDir {
        dir: dir.display().to_string(),
        error: format!(
            "secret files readable by other users: {}; make them private (chmod 600) or start without --strict-permissions",
            open.join(", ")
        ),
    })
}

#[cfg(unix)]
fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).map_or(0, |m| m.permissions().mode() & 0o777)
}

#[cfg(not(unix))]
fn file_mode(_: &Path) -> u32 {
    0
}

#[cfg(unix)]
fn make_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn make_private(_: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Loads or makes the identity and token kept in the state dir. Each is made only when its
/// files are missing, so deleting `token` rotates the token and keeps the certificate.
fn load_state(dir: &Path) -> Result<(Identity, String), StartError> {
    let err = |e: &dyn std::fmt::Display| StartError::StateDir {
        dir: dir.display().to_string(),
        error: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
    let (crt, key, tok) = (
        dir.join("scheduler.crt"),
        dir.join("scheduler.key"),
        dir.join("token"),
    );
    let identity = if crt.exists() && key.exists() {
        Identity {
            cert: std::fs::read(&crt).map_err(|e| err(&e))?,
            key: std::fs::read(&key).map_err(|e| err(&e))?,
        }
    } else {
        let identity = Identity::generate().map_err(|e| err(&e))?;
        std::fs::write(&crt, &identity.cert).map_err(|e| err(&e))?;
        write_private(&key, &identity.key).map_err(|e| err(&e))?;
        identity
    };
    let token = if tok.exists() {
        let token = std::fs::read_to_string(&tok)
            .map_err(|e| err(&e))?
            .trim()
            .to_owned();
        if token.is_empty() {
            return Err(err(&"token file is empty (delete it to make a new one)"));
        }
        token
    } else {
        let token = drover_protocol::new_token();
        write_private(&tok, token.as_bytes()).map_err(|e| err(&e))?;
        token
    };
    Ok((identity, token))
}

fn advertised_host(config: &SchedulerConfig) -> String {
    if let Some(h) = &config.advertise {
        return h.clone();
    }
    if !config.listen.ip().is_unspecified() {
        return config.listen.ip().to_string();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "127.0.0.1".to_owned())
}

/// Messages into the core loop.
enum Input {
    WorkerJoined {
        id: u32,
        hello: WorkerHello,
        tx: mpsc::UnboundedSender<Vec<ToWorker>>,
    },
    ClientJoined {
        id: ClientId,
        tx: mpsc::UnboundedSender<Vec<ToClient>>,
    },
    Events(Vec<Event>),
    /// A dashboard page's question.
    Ask(crate::dashboard::Asking),
}

impl Scheduler {
    /// Starts listening, writes `access.json`, and runs until [`Scheduler::shutdown`].
    pub async fn start(config: SchedulerConfig) -> Result<Scheduler, StartError> {
        // One scheduler per state dir: taken before anything in it is read or written.
        let mut lock = crate::state_lock::StateLock::acquire(&config.state_dir).map_err(|e| {
            StartError::StateDir {
                dir: config.state_dir.display().to_string(),
                error: e,
            }
        })?;
        // The port next: a port already taken stops the start before anything is written.
        let socket = drover_protocol::endpoint::bind_udp(config.listen)?;
        let dashboard = match config.dashboard {
            Some((addr, named)) => Some(
                crate::dashboard::bind(addr, named)
                    .await
                    .map_err(StartError::Dashboard)?,
            ),
            None => None,
        };
        secure_secrets(&config.state_dir, config.strict_permissions)?;
        let (identity, token) = load_state(&config.state_dir)?;
        let endpoint =
            drover_protocol::endpoint::server_endpoint_on(&identity, socket, config.idle_timeout)?;
        let addr = endpoint.local_addr().map_err(|e| StartError::StateDir {
            dir: config.state_dir.display().to_string(),
            error: e.to_string(),
        })?;
        let host = advertised_host(&config);
        let address = if host.contains(':') {
            format!("[{host}]:{}", addr.port())
        } else {
            format!("{host}:{}", addr.port())
        };
        let dashboard_url = dashboard
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| {
                // An address of all interfaces is reached at the advertised host.
                if a.ip().is_unspecified() {
                    format!("http://{}:{}", host, a.port())
                } else {
                    format!("http://{a}")
                }
            });
        let access = AccessFile {
            address,
            dashboard: dashboard_url.clone(),
            ..AccessFile::new(addr, &identity.cert, &token)
        };
        lock.note_address(&access.address);
        // Lifelines (a TCP port beside the QUIC one): a dead process is noticed at once.
        let lifelines = match LifelineServer::bind(addr.ip()).await {
            Ok(l) => Some(Arc::new(l)),
            Err(e) => {
                warn!(error = %e, "cannot listen for lifelines; dead processes will be noticed only at the idle timeout");
                None
            }
        };
        // The progress store: opened before anything is served; a corrupt or foreign file, or
        // one another scheduler has open, stops the start naming the file.
        let (store_path, sharing) = config.progress_store.clone().unwrap_or_else(|| {
            (
                config.state_dir.join("progress.redb"),
                drover_progress::Sharing::Exclusive,
            )
        });
        let store = drover_progress::RedbStore::open(&store_path, sharing)?;
        let refreshed = drover_progress::refresh_leases(&store, drover_progress::now_ms())?;
        if refreshed > 0 {
            info!(
                claims = refreshed,
                "live claims restored with a fresh lease"
            );
        }
        let progress = ProgressService::start(Box::new(store), config.max_output);
        // Only now, ready to serve: the access file and the word.
        let access_path = config.state_dir.join("access.json");
        access
            .save(&access_path)
            .map_err(|e| StartError::StateDir {
                dir: config.state_dir.display().to_string(),
                error: e.to_string(),
            })?;
        if readable_by_others(&access_path) {
            warn!(path = %access_path.display(), "access.json is readable by other users: it holds the cluster's secret token");
        }
        if let (Some(listener), Some(url)) = (&dashboard, &dashboard_url) {
            if listener.local_addr().is_ok_and(|a| a.ip().is_loopback()) {
                info!(%url, "dashboard and /metrics served (loopback: no token needed)");
            } else {
                info!(%url, "dashboard and /metrics served; the cluster token is needed (log in, or Authorization: Bearer TOKEN)");
            }
        }
        info!(%addr, advertised = %access.address, access_file = %access_path.display(), "scheduler listening");

        let (tx, rx) = mpsc::unbounded_channel();
        let now_ms = drover_progress::now_ms();
        let core = CoreConfig {
            max_output: config.max_output as u64,
            // Detached run ids of this scheduler differ from an earlier one's.
            instance: (now_ms ^ (now_ms >> 16) ^ u64::from(std::process::id())) as u16,
            ..config.core
        };
        let core_task = tokio::spawn(core_loop(rx, tx.clone(), core, progress));
        let mut tasks = Vec::new();
        if let Some(listener) = dashboard {
            let (ask_tx, mut ask_rx) = mpsc::unbounded_channel::<crate::dashboard::Asking>();
            let to_core = tx.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(asking) = ask_rx.recv().await {
                    if to_core.send(Input::Ask(asking)).is_err() {
                        return;
                    }
                }
            }));
            tasks.push(tokio::spawn(crate::dashboard::serve(
                listener,
                Arc::from(token.as_str()),
                ask_tx,
            )));
        }
        // The core's clock (detached runs' times and retention).
        let ticks = tx.clone();
        let ticker = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let now_ms = drover_progress::now_ms();
                if ticks
                    .send(Input::Events(vec![Event::Tick { now_ms }]))
                    .is_err()
                {
                    return;
                }
            }
        });
        let accept_task = tokio::spawn(accept_loop(
            endpoint.clone(),
            Arc::from(token.as_str()),
            tx,
            lifelines,
        ));
        Ok(Scheduler {
            _lock: lock,
            endpoint,
            addr,
            access_path,
            tasks: {
                tasks.extend([core_task, accept_task, ticker]);
                tasks
            },
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `access.json` was written.
    pub fn access_path(&self) -> &Path {
        &self.access_path
    }

    /// Closes every connection (peers see [`drover_protocol::SHUTDOWN_REASON`]) and stops.
    pub async fn shutdown(self) {
        self.endpoint.close(
            quinn::VarInt::from_u32(0),
            drover_protocol::SHUTDOWN_REASON.as_bytes(),
        );
        for t in &self.tasks {
            t.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    token: Arc<str>,
    tx: mpsc::UnboundedSender<Input>,
    lifelines: Option<Arc<LifelineServer>>,
) {
    let ids = Arc::new(AtomicU32::new(0));
    while let Some(incoming) = endpoint.accept().await {
        let (token, tx, ids, lifelines) =
            (token.clone(), tx.clone(), ids.clone(), lifelines.clone());
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(conn) => serve_connection(conn, &token, tx, &ids, lifelines.as_deref()).await,
                Err(e) => warn!(%remote, error = %e, "connection failed during TLS handshake"),
            }
        });
    }
}

/// Why a hello is refused, if it is.
fn check_hello(hello: &Hello, token: &str) -> Result<(), String> {
    if hello.protocol != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {} is not {}",
            hello.protocol, PROTOCOL_VERSION
        ));
    }
    if !tokens_equal(&hello.token, token) {
        return Err(if hello.token.is_empty() {
            "no token".to_owned()
        } else {
            "wrong token".to_owned()
        });
    }
    if let Role::Worker(w) = &hello.role {
        let mut r = drover_annotations::Resources::new();
        for (k, v) in &w.resources {
            r.insert(k, *v).map_err(|e| format!("bad resources: {e}"))?;
        }
    }
    Ok(())
}

async fn serve_connection(
    conn: quinn::Connection,
    token: &str,
    tx: mpsc::UnboundedSender<Input>,
    ids: &AtomicU32,
    lifelines: Option<&LifelineServer>,
) {
    let remote = conn.remote_address();
    let hello = tokio::time::timeout(Duration::from_secs(10), read_hello(&conn)).await;
    let (mut send, recv, hello) = match hello {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            warn!(%remote, error = %e, "refused connection: no valid hello");
            conn.close(quinn::VarInt::from_u32(1), b"expected a hello frame");
            return;
        }
        Err(_) => {
            warn!(%remote, "refused connection: no hello within 10 s");
            conn.close(quinn::VarInt::from_u32(1), b"hello timeout");
            return;
        }
    };
    if let Err(reason) = check_hello(&hello, token) {
        warn!(%remote, %reason, "refused connection");
        let _ = write_frame(&mut send, &Welcome::Refused { reason }).await;
        let _ = send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
        return;
    }
    let id = ids.fetch_add(1, Ordering::Relaxed);
    let (lifeline, mut watch) = match lifelines.map(LifelineServer::offer) {
        Some((l, w)) => (Some(l), Some(w)),
        None => (None, None),
    };
    if write_frame(&mut send, &Welcome::Accepted { id, lifeline })
        .await
        .is_err()
    {
        return;
    }
    // The session lasts until its control stream ends or its lifeline closes (the process on
    // the other side died: its operating system closed the socket).
    let lifeline_closed = async {
        match watch.as_mut() {
            Some(w) => w.closed().await,
            None => std::future::pending().await,
        }
    };
    match hello.role {
        Role::Worker(h) => {
            info!(%remote, worker = id, name = %h.name, resources = ?h.resources, nthreads = h.nthreads, "worker joined");
            let (wtx, wrx) = mpsc::unbounded_channel();
            let _ = tx.send(Input::WorkerJoined {
                id,
                hello: h,
                tx: wtx,
            });
            tokio::spawn(batch_writer(send, wrx));
            let read = read_loop::<FromWorker>(&conn, recv, &tx, |batch| {
                batch.into_iter().map(|m| Event::Worker(id, m)).collect()
            });
            until_lifeline_closes(read, lifeline_closed, &conn).await;
            info!(%remote, worker = id, "worker left");
            let _ = tx.send(Input::Events(vec![Event::WorkerLeft { id }]));
        }
        Role::Client { name } => {
            info!(%remote, client = id, %name, "client joined");
            let (ctx, crx) = mpsc::unbounded_channel();
            let _ = tx.send(Input::ClientJoined { id, tx: ctx });
            tokio::spawn(batch_writer(send, crx));
            let read = read_loop::<FromClient>(&conn, recv, &tx, |batch| {
                batch.into_iter().map(|m| Event::Client(id, m)).collect()
            });
            until_lifeline_closes(read, lifeline_closed, &conn).await;
            info!(%remote, client = id, "client left");
            let _ = tx.send(Input::Events(vec![Event::ClientLeft { id }]));
        }
    }
}

/// The reason a connection is closed with when its lifeline closed.
const LIFELINE_CLOSED: &str = "lifeline closed";

/// After a lifeline closes, how long what the dead process sent before it died may still be
/// read: its last results are not lost, nor a finished task taken for a running one.
const LIFELINE_GRACE: Duration = Duration::from_millis(100);

/// Runs `read` (the connection's reader) until it ends, or until the lifeline closes: then the
/// reader drains what had arrived for a moment, and the connection is closed.
async fn until_lifeline_closes(
    read: impl std::future::Future<Output = ()>,
    lifeline_closed: impl std::future::Future<Output = ()>,
    conn: &quinn::Connection,
) {
    tokio::pin!(read);
    tokio::select! {
        _ = &mut read => return,
        _ = lifeline_closed => {}
    }
    let _ = tokio::time::timeout(LIFELINE_GRACE, &mut read).await;
    conn.close(quinn::VarInt::from_u32(3), LIFELINE_CLOSED.as_bytes());
    info!(remote = %conn.remote_address(), "lifeline closed: the process on the other side is gone");
}

/// Reads batches until the stream ends. A malformed or oversized frame closes the connection
/// with error code 2 and a reason; nothing of it reaches the core.
async fn read_loop<M: serde::de::DeserializeOwned>(
    conn: &quinn::Connection,
    mut recv: quinn::RecvStream,
    tx: &mpsc::UnboundedSender<Input>,
    to_events: impl Fn(Vec<M>) -> Vec<Event>,
) {
    loop {
        match read_frame::<Vec<M>>(&mut recv, MAX_CONTROL_FRAME).await {
            Ok(Some(batch)) => {
                if tx.send(Input::Events(to_events(batch))).is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(CodecError::Stream(_)) => return,
            Err(e) => {
                warn!(remote = %conn.remote_address(), error = %e, "closing connection: bad frame");
                conn.close(quinn::VarInt::from_u32(2), e.to_string().as_bytes());
                return;
            }
        }
    }
}

async fn core_loop(
    mut rx: mpsc::UnboundedReceiver<Input>,
    input: mpsc::UnboundedSender<Input>,
    config: CoreConfig,
    progress: ProgressService,
) {
    let mut core = Core::with_config(config);
    let mut monitor = crate::monitor::Monitor::new(drover_progress::now_ms());
    let mut status_cache: Option<(u64, drover_protocol::ClusterStatus)> = None;
    let mut workers: HashMap<u32, mpsc::UnboundedSender<Vec<ToWorker>>> = HashMap::new();
    let mut clients: HashMap<ClientId, mpsc::UnboundedSender<Vec<ToClient>>> = HashMap::new();
    let mut commands: Vec<Command> = Vec::new();
    let mut held = HeldClients::start();
    // Clients that left take their graphs' memory with them.
    let trimmer = drover_protocol::memory::Trimmer::start(Duration::from_secs(1));
    while let Some(first) = rx.recv().await {
        let began = std::time::Instant::now();
        let mut next = Some(first);
        // Handle everything already queued before sending: one frame per peer per round.
        while let Some(input) = next.take() {
            let now_ms = drover_progress::now_ms();
            match input {
                Input::WorkerJoined { id, hello, tx } => {
                    workers.insert(id, tx);
                    let event = Event::WorkerJoined { id, hello };
                    monitor.observe(&core, &event, now_ms);
                    commands.extend(core.handle(event));
                }
                Input::ClientJoined { id, tx } => {
                    clients.insert(id, tx);
                    let event = Event::ClientJoined { id };
                    monitor.observe(&core, &event, now_ms);
                    commands.extend(core.handle(event));
                }
                Input::Ask((crate::dashboard::Ask::Progress, reply)) => {
                    ask_progress(&progress, reply);
                }
                Input::Ask((ask, reply)) => {
                    // Pages ask every second each: the status is made at most every 500 ms.
                    if status_cache
                        .as_ref()
                        .is_none_or(|(at, _)| now_ms.saturating_sub(*at) >= 500)
                    {
                        status_cache = Some((now_ms, monitor.status(&core, now_ms)));
                    }
                    let status = &status_cache.as_ref().expect("just made").1;
                    let _ = reply.send(answer(&core, &monitor, status, ask, now_ms));
                }
                Input::Events(events) => {
                    for e in events {
                        // Progress requests go to the store's thread, which answers them.
                        if let Event::Client(c, FromClient::Progress { req, request }) = e {
                            if let Some(tx) = clients.get(&c) {
                                progress.submit(u64::from(c), tx.clone(), req, request);
                            }
                            continue;
                        }
                        // The status is answered here: the core's part and the monitor's.
                        if let Event::Client(c, FromClient::Status { req }) = e {
                            if let Some(tx) = clients.get(&c) {
                                let status = Box::new(monitor.status(&core, now_ms));
                                let _ = tx.send(vec![ToClient::Status { req, status }]);
                            }
                            continue;
                        }
                        monitor.observe(&core, &e, now_ms);
                        match &e {
                            Event::WorkerLeft { id } => {
                                workers.remove(id);
                            }
                            Event::ClientLeft { id } => {
                                clients.remove(id);
                                progress.client_left(u64::from(*id));
                                trimmer.freed();
                            }
                            _ => {}
                        }
                        commands.extend(core.handle(e));
                    }
                }
            }
            if commands.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        for c in &commands {
            if matches!(c, Command::Commit { .. }) {
                monitor.committed();
            }
        }
        monitor.loop_took(began.elapsed().as_secs_f64());
        dispatch(
            &mut commands,
            &workers,
            &clients,
            &progress,
            &input,
            &mut held,
        );
        // A burst's room goes back once it is sent.
        if commands.capacity() > 4096 && commands.is_empty() {
            commands.shrink_to_fit();
        }
    }
}

/// Answers a dashboard page's question (`None`: not found).
fn answer(
    core: &Core,
    monitor: &crate::monitor::Monitor,
    status: &drover_protocol::ClusterStatus,
    ask: crate::dashboard::Ask,
    now_ms: u64,
) -> Option<String> {
    use crate::dashboard::Ask;
    match ask {
        Ask::Status => serde_json::to_string(status).ok(),
        Ask::Update { since_ms } => {
            let since = if since_ms > 0.0 {
                since_ms
            } else {
                now_ms.saturating_sub(120_000) as f64
            };
            let window = now_ms.saturating_sub(since as u64).max(1);
            let bars: Vec<crate::monitor::Bar> = monitor
                .stream(now_ms, window, 5_000)
                .into_iter()
                .filter(|b| b.end_ms > since)
                .collect();
            let latest = bars.last().map_or(since, |b| b.end_ms);
            serde_json::to_string(&serde_json::json!({
                "status": status,
                "bars": bars,
                "latest_ms": latest,
            }))
            .ok()
        }
        Ask::Metrics => Some(monitor.metrics_text(status)),
        Ask::Report { id } => core
            .detached_report(&id)
            .and_then(|r| serde_json::to_string_pretty(&r).ok()),
        // Answered by `ask_progress`, off the event loop.
        Ask::Progress => None,
        Ask::Picture { id } => core.run_picture(&id),
    }
}

/// Asks the progress store's thread for every namespace's counts; the answer goes to `reply`
/// as JSON (`[[namespace, {"free", "claimed", "done", "failed"}], ...]`) when it comes.
fn ask_progress(progress: &ProgressService, reply: tokio::sync::oneshot::Sender<Option<String>>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    progress.submit(
        u64::MAX,
        tx,
        0,
        drover_protocol::ProgressRequest::Counts { namespace: None },
    );
    tokio::spawn(async move {
        let text = match rx.recv().await.and_then(|mut m| m.pop()) {
            Some(ToClient::Progress {
                reply: drover_protocol::ProgressReply::Counts(counts),
                ..
            }) => serde_json::to_string(&counts).ok(),
            _ => Some("[]".to_owned()),
        };
        let _ = reply.send(text);
    });
}

/// Client messages that must wait for a commit of the progress store: sent in order by one
/// task, each batch once the commits before it are on disk (or failed, then with a warning).
/// While batches wait, later ones queue behind them, so a client's messages never overtake.
struct HeldClients {
    tx: mpsc::UnboundedSender<HeldBatch>,
    waiting: Arc<AtomicU32>,
}

/// Messages to send, each with its client's sender, after `commit` (if any) returns.
struct HeldBatch {
    commit: Option<tokio::sync::oneshot::Receiver<Result<(), String>>>,
    messages: Vec<(mpsc::UnboundedSender<Vec<ToClient>>, Vec<ToClient>)>,
}

impl HeldClients {
    fn start() -> HeldClients {
        let (tx, mut rx) = mpsc::unbounded_channel::<HeldBatch>();
        let waiting = Arc::new(AtomicU32::new(0));
        let left = waiting.clone();
        tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                let failure = match batch.commit {
                    Some(c) => match c.await {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some(e),
                        Err(_) => Some("the progress store stopped".to_owned()),
                    },
                    None => None,
                };
                for (tx, mut msgs) in batch.messages {
                    if let Some(e) = &failure {
                        msgs.insert(
                            0,
                            ToClient::Warning(format!(
                                "durable tasks finished but could not be committed to the progress store (a rerun computes them again): {e}"
                            )),
                        );
                    }
                    let _ = tx.send(msgs);
                }
                left.fetch_sub(1, Ordering::SeqCst);
            }
        });
        HeldClients { tx, waiting }
    }

    /// Whether batches are waiting (then new ones must queue behind them).
    fn busy(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0
    }

    fn send(&self, batch: HeldBatch) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _ = self.tx.send(batch);
    }
}

fn dispatch(
    commands: &mut Vec<Command>,
    workers: &HashMap<u32, mpsc::UnboundedSender<Vec<ToWorker>>>,
    clients: &HashMap<ClientId, mpsc::UnboundedSender<Vec<ToClient>>>,
    progress: &ProgressService,
    input: &mpsc::UnboundedSender<Input>,
    held: &mut HeldClients,
) {
    // One entry per command: a fast hash (the keys are the core's own small ids).
    let mut to_workers: HashMap<u32, Vec<ToWorker>, foldhash::fast::RandomState> =
        HashMap::default();
    let mut to_clients: HashMap<ClientId, Vec<ToClient>, foldhash::fast::RandomState> =
        HashMap::default();
    let mut commits = Vec::new();
    for c in commands.drain(..) {
        match c {
            Command::Worker(w, m) => to_workers.entry(w).or_default().push(m),
            Command::Client(c, ToClient::Events(mut ev)) => {
                // Merge consecutive event lists into one message.
                let out = to_clients.entry(c).or_default();
                if let Some(ToClient::Events(prev)) = out.last_mut() {
                    prev.append(&mut ev);
                } else {
                    out.push(ToClient::Events(ev));
                }
            }
            Command::Client(c, m) => to_clients.entry(c).or_default().push(m),
            Command::Lookup {
                id,
                namespace,
                keys,
            } => {
                let (answer, input) = (progress.lookup(namespace, keys), input.clone());
                tokio::spawn(async move {
                    let found = answer
                        .await
                        .unwrap_or_else(|_| Err("the progress store stopped".to_owned()));
                    let _ = input.send(Input::Events(vec![Event::Looked { id, found }]));
                });
            }
            Command::Commit {
                namespace,
                key,
                version,
                definition,
                output,
            } => commits.push((namespace, key, version, definition, output)),
        }
    }
    for (w, msgs) in to_workers {
        if let Some(tx) = workers.get(&w) {
            let _ = tx.send(msgs);
        }
    }
    // What clients hear after a commit is sent once the commit is on disk.
    let commit = (!commits.is_empty()).then(|| progress.commit(commits));
    if commit.is_none() && !held.busy() {
        for (c, msgs) in to_clients {
            if let Some(tx) = clients.get(&c) {
                let _ = tx.send(msgs);
            }
        }
        return;
    }
    let messages = to_clients
        .into_iter()
        .filter_map(|(c, msgs)| clients.get(&c).map(|tx| (tx.clone(), msgs)))
        .collect();
    held.send(HeldBatch { commit, messages });
}
