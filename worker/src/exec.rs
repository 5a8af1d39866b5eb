//! The executor threads: they run jobs the core hands over (once-cells first, each load its own
//! timed, reported step), catch panics, and report starts, results and loads on one channel in
//! the order they happen, so a load is always reported before the task that used it.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use drover_graph::decode::Object;
use drover_protocol::TaskIdx;
use tokio::sync::mpsc;

use crate::cells::CellSlot;
use crate::context::{call_function, run_loader, LoaderFn, RawFn, TaskContext};
use crate::core::{Job, JobId};
use crate::local::WorkerLocal;

/// A once-cell input of a job, ready to load: its slot, loader and retries.
#[derive(Clone)]
pub(crate) struct CellInput {
    pub slot: Arc<CellSlot>,
    pub loader: Option<Arc<LoaderFn>>,
    pub retries: u32,
}

/// A job with everything its thread needs.
pub(crate) struct Work {
    pub job: Job,
    pub func: Option<Arc<RawFn>>,
    /// Input bytes in order (empty for once-cells), or why they could not be had.
    pub inputs: Result<Vec<Bytes>, String>,
    /// Per once-cell input: (position, id, what loads it).
    pub cells: Vec<(usize, TaskIdx, CellInput)>,
}

/// What the threads report.
pub(crate) enum ThreadMsg {
    /// A job began.
    Started(JobId),
    /// A job ended.
    Done {
        job: JobId,
        result: Result<Bytes, String>,
        duration_us: u64,
    },
    /// A once-cell load ended.
    Loaded {
        cell: TaskIdx,
        duration_us: u64,
        bytes: u64,
        error: Option<String>,
    },
}

/// Loads `cell` through its slot (once per process), reporting a load this call ran.
pub(crate) fn load_cell(
    cell: TaskIdx,
    input: &CellInput,
    local: &Arc<WorkerLocal>,
    out: &mpsc::UnboundedSender<ThreadMsg>,
) -> Result<Object, String> {
    let slot = &input.slot;
    slot.get_reporting(
        || {
            let ctx = TaskContext::for_worker(&slot.key, local);
            run_loader(
                input.loader.as_deref(),
                &slot.function,
                &ctx,
                slot.params(),
                input.retries,
            )
        },
        |us, error| {
            let _ = out.send(ThreadMsg::Loaded {
                cell,
                duration_us: us,
                bytes: slot.wire_bytes(),
                error: error.map(str::to_owned),
            });
        },
    )
    .map(|(object, _)| object)
    .map_err(|(e, _)| {
        format!(
            "once-cell {:?} failed to load on worker {:?}: {e}",
            slot.key,
            local.name()
        )
    })
}

/// Jobs waiting for a thread, handed over in batches: a batch costs one lock and at most one
/// wake per idle thread, where a channel woke a thread that had just drained it once per job.
#[derive(Default)]
struct JobQueue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Work>,
    /// Threads waiting for a job.
    idle: usize,
}

impl JobQueue {
    fn push(&self, batch: Vec<Work>) {
        let n = batch.len();
        let mut s = self.state.lock().expect("job queue lock");
        s.jobs.extend(batch);
        let idle = s.idle;
        drop(s);
        if n >= idle {
            self.ready.notify_all();
        } else {
            (0..n).for_each(|_| self.ready.notify_one());
        }
    }

    fn pop(&self) -> Work {
        let mut s = self.state.lock().expect("job queue lock");
        loop {
            if let Some(w) = s.jobs.pop_front() {
                return w;
            }
            s.idle += 1;
            s = self.ready.wait(s).expect("job queue lock");
            s.idle -= 1;
        }
    }
}

/// The executor threads: where to send work, and how to replace a thread given up on.
#[derive(Clone)]
pub(crate) struct Executors {
    queue: Arc<JobQueue>,
    out: mpsc::UnboundedSender<ThreadMsg>,
    local: Arc<WorkerLocal>,
    jobs: Arc<Mutex<JobsOnThreads>>,
    next: Arc<std::sync::atomic::AtomicU32>,
}

