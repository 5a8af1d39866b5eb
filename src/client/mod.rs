//! The client: connect to a scheduler by its access file, submit graphs, stream task events,
//! fetch outputs straight from the workers holding them, and build the run's [`Report`].

mod blocking;
mod report;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use drover_graph::{Graph, Handle};
use drover_protocol::codec::{batch_writer, read_frame, MAX_CONTROL_FRAME};
use drover_protocol::endpoint::{client_endpoint, connect, say_hello};
use drover_protocol::{
    AccessFile, FromClient, Hello, PeerInfo, Role, TaskEvent, TaskStatus, ToClient,
    PROTOCOL_VERSION,
};
use drover_worker::peer::Fetcher;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};

pub use blocking::{BlockingClient, BlockingRun};
pub use report::{Report, TaskReport};

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The access file is unusable.
    #[error("access file: {0}")]
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
}

/// Keys with their result id and holder.
type Located = Vec<(String, Option<(u32, PeerInfo)>)>;

#[derive(Default)]
struct Routes {
    accepted: HashMap<u32, oneshot::Sender<Result<u32, String>>>,
    runs: HashMap<u32, mpsc::UnboundedSender<RunEvent>>,
    locates: HashMap<u32, oneshot::Sender<Located>>,
    next_locate: u32,
}

struct Inner {
    send: mpsc::UnboundedSender<Vec<FromClient>>,
    routes: Arc<Mutex<Routes>>,
    fetcher: Fetcher,
    next_run: AtomicU32,
    conn: quinn::Connection,
}

/// A connection to a scheduler. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("scheduler", &self.inner.conn.remote_address())
            .finish()
    }
}

impl Client {
    /// Connects using an `access.json` file.
    pub async fn connect(access_file: impl AsRef<Path>) -> Result<Client, ClientError> {
        let access = AccessFile::load(access_file.as_ref())
            .map_err(|e| ClientError::Access(e.to_string()))?;
        Client::connect_with(&access).await
    }

    /// Connects using an access file's contents.
    pub async fn connect_with(access: &AccessFile) -> Result<Client, ClientError> {
        let addr = access.socket_addr().map_err(ClientError::Access)?;
        let cert = access.cert_der().map_err(ClientError::Access)?;
        let idle = Duration::from_secs(10);
        let endpoint = client_endpoint()?;
        let conn = connect(&endpoint, addr, &cert, idle).await?;
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            token: access.token.clone(),
            role: Role::Client {
                name: format!("client-{}", std::process::id()),
            },
        };
        let session = say_hello(&conn, &hello).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(batch_writer(session.send, rx));
        let routes: Arc<Mutex<Routes>> = Arc::default();
        tokio::spawn(route_incoming(session.recv, routes.clone()));
        Ok(Client {
            inner: Arc::new(Inner {
                send: tx,
                routes,
                fetcher: Fetcher::new(endpoint, access.token.clone(), idle),
                next_run: AtomicU32::new(1),
                conn,
            }),
        })
    }

    /// Submits `graph`; keeps the outputs of its sinks (tasks nothing consumes) for fetching.
    pub async fn submit(&self, graph: &Graph) -> Result<Run, ClientError> {
        let topo = graph.validate()?;
        let sinks: Vec<String> = topo.sinks().map(|t| graph.key(t).to_owned()).collect();
        self.submit_with(graph, &sinks).await
    }

    /// Submits `graph`, keeping the outputs of `wants` for fetching.
    pub async fn submit_with(&self, graph: &Graph, wants: &[String]) -> Result<Run, ClientError> {
        let graph_json = serde_json::to_string(&graph.to_file()).expect("graph files serialise");
        self.submit_json(graph_json, wants).await
    }

    /// Submits a graph in the JSON graph format, keeping the outputs of `wants`.
    pub async fn submit_json(
        &self,
        graph_json: String,
        wants: &[String],
    ) -> Result<Run, ClientError> {
        let run = self.inner.next_run.fetch_add(1, Ordering::Relaxed);
        let (acc_tx, acc_rx) = oneshot::channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        {
            let mut r = self.inner.routes.lock().expect("routes lock");
            r.accepted.insert(run, acc_tx);
            r.runs.insert(run, ev_tx);
        }
        self.send(FromClient::Submit {
            run,
            graph_json,
            wants: wants.to_vec(),
        })?;
        let tasks = match acc_rx.await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                self.inner
                    .routes
                    .lock()
                    .expect("routes lock")
                    .runs
                    .remove(&run);
                return Err(ClientError::Rejected(e));
            }
            Err(_) => return Err(ClientError::Disconnected),
        };
        Ok(Run {
            client: self.clone(),
            tasks,
            events: ev_rx,
            done: HashMap::new(),
            log: Vec::new(),
            warnings: Vec::new(),
            wants: wants.to_vec(),
        })
    }

    fn send(&self, msg: FromClient) -> Result<(), ClientError> {
        self.inner
            .send
            .send(vec![msg])
            .map_err(|_| ClientError::Disconnected)
    }

    async fn locate(&self, keys: Vec<String>) -> Result<Located, ClientError> {
        let (tx, rx) = oneshot::channel();
        let req = {
            let mut r = self.inner.routes.lock().expect("routes lock");
            r.next_locate = r.next_locate.wrapping_add(1);
            let req = r.next_locate;
            r.locates.insert(req, tx);
            req
        };
        self.send(FromClient::Locate { req, keys })?;
        rx.await.map_err(|_| ClientError::Disconnected)
    }

    /// Closes the connection. The scheduler releases this client's outputs and cancels the
    /// tasks only its runs were waiting for.
    pub fn close(&self) {
        self.inner
            .conn
            .close(quinn::VarInt::from_u32(0), b"client closed");
    }

    /// Tells the scheduler these outputs are no longer needed.
    pub fn release(&self, keys: Vec<String>) -> Result<(), ClientError> {
        self.send(FromClient::Release { keys })
    }
}

