//! The client's link to the scheduler, kept up across outages.
//!
//! One driver task per client reads the scheduler's messages and routes them to the waiting
//! submissions, runs and lookups. When the connection is lost (not closed by the scheduler's
//! shutdown, nor by us) the driver dials again with backoff (0.2 s doubling to 5 s) for the
//! client's patience. On success it resubmits every live run (a restarted scheduler knows none of
//! them; their tasks run again) and resends pending lookups, in that order, before any new
//! message, so nothing sent during the outage is lost. A refusal (wrong token or certificate) or
//! the end of the patience ends the link for good, and every waiter is told why.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use drover_protocol::codec::{batch_writer, read_frame, MAX_CONTROL_FRAME};
use drover_protocol::endpoint::{connect, say_hello, EndpointError, Session};
use drover_protocol::{
    FromClient, Hello, PeerInfo, ProgressReply, ProgressRequest, RunsReply, RunsRequest, ToClient,
    SHUTDOWN_REASON,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::RunEvent;

/// Where a key's output is.
#[derive(Debug, Clone)]
pub(super) enum Where {
    /// Result `id` on this worker.
    Worker(u32, PeerInfo),
    /// Sent along by the scheduler (a durable task's stored output).
    Inline(bytes::Bytes),
    /// Nowhere: failed, released or unknown.
    Nowhere,
}

/// Keys with where their outputs are.
pub(super) type Located = Vec<(String, Where)>;

/// The first wait between reconnection attempts.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The state of the connection.
pub(super) enum Link {
    /// Connected: messages go to `send`. The lifeline is held open while connected, so the
    /// scheduler notices at once when this process dies.
    Up {
        send: mpsc::UnboundedSender<Vec<FromClient>>,
        conn: quinn::Connection,
        _lifeline: Option<tokio::net::TcpStream>,
    },
    /// Lost, reconnecting: messages wait (as pending runs and lookups) for the new connection.
    Down,
    /// Ended for good, and why.
    Gone(String),
}

/// A submitted run as the link remembers it, to resubmit after an outage.
pub(super) struct RunRoute {
    pub events: mpsc::UnboundedSender<RunEvent>,
    /// What the run is: a graph this client submitted (resubmitted after an outage), or a
    /// detached run it follows (attached again after an outage, from the events it has).
    pub source: RunSource,
    pub wants: Vec<String>,
    /// Every task of the run is done: losing the scheduler cuts nothing short.
    pub complete: bool,
    /// Task events routed to it so far.
    pub seen: u32,
}

/// A submitted graph, as sent (and sent again after a reconnection).
#[derive(Clone)]
pub(super) enum Payload {
    /// JSON text.
    Json(Arc<str>),
    /// The binary wire form.
    Wire(Arc<[u8]>),
}

impl Payload {
    /// The submission message of run `run`.
    pub(super) fn submit(&self, run: u32, wants: Vec<String>) -> FromClient {
        match self {
            Payload::Json(text) => FromClient::Submit {
                run,
                graph_json: text.to_string(),
                wants,
            },
            Payload::Wire(bytes) => FromClient::SubmitWire {
                run,
                graph: bytes.to_vec(),
                wants,
            },
        }
    }
}

/// Where a run of the client comes from.
pub(super) enum RunSource {
    /// A graph submitted by this client.
    Graph(Payload),
    /// A detached run followed by its id.
    Detached(String),
}

/// Everything the driver and the client share.
pub(super) struct Shared {
    pub link: Link,
    pub accepted: HashMap<u32, oneshot::Sender<Result<u32, String>>>,
    pub runs: HashMap<u32, RunRoute>,
    pub locates: HashMap<u32, (Vec<String>, oneshot::Sender<Located>)>,
    pub next_locate: u32,
    /// Progress requests waiting for their answers (replayed after an outage: claims by the
    /// same holder, and commits and failures of the same claim, may be applied twice).
    pub progress: HashMap<u32, (ProgressRequest, oneshot::Sender<ProgressReply>)>,
    pub next_progress: u32,
    /// Requests about detached runs waiting for their answers (replayed after an outage).
    pub runs_requests: HashMap<u32, (RunsRequest, oneshot::Sender<RunsReply>)>,
    /// Status requests waiting for their answers (replayed after an outage).
    pub status_requests: HashMap<u32, oneshot::Sender<Box<drover_protocol::ClusterStatus>>>,
    /// Attachments sent again after an outage: request number to the client's run.
    pub reattached: HashMap<u32, u32>,
    pub next_runs_request: u32,
}

impl Shared {
    fn new(
        send: mpsc::UnboundedSender<Vec<FromClient>>,
        conn: quinn::Connection,
        lifeline: Option<tokio::net::TcpStream>,
    ) -> Shared {
        Shared {
            link: Link::Up {
                send,
                conn,
                _lifeline: lifeline,
            },
            accepted: HashMap::new(),
            runs: HashMap::new(),
            locates: HashMap::new(),
            next_locate: 0,
            progress: HashMap::new(),
            next_progress: 0,
            runs_requests: HashMap::new(),
            status_requests: HashMap::new(),
            reattached: HashMap::new(),
            next_runs_request: 0,
        }
    }

    /// Sends `msg` when connected. While reconnecting it is dropped: the caller has recorded
    /// what must survive (a run, a lookup) and the driver replays that. `Err` with the reason
    /// once the link is gone.
    pub fn send(&self, msg: FromClient) -> Result<(), String> {
        match &self.link {
            Link::Up { send, .. } => {
                // A closed writer means the connection is dropping: the driver replays.
                let _ = send.send(vec![msg]);
                Ok(())
            }
            Link::Down => Ok(()),
            Link::Gone(why) => Err(why.clone()),
        }
    }

    /// Why the link ended, if it did.
    pub fn gone(&self) -> Option<&str> {
        match &self.link {
            Link::Gone(why) => Some(why),
            _ => None,
        }
    }

    /// Ends the link: records why and wakes every waiter by dropping its sender.
    fn end(&mut self, why: String) {
        if let Link::Up { conn, .. } = &self.link {
            conn.close(quinn::VarInt::from_u32(0), b"client closed");
        }
        if self.gone().is_none() {
            self.link = Link::Gone(why);
        }
        self.accepted.clear();
        self.runs.clear();
        self.locates.clear();
        self.progress.clear();
        self.runs_requests.clear();
        self.status_requests.clear();
        self.reattached.clear();
    }

    /// Ends the link at the user's request.
    pub fn close(&mut self) {
        self.end("closed by this client".to_owned());
    }

    fn warn_runs(&self, text: String) {
        for r in self.runs.values() {
            let _ = r.events.send(RunEvent::Warning(text.clone()));
        }
    }
}

/// A fresh session: its connection, control stream and lifeline.
pub(super) type Dialled = (quinn::Connection, Session, Option<tokio::net::TcpStream>);

/// How to reach the scheduler again.
pub(super) struct Dialer {
    pub endpoint: quinn::Endpoint,
    pub addr: SocketAddr,
    pub cert: Vec<u8>,
    pub hello: Hello,
    pub idle: Duration,
}

impl Dialer {
    /// Connects, says hello, and opens the lifeline if offered.
    pub async fn dial(&self) -> Result<Dialled, EndpointError> {
        let conn = connect(&self.endpoint, self.addr, &self.cert, self.idle).await?;
        let session = say_hello(&conn, &self.hello).await?;
        let lifeline =
            drover_protocol::lifeline::open_if_offered(self.addr, session.lifeline.as_ref()).await;
        Ok((conn, session, lifeline))
    }
}

/// Starts the writer and the driver for a fresh session; returns the shared state.
pub(super) fn start(dialer: Dialer, dialled: Dialled, patience: Duration) -> Arc<Mutex<Shared>> {
    let (conn, session, lifeline) = dialled;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(batch_writer(session.send, rx));
    let shared = Arc::new(Mutex::new(Shared::new(tx, conn.clone(), lifeline)));
    tokio::spawn(drive(shared.clone(), dialer, conn, session.recv, patience));
    shared
}

/// Routes incoming messages; when the connection ends, reconnects or ends the link.
async fn drive(
    shared: Arc<Mutex<Shared>>,
    dialer: Dialer,
    mut conn: quinn::Connection,
    mut recv: quinn::RecvStream,
    patience: Duration,
) {
    loop {
        route_incoming(&mut recv, &shared).await;
        if shared.lock().expect("link lock").gone().is_some() {
            return;
        }
        let why = close_reason(&conn, dialer.idle).await;
        if why == SHUTDOWN_REASON || patience.is_zero() {
            let why = if why == SHUTDOWN_REASON {
                "the scheduler shut down".to_owned()
            } else {
                format!("lost the scheduler at {}: {why}", dialer.addr)
            };
            let mut s = shared.lock().expect("link lock");
            // Worth a warning only when it cuts a run short.
            if s.runs.values().all(|r| r.complete) {
                info!("{why}");
            } else {
                warn!("{why}");
            }
            s.end(why);
            return;
        }
        {
            let mut s = shared.lock().expect("link lock");
            if s.gone().is_some() {
                return;
            }
            s.link = Link::Down;
            let text = format!(
                "lost the scheduler at {} ({why}); reconnecting for up to {} s",
                dialer.addr,
                patience.as_secs()
            );
            warn!("{text}");
            s.warn_runs(text);
        }
        match redial(&dialer, patience).await {
            Ok((c, session, lifeline)) => {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(batch_writer(session.send, rx));
                let mut s = shared.lock().expect("link lock");
                if s.gone().is_some() {
                    c.close(quinn::VarInt::from_u32(0), b"client closed");
                    return;
                }
                let resent = replay(&mut s, &tx);
                s.link = Link::Up {
                    send: tx,
                    conn: c.clone(),
                    _lifeline: lifeline,
                };
                let text = format!(
                    "reconnected to the scheduler at {}; resubmitted {resent} run(s), whose \
                     tasks run again",
                    dialer.addr
                );
                info!("{text}");
                s.warn_runs(text);
                conn = c;
                recv = session.recv;
            }
            Err(why) => {
                warn!("{why}");
                shared.lock().expect("link lock").end(why);
                return;
            }
        }
    }
}

/// Resends every live run (detached runs followed: attached again from the events already
/// seen), then every pending lookup and request, on the new connection. Returns the number
/// of runs.
fn replay(s: &mut Shared, tx: &mpsc::UnboundedSender<Vec<FromClient>>) -> usize {
    let mut runs: Vec<(u32, &RunRoute)> = s.runs.iter().map(|(id, r)| (*id, r)).collect();
    runs.sort_unstable_by_key(|(id, _)| *id);
    let mut reattach = Vec::new();
    let mut batch: Vec<FromClient> = Vec::with_capacity(runs.len());
    for (run, r) in &runs {
        match &r.source {
            RunSource::Graph(payload) => batch.push(payload.submit(*run, r.wants.clone())),
            RunSource::Detached(id) => reattach.push((*run, id.clone(), r.seen)),
        }
    }
    let count = runs.len();
    for (run, id, from) in reattach {
        s.next_runs_request = s.next_runs_request.wrapping_add(1);
        let req = s.next_runs_request;
        s.reattached.insert(req, run);
        batch.push(FromClient::Runs {
            req,
            request: RunsRequest::Attach { run, id, from },
        });
    }
    batch.extend(
        s.status_requests
            .keys()
            .map(|&req| FromClient::Status { req }),
    );
    let mut pending: Vec<(&u32, &RunsRequest)> = s
        .runs_requests
        .iter()
        .map(|(req, (r, _))| (req, r))
        .collect();
    pending.sort_unstable_by_key(|(req, _)| **req);
    batch.extend(pending.into_iter().map(|(req, r)| FromClient::Runs {
        req: *req,
        request: r.clone(),
    }));
    batch.extend(s.locates.iter().map(|(req, (keys, _))| FromClient::Locate {
        req: *req,
        keys: keys.clone(),
    }));
    let mut progress: Vec<(&u32, &ProgressRequest)> =
        s.progress.iter().map(|(req, (r, _))| (req, r)).collect();
    progress.sort_unstable_by_key(|(req, _)| **req);
    batch.extend(progress.into_iter().map(|(req, r)| FromClient::Progress {
        req: *req,
        request: r.clone(),
    }));
    let _ = tx.send(batch);
    count
}

/// Dials with backoff until connected, refused, or out of patience.
async fn redial(dialer: &Dialer, patience: Duration) -> Result<Dialled, String> {
    let start = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let error = match dialer.dial().await {
            Ok(up) => return Ok(up),
            Err(e @ (EndpointError::Refused { .. } | EndpointError::Certificate { .. })) => {
                return Err(e.to_string())
            }
            Err(e) => e,
        };
        let left = patience.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(format!(
                "gave up after {} s without the scheduler at {}: {error}",
                patience.as_secs(),
                dialer.addr
            ));
        }
        warn!(%error, retry_in = ?backoff.min(left), "scheduler unreachable; retrying");
        tokio::time::sleep(backoff.min(left)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Why the connection ended, waiting (bounded) for QUIC to say.
async fn close_reason(conn: &quinn::Connection, idle: Duration) -> String {
    let err = match conn.close_reason() {
        Some(e) => e,
        None => match tokio::time::timeout(idle, conn.closed()).await {
            Ok(e) => e,
            Err(_) => {
                conn.close(quinn::VarInt::from_u32(0), b"control stream ended");
                return "the control stream ended".to_owned();
            }
        },
    };
    match err {
        quinn::ConnectionError::ApplicationClosed(c) => {
            String::from_utf8_lossy(&c.reason).into_owned()
        }
        other => other.to_string(),
    }
}

/// Routes the scheduler's messages until the stream ends.
async fn route_incoming(recv: &mut quinn::RecvStream, shared: &Mutex<Shared>) {
    while let Ok(Some(batch)) = read_frame::<Vec<ToClient>>(recv, MAX_CONTROL_FRAME).await {
        let mut s = shared.lock().expect("link lock");
        for msg in batch {
            match msg {
                ToClient::Accepted { run, tasks } => {
                    if let Some(tx) = s.accepted.remove(&run) {
                        let _ = tx.send(Ok(tasks));
                    }
                }
                ToClient::Rejected { run, error } => {
                    if let Some(tx) = s.accepted.remove(&run) {
                        let _ = tx.send(Err(error));
                    } else if let Some(r) = s.runs.remove(&run) {
                        // A resubmitted run refused by a different scheduler: it ends.
                        let text = format!("the scheduler refused the resubmitted run: {error}");
                        warn!("{text}");
                        let _ = r.events.send(RunEvent::Warning(text));
                    }
                }
                ToClient::Events(events) => {
                    for e in events {
                        if let Some(r) = s.runs.get_mut(&e.run) {
                            r.seen += 1;
                            let _ = r.events.send(RunEvent::Task(e));
                        }
                    }
                }
                ToClient::Runs { req, reply } => {
                    if let Some((_, tx)) = s.runs_requests.remove(&req) {
                        let _ = tx.send(reply);
                    } else if let Some(run) = s.reattached.remove(&req) {
                        if let RunsReply::Refused(why) = reply {
                            // Followed again after an outage, and gone (a restarted scheduler).
                            if let Some(r) = s.runs.remove(&run) {
                                let _ = r.events.send(RunEvent::Ended(why));
                            }
                        }
                    }
                }
                ToClient::Status { req, status } => {
                    if let Some(tx) = s.status_requests.remove(&req) {
                        let _ = tx.send(status);
                    }
                }
                ToClient::RunEnded { run, why } => {
                    if let Some(r) = s.runs.remove(&run) {
                        let _ = r.events.send(RunEvent::Ended(why));
                    }
                }
                ToClient::Warning(w) => {
                    warn!("{w}");
                    s.warn_runs(w);
                }
                ToClient::Progress { req, reply } => {
                    if let Some((_, tx)) = s.progress.remove(&req) {
                        let _ = tx.send(reply);
                    }
                }
                ToClient::Located {
                    req,
                    found,
                    peers,
                    inline,
                } => {
                    if let Some((_, tx)) = s.locates.remove(&req) {
                        let mut inline: HashMap<String, Vec<u8>> = inline.into_iter().collect();
                        let found = found
                            .into_iter()
                            .map(|(k, at)| {
                                let place = match at {
                                    Some((id, w)) => peers
                                        .iter()
                                        .find(|p| p.id == w)
                                        .map_or(Where::Nowhere, |p| Where::Worker(id, p.clone())),
                                    None => inline
                                        .remove(&k)
                                        .map_or(Where::Nowhere, |b| Where::Inline(b.into())),
                                };
                                (k, place)
                            })
                            .collect();
                        let _ = tx.send(found);
                    }
                }
            }
        }
    }
}
