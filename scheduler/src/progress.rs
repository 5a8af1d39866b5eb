//! The scheduler's progress store, served to clients. A thread owns the store
//! (`STATE/progress.redb`); requests queue for it, and every change queued when it wakes goes
//! into one transaction (group commit: one sync of the file for many clients' commits), whose
//! answers go out only once it returned, so nothing acknowledged can be lost. Reads are answered
//! in the same pass. A failed write (disk full, read-only) fails that pass's changes with the
//! store's error and leaves the service running.
//!
//! The core uses it too: it looks up durable graph tasks at submission and commits them when
//! they finish (those commits share the pass's transaction).

use std::sync::mpsc;

use drover_progress::{
    engine, now_ms, KeyLists, ListReply, ListRequest, Op, Outcome, Pass, Request, Store,
};
use drover_protocol::{ProgressReply, ProgressRequest, ToClient};
use tokio::sync::{mpsc as tmpsc, oneshot};

/// Most requests handled in one pass.
const MAX_PASS: usize = 4096;

/// Where a request's answer goes.
pub(crate) type Reply = tmpsc::UnboundedSender<Vec<ToClient>>;

/// A durable graph task to commit: (namespace, key, version, definition, output).
pub(crate) type Commit = (String, String, u64, u128, Option<Vec<u8>>);

/// What a lookup found, per key: not done, or done with its output (if it had one).
pub(crate) type Found = Result<Vec<Option<Option<Vec<u8>>>>, String>;

enum Job {
    /// A client's request.
    Client {
        client: u64,
        reply: Reply,
        req: u32,
        request: ProgressRequest,
    },
    /// Which of these (key, version) of a namespace are done.
    Lookup {
        namespace: String,
        keys: Vec<drover_progress::DurableTask>,
        reply: oneshot::Sender<Found>,
    },
    /// A client's connection ended: it leaves its key lists.
    ClientLeft(u64),
    /// Durable graph tasks finished: commit them.
    Commit {
        items: Vec<Commit>,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// A handle to the service thread.
#[derive(Debug, Clone)]
pub(crate) struct ProgressService {
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Job::Client { .. } => "Client",
            Job::Lookup { .. } => "Lookup",
            Job::Commit { .. } => "Commit",
            Job::ClientLeft(_) => "ClientLeft",
        })
    }
}

impl ProgressService {
    /// Starts the thread serving `store`; done keys keep outputs of at most `max_output`
    /// bytes.
    pub fn start(store: Box<dyn Store>, max_output: usize) -> ProgressService {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("drover-progress".into())
            .spawn(move || serve(rx, store.as_ref(), max_output))
            .expect("spawn the progress thread");
        ProgressService { tx }
    }

    /// Queues a request of client `client`; its answer goes to `reply`.
    pub fn submit(&self, client: u64, reply: Reply, req: u32, request: ProgressRequest) {
        let _ = self.tx.send(Job::Client {
            client,
            reply,
            req,
            request,
        });
    }

    /// Client `client` is gone: it leaves its key lists.
    pub fn client_left(&self, client: u64) {
        let _ = self.tx.send(Job::ClientLeft(client));
    }

    /// Asks which of the durable tasks `keys` of `namespace` are done.
    pub fn lookup(
        &self,
        namespace: String,
        keys: Vec<drover_progress::DurableTask>,
    ) -> oneshot::Receiver<Found> {
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(Job::Lookup {
            namespace,
            keys,
            reply,
        });
        rx
    }

    /// Commits finished durable tasks; the answer comes once they are on disk.
    pub fn commit(&self, items: Vec<Commit>) -> oneshot::Receiver<Result<(), String>> {
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(Job::Commit { items, reply });
        rx
    }
}

/// Who a durable graph task is committed by.
const GRAPH_HOLDER: &str = "scheduler";

/// What a job got from the pass's transaction.
enum Got {
    Nothing,
    Applied(Vec<Result<Outcome, String>>),
    List(ListReply),
}

/// The change a finished durable graph task makes.
fn record_request(commit: &Commit, max_output: usize) -> Request {
    let (ns, key, version, definition, output) = commit;
    Request {
        namespace: ns.clone(),
        key: key.clone(),
        op: Op::Record {
            version: *version,
            definition: *definition,
            by: GRAPH_HOLDER.to_owned(),
            // An output over the limit is kept as done without it.
            output: output.clone().filter(|o| o.len() <= max_output),
        },
    }
}

