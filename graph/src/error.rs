//! Errors of graph building and validation. Each names the task keys involved.

use std::fmt;

use drover_annotations::AnnotationError;

/// One thing wrong with a graph.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GraphError {
    /// Two tasks have the same key.
    #[error("duplicate key {key:?}: two tasks have this key")]
    DuplicateKey {
        /// The key given twice.
        key: String,
    },
    /// A task names an input that no task in the graph has as its key.
    #[error("task {task:?} has unknown input {input:?}: no task has that key")]
    UnknownInput {
        /// The task that names the input.
        task: String,
        /// The missing key.
        input: String,
    },
    /// The graph has a cycle; `keys` lists it in dependency order, the first key repeated last.
    #[error("cycle: {}", keys.join(" -> "))]
    Cycle {
        /// Keys on the cycle, each an input of the next, the first repeated at the end.
        keys: Vec<String>,
    },
    /// A task key is empty.
    #[error("a task has an empty key (function {function:?})")]
    EmptyKey {
        /// The function of the task, to help find it.
        function: String,
    },
    /// A task's function name is empty.
    #[error("task {task:?} has an empty function name")]
    EmptyFunction {
        /// The task.
        task: String,
    },
    /// A task's pool name is empty or malformed.
    #[error("task {task:?}: {error}")]
    BadPool {
        /// The task.
        task: String,
        /// What was wrong.
        error: AnnotationError,
    },
    /// A pool scope was opened with an empty or malformed pool name.
    #[error("pool scope {pool:?}: {error}")]
    BadScopePool {
        /// The name as given.
        pool: String,
        /// What was wrong.
        error: AnnotationError,
    },
    /// A task's resources are malformed (bad name, negative or non-numeric amount).
    #[error("task {task:?} has bad resources: {error}")]
    BadResources {
        /// The task.
        task: String,
        /// What was wrong.
        error: AnnotationError,
    },
    /// A task lists a `pool-X` resource; pools are set with the pool annotation instead.
    #[error(
        "task {task:?} lists resource {resource:?}: pin the task with \"pool\": {pool:?} instead"
    )]
    PoolResourceOnTask {
        /// The task.
        task: String,
        /// The resource name, e.g. `pool-A`.
        resource: String,
        /// The pool it names, e.g. `A`.
        pool: String,
    },
    /// A task is both pinned to a pool and marked any-pool.
    #[error("task {task:?} has both \"pool\": {pool:?} and \"any_pool\": true; choose one")]
    PoolAndAnyPool {
        /// The task.
        task: String,
        /// The pool it was pinned to.
        pool: String,
    },
    /// A once-cell lists inputs: its loader takes params only.
    #[error("once-cell {task:?} has inputs: a loader takes params only")]
    OnceCellWithInputs {
        /// The once-cell.
        task: String,
    },
    /// A once-cell asks for resources: loads run outside the task slots.
    #[error("once-cell {task:?} asks for resources: loads do not hold task resources")]
    OnceCellWithResources {
        /// The once-cell.
        task: String,
    },
    /// A task cannot run where a once-cell it uses loads.
    #[error("task {task:?} uses once-cell {cell:?}, which loads only in pool {cell_pool:?}, but {conflict}")]
    OnceCellPoolConflict {
        /// The task.
        task: String,
        /// The once-cell.
        cell: String,
        /// The once-cell's pool.
        cell_pool: String,
        /// What the task says instead.
        conflict: String,
    },
    /// A task's timeout is zero, negative or not finite.
    #[error("task {task:?} has timeout {seconds}: it must be a positive number of seconds")]
    BadTimeout {
        /// The task.
        task: String,
        /// The timeout given, in seconds.
        seconds: f64,
    },
    /// A task's params could not be serialised to JSON.
    #[error("task {task:?}: params cannot be serialised: {error}")]
    BadParams {
        /// The task (its function name when the key was to be derived).
        task: String,
        /// The serialiser's message.
        error: String,
    },
    /// A handle from another graph was used as an input.
    #[error("task {task:?} uses a handle from another graph as an input")]
    ForeignHandle {
        /// The task.
        task: String,
    },
}

/// All that is wrong with a graph, in a deterministic order: build errors in the order tasks
/// were added, then unknown inputs, then (only if there were no others) a cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidGraph {
    /// The errors; never empty.
    pub errors: Vec<GraphError>,
}

impl InvalidGraph {
    /// How many errors are printed before "and N more".
    pub const SHOWN: usize = 20;
}

impl fmt::Display for InvalidGraph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().take(Self::SHOWN).enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        if self.errors.len() > Self::SHOWN {
            write!(f, "\n... and {} more", self.errors.len() - Self::SHOWN)?;
        }
        Ok(())
    }
}

impl std::error::Error for InvalidGraph {}

impl From<GraphError> for InvalidGraph {
    fn from(e: GraphError) -> InvalidGraph {
        InvalidGraph { errors: vec![e] }
    }
}
