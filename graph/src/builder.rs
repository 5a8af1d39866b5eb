//! The Rust graph-building API: [`Graph::task`], [`Graph::call`], typed [`Handle`]s and scoped
//! annotations ([`Graph::pool`], [`Graph::any_pool`], [`Graph::annotate`]).
//!
//! Mistakes that Rust's types cannot catch (a malformed pool name, a duplicate key) are recorded
//! and all reported by [`Graph::validate`], exactly as for a JSON file, so building never needs
//! `?` on every line.
//!
//! ```
//! use drover_graph::{Graph, propagate_pools, Reason};
//!
//! let mut g = Graph::new();
//! let a = g.pool("A", |g| g.task("load", &()).key("a").size_hint(800).add());
//! let b = g.pool("B", |g| g.task("load", &()).key("b").size_hint(80).add());
//! let both = g.task("combine", &()).input(a).input(b).add();
//! let topo = g.validate().unwrap();
//! let p = propagate_pools(&g, &topo);
//! assert_eq!(p.pool_name(&g, both.id()), Some("A")); // 800 bytes in A beat 80 in B
//! assert_eq!(p.reason(both.id()), Reason::Forward);
//! ```

use std::fmt;
use std::marker::PhantomData;

use drover_annotations::{Annotations, Placement, Pool, Resources, POOL_RESOURCE_PREFIX};
use serde::Serialize;

use crate::error::GraphError;
use crate::model::{Lifetime, NewTask, OnceCell, Place};
use crate::typed::{HandleList, Loader, PerWorker, Shared, TaskFn};
use crate::{Graph, TaskId};

/// Marks a handle whose output type is not known at compile time (a task added by function
/// name with [`Graph::task`]); its output is plain bytes.
#[derive(Debug, Clone, Copy)]
pub enum Untyped {}

/// A typed reference to a task of one graph. `T` is the task's output type, so that typed
/// functions ([`Graph::call`]) accept only inputs of the types they take.
pub struct Handle<T = Untyped> {
    id: TaskId,
    graph: u64,
    _output: PhantomData<fn() -> T>,
}

impl<T> Handle<T> {
    /// The task's dense id in its graph.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Forgets the output type.
    pub fn untyped(self) -> Handle<Untyped> {
        Handle {
            id: self.id,
            graph: self.graph,
            _output: PhantomData,
        }
    }

    /// Asserts an output type for this handle (for a task added by name whose function the
    /// caller knows).
    pub fn typed<U>(self) -> Handle<U> {
        Handle {
            id: self.id,
            graph: self.graph,
            _output: PhantomData,
        }
    }
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Handle<T> {}
impl<T> PartialEq for Handle<T> {
    fn eq(&self, o: &Self) -> bool {
        self.id == o.id && self.graph == o.graph
    }
}
impl<T> Eq for Handle<T> {}
impl<T> fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Handle({})", self.id.0)
    }
}

/// Builds one task; finish with [`TaskBuilder::add`]. Settings made here override the enclosing
/// scopes field by field.
#[must_use = "a task is only added to the graph by .add()"]
#[derive(Debug)]
pub struct TaskBuilder<'g, T = Untyped> {
    graph: &'g mut Graph,
    function: &'g str,
    params: Result<Option<Box<str>>, String>,
    key: Option<String>,
    own: Annotations,
    pool_error: Option<(String, drover_annotations::AnnotationError)>,
    resource_error: Option<drover_annotations::AnnotationError>,
    foreign_input: bool,
    once_cell: Option<OnceCell>,
    /// `.lazy()` or `.scoped_to_run()` on a task that is not a once-cell.
    cell_option_misused: bool,
    _output: PhantomData<fn() -> T>,
}

fn params_json<P: Serialize + ?Sized>(params: &P) -> Result<Option<Box<str>>, String> {
    match serde_json::to_string(params) {
        Ok(s) if s == "null" => Ok(None),
        Ok(s) => Ok(Some(s.into_boxed_str())),
        Err(e) => Err(e.to_string()),
    }
}

