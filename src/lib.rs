//! # Drover
//!
//! A distributed task-graph scheduler with worker pools. This facade crate re-exports what a
//! user needs to build graphs:
//!
//! * [`Graph`] and its builder ([`Graph::task`], [`Graph::call`], scoped annotations
//!   [`Graph::pool`], [`Graph::any_pool`], [`Graph::annotate`]), typed [`Handle`]s;
//! * the JSON graph format ([`GraphFile`], [`Graph::from_json_str`]);
//! * validation ([`Graph::validate`]) and the propagate-pools pass ([`propagate_pools`]);
//! * export to DOT, JSON and SVG ([`export`]);
//! * annotations ([`Pool`], [`Resources`], [`Annotations`]);
//! * running graphs: [`Client`] (connect by access file, submit, stream events, fetch outputs,
//!   [`Report`]), [`LocalCluster`] (scheduler and workers in this process, over loopback QUIC),
//!   [`Registry`] and [`run_worker`] to make a program a worker, or
//!   [`run_as_worker_if_asked`] for a program that is its own worker;
//! * durable progress for keyed work ([`progress`]): claims with leases, exactly-once commits,
//!   `run_once`, on the scheduler or an embedded store;
//! * crash-friendly map-reduce over a big list of inputs ([`mapreduce`]), on durable tasks;
//! * per-worker state: once-cells ([`Graph::once`], [`Loader`], [`PerWorker`]), shared objects
//!   ([`Graph::share`], [`Shared`]), worker state, identity and hooks ([`WorkerLocal`],
//!   [`Registry::on_worker_start`]).
//!
//! See README.md for the JSON format and the `drover` command.

#![warn(missing_docs, missing_debug_implementations)]

pub mod client;
pub mod local;
pub mod mapreduce;
pub mod program;
pub mod progress;
pub mod worker_mode;

pub use client::{
    BlockingClient, BlockingRun, Client, ClientError, ClientOptions, Report, Run, RunEvent,
    RunInfo, RunInsights, TaskReport,
};
pub use drover_annotations::{AnnotationError, Annotations, Placement, Pool, Resources};
pub use drover_graph::decode::{DecodeInput, DecodeInputs};
pub use drover_graph::export;
pub use drover_graph::optimise;
pub use drover_graph::{
    propagate_pools, propagate_pools_with, Graph, GraphError, GraphFile, Handle, HandleList,
    InvalidGraph, JsonError, Pass, Place, PoolId, Propagation, Reason, TaskBuilder, TaskFn, TaskId,
    TaskSpec, Topology, TransferEstimate, Untyped, DEFAULT_SIZE_HINT,
};
pub use drover_graph::{Lifetime, Loader, OnceCell, PerWorker, Shared};
pub use drover_protocol::{AccessFile, ClusterStatus, TaskEvent, TaskStatus};
pub use drover_worker::{
    retire_on_sigterm, run_worker, Raw, Registry, TaskContext, TaskError, TaskResult, WorkerConfig,
    WorkerLocal,
};
pub use local::{ClusterSpec, LocalCluster};
pub use mapreduce::{JobOutput, JobReport, MapReduce, MapReduceJob};
pub use worker_mode::run_as_worker_if_asked;

/// Logs to stderr: `RUST_LOG` when set (e.g. `RUST_LOG=drover=debug`), else `default_filter`
/// (e.g. `"warn"` or `"info"`). Calling it twice keeps the first.
pub fn init_logging(default_filter: &str) {
    drover_protocol::logging::init(default_filter)
}

/// A graph that has been validated and propagated: everything a picture or a scheduler needs.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The graph.
    pub graph: Graph,
    /// Its topological order and consumers.
    pub topology: Topology,
    /// The pool of every task and why.
    pub propagation: Propagation,
}

impl Planned {
    /// Validates `graph` and runs the propagate-pools pass over it.
    pub fn new(graph: Graph) -> Result<Planned, InvalidGraph> {
        let topology = graph.validate()?;
        let propagation = propagate_pools(&graph, &topology);
        Ok(Planned {
            graph,
            topology,
            propagation,
        })
    }

    /// Renders the graph with its pools in `format`.
    pub fn export(&self, format: export::Format, options: export::ExportOptions) -> String {
        export::export(
            &self.graph,
            &self.topology,
            &self.propagation,
            format,
            options,
        )
    }

    /// Writes an SVG picture of the graph with its pools to `path`.
    pub fn export_svg(&self, path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
        std::fs::write(path, self.export(export::Format::Svg, Default::default()))
    }

    /// The pool name of `task` after the pass, if any.
    pub fn pool_of<T>(&self, task: Handle<T>) -> Option<&str> {
        self.propagation.pool_name(&self.graph, task.id())
    }

    /// Why `task` has its pool.
    pub fn reason_of<T>(&self, task: Handle<T>) -> Reason {
        self.propagation.reason(task.id())
    }
}

/// The README's Rust snippets, compiled (and, unless marked `no_run`, run) as doctests so the
/// README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