/// Which jobs run on the threads, and which of those threads were given up.
#[derive(Default)]
struct JobsOnThreads {
    running: std::collections::HashSet<JobId>,
    given_up: std::collections::HashSet<JobId>,
}

impl Executors {
    /// Starts `n` executor threads.
    pub(crate) fn start(
        n: u32,
        local: &Arc<WorkerLocal>,
        out: mpsc::UnboundedSender<ThreadMsg>,
    ) -> Executors {
        let e = Executors {
            queue: Arc::default(),
            out,
            local: local.clone(),
            jobs: Arc::default(),
            next: Arc::default(),
        };
        for _ in 0..n {
            e.spawn_thread();
        }
        e
    }

    /// Hands these jobs to the threads, first to last.
    pub(crate) fn send(&self, batch: Vec<Work>) {
        if !batch.is_empty() {
            self.queue.push(batch);
        }
    }

    /// The thread running `job` is given up: another takes its place, and it ends once its
    /// function returns. `false` if the job had returned meanwhile (nothing to replace).
    pub(crate) fn give_up(&self, job: JobId) -> bool {
        let mut j = self.jobs.lock().expect("executor lock");
        if !j.running.contains(&job) {
            return false;
        }
        j.given_up.insert(job);
        drop(j);
        self.spawn_thread();
        true
    }

    fn spawn_thread(&self) {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let e = self.clone();
        std::thread::Builder::new()
            .name(format!("drover-exec-{i}"))
            .spawn(move || loop {
                let work = e.queue.pop();
                let id = work.job.job;
                e.jobs.lock().expect("executor lock").running.insert(id);
                let (job, result, duration_us) = run(work, &e.local, &e.out);
                let given_up = {
                    let mut j = e.jobs.lock().expect("executor lock");
                    j.running.remove(&id);
                    j.given_up.remove(&id)
                };
                let sent = e.out.send(ThreadMsg::Done {
                    job,
                    result,
                    duration_us,
                });
                if sent.is_err() || given_up {
                    // Replaced already: this thread ends here.
                    return;
                }
            })
            .expect("spawn executor thread");
    }
}

fn run(
    work: Work,
    local: &Arc<WorkerLocal>,
    out: &mpsc::UnboundedSender<ThreadMsg>,
) -> (JobId, Result<Bytes, String>, u64) {
    let Work {
        job,
        func,
        inputs,
        cells,
    } = work;
    // Once-cells first: a load is its own step, reported and timed apart.
    let mut objects: Vec<Option<Object>> = Vec::new();
    let mut cell_error = None;
    if !cells.is_empty() {
        objects = vec![None; job.task.inputs.len()];
        for (pos, id, input) in &cells {
            match load_cell(*id, input, local, out) {
                Ok(o) => objects[*pos] = Some(o),
                Err(e) => {
                    cell_error = Some(e);
                    break;
                }
            }
        }
    }
    let start = Instant::now();
    let _ = out.send(ThreadMsg::Started(job.job));
    let timeout = job.task.timeout_ms.map(Duration::from_millis);
    let result = match (func, inputs, cell_error) {
        (None, _, _) => Err(format!(
            "worker {:?} has no function {:?}",
            local.name(),
            job.task.function
        )),
        (_, Err(e), _) | (_, _, Some(e)) => Err(e),
        (Some(f), Ok(inputs), None) => {
            let ctx = TaskContext {
                key: job.task.key.clone(),
                worker_id: local.id(),
                worker_name: local.name().to_owned(),
                deadline: timeout.map(|t| start + t),
                timeout,
                worker: local.clone(),
                objects,
            };
            call_function(f.as_ref(), &ctx, job.task.params.as_deref(), &inputs)
                .map(crate::buffers::into_bytes)
        }
    };
    (job.job, result, start.elapsed().as_micros() as u64)
}