impl Graph {
    /// Starts a task running the function named `function` on `params` (any serde type; `&()`
    /// for none). Its output type is unknown to Rust: see [`Graph::call`] for typed tasks.
    pub fn task<'g, P: Serialize + ?Sized>(
        &'g mut self,
        function: &'g str,
        params: &P,
    ) -> TaskBuilder<'g> {
        self.builder(function, params_json(params))
    }

    /// [`Graph::task`] with params already serialised: `json` must be JSON text (an error of
    /// the graph otherwise); `null` is no params.
    pub fn task_json<'g>(&'g mut self, function: &'g str, json: &str) -> TaskBuilder<'g> {
        let params = match serde_json::from_str::<serde::de::IgnoredAny>(json) {
            Err(e) => Err(e.to_string()),
            Ok(_) if json.trim() == "null" => Ok(None),
            Ok(_) => Ok(Some(Box::from(json))),
        };
        self.builder(function, params)
    }

    /// Starts a task of the typed function `F` with `params` and `inputs`: a tuple of handles
    /// (or a `Vec` of handles) whose output types must match `F::Inputs`, checked by the compiler.
    pub fn call<'g, F: TaskFn, H: HandleList<Types = F::Inputs>>(
        &'g mut self,
        params: &F::Params,
        inputs: H,
    ) -> TaskBuilder<'g, F::Output> {
        let mut b = self.builder(F::NAME, params_json(params));
        inputs.for_each_id(&mut |id, graph| b.push_input(id, graph));
        b
    }

    /// Starts a once-cell made by the typed loader `L` from `params`: each worker process that
    /// needs it runs the loader once and every task there shares the object. Tasks take it as a
    /// [`PerWorker<L::Object>`] input. Loaded eagerly on eligible workers at submission unless
    /// [`.lazy()`](TaskBuilder::lazy); kept for the worker's life unless
    /// [`.scoped_to_run()`](TaskBuilder::scoped_to_run).
    pub fn once<'g, L: Loader>(
        &'g mut self,
        params: &L::Params,
    ) -> TaskBuilder<'g, PerWorker<L::Object>> {
        let mut b = self.builder(L::NAME, params_json(params));
        b.once_cell = Some(OnceCell::default());
        b
    }

    /// Starts a once-cell made by the loader named `loader` (untyped form of [`Graph::once`]).
    pub fn once_named<'g, P: Serialize + ?Sized>(
        &'g mut self,
        loader: &'g str,
        params: &P,
    ) -> TaskBuilder<'g> {
        let mut b = self.builder(loader, params_json(params));
        b.once_cell = Some(OnceCell::default());
        b
    }

    /// Starts a shared object: `value` is sent to each worker that needs it once (not once per
    /// task), decoded there once, and tasks take it as a [`Shared<T>`] input (an `Arc<T>`).
    /// Loaded eagerly like a once-cell; its key is derived from the value unless given.
    pub fn share<'g, T: Serialize>(&'g mut self, value: &T) -> TaskBuilder<'g, Shared<T>> {
        let params = crate::decode::encode_shared(value).and_then(|text| params_json(&text));
        let mut b = self.builder(crate::decode::SHARED_LOADER, params);
        b.once_cell = Some(OnceCell::default());
        b
    }

    fn builder<'g, T>(
        &'g mut self,
        function: &'g str,
        params: Result<Option<Box<str>>, String>,
    ) -> TaskBuilder<'g, T> {
        self.pending_inputs.clear();
        TaskBuilder {
            graph: self,
            function,
            params,
            key: None,
            own: Annotations::new(),
            pool_error: None,
            resource_error: None,
            foreign_input: false,
            once_cell: None,
            cell_option_misused: false,
            _output: PhantomData,
        }
    }

    /// Runs `f` with every task it adds pinned to `pool` (unless a task or an inner scope says
    /// otherwise). Scopes nest; the innermost wins. A malformed pool name is reported by
    /// [`Graph::validate`].
    pub fn pool<R>(&mut self, pool: &str, f: impl FnOnce(&mut Graph) -> R) -> R {
        match Pool::new(pool) {
            Ok(p) => self.annotate(Annotations::new().pool(p), f),
            Err(error) => {
                self.errors.push(GraphError::BadScopePool {
                    pool: pool.to_owned(),
                    error,
                });
                f(self)
            }
        }
    }

    /// Runs `f` with every task it adds marked any-pool: never restricted, never propagated
    /// into (the seed's missing `pool(None)`).
    pub fn any_pool<R>(&mut self, f: impl FnOnce(&mut Graph) -> R) -> R {
        self.annotate(Annotations::new().any_pool(), f)
    }

    /// Runs `f` with `annotations` applied to every task it adds, composed field by field with
    /// enclosing scopes (setting retries keeps an enclosing pool, for instance).
    pub fn annotate<R>(&mut self, annotations: Annotations, f: impl FnOnce(&mut Graph) -> R) -> R {
        self.scopes.push(annotations);
        let out = f(self);
        self.scopes.pop();
        out
    }
}