async fn route_incoming(mut recv: quinn::RecvStream, routes: Arc<Mutex<Routes>>) {
    while let Ok(Some(batch)) = read_frame::<Vec<ToClient>>(&mut recv, MAX_CONTROL_FRAME).await {
        let mut r = routes.lock().expect("routes lock");
        for msg in batch {
            match msg {
                ToClient::Accepted { run, tasks } => {
                    if let Some(tx) = r.accepted.remove(&run) {
                        let _ = tx.send(Ok(tasks));
                    }
                }
                ToClient::Rejected { run, error } => {
                    if let Some(tx) = r.accepted.remove(&run) {
                        let _ = tx.send(Err(error));
                    }
                }
                ToClient::Events(events) => {
                    for e in events {
                        if let Some(tx) = r.runs.get(&e.run) {
                            let _ = tx.send(RunEvent::Task(e));
                        }
                    }
                }
                ToClient::Warning(w) => {
                    tracing::warn!("{w}");
                    for tx in r.runs.values() {
                        let _ = tx.send(RunEvent::Warning(w.clone()));
                    }
                }
                ToClient::Located { req, found } => {
                    if let Some(tx) = r.locates.remove(&req) {
                        let _ = tx.send(found);
                    }
                }
            }
        }
    }
    // Disconnected: dropping the senders wakes every waiter.
    let mut r = routes.lock().expect("routes lock");
    r.accepted.clear();
    r.runs.clear();
    r.locates.clear();
}

/// A submitted graph: its event stream, its outputs, its report.
pub struct Run {
    client: Client,
    tasks: u32,
    events: mpsc::UnboundedReceiver<RunEvent>,
    done: HashMap<String, usize>,
    log: Vec<TaskEvent>,
    warnings: Vec<String>,
    wants: Vec<String>,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("tasks", &self.tasks)
            .field("done", &self.done.len())
            .finish()
    }
}

impl Run {
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

    /// The next event, or `None` once every task is done (or the scheduler is gone).
    pub async fn next_event(&mut self) -> Option<RunEvent> {
        if self.is_complete() {
            return None;
        }
        let ev = self.events.recv().await?;
        match &ev {
            RunEvent::Task(t) => {
                self.done.insert(t.key.clone(), self.log.len());
                self.log.push(t.clone());
            }
            RunEvent::Warning(w) => self.warnings.push(w.clone()),
        }
        Some(ev)
    }

    /// Waits for every task and returns the report.
    pub async fn wait(&mut self) -> Result<Report, ClientError> {
        while !self.is_complete() {
            if self.next_event().await.is_none() && !self.is_complete() {
                return Err(ClientError::Disconnected);
            }
        }
        Ok(self.report())
    }

    /// The report of what has happened so far.
    pub fn report(&self) -> Report {
        Report::from_events(&self.log)
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
                return Err(ClientError::Disconnected);
            }
        }
    }

    /// Waits for `key` and fetches its output bytes from the worker holding it. The key must be
    /// one the run keeps (its sinks, or the `wants` given at submission).
    pub async fn get_bytes(&mut self, key: &str) -> Result<Bytes, ClientError> {
        if !self.wants.iter().any(|k| k == key) {
            return Err(ClientError::UnknownKey(format!(
                "{key} (not kept: only sinks or `wants` are)"
            )));
        }
        let ev = self.wait_for(key).await?;
        if ev.status == TaskStatus::Failed {
            return Err(ClientError::TaskFailed {
                key: key.to_owned(),
                error: ev.error.unwrap_or_default(),
            });
        }
        let fetch_err = |error: String| ClientError::Fetch {
            key: key.to_owned(),
            error,
        };
        let located = self.client.locate(vec![key.to_owned()]).await?;
        let (id, peer) = located
            .into_iter()
            .next()
            .and_then(|(_, p)| p)
            .ok_or_else(|| fetch_err("no worker holds it".to_owned()))?;
        let mut got = self
            .client
            .inner
            .fetcher
            .fetch(&peer, &[id])
            .await
            .map_err(fetch_err)?;
        Ok(got.pop().map(|(_, b)| b).unwrap_or_default())
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
