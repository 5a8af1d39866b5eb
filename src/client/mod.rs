//! The client: connect to a scheduler by its access file, submit graphs, stream task events,
//! fetch outputs straight from the workers holding them, and build the run's [`Report`].

mod blocking;
mod detached;
mod link;
mod report;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use link::{Dialer, Located, Payload, RunRoute, RunSource, Shared, Where};

use bytes::Bytes;
use drover_graph::{Graph, Handle};
use drover_protocol::endpoint::client_endpoint;
use drover_protocol::{
    AccessFile, FromClient, Hello, Role, TaskEvent, TaskStatus, PROTOCOL_VERSION,
};
use drover_worker::peer::Fetcher;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};

pub use blocking::{BlockingClient, BlockingRun};
pub use drover_protocol::RunInfo;
pub use report::{Report, RunInsights, TaskReport};

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The access file is unusable (the message names it).
    #[error("{0}")]
    Access(String),
    /// Connecting or the handshake failed, or the scheduler refused us.
    #[error(transparent)]
    Endpoint(#[from] drover_protocol::endpoint::EndpointError),
    /// The scheduler refused the graph; the message names what is wrong.
    #[error("graph rejected: {0}")]
    Rejected(String),
    /// The graph is invalid (caught before sending).
    #[error("invalid graph: {0}")]
    Invalid(#[from] drover_graph::InvalidGraph),
    /// The connection to the scheduler ended.
    #[error("lost the scheduler connection")]
    Disconnected,
    /// The link to the scheduler ended for good: it shut down, refused us on reconnecting, or
    /// stayed away past the client's patience. Says which.
    #[error("{0}")]
    Lost(String),
    /// A task failed, so its output does not exist.
    #[error("task {key:?} failed: {error}")]
    TaskFailed {
        /// The task.
        key: String,
        /// Why.
        error: String,
    },
    /// The key is not part of this run.
    #[error("key {0:?} is not a task of this run")]
    UnknownKey(String),
    /// Fetching an output failed.
    #[error("cannot fetch {key:?}: {error}")]
    Fetch {
        /// The task.
        key: String,
        /// Why.
        error: String,
    },
    /// A detached run ended before its tasks did (cancelled), or is gone (the message says).
    #[error("{0}")]
    RunEnded(String),
    /// The scheduler refused a request about detached runs (an unknown id, a run whose
    /// outputs are gone); the message says why.
    #[error("{0}")]
    Refused(String),
    /// An output could not be decoded as the requested type.
    #[error("output of {key:?} is not a {ty}: {error}")]
    Decode {
        /// The task.
        key: String,
        /// The requested type.
        ty: &'static str,
        /// The decoder's message.
        error: String,
    },
}

/// What a run's stream carries.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// A task finished or failed.
    Task(TaskEvent),
    /// A warning from the scheduler, e.g. a pool with no workers.
    Warning(String),
    /// A detached run ended before its tasks did (cancelled) or is gone; no events follow.
    Ended(String),
}

/// A client's default name: `client-HOST-PID`, unique among the processes of a cluster.
fn default_client_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("client-{}-{}", host.trim(), std::process::id())
}

/// How a client connects and how long it waits for a lost scheduler.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How long to keep trying to reconnect after losing the scheduler (not after its
    /// shutdown). Zero ends runs at once. Default 60 s, like workers' `--reconnect-secs`.
    pub reconnect: Duration,
    /// The QUIC idle timeout: how soon a silent scheduler counts as lost. Default 10 s.
    pub idle_timeout: Duration,
    /// The name the scheduler logs for this client (and the holder of its claims). Default
    /// `client-HOST-PID`.
    pub name: Option<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            reconnect: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(10),
            name: None,
        }
    }
}

struct Inner {
    name: String,
    shared: Arc<Mutex<Shared>>,
    fetcher: Arc<Fetcher>,
    next_run: AtomicU32,
    addr: std::net::SocketAddr,
    idle_timeout: Duration,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.lock().expect("link lock").close();
    }
}

/// A connection to a scheduler, kept up across outages (see [`ClientOptions::reconnect`]).
/// Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("scheduler", &self.inner.addr)
            .finish()
    }
}

impl Client {
    /// Connects using an `access.json` file, with default options.
    pub async fn connect(access_file: impl AsRef<Path>) -> Result<Client, ClientError> {
        let access = AccessFile::load(access_file.as_ref())
            .map_err(|e| ClientError::Access(e.to_string()))?;
        Client::connect_with(&access).await
    }