impl<'g, T> TaskBuilder<'g, T> {
    fn push_input(&mut self, id: TaskId, graph: u64) {
        if graph == self.graph.id {
            self.graph.pending_inputs.push(id);
        } else {
            self.foreign_input = true;
        }
    }

    /// Gives the task this key (else one is derived from function, params and input keys).
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Appends an input: the output of `handle`'s task, passed in order.
    pub fn input<U>(mut self, handle: Handle<U>) -> Self {
        self.push_input(handle.id, handle.graph);
        self
    }

    /// Appends several inputs, in order.
    pub fn inputs<U>(mut self, handles: impl IntoIterator<Item = Handle<U>>) -> Self {
        for h in handles {
            self.push_input(h.id, h.graph);
        }
        self
    }

    /// Appends an input by key; the task may be added later. Unknown keys are reported by
    /// [`Graph::validate`].
    pub fn input_key(self, key: &str) -> Self {
        let id = self.graph.slot(key);
        self.graph.pending_inputs.push(id);
        self
    }

    /// Pins the task to `pool`.
    pub fn pool(mut self, pool: &str) -> Self {
        match Pool::new(pool) {
            Ok(p) => self.own.placement = Some(Placement::Pinned(p)),
            Err(e) => self.pool_error = Some((pool.to_owned(), e)),
        }
        self
    }

    /// Marks the task any-pool: never restricted.
    pub fn any_pool(mut self) -> Self {
        self.own.placement = Some(Placement::Any);
        self
    }

    /// Leaves the task free for the pass to place, even inside a pool scope.
    pub fn free(mut self) -> Self {
        self.own.placement = Some(Placement::Free);
        self
    }

    /// Sets resources consumed while running, parsed from `gpu=1,mem=2`; malformed strings are
    /// reported by [`Graph::validate`].
    pub fn resources(mut self, resources: &str) -> Self {
        match resources.parse::<Resources>() {
            Ok(r) => self.own.resources = Some(r),
            Err(e) => self.resource_error = Some(e),
        }
        self
    }

    /// Sets one consumed resource.
    pub fn resource(mut self, name: &str, amount: f64) -> Self {
        let r = self.own.resources.get_or_insert_with(Resources::new);
        if let Err(e) = r.insert(name, amount) {
            self.resource_error = Some(e);
        }
        self
    }

    /// Sets the priority (higher runs first).
    pub fn priority(mut self, priority: i32) -> Self {
        self.own.priority = Some(priority);
        self
    }

    /// Sets how many times the task is re-run after failing.
    pub fn retries(mut self, retries: u32) -> Self {
        self.own.retries = Some(retries);
        self
    }

    /// Sets the estimated output size in bytes.
    pub fn size_hint(mut self, bytes: u64) -> Self {
        self.own.size_hint = Some(bytes);
        self
    }

