//! Drover's worker: runs tasks the scheduler assigns, keeps their results, and serves them to
//! peers and clients.
//!
//! * [`core`]: the worker's decisions as a pure state machine (queueing, resources, what to
//!   fetch and from whom, what to keep and free, timeouts, retirement, what to report).
//! * [`context`]: what a running task sees ([`TaskContext`]) and how failures read.
//! * [`registry`]: named task functions, typed (serde params, postcard-encoded inputs and
//!   outputs) or raw (bytes in, bytes out).
//! * [`builtins`]: the stock functions (`noop`, `sleep`, `bytes`, `concat`, `len`, `command`).
//! * [`store`]: results held here, shared byte buffers.
//! * [`local`]: what a worker keeps for itself: identity, worker state, once-cells (the
//!   single-flight loading lives in `cells`).
//! * [`peer`]: the fetch protocol, server and client side, used by peers and clients alike.
//! * [`runtime`]: the shell around the core: connect, run threads and fetches, report. A user's
//!   program becomes a worker by handing its own [`Registry`] to [`runtime::run_worker`].
//!
//! Modules depend downwards only: `cells` ← `local` ← `context` ← `registry` ← `builtins`;
//! `core` stands alone (protocol types only); `exec`, `peer` and `runtime` are the shell.

#![warn(missing_docs, missing_debug_implementations)]

pub mod buffers;
pub mod builtins;
mod cells;
pub mod context;
pub mod core;
mod exec;
mod guard;
pub mod local;
pub mod mapreduce;
pub mod peer;
pub mod registry;
pub mod runtime;
pub mod shell_job;
pub mod store;
pub mod supervise;

pub use local::WorkerLocal;
pub use registry::{Raw, Registry, TaskContext, TaskError, TaskResult};
pub use runtime::{
    resident_memory, retire_on_sigterm, run_worker, run_worker_notify, run_worker_reconnecting,
    Stopped, WorkerConfig, WorkerError,
};