    /// Connects using an access file's contents, with default options.
    pub async fn connect_with(access: &AccessFile) -> Result<Client, ClientError> {
        Client::connect_with_options(access, ClientOptions::default()).await
    }

    /// Connects using an access file's contents and `options`.
    pub async fn connect_with_options(
        access: &AccessFile,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let addr = access.socket_addr().map_err(ClientError::Access)?;
        let cert = access.cert_der().map_err(ClientError::Access)?;
        let idle = options.idle_timeout;
        let endpoint = client_endpoint()?;
        let name = options.name.clone().unwrap_or_else(default_client_name);
        let dialer = Dialer {
            endpoint: endpoint.clone(),
            addr,
            cert,
            hello: Hello {
                protocol: PROTOCOL_VERSION,
                token: access.token.clone(),
                role: Role::Client { name: name.clone() },
            },
            idle,
        };
        let dialled = dialer.dial().await?;
        let shared = link::start(dialer, dialled, options.reconnect);
        Ok(Client {
            inner: Arc::new(Inner {
                name,
                shared,
                fetcher: Arc::new(Fetcher::new(endpoint, access.token.clone(), idle)),
                next_run: AtomicU32::new(1),
                addr,
                idle_timeout: idle,
            }),
        })
    }

    /// Submits `graph`; keeps the outputs of its sinks (tasks nothing consumes) for fetching.
    pub async fn submit(&self, graph: &Graph) -> Result<Run, ClientError> {
        let topo = graph.validate()?;
        let sinks: Vec<String> = topo
            .sinks()
            .filter(|&t| !graph.is_once_cell(t))
            .map(|t| graph.key(t).to_owned())
            .collect();
        self.submit_with(graph, &sinks).await
    }

    /// Submits `graph`, keeping the outputs of `wants` for fetching.
    /// The graph travels in the binary wire form (`Graph::to_wire`), not JSON text.
    pub async fn submit_with(&self, graph: &Graph, wants: &[String]) -> Result<Run, ClientError> {
        self.submit_source(Payload::Wire(graph.to_wire().into()), wants)
            .await
    }

    /// Submits a graph in the JSON graph format, keeping the outputs of `wants`.
    pub async fn submit_json(
        &self,
        graph_json: String,
        wants: &[String],
    ) -> Result<Run, ClientError> {
        self.submit_source(Payload::Json(graph_json.into()), wants)
            .await
    }