fn changes(job: &Job) -> bool {
    matches!(
        job,
        Job::Client {
            request: ProgressRequest::Apply(_) | ProgressRequest::Lists(ListRequest::Ask(_)),
            ..
        } | Job::Commit { .. }
    )
}

/// Every change of `jobs` in one transaction, in arrival order: what each got.
fn transact(
    store: &dyn Store,
    lists: &mut KeyLists,
    jobs: &[Job],
    now: drover_progress::Millis,
    max_output: usize,
) -> Result<Vec<Got>, drover_progress::StoreError> {
    if !jobs.iter().any(changes) {
        return Ok(jobs.iter().map(|_| Got::Nothing).collect());
    }
    let saved = lists.save(jobs.iter().filter_map(|j| match j {
        Job::Client {
            request: ProgressRequest::Lists(ListRequest::Ask(a)),
            ..
        } => Some(a),
        _ => None,
    }));
    let mut got: Vec<Got> = Vec::with_capacity(jobs.len());
    let result = store.transact(&mut |txn| {
        got.clear();
        let mut pass = Pass::new(txn, now, max_output)?;
        for j in jobs {
            got.push(match j {
                Job::Client {
                    request: ProgressRequest::Apply(reqs),
                    ..
                } => Got::Applied(
                    reqs.iter()
                        .map(|r| pass.apply(r))
                        .collect::<Result<_, _>>()?,
                ),
                Job::Client {
                    client,
                    request: ProgressRequest::Lists(ListRequest::Ask(a)),
                    ..
                } => Got::List(lists.ask(&mut pass, *client, a)?),
                Job::Commit { items, .. } => {
                    for c in items {
                        if let Err(e) = pass.apply(&record_request(c, max_output))? {
                            tracing::warn!(key = %c.1, error = %e, "a durable task was not recorded");
                        }
                    }
                    Got::Nothing
                }
                _ => Got::Nothing,
            });
        }
        Ok(())
    });
    match result {
        Ok(()) => Ok(got),
        Err(e) => {
            lists.restore(saved);
            Err(e)
        }
    }
}

fn serve(rx: mpsc::Receiver<Job>, store: &dyn Store, max_output: usize) {
    let mut lists = KeyLists::new();
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_PASS {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let now = now_ms();
        let got = transact(store, &mut lists, &jobs, now, max_output);
        if let Err(e) = &got {
            tracing::error!(error = %e, jobs = jobs.len(), "progress store write failed");
        }
        let failed = got.as_ref().err().map(|e| e.to_string());
        let mut got = got.unwrap_or_default().into_iter();
        for j in jobs {
            let g = got.next().unwrap_or(Got::Nothing);
            match j {
                Job::Client {
                    client,
                    reply,
                    req,
                    request,
                } => {
                    let reply_msg = match (request, g, &failed) {
                        (
                            ProgressRequest::Apply(_) | ProgressRequest::Lists(ListRequest::Ask(_)),
                            _,
                            Some(e),
                        ) => ProgressReply::Error(e.clone()),
                        (_, Got::Applied(o), _) => ProgressReply::Applied(o),
                        (_, Got::List(l), _) => ProgressReply::Lists(l),
                        (ProgressRequest::Lists(l), _, _) => match lists.answer(client, l, now) {
                            Ok(r) => ProgressReply::Lists(r),
                            Err(e) => ProgressReply::Error(e),
                        },
                        (other, _, _) => drover_progress::answer(store, other, now, max_output),
                    };
                    let _ = reply.send(vec![ToClient::Progress {
                        req,
                        reply: reply_msg,
                    }]);
                }
                Job::Commit { reply, .. } => {
                    let _ = reply.send(failed.clone().map_or(Ok(()), Err));
                }
                Job::ClientLeft(client) => lists.client_left(client),
                Job::Lookup {
                    namespace,
                    keys,
                    reply,
                } => {
                    let found =
                        engine::done_for(store, &namespace, &keys).map_err(|e| e.to_string());
                    let _ = reply.send(found);
                }
            }
        }
    }
}
