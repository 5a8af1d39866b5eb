//! The executor threads: they run jobs the core hands over (once-cells first, each load its own
//! timed, reported step), catch panics, and report starts, results and loads on one channel in
//! the order they happen, so a load is always reported before the task that used it.

use std::sync::{Arc, Mutex};
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

/// Starts `n` executor threads; returns where to send them work.
pub(crate) fn spawn_executors(
    n: u32,
    local: &Arc<WorkerLocal>,
    out: mpsc::UnboundedSender<ThreadMsg>,
) -> std::sync::mpsc::Sender<Work> {
    let (tx, rx) = std::sync::mpsc::channel::<Work>();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..n {
        let (rx, out, local) = (rx.clone(), out.clone(), local.clone());
        std::thread::Builder::new()
            .name(format!("drover-exec-{i}"))
            .spawn(move || loop {
                let work = match rx.lock().map(|r| r.recv()) {
                    Ok(Ok(work)) => work,
                    _ => return,
                };
                let (job, result, duration_us) = run(work, &local, &out);
                if out
                    .send(ThreadMsg::Done {
                        job,
                        result,
                        duration_us,
                    })
                    .is_err()
                {
                    return;
                }
            })
            .expect("spawn executor thread");
    }
    tx
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
            call_function(f.as_ref(), &ctx, job.task.params.as_deref(), &inputs).map(Bytes::from)
        }
    };
    (job.job, result, start.elapsed().as_micros() as u64)
}
