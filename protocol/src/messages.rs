//! Messages. Control messages travel in batches (`Vec<M>` per frame); bulk data moves on peer
//! streams as raw bytes after a small header.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// A task's id in the scheduler: dense, never reused while the scheduler runs.
pub type TaskIdx = u32;
/// A worker's id in the scheduler.
pub type WorkerId = u32;

/// The first frame on a connection's control stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// Must equal [`crate::PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The secret token from `access.json`.
    pub token: String,
    /// Who is connecting.
    pub role: Role,
}

/// Who is connecting.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Role {
    /// A worker offering to run tasks.
    Worker(WorkerHello),
    /// A client submitting graphs.
    Client {
        /// A name for logs.
        name: String,
    },
}

/// What a worker says about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerHello {
    /// Its name (unique names help reading logs and reports).
    pub name: String,
    /// Its resources, e.g. `pool-A=1,gpu=2`, as (name, amount).
    pub resources: Vec<(String, f64)>,
    /// How many tasks it runs at once.
    pub nthreads: u32,
    /// Where peers and clients fetch its results.
    pub peer_addr: SocketAddr,
    /// The DER certificate its peer endpoint presents (pinned by fetchers).
    pub peer_cert: Vec<u8>,
    /// The functions its registry knows.
    pub functions: Vec<String>,
    /// Where it serves large results on TCP, keyed by a TLS handshake (same certificate and token), if it does.
    pub data_addr: Option<SocketAddr>,
}

/// The scheduler's answer to [`Hello`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Welcome {
    /// Accepted, with the id given to the newcomer.
    Accepted {
        /// The worker or client id.
        id: u32,
        /// Where to open the lifeline, if the scheduler offers one.
        lifeline: Option<Lifeline>,
    },
    /// Refused, and why.
    Refused {
        /// A readable reason.
        reason: String,
    },
}

/// The scheduler's offer of a lifeline: a plain TCP connection the newcomer opens to `port` on
/// the scheduler's address and keeps open for the session, its first 16 bytes the `nonce`.
/// When the newcomer's process dies its operating system closes the socket at once, so the
/// scheduler notices within moments instead of after the QUIC idle timeout (which still covers
/// machines that vanish and network cuts). It carries nothing else; the nonce is good for one
/// connection only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifeline {
    /// The scheduler's lifeline TCP port.
    pub port: u16,
    /// Identifies this session's lifeline.
    pub nonce: [u8; 16],
}

/// How to reach a worker's peer endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The worker's id.
    pub id: WorkerId,
    /// Its name.
    pub name: String,
    /// Its peer address.
    pub addr: SocketAddr,
    /// Its DER certificate.
    pub cert: Vec<u8>,
    /// Where it serves large results on TCP (keyed by a TLS handshake), if it does.
    pub data_addr: Option<SocketAddr>,
}

/// A task for a worker to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComputeTask {
    /// The scheduler's id of the task (its result is stored under it).
    pub id: TaskIdx,
    /// The task's key, for messages.
    pub key: String,
    /// The registered function.
    pub function: String,
    /// Params as JSON text, or none.
    pub params: Option<String>,
    /// Input results in order (once-cells among them).
    pub inputs: Vec<TaskIdx>,
    /// For each input the scheduler does not count as held by this worker (once-cells aside):
    /// the workers holding it, best first, one entry per holder.
    pub sources: Vec<(TaskIdx, WorkerId)>,
    /// Consumable resources held while running.
    pub resources: Vec<(String, f64)>,
    /// Higher runs first.
    pub priority: i32,
    /// A run longer than this many milliseconds fails the task.
    pub timeout_ms: Option<u64>,
    /// For a durable task: send its output with [`FromWorker::Finished`] when it is at most
    /// this many bytes (the scheduler keeps it in its progress store).
    pub report_output: Option<u64>,
    /// Inputs this same worker was given to compute before this task and had not finished
    /// when the scheduler sent it (each listed once): the task waits here for them and needs
    /// no fetch. When one of them ends without a result (it fails, times out or is given
    /// back), the worker drops this task without a report, as does the scheduler, which
    /// queues it again or fails it.
    pub after: Vec<TaskIdx>,
}

