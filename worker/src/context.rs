//! What a running task or loader sees ([`TaskContext`]), the shapes of function and loader
//! bodies, and how their failures read: a panic's payload, a timeout.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use drover_graph::decode::Object;

use crate::local::WorkerLocal;

/// What a running task can see of its worker.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// The task's key.
    pub key: String,
    /// The worker's id in the scheduler.
    pub worker_id: u32,
    /// The worker's name.
    pub worker_name: String,
    /// When the task's timeout expires, if it has one: long-running functions should stop by
    /// then (the worker reports the task failed at that moment either way).
    pub deadline: Option<std::time::Instant>,
    /// The task's timeout, if any (`deadline` is its start plus this).
    pub timeout: Option<std::time::Duration>,
    /// The worker: its identity (id, name, pools, resources), its state, its once-cells.
    pub worker: Arc<WorkerLocal>,
    /// Per input, in order: the worker's object for once-cell and shared-object inputs (their
    /// bytes are empty); empty when the task has none.
    pub objects: Vec<Option<Object>>,
}

impl TaskContext {
    /// A context outside any worker, for calling task functions directly (tests, tools).
    pub fn standalone(key: &str) -> TaskContext {
        TaskContext::for_worker(
            key,
            &Arc::new(WorkerLocal::new(
                "standalone",
                drover_annotations::Resources::new(),
            )),
        )
    }

    /// A context on `worker` with no deadline and no objects (a loader's).
    pub fn for_worker(key: &str, worker: &Arc<WorkerLocal>) -> TaskContext {
        TaskContext {
            key: key.to_owned(),
            worker_id: worker.id(),
            worker_name: worker.name().to_owned(),
            deadline: None,
            timeout: None,
            worker: worker.clone(),
            objects: Vec::new(),
        }
    }

    /// The object of input `i` as a `T`, for once-cell and shared-object inputs (`None` if
    /// input `i` has no object or it is not a `T`).
    pub fn object_as<T: Send + Sync + 'static>(&self, i: usize) -> Option<Arc<T>> {
        self.object(i).and_then(|o| o.clone().downcast::<T>().ok())
    }

    /// The object of input `i`, for once-cell and shared-object inputs.
    pub fn object(&self, i: usize) -> Option<&Object> {
        self.objects.get(i).and_then(Option::as_ref)
    }
}

/// A function body: params JSON (or none), input bytes in order → output bytes or an error.
pub type RawFn =
    dyn Fn(&TaskContext, Option<&str>, &[Bytes]) -> Result<Vec<u8>, String> + Send + Sync;

/// A once-cell loader body: params JSON (or none) → the object or an error.
pub type LoaderFn = dyn Fn(&TaskContext, Option<&str>) -> Result<Object, String> + Send + Sync;

/// A panic's payload as text.
pub fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}

/// How a timeout is reported, by the worker or by a function that stops itself at its deadline.
pub fn timeout_message(timeout: Duration) -> String {
    format!("task timed out after {} s", timeout.as_secs_f64())
}

/// Runs a task function, turning a panic into an error.
pub fn call_function(
    f: &RawFn,
    ctx: &TaskContext,
    params: Option<&str>,
    inputs: &[Bytes],
) -> Result<Vec<u8>, String> {
    match catch_unwind(AssertUnwindSafe(|| f(ctx, params, inputs))) {
        Ok(r) => r,
        Err(p) => Err(format!("task panicked: {}", panic_message(p))),
    }
}

/// Runs a loader up to `1 + retries` times until it succeeds; a panic is a failed attempt. With
/// no loader, says the worker has none by that name.
pub fn run_loader(
    loader: Option<&LoaderFn>,
    function: &str,
    ctx: &TaskContext,
    params: Option<&str>,
    retries: u32,
) -> Result<Object, String> {
    let Some(loader) = loader else {
        return Err(format!(
            "worker {:?} has no loader {function:?}",
            ctx.worker_name
        ));
    };
    let mut result = Err(String::new());
    for _ in 0..=retries {
        result = match catch_unwind(AssertUnwindSafe(|| loader(ctx, params))) {
            Ok(r) => r,
            Err(p) => Err(format!("loader panicked: {}", panic_message(p))),
        };
        if result.is_ok() {
            break;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn loaders_retry_and_panics_are_failures() {
        let ctx = TaskContext::standalone("m");
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let flaky = move |_: &TaskContext, _: Option<&str>| -> Result<Object, String> {
            if c.fetch_add(1, Ordering::SeqCst) % 3 < 2 {
                Err("flaky disk".to_owned())
            } else {
                Ok(Arc::new(()) as Object)
            }
        };
        assert_eq!(
            run_loader(Some(&flaky), "l", &ctx, None, 0).unwrap_err(),
            "flaky disk"
        );
        // Two retries: the third attempt of this call succeeds.
        assert!(run_loader(Some(&flaky), "l", &ctx, None, 2).is_ok());
        let panicky = |_: &TaskContext, _: Option<&str>| -> Result<Object, String> {
            panic!("no model file")
        };
        let err = run_loader(Some(&panicky), "l", &ctx, None, 0).unwrap_err();
        assert_eq!(err, "loader panicked: no model file");
        let err = run_loader(None, "missing", &ctx, None, 0).unwrap_err();
        assert!(err.contains("has no loader \"missing\""), "{err}");
        let boom = |_: &TaskContext, _: Option<&str>, _: &[Bytes]| -> Result<Vec<u8>, String> {
            panic!("boom")
        };
        assert_eq!(
            call_function(&boom, &ctx, None, &[]).unwrap_err(),
            "task panicked: boom"
        );
    }
}