    /// Fails the task when a run takes longer than `timeout` (a `command` task's process is
    /// killed). Zero is an error reported by [`Graph::validate`].
    pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
        self.own.timeout = Some(timeout);
        self
    }

    /// Makes the task durable (version 0): when it finishes, the scheduler commits it to its
    /// progress store under its key (with its output when that is small); a later submission
    /// that finds it done skips it and feeds its stored output to its dependents.
    pub fn durable(mut self) -> Self {
        self.own.durable = Some(0);
        self
    }

    /// [`TaskBuilder::durable`] at `version`: records of older versions count as not done.
    pub fn durable_version(mut self, version: u64) -> Self {
        self.own.durable = Some(version);
        self
    }

    /// For a once-cell: load it only when a dependent needs it, not at submission.
    pub fn lazy(mut self) -> Self {
        match &mut self.once_cell {
            Some(c) => c.lazy = true,
            None => self.cell_option_misused = true,
        }
        self
    }

    /// For a once-cell: drop it on every worker (running its `Drop`) when the run that
    /// submitted it ends, instead of keeping it for the worker's life.
    pub fn scoped_to_run(mut self) -> Self {
        match &mut self.once_cell {
            Some(c) => c.lifetime = Lifetime::Run,
            None => self.cell_option_misused = true,
        }
        self
    }

    /// Applies a whole set of annotations over those given so far.
    pub fn annotations(mut self, a: &Annotations) -> Self {
        self.own.overlay(a);
        self
    }

    /// Adds the task and returns its handle. Problems are recorded for [`Graph::validate`].
    pub fn add(self) -> Handle<T> {
        let TaskBuilder {
            graph,
            function,
            params,
            key,
            own,
            pool_error,
            resource_error,
            foreign_input,
            once_cell,
            cell_option_misused,
            ..
        } = self;
        let mut eff = graph.scopes.current().clone();
        eff.overlay(&own);
        let place = match &eff.placement {
            None | Some(Placement::Free) => Place::Free,
            Some(Placement::Any) => Place::Any,
            Some(Placement::Pinned(p)) => Place::Pinned(graph.intern_pool(p)),
        };
        let resources = match &eff.resources {
            Some(r) => graph.intern_resources(r),
            None => 0,
        };
        let (params, params_error) = match params {
            Ok(p) => (p, None),
            Err(e) => (None, Some(e)),
        };
        let id = graph.store(NewTask {
            slot: None,
            key: key.as_deref(),
            function,
            params,
            place,
            resources,
            priority: eff.priority.unwrap_or(0),
            retries: eff.retries.unwrap_or(0),
            size_hint: eff.size_hint,
            timeout_ms: eff.timeout.map(|t| t.as_millis().max(1) as u64),
            durable: if once_cell.is_some() {
                None
            } else {
                eff.durable
            },
            once_cell,
        });
        // Keys are copied into errors only when there is one: no allocation on the good path.
        let task = |g: &Graph| g.key(id).to_owned();
        if let Some(error) = params_error {
            let task = task(graph);
            graph.errors.push(GraphError::BadParams { task, error });
        }
        if let Some((_, error)) = pool_error {
            let task = task(graph);
            graph.errors.push(GraphError::BadPool { task, error });
        }
        if let Some(error) = resource_error {
            let task = task(graph);
            graph.errors.push(GraphError::BadResources { task, error });
        }
        if let Some(resource) = eff.resources.as_ref().and_then(pool_resource) {
            let task = task(graph);
            graph.errors.push(GraphError::PoolResourceOnTask {
                task,
                pool: resource[POOL_RESOURCE_PREFIX.len()..].to_owned(),
                resource,
            });
        }
        if eff.timeout.is_some_and(|t| t.is_zero()) {
            let task = task(graph);
            graph
                .errors
                .push(GraphError::BadTimeout { task, seconds: 0.0 });
        }
        if cell_option_misused {
            let task = task(graph);
            graph.errors.push(GraphError::BadParams {
                task,
                error: ".lazy() and .scoped_to_run() apply to once-cells only".to_owned(),
            });
        }
        if foreign_input {
            let task = task(graph);
            graph.errors.push(GraphError::ForeignHandle { task });
        }
        Handle {
            id,
            graph: graph.id,
            _output: PhantomData,
        }
    }
}

/// The first `pool-X` entry of task resources, which is a mistake: pools are annotations.
pub(crate) fn pool_resource(r: &Resources) -> Option<String> {
    r.iter()
        .find(|(n, _)| n.starts_with(POOL_RESOURCE_PREFIX))
        .map(|(n, _)| n.to_owned())
}

impl<T> HandleList for Handle<T> {
    type Types = (T,);
    fn for_each_id(&self, f: &mut dyn FnMut(TaskId, u64)) {
        f(self.id, self.graph)
    }
}