/// A once-cell as a worker needs to know it: sent once per worker before its first use there.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellSpec {
    /// The scheduler's id of the cell (tasks list it among their inputs).
    pub id: TaskIdx,
    /// Its key: the worker keeps its object under it for the process's life.
    pub key: String,
    /// The registered loader.
    pub function: String,
    /// Params as JSON text, or none.
    pub params: Option<String>,
    /// Loader attempts after a failure, within one load.
    pub retries: u32,
    /// Load now (eager), rather than when a task first needs it.
    pub load_now: bool,
}

/// Scheduler to worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToWorker {
    /// Run this task.
    Compute(ComputeTask),
    /// Drop these results: the scheduler no longer counts them as held here (a task queued
    /// here that still needs one keeps it until it starts).
    Free(Vec<TaskIdx>),
    /// These peers exist (sent on join and when workers join).
    Peers(Vec<PeerInfo>),
    /// This peer is gone.
    PeerGone(WorkerId),
    /// Fetch these results from the retiring worker `from` and keep them (they are still
    /// needed). Answered by [`FromWorker::Replicated`].
    Replicate {
        /// The retiring worker holding them.
        from: WorkerId,
        /// The results.
        ids: Vec<TaskIdx>,
    },
    /// Retirement is complete: nothing needed is held only here any more. Exit.
    Retired,
    /// Know this once-cell (and load it now if it says so). Answered by
    /// [`FromWorker::Loaded`] when a load happens.
    Cell(CellSpec),
    /// Drop these once-cells' objects (their run ended, or the client released them).
    DropCells(Vec<TaskIdx>),
    /// Hold these results (outputs of durable tasks done before, from the progress store),
    /// as if made here: sent before the tasks that need them.
    Data(Vec<(TaskIdx, Vec<u8>)>),
}

/// Worker to scheduler.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FromWorker {
    /// A task began running on an executor thread.
    Started(TaskIdx),
    /// This worker wants to leave: give it no new tasks; move what only it holds. With
    /// `successor`, a replacement process is on its way: wait for it rather than give up
    /// results when no other worker can take them.
    Retiring {
        /// A replacement is being started.
        successor: bool,
    },
    /// These tasks assigned here did not start and will not run here: the worker retires for
    /// a fresh process (its lifespan or memory limit). Sent after [`FromWorker::Retiring`];
    /// the scheduler places them elsewhere.
    Returned(Vec<TaskIdx>),
    /// Inputs fetched from other workers for a task, now held here as replicas: (input, from
    /// worker, bytes). Sent when the fetch ends, before the task's outcome.
    Fetched {
        /// The task they were fetched for.
        task: TaskIdx,
        /// (input, the worker it came from, bytes).
        inputs: Vec<(TaskIdx, WorkerId, u64)>,
        /// How long the request to the peer took, microseconds (on the first report of a
        /// request that served several tasks; 0 on the others).
        fetch_us: u64,
    },
    /// Replicas made for a [`ToWorker::Replicate`]: the ids now held here; `failed` when some
    /// could not be fetched.
    Replicated {
        /// The retiring worker they came from.
        from: WorkerId,
        /// Results now held here.
        ids: Vec<TaskIdx>,
        /// Whether some could not be fetched.
        failed: bool,
    },
    /// A task finished; its result is held here.
    Finished {
        /// The task.
        id: TaskIdx,
        /// Result size in bytes.
        size: u64,
        /// Run time in microseconds (not counting input fetches).
        duration_us: u64,
        /// The output itself, for a durable task whose output is small enough (see
        /// [`ComputeTask::report_output`]), as one run of bytes.
        #[serde(with = "serde_bytes")]
        output: Option<Vec<u8>>,
    },
    /// A task could not start: some input could be had from none of its sources. `lost` lists
    /// every (input, holder) that failed: the scheduler stops counting those copies (telling
    /// the holders to drop them), recomputes what is left without a copy, and requeues the
    /// task. A holder equal to this worker means an input the scheduler thought was here.
    InputsLost {
        /// The task.
        id: TaskIdx,
        /// (input, holder) pairs that failed.
        lost: Vec<(TaskIdx, WorkerId)>,
        /// What went wrong, for logs and, if the task gives up, its error.
        error: String,
    },
    /// A task failed.
    Failed {
        /// The task.
        id: TaskIdx,
        /// What went wrong (error message, panic payload, exit code and stderr).
        error: String,
        /// Run time in microseconds.
        duration_us: u64,
    },
    /// How the worker is doing, every few seconds: for the dashboard and `drover status`.
    Stats {
        /// Its resident memory, bytes.
        rss_bytes: u64,
        /// Microseconds spent fetching inputs since the last report.
        fetch_us: u64,
    },
    /// A once-cell load ended here (eager, or on a task's first need).
    Loaded {
        /// The cell.
        id: TaskIdx,
        /// Load time in microseconds (0 when it was already loaded in this process).
        duration_us: u64,
        /// Bytes received for it (a shared object's value; 0 for loaders).
        bytes: u64,
        /// Why it failed, if it did.
        error: Option<String>,
    },
}