    async fn submit_source(&self, payload: Payload, wants: &[String]) -> Result<Run, ClientError> {
        let run = self.inner.next_run.fetch_add(1, Ordering::Relaxed);
        let submitted = std::time::Instant::now();
        let (acc_tx, acc_rx) = oneshot::channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        {
            let mut s = self.lock();
            if let Some(why) = s.gone() {
                return Err(ClientError::Lost(why.to_owned()));
            }
            s.accepted.insert(run, acc_tx);
            s.runs.insert(
                run,
                RunRoute {
                    events: ev_tx,
                    source: RunSource::Graph(payload.clone()),
                    wants: wants.to_vec(),
                    complete: false,
                    seen: 0,
                },
            );
            s.send(payload.submit(run, wants.to_vec()))
                .map_err(ClientError::Lost)?;
        }
        let tasks = match acc_rx.await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                self.lock().runs.remove(&run);
                return Err(ClientError::Rejected(e));
            }
            Err(_) => return Err(self.lost()),
        };
        Ok(Run {
            client: self.clone(),
            id: run,
            ended: false,
            tasks,
            events: ev_rx,
            done: HashMap::with_capacity_and_hasher(tasks as usize, Default::default()),
            log: Vec::with_capacity(tasks as usize),
            log_ms: Vec::with_capacity(tasks as usize),
            submitted,
            warnings: Vec::new(),
            wants: wants.iter().cloned().collect(),
            ended_why: None,
            detached: None,
            kept: wants.to_vec(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.inner.shared.lock().expect("link lock")
    }

    /// The error for a waiter whose sender was dropped: why the link ended.
    fn lost(&self) -> ClientError {
        match self.lock().gone() {
            Some(why) => ClientError::Lost(why.to_owned()),
            None => ClientError::Disconnected,
        }
    }

    async fn locate(&self, keys: Vec<String>) -> Result<Located, ClientError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut s = self.lock();
            s.next_locate = s.next_locate.wrapping_add(1);
            let req = s.next_locate;
            s.locates.insert(req, (keys.clone(), tx));
            s.send(FromClient::Locate { req, keys })
                .map_err(ClientError::Lost)?;
        }
        match rx.await {
            Ok(found) => Ok(found),
            Err(_) => Err(self.lost()),
        }
    }

    /// Sends a request to the scheduler's progress store and waits for its answer (for changes,
    /// once they are on disk).
    pub(crate) async fn progress_request(
        &self,
        request: drover_protocol::ProgressRequest,
    ) -> Result<drover_protocol::ProgressReply, ClientError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut s = self.lock();
            s.next_progress = s.next_progress.wrapping_add(1);
            let req = s.next_progress;
            s.progress.insert(req, (request.clone(), tx));
            s.send(FromClient::Progress { req, request })
                .map_err(ClientError::Lost)?;
        }
        rx.await.map_err(|_| self.lost())
    }

    /// This client's name, as the scheduler logs it and as the holder of its claims.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Closes the connection. The scheduler releases this client's outputs and cancels the
    /// tasks only its runs were waiting for.
    pub fn close(&self) {
        self.lock().close();
    }

    /// Drops these once-cells on every worker now (their objects' `Drop` runs there); a later
    /// need loads them again.
    pub fn release_cells(&self, keys: Vec<String>) -> Result<(), ClientError> {
        self.lock()
            .send(FromClient::ReleaseCells { keys })
            .map_err(ClientError::Lost)
    }

    /// Tells the scheduler these outputs are no longer needed.
    pub fn release(&self, keys: Vec<String>) -> Result<(), ClientError> {
        let mut s = self.lock();
        // A resubmission after an outage must not keep them again.
        let released: std::collections::HashSet<&String> = keys.iter().collect();
        for r in s.runs.values_mut() {
            r.wants.retain(|k| !released.contains(k));
        }
        s.send(FromClient::Release { keys })
            .map_err(ClientError::Lost)
    }
}

/// Most outputs fetched per batch by [`Run::fetch_outputs`].
const OUTPUT_BATCH: usize = 4096;
/// A batch of [`Run::fetch_outputs`] ends once its outputs reach this many bytes.
const OUTPUT_BATCH_BYTES: u64 = 256 << 20;

/// A submitted graph: its event stream, its outputs, its report.
pub struct Run {
    client: Client,
    id: u32,
    ended: bool,
    tasks: u32,
    events: mpsc::UnboundedReceiver<RunEvent>,
    done: HashMap<String, usize, foldhash::fast::RandomState>,
    log: Vec<TaskEvent>,
    /// When each event of `log` arrived, in ms since the run was submitted.
    log_ms: Vec<f64>,
    submitted: std::time::Instant,
    warnings: Vec<String>,
    /// Keys whose outputs the run keeps.
    wants: std::collections::HashSet<String>,
    /// Why the run ended before its tasks did (a detached run cancelled or gone).
    ended_why: Option<String>,
    /// The id of the detached run this follows.
    detached: Option<String>,
    /// The keys whose outputs it keeps, in the order given (the graph's, for sinks).
    kept: Vec<String>,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("tasks", &self.tasks)
            .field("done", &self.done.len())
            .finish()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.end();
        self.client.lock().runs.remove(&self.id);
    }
}

impl Run {
    /// Tells the scheduler, once, that the run is over (its run-scoped once-cells go).
    fn end(&mut self) {
        if !self.ended {
            self.ended = true;
            let mut s = self.client.lock();
            if let Some(r) = s.runs.get_mut(&self.id) {
                r.complete = true;
            }
            let _ = s.send(FromClient::EndRun { run: self.id });
        }
    }

    /// The client this run belongs to.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The keys whose outputs the run keeps for fetching, in order (its sinks, in the
    /// graph's order, unless `wants` were given).
    pub fn kept_keys(&self) -> &[String] {
        &self.kept
    }

    /// The number of tasks in the run.
    pub fn task_count(&self) -> u32 {
        self.tasks
    }

    /// How many tasks have finished or failed so far.
    pub fn done_count(&self) -> usize {
        self.done.len()
    }

    /// True when every task has finished or failed.
    pub fn is_complete(&self) -> bool {
        self.done.len() as u32 >= self.tasks
    }

