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

use drover_progress::{engine, now_ms, Op, Request, Store};
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

    /// Queues a client's request; its answer goes to `reply`.
    pub fn submit(&self, reply: Reply, req: u32, request: ProgressRequest) {
        let _ = self.tx.send(Job::Client {
            reply,
            req,
            request,
        });
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

fn serve(rx: mpsc::Receiver<Job>, store: &dyn Store, max_output: usize) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_PASS {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        // Every change of the pass in one transaction, in arrival order.
        let mut changes: Vec<Request> = Vec::new();
        let mut spans: Vec<(usize, usize)> = Vec::with_capacity(jobs.len());
        for j in &jobs {
            let start = changes.len();
            match j {
                Job::Client {
                    request: ProgressRequest::Apply(reqs),
                    ..
                } => changes.extend(reqs.iter().cloned()),
                Job::Commit { items, .. } => {
                    changes.extend(items.iter().map(|(ns, key, version, definition, output)| {
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
                    }))
                }
                _ => {}
            }
            spans.push((start, changes.len()));
        }
        let now = now_ms();
        let applied = if changes.is_empty() {
            Ok(Vec::new())
        } else {
            engine::apply(store, &changes, now, max_output)
        };
        if let Err(e) = &applied {
            tracing::error!(error = %e, changes = changes.len(), "progress store write failed");
        }
        for (j, (start, end)) in jobs.into_iter().zip(spans) {
            match j {
                Job::Client {
                    reply,
                    req,
                    request,
                } => {
                    let reply_msg = match request {
                        ProgressRequest::Apply(_) => match &applied {
                            Ok(outcomes) => ProgressReply::Applied(outcomes[start..end].to_vec()),
                            Err(e) => ProgressReply::Error(e.to_string()),
                        },
                        other => drover_progress::answer(store, other, now, max_output),
                    };
                    let _ = reply.send(vec![ToClient::Progress {
                        req,
                        reply: reply_msg,
                    }]);
                }
                Job::Commit { reply, .. } => {
                    let _ = reply.send(applied.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                }
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