/// Client to scheduler.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FromClient {
    /// Run a graph (JSON graph format). `run` is the client's own number for it.
    Submit {
        /// The client's run number.
        run: u32,
        /// The graph in the JSON graph format.
        graph_json: String,
        /// Keys whose results the client will fetch: kept until released.
        wants: Vec<String>,
    },
    /// [`FromClient::Submit`] with the graph in the binary wire form (`Graph::to_wire`), as the
    /// Rust client sends it: no JSON text to write or parse.
    SubmitWire {
        /// The client's run number.
        run: u32,
        /// The graph, `drover_graph::wire` bytes (encoded as one run of bytes, not byte by
        /// byte: the same encoding, tens of megabytes faster).
        #[serde(with = "serde_bytes")]
        graph: Vec<u8>,
        /// Keys whose results the client will fetch: kept until released.
        wants: Vec<String>,
    },
    /// Where are these results? Answered by [`ToClient::Located`] with the same `req`; a
    /// result being computed (or recomputed after a loss) is answered once it is held.
    Locate {
        /// The client's request number.
        req: u32,
        /// Keys to locate.
        keys: Vec<String>,
    },
    /// The client no longer needs these results.
    Release {
        /// Keys to release.
        keys: Vec<String>,
    },
    /// The run is over (complete, or abandoned): once-cells scoped to it are dropped when no
    /// other live run uses them.
    EndRun {
        /// The client's run number.
        run: u32,
    },
    /// Drop these once-cells on every worker now; a later need loads them again.
    ReleaseCells {
        /// Keys of once-cells.
        keys: Vec<String>,
    },
    /// A request to the progress store, answered by [`ToClient::Progress`] with the same
    /// `req` (changes once they are durable).
    Progress {
        /// The client's request number.
        req: u32,
        /// What is asked.
        request: ProgressRequest,
    },
    /// The cluster at a glance, answered by [`ToClient::Status`] with the same `req`.
    Status {
        /// The client's request number.
        req: u32,
    },
    /// A request about detached runs (runs that outlive their client), answered by
    /// [`ToClient::Runs`] with the same `req`.
    Runs {
        /// The client's request number.
        req: u32,
        /// What is asked.
        request: RunsRequest,
    },
}

