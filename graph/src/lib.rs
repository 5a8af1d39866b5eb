//! Drover's task graph: the model and builder, validation, the propagate-pools pass, the cost
//! model and export to DOT, JSON and SVG.
//!
//! Everything here is pure and deterministic: no I/O but what a caller asks for, no clocks, no
//! hash-order decisions. Tasks are named by dense [`TaskId`]s (the index of their interned key),
//! so the scheduler takes a [`Graph`] as it is.
//!
//! The flow: build a [`Graph`] (Rust API or [`Graph::from_json_str`]), [`Graph::validate`] it
//! into a [`Topology`], run [`propagate_pools`] for a [`Propagation`], and export with
//! [`export`].

#![warn(missing_docs, missing_debug_implementations)]

pub mod builder;
pub mod cost;
pub mod decode;
mod error;
pub mod export;
pub mod fingerprint;
mod ids;
mod interner;
pub mod json;
mod model;
pub mod optimise;
pub mod prefetch;
pub mod propagate;
pub mod typed;
mod validate;
pub mod wire;

pub use builder::{Handle, TaskBuilder, Untyped};
pub use cost::{TransferEstimate, DEFAULT_SIZE_HINT};
pub use drover_annotations as annotations;
pub use error::{GraphError, InvalidGraph};
pub use fingerprint::{fingerprints, Fingerprint};
pub use ids::{PoolId, TaskId};
pub use json::{GraphFile, JsonError, TaskSpec};
pub use model::{Graph, Lifetime, OnceCell, Place};
pub use propagate::{propagate_pools, propagate_pools_with, Pass, Propagation, Reason};
pub use typed::{HandleList, Loader, PerWorker, Shared, TaskFn};
pub use validate::Topology;
