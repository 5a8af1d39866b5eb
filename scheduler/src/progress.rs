//! The scheduler's progress store, served to clients. A thread owns the store
//! (`STATE/progress.redb`); requests queue for it, and every change queued when it wakes goes
//! into one transaction (group commit: one sync of the file for many clients' commits), whose
//! answers go out only once it returned, so nothing acknowledged can be lost. Reads are answered
//! in the same pass. A failed write (disk full, read-only) fails that pass's changes with the
//! store's error and leaves the service running.

use std::sync::mpsc;

use drover_progress::{engine, now_ms, Request, Store};
use drover_protocol::{ProgressReply, ProgressRequest, ToClient};
use tokio::sync::mpsc as tmpsc;

/// Most requests handled in one pass.
const MAX_PASS: usize = 4096;

/// Where a request's answer goes.
pub(crate) type Reply = tmpsc::UnboundedSender<Vec<ToClient>>;

struct Job {
    reply: Reply,
    req: u32,
    request: ProgressRequest,
}

/// A handle to the service thread.
#[derive(Debug, Clone)]
pub(crate) struct ProgressService {
    tx: mpsc::Sender<Job>,
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
        let _ = self.tx.send(Job {
            reply,
            req,
            request,
        });
    }
}

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
            if let ProgressRequest::Apply(reqs) = &j.request {
                changes.extend(reqs.iter().cloned());
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
            let reply = match j.request {
                ProgressRequest::Apply(_) => match &applied {
                    Ok(outcomes) => ProgressReply::Applied(outcomes[start..end].to_vec()),
                    Err(e) => ProgressReply::Error(e.to_string()),
                },
                other => drover_progress::answer(store, other, now, max_output),
            };
            let _ = j.reply.send(vec![ToClient::Progress { req: j.req, reply }]);
        }
    }
}