    /// Warnings received so far.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The next event, or `None` once every task is done (or the scheduler is gone, or a
    /// detached run followed ended).
    pub async fn next_event(&mut self) -> Option<RunEvent> {
        if self.is_complete() || self.ended_why.is_some() {
            return None;
        }
        let ev = self.events.recv().await?;
        self.record(ev.clone());
        Some(ev)
    }

    /// Keeps event `ev` in the run's log (moved, not copied: a run's events are most of what a
    /// client of many small tasks does), and ends the run once every task is done.
    fn record(&mut self, ev: RunEvent) {
        match ev {
            RunEvent::Task(t) => {
                if !t.load {
                    self.done.insert(t.key.clone(), self.log.len());
                }
                self.log.push(t);
                self.log_ms
                    .push(self.submitted.elapsed().as_secs_f64() * 1000.0);
            }
            RunEvent::Warning(w) => self.warnings.push(w),
            RunEvent::Ended(why) => self.ended_why = Some(why),
        }
        if self.is_complete() {
            self.end();
        }
    }

    /// Waits for every task and returns the report.
    pub async fn wait(&mut self) -> Result<Report, ClientError> {
        while !self.is_complete() {
            if self.ended_why.is_some() {
                return Err(self.stopped());
            }
            match self.events.recv().await {
                Some(ev) => self.record(ev),
                None if self.is_complete() => break,
                None => return Err(self.stopped()),
            }
        }
        Ok(self.report())
    }

    /// Why events stopped before the run was complete.
    fn stopped(&self) -> ClientError {
        match &self.ended_why {
            Some(why) => ClientError::RunEnded(why.clone()),
            None => self.client.lost(),
        }
    }

    /// The report of what has happened so far.
    pub fn report(&self) -> Report {
        Report::from_timed_events(&self.log, &self.log_ms)
    }

    async fn wait_for(&mut self, key: &str) -> Result<TaskEvent, ClientError> {
        loop {
            if let Some(&i) = self.done.get(key) {
                return Ok(self.log[i].clone());
            }
            if self.is_complete() {
                return Err(ClientError::UnknownKey(key.to_owned()));
            }
            if self.next_event().await.is_none() && !self.is_complete() {
                return Err(self.stopped());
            }
        }
    }

    /// Waits for `key` and fetches its output bytes from the worker holding it. The key must be
    /// one the run keeps (its sinks, or the `wants` given at submission).
    pub async fn get_bytes(&mut self, key: &str) -> Result<Bytes, ClientError> {
        let mut out = None;
        self.fetch_outputs(&[key.to_owned()], |_, r| out = Some(r))
            .await?;
        out.expect("one key, one answer")
    }

    /// Fetches the outputs of `keys` (each one the run keeps: a sink, or one of the `wants`
    /// given at submission) and calls `each` with every key and its bytes or error, in the
    /// order of `keys`, as they arrive. Keys go in batches (bounded in count and bytes): one
    /// lookup per batch, then one request per worker holding some, to all those workers at
    /// once, so many small outputs cost a few round trips, not one each. Waits for each key's
    /// task first. `Err` only when the scheduler is lost.
    pub async fn fetch_outputs(
        &mut self,
        keys: &[String],
        mut each: impl FnMut(&str, Result<Bytes, ClientError>),
    ) -> Result<(), ClientError> {
        let mut start = 0;
        while start < keys.len() {
            // A batch: up to OUTPUT_BATCH keys or OUTPUT_BATCH_BYTES of outputs.
            let mut end = start;
            let mut bytes = 0u64;
            let mut ready: Vec<(usize, Result<(), ClientError>)> = Vec::new();
            while end < keys.len() && end - start < OUTPUT_BATCH {
                let key = &keys[end];
                let verdict = if !self.wants.contains(key) {
                    Err(ClientError::UnknownKey(format!(
                        "{key} (not kept: only sinks or `wants` are)"
                    )))
                } else {
                    match self.wait_for(key).await {
                        Ok(ev) if ev.status == TaskStatus::Failed => Err(ClientError::TaskFailed {
                            key: key.clone(),
                            error: ev.error.unwrap_or_default(),
                        }),
                        Ok(ev) => {
                            bytes += ev.output_bytes;
                            Ok(())
                        }
                        Err(e @ (ClientError::Lost(_) | ClientError::Disconnected)) => {
                            return Err(e)
                        }
                        Err(e) => Err(e),
                    }
                };
                ready.push((end, verdict));
                end += 1;
                if bytes >= OUTPUT_BATCH_BYTES {
                    break;
                }
            }
            let wanted: Vec<String> = ready
                .iter()
                .filter(|(_, v)| v.is_ok())
                .map(|(i, _)| keys[*i].clone())
                .collect();
            let mut got = self.fetch_batch_patiently(wanted).await?;
            for (i, verdict) in ready {
                let key = &keys[i];
                let result = verdict.and_then(|_| {
                    got.remove(key.as_str()).unwrap_or_else(|| {
                        Err(ClientError::Fetch {
                            key: key.clone(),
                            error: "no worker holds it".to_owned(),
                        })
                    })
                });
                each(key, result);
            }
            start = end;
        }
        Ok(())
    }