/// What a client asks about detached runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RunsRequest {
    /// Submit a graph as a detached run: it runs on whether or not its client stays, and
    /// keeps its sinks' outputs until fetched and released (or the scheduler's retention time
    /// after it ends). Answered with [`RunsReply::Submitted`] or [`RunsReply::Refused`].
    Submit {
        /// The graph in the JSON graph format.
        graph_json: String,
        /// Keys whose outputs are kept (usually the sinks).
        wants: Vec<String>,
        /// A name to list it by (default: empty).
        name: String,
        /// Who submitted it, as `drover runs` shows it (e.g. `user@host`).
        by: String,
    },
    /// Follow a detached run as the client's run `run`: answered with
    /// [`RunsReply::Attached`], then its task events from the `from`th on (earlier ones
    /// included) as [`ToClient::Events`] of `run`, as they happen.
    Attach {
        /// The client's run number for it.
        run: u32,
        /// The run's id.
        id: String,
        /// Events already seen (after a reconnect): skip this many.
        from: u32,
    },
    /// List the detached runs the scheduler knows: [`RunsReply::List`].
    List,
    /// Cancel a run: its tasks not started are dropped (those another run shares go on), its
    /// outputs released; clients following it hear [`ToClient::RunEnded`].
    Cancel {
        /// The run's id.
        id: String,
    },
    /// The outputs were fetched: release them (the run stays listed until the retention time).
    Release {
        /// The run's id.
        id: String,
    },
    /// [`RunsRequest::Submit`] with the graph in the binary wire form (`Graph::to_wire`), as
    /// the Rust client and the CLI send it.
    SubmitWire {
        /// The graph, `drover_graph::wire` bytes (as one run of bytes).
        #[serde(with = "serde_bytes")]
        graph: Vec<u8>,
        /// Keys whose outputs are kept (usually the sinks).
        wants: Vec<String>,
        /// A name to list it by (default: empty).
        name: String,
        /// Who submitted it, as `drover runs` shows it (e.g. `user@host`).
        by: String,
    },
}

/// A detached run as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// Its id, e.g. `3-1f2a`.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `running`, `finished` (every task succeeded), `failed` (some task failed),
    /// `cancelled`, `released` (outputs fetched and released) or `expired` (outputs dropped
    /// at the retention time).
    pub state: String,
    /// Tasks in the run.
    pub tasks: u32,
    /// Tasks done (finished, failed or skipped).
    pub done: u32,
    /// Tasks failed.
    pub failed: u32,
    /// When it was submitted, ms since the Unix epoch (the scheduler's clock).
    pub submitted_ms: u64,
    /// When it ended (every task done, cancelled), if it did.
    pub ended_ms: Option<u64>,
    /// Who submitted it.
    pub by: String,
    /// When its outputs go if nobody fetches them, ms since the Unix epoch.
    pub expires_ms: Option<u64>,
}

/// The scheduler's answer to a [`RunsRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RunsReply {
    /// The run was accepted as a detached run.
    Submitted {
        /// Its id.
        id: String,
        /// Tasks in it.
        tasks: u32,
    },
    /// Attached: events follow.
    Attached {
        /// The run as listed.
        info: RunInfo,
        /// The keys whose outputs it keeps, in the graph's order.
        wants: Vec<String>,
    },
    /// The detached runs, oldest first.
    List(Vec<RunInfo>),
    /// Cancelled or released: the run as it is now.
    Done(RunInfo),
    /// Refused (an invalid graph, an unknown id, a run whose outputs are gone), and why.
    Refused(String),
}

pub use drover_progress::service::{ProgressReply, ProgressRequest};

/// The final state of a task, as clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskStatus {
    /// Finished; its result is held by `worker`.
    Finished,
    /// Failed, or an input failed.
    Failed,
    /// Not run: it only feeds tasks that were done before (durable tasks found done in the
    /// progress store), and nothing else of the run needs it.
    Skipped,
}

