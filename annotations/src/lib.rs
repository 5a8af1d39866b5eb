//! Annotations that say where and how a Drover task may run.
//!
//! * [`Pool`]: a named group of workers ("run this where dataset A lives"). A worker is in pool `X`
//!   when it has the resource `pool-X` > 0.
//! * [`Placement`]: a task is *pinned* to a pool, explicitly allowed to run *anywhere*, or *free*
//!   (the propagate-pools pass decides).
//! * [`Resources`]: named amounts such as `pool-A=1,gpu=2`, parsed strictly.
//! * [`Annotations`]: the per-task settings (placement, resources, priority, retries, size hint),
//!   each optional so that scoped annotations compose field by field, and [`ScopeStack`], the
//!   nesting of scopes where the innermost setting wins.
//!
//! This crate is pure data and validation; it depends on nothing else in Drover.

#![warn(missing_docs, missing_debug_implementations)]

mod error;
mod name;
mod resources;
mod scope;

pub use error::AnnotationError;
pub use name::{validate_name, NameKind, Pool, POOL_RESOURCE_PREFIX};
pub use resources::Resources;
pub use scope::{Annotations, Placement, ScopeStack};