    /// [`Run::fetch_batch`], and again for the outputs that could not be had (their holder
    /// died or could not be reached between the lookup and the fetch: the scheduler makes a
    /// lost output again, and a lookup waits for it), with backoff, for up to three idle
    /// timeouts.
    async fn fetch_batch_patiently(
        &self,
        keys: Vec<String>,
    ) -> Result<HashMap<String, Result<Bytes, ClientError>>, ClientError> {
        let deadline = std::time::Instant::now() + 3 * self.client.inner.idle_timeout;
        let mut backoff = std::time::Duration::from_millis(100);
        let mut out = self.fetch_batch(keys).await?;
        loop {
            let again: Vec<String> = out
                .iter()
                .filter(|(_, r)| matches!(r, Err(ClientError::Fetch { .. })))
                .map(|(k, _)| k.clone())
                .collect();
            if again.is_empty() || std::time::Instant::now() + backoff > deadline {
                return Ok(out);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
            out.extend(self.fetch_batch(again).await?);
        }
    }

    /// Locates `keys` in one request and fetches them, one request per holder, all at once.
    async fn fetch_batch(
        &self,
        keys: Vec<String>,
    ) -> Result<HashMap<String, Result<Bytes, ClientError>>, ClientError> {
        let mut out = HashMap::with_capacity(keys.len());
        if keys.is_empty() {
            return Ok(out);
        }
        let located = self.client.locate(keys).await?;
        let mut by_holder: HashMap<u32, (drover_protocol::PeerInfo, Vec<(u32, String)>)> =
            HashMap::new();
        for (key, at) in located {
            match at {
                Where::Worker(id, peer) => by_holder
                    .entry(peer.id)
                    .or_insert_with(|| (peer, Vec::new()))
                    .1
                    .push((id, key)),
                Where::Inline(bytes) => {
                    out.insert(key, Ok(bytes));
                }
                Where::Nowhere => {
                    let e = ClientError::Fetch {
                        key: key.clone(),
                        error: "no worker holds it".to_owned(),
                    };
                    out.insert(key, Err(e));
                }
            }
        }
        let mut fetches = tokio::task::JoinSet::new();
        for (_, (peer, wanted)) in by_holder {
            let fetcher = self.client.inner.fetcher.clone();
            fetches.spawn(async move {
                let ids: Vec<u32> = wanted.iter().map(|(id, _)| *id).collect();
                let got = fetcher.fetch_partial(&peer, &ids).await;
                (wanted, got)
            });
        }
        while let Some(done) = fetches.join_next().await {
            let (wanted, got) = done.expect("fetch tasks do not panic");
            let mut bytes: HashMap<u32, Bytes> = got.got.into_iter().collect();
            for (id, key) in wanted {
                let r = bytes.remove(&id).ok_or_else(|| ClientError::Fetch {
                    key: key.clone(),
                    error: got
                        .error
                        .clone()
                        .unwrap_or_else(|| "the worker did not send it".to_owned()),
                });
                out.insert(key, r);
            }
        }
        Ok(out)
    }

    /// Waits for a typed task and decodes its output.
    pub async fn get<T: DeserializeOwned>(
        &mut self,
        graph: &Graph,
        handle: Handle<T>,
    ) -> Result<T, ClientError> {
        let key = graph.key(handle.id()).to_owned();
        let bytes = self.get_bytes(&key).await?;
        postcard::from_bytes(&bytes).map_err(|e| ClientError::Decode {
            key,
            ty: std::any::type_name::<T>(),
            error: e.to_string(),
        })
    }
}