/// A task's state change, streamed to the clients that submitted it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    /// The client's run.
    pub run: u32,
    /// The task key.
    pub key: String,
    /// What happened.
    pub status: TaskStatus,
    /// The worker it ran on (none when an input failed first).
    pub worker: Option<String>,
    /// The pool the scheduler placed it in (none when unrestricted).
    pub pool: Option<String>,
    /// Output bytes.
    pub output_bytes: u64,
    /// Run time in microseconds.
    pub duration_us: u64,
    /// Input bytes moved into it from other workers.
    pub moved_bytes: u64,
    /// The part of `moved_bytes` that came from workers in other pools.
    pub cross_pool_bytes: u64,
    /// The error, for failed tasks.
    pub error: Option<String>,
    /// How many times it was started (more than 1 when re-run after a worker loss or retry).
    pub attempts: u32,
    /// A once-cell load on `worker` (one event per worker that loaded it), not a task run.
    pub load: bool,
    /// Done before this run was submitted (by an earlier run with the same key and definition):
    /// reused, not run again. Its result may have been freed since if nothing of this run
    /// needs it.
    pub reused: bool,
    /// A durable task found done in the progress store: not run again, its stored output (if
    /// it had one small enough) given to what needs it.
    pub done_before: bool,
}

/// Scheduler to client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToClient {
    /// The run was accepted: this many tasks are in it.
    Accepted {
        /// The client's run.
        run: u32,
        /// Number of tasks.
        tasks: u32,
    },
    /// The run was refused (invalid graph); nothing changed on the scheduler.
    Rejected {
        /// The client's run.
        run: u32,
        /// Why.
        error: String,
    },
    /// Tasks finished or failed.
    Events(Vec<TaskEvent>),
    /// Something the user should know (e.g. a pool has no workers).
    Warning(String),
    /// The progress store's answer to [`FromClient::Progress`].
    Progress {
        /// The request answered.
        req: u32,
        /// The answer.
        reply: ProgressReply,
    },
    /// The answer to [`FromClient::Runs`].
    Runs {
        /// The request answered.
        req: u32,
        /// The answer.
        reply: RunsReply,
    },
    /// The answer to [`FromClient::Status`].
    Status {
        /// The request answered.
        req: u32,
        /// The cluster.
        status: Box<crate::ClusterStatus>,
    },
    /// A detached run followed as the client's run `run` ended before its tasks did
    /// (cancelled); no more events come for it.
    RunEnded {
        /// The client's run.
        run: u32,
        /// Why.
        why: String,
    },
    /// Where results are: key, and its id with the holder (none if not held).
    Located {
        /// The request answered.
        req: u32,
        /// Per key, its id and holder, or none if it is not held (failed, released, unknown).
        found: Vec<(String, Option<(TaskIdx, WorkerId)>)>,
        /// How to reach each holder named in `found`, once each.
        peers: Vec<PeerInfo>,
        /// Outputs the scheduler has itself (of durable tasks done before, from its progress
        /// store), for keys `found` names no holder of.
        inline: Vec<(String, Vec<u8>)>,
    },
}

/// The first frame on a peer fetch stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchRequest {
    /// The secret token.
    pub token: String,
    /// Results wanted, in order.
    pub ids: Vec<TaskIdx>,
    /// The fetcher can take large results over the holder's data path: the holder may answer
    /// [`FetchReply::Bulk`] for them instead of sending them on this stream.
    pub bulk: bool,
}

/// Header before each result on a peer fetch stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FetchReply {
    /// `len` raw bytes follow.
    Data {
        /// The result.
        id: TaskIdx,
        /// Its size.
        len: u64,
    },
    /// Held here, and large: fetch it on the data path (TCP, keyed by TLS) instead.
    Bulk {
        /// The result.
        id: TaskIdx,
        /// Its size.
        len: u64,
    },
    /// Not held here.
    Missing {
        /// The result.
        id: TaskIdx,
    },
    /// The request was refused (bad token); the stream ends.
    Refused {
        /// Why.
        reason: String,
    },
}
