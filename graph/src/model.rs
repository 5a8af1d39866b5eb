//! The graph's storage: interned keys, dense task records, one flat arena of inputs.
//!
//! A task's [`TaskId`] is the index of its interned key, so a key mentioned as an input before
//! its task is defined (allowed in JSON files) already has its id; validation reports any that
//! stay undefined. Per task the graph stores one fixed-size record and its input ids: no
//! per-task maps or boxed annotations. Functions, pools and resource sets are interned too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use drover_annotations::{Pool, Resources};
use xxhash_rust::xxh3::Xxh3;

use crate::error::GraphError;
use crate::interner::Interner;
use crate::{PoolId, TaskId};

/// Where a task may run, in the graph's dense form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Place {
    /// No word from the user: the propagate-pools pass decides.
    #[default]
    Free,
    /// Explicitly unrestricted: never pinned, never propagated into or through.
    Any,
    /// Runs only in this pool.
    Pinned(PoolId),
}

/// How long a once-cell's object lives on a worker.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Lifetime {
    /// As long as the worker process (the default).
    #[default]
    Worker,
    /// Until the graph run that submitted it ends: then every worker drops it.
    Run,
}

/// What makes a task a once-cell: a per-worker object made by a loader, loaded at most once per
/// worker process and shared by every task there that uses it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(deny_unknown_fields)]
pub struct OnceCell {
    /// How long it lives.
    #[serde(default, skip_serializing_if = "is_worker_lifetime")]
    pub lifetime: Lifetime,
    /// Load only when a dependent needs it, instead of on eligible workers as soon as the graph
    /// is submitted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lazy: bool,
}

fn is_worker_lifetime(l: &Lifetime) -> bool {
    *l == Lifetime::Worker
}

/// One task's fixed-size record.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct TaskRecord {
    pub defined: bool,
    pub function: u32,
    /// Params as compact JSON text; `None` for no params (`null`).
    pub params: Option<Box<str>>,
    pub inputs_start: u32,
    pub inputs_len: u32,
    pub place: Place,
    /// Index into `Graph::resource_sets`; 0 is the empty set.
    pub resources: u32,
    pub priority: i32,
    pub retries: u32,
    pub size_hint: Option<u64>,
    /// Timeout in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Set for once-cells.
    pub once_cell: Option<OnceCell>,
    /// Durable at this version.
    pub durable: Option<u64>,
}

impl TaskRecord {
    /// Same work and same annotations (inputs are compared by the caller through the key).
    fn same_task(&self, other: &TaskRecord) -> bool {
        TaskRecord {
            inputs_start: 0,
            inputs_len: 0,
            ..self.clone()
        } == TaskRecord {
            inputs_start: 0,
            inputs_len: 0,
            ..other.clone()
        }
    }
}

/// A task ready to be stored, resolved by the builder or the JSON reader.
pub(crate) struct NewTask<'a> {
    /// The key, or `None` to derive one from function, params and inputs.
    pub key: Option<&'a str>,
    /// The key's slot, when the caller interned it already (the wire form does).
    pub slot: Option<TaskId>,
    pub function: &'a str,
    pub params: Option<Box<str>>,
    pub place: Place,
    pub resources: u32,
    pub priority: i32,
    pub retries: u32,
    pub size_hint: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub once_cell: Option<OnceCell>,
    pub durable: Option<u64>,
}

static NEXT_GRAPH_ID: AtomicU64 = AtomicU64::new(1);

/// A task graph: tasks named by keys, each running a named function on params and on the
/// outputs of its inputs, with per-task annotations.
///
/// Build it with [`Graph::task`] (see the [`builder`](crate::builder) module), from a JSON file
/// with [`Graph::from_json_str`], then [`Graph::validate`] it and run
/// [`propagate_pools`](crate::propagate_pools) over it.
#[derive(Debug, Clone)]
pub struct Graph {
    pub(crate) id: u64,
    pub(crate) keys: Interner,
    pub(crate) tasks: Vec<TaskRecord>,
    pub(crate) input_arena: Vec<TaskId>,
    pub(crate) functions: Interner,
    pub(crate) pools: Interner,
    pub(crate) resource_sets: Vec<Resources>,
    resource_index: HashMap<String, u32>,
    pub(crate) errors: Vec<GraphError>,
    pub(crate) scopes: drover_annotations::ScopeStack,
    /// Inputs of the task being built, reused between tasks to avoid allocation.
    pub(crate) pending_inputs: Vec<TaskId>,
    defined: usize,
    /// Defined tasks in the order they were defined (a file's order).
    pub(crate) definition_order: Vec<TaskId>,
    /// The namespace of its durable tasks' progress (default [`DEFAULT_NAMESPACE`]).
    pub(crate) namespace: Option<String>,
    /// The rule that places its free tasks.
    pub(crate) pass: crate::Pass,
}

/// The namespace durable graph tasks keep their progress in unless the graph names another.
pub const DEFAULT_NAMESPACE: &str = "graph";

impl Default for Graph {
    fn default() -> Graph {
        Graph::new()
    }
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Graph {
        Graph::with_capacity(0, 0)
    }

    /// An empty graph with room for `tasks` tasks and `inputs` input edges.
    pub fn with_capacity(tasks: usize, inputs: usize) -> Graph {
        Graph {
            id: NEXT_GRAPH_ID.fetch_add(1, Ordering::Relaxed),
            keys: Interner::with_capacity(tasks),
            tasks: Vec::with_capacity(tasks),
            input_arena: Vec::with_capacity(inputs),
            functions: Interner::default(),
            pools: Interner::default(),
            resource_sets: vec![Resources::new()],
            resource_index: HashMap::from([(String::new(), 0)]),
            errors: Vec::new(),
            scopes: Default::default(),
            pending_inputs: Vec::new(),
            defined: 0,
            definition_order: Vec::with_capacity(tasks),
            namespace: None,
            pass: crate::Pass::Optimised,
        }
    }

    /// The number of task slots: every key defined or mentioned as an input. In a graph that
    /// validates, every slot is a task.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// True when the graph has no tasks.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The number of tasks defined (not merely mentioned as inputs).
    pub fn defined_len(&self) -> usize {
        self.defined
    }

    /// The number of input edges.
    pub fn edge_count(&self) -> usize {
        self.input_arena.len()
    }

    /// All task ids, in id order.
    pub fn task_ids(&self) -> impl ExactSizeIterator<Item = TaskId> + Clone {
        (0..self.tasks.len() as u32).map(TaskId)
    }

    /// The defined tasks in the order they were defined: a graph file's order, or the builder
    /// calls'. (Task ids are slots in the order keys were first named, inputs included.)
    pub fn definition_order(&self) -> &[TaskId] {
        &self.definition_order
    }

    /// The id of the task with key `key`, if defined.
    pub fn id_of(&self, key: &str) -> Option<TaskId> {
        let id = self.keys.get(key)?;
        self.tasks[id as usize].defined.then_some(TaskId(id))
    }

    /// The key of task `id`.
    pub fn key(&self, id: TaskId) -> &str {
        self.keys.name(id.0)
    }

    /// The key of task `id`, as a new shared string.
    pub fn key_shared(&self, id: TaskId) -> std::sync::Arc<str> {
        std::sync::Arc::from(self.key(id))
    }

    /// Whether slot `id` is a defined task (not only a key mentioned as an input).
    pub fn is_defined(&self, id: TaskId) -> bool {
        self.tasks[id.index()].defined
    }

    /// Asks for the memory of task `id`'s key (`text` false: where it lies; true: its text,
    /// once that is in cache; see `crate::prefetch`).
    #[inline]
    pub(crate) fn prefetch_key(&self, id: TaskId, text: bool) {
        self.keys.prefetch_name(id.0, text);
    }

    /// Asks for task `id`'s record ahead of reading it (see `crate::prefetch`).
    pub(crate) fn prefetch_record(&self, id: TaskId) {
        if let Some(r) = self.tasks.get(id.index()) {
            crate::prefetch::prefetch(r);
        }
    }

    /// The function name of task `id`.
    pub fn function(&self, id: TaskId) -> &str {
        self.functions.name(self.tasks[id.index()].function)
    }

    /// The params of task `id` as compact JSON text, or `None` for no params.
    pub fn params(&self, id: TaskId) -> Option<&str> {
        self.tasks[id.index()].params.as_deref()
    }

    /// The inputs of task `id`, in order (a key may appear more than once).
    #[inline]
    pub fn inputs(&self, id: TaskId) -> &[TaskId] {
        let t = &self.tasks[id.index()];
        &self.input_arena[t.inputs_start as usize..(t.inputs_start + t.inputs_len) as usize]
    }

    /// The placement the user gave task `id`.
    #[inline]
    pub fn place(&self, id: TaskId) -> Place {
        self.tasks[id.index()].place
    }

    /// The resources task `id` consumes while running.
    pub fn resources(&self, id: TaskId) -> &Resources {
        &self.resource_sets[self.tasks[id.index()].resources as usize]
    }

    /// The interned id of task `id`'s resource set: tasks with equal resources share it; 0 is
    /// the empty set. Lets consumers convert each distinct set once.
    pub fn resource_set_id(&self, id: TaskId) -> u32 {
        self.tasks[id.index()].resources
    }

    /// The priority of task `id` (higher first; default 0).
    pub fn priority(&self, id: TaskId) -> i32 {
        self.tasks[id.index()].priority
    }

    /// How many times task `id` is re-run after failing (default 0).
    pub fn retries(&self, id: TaskId) -> u32 {
        self.tasks[id.index()].retries
    }

    /// The estimated output size of task `id` in bytes, if the user gave one.
    #[inline]
    pub fn size_hint(&self, id: TaskId) -> Option<u64> {
        self.tasks[id.index()].size_hint
    }

    /// The timeout of task `id`, if any: a longer run fails it.
    pub fn timeout(&self, id: TaskId) -> Option<std::time::Duration> {
        self.tasks[id.index()]
            .timeout_ms
            .map(std::time::Duration::from_millis)
    }

    /// The task's once-cell settings, when it is a once-cell.
    pub fn once_cell(&self, id: TaskId) -> Option<OnceCell> {
        self.tasks[id.index()].once_cell
    }

    /// True when the task is a once-cell.
    pub fn is_once_cell(&self, id: TaskId) -> bool {
        self.tasks[id.index()].once_cell.is_some()
    }

    /// The version task `id` is durable at, if it is durable.
    pub fn durable(&self, id: TaskId) -> Option<u64> {
        self.tasks[id.index()].durable
    }

    /// The namespace its durable tasks keep their progress in.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
    }

    /// The rule that places its free tasks (default [`crate::Pass::Optimised`]).
    pub fn pass(&self) -> crate::Pass {
        self.pass
    }

    /// Sets the rule that places its free tasks.
    pub fn set_pass(&mut self, pass: crate::Pass) -> &mut Graph {
        self.pass = pass;
        self
    }

    /// Sets the namespace its durable tasks keep their progress in.
    pub fn set_namespace(&mut self, namespace: &str) -> &mut Graph {
        self.namespace = Some(namespace.to_owned());
        self
    }

    /// The number of pools mentioned.
    pub fn pool_count(&self) -> usize {
        self.pools.len()
    }

    /// The name of pool `id`.
    pub fn pool_name(&self, id: PoolId) -> &str {
        self.pools.name(id.0)
    }

    /// The id of the pool named `name`, if any task mentions it.
    pub fn pool_id(&self, name: &str) -> Option<PoolId> {
        self.pools.get(name).map(PoolId)
    }

    /// All pools as (id, name), in order of first mention.
    pub fn pools(&self) -> impl Iterator<Item = (PoolId, &str)> {
        (0..self.pools.len() as u32).map(|i| (PoolId(i), self.pools.name(i)))
    }

    /// Interns a validated pool.
    pub(crate) fn intern_pool(&mut self, pool: &Pool) -> PoolId {
        PoolId(self.pools.intern(pool.name()).0)
    }

    /// Interns a resource set; the empty set is always 0.
    pub(crate) fn intern_resources(&mut self, r: &Resources) -> u32 {
        if r.is_empty() {
            return 0;
        }
        let canonical = r.to_string();
        if let Some(&i) = self.resource_index.get(&canonical) {
            return i;
        }
        let i = self.resource_sets.len() as u32;
        self.resource_sets.push(r.clone());
        self.resource_index.insert(canonical, i);
        i
    }

    /// Interns `key` as a task slot (defined or not) and returns its id.
    pub(crate) fn slot(&mut self, key: &str) -> TaskId {
        self.slot_hashed(key, crate::interner::hash(key))
    }

    /// [`Graph::slot`] of `key` whose hash is `h` (see `Interner::prefetch`).
    pub(crate) fn slot_hashed(&mut self, key: &str, h: u64) -> TaskId {
        let (id, new) = self.keys.intern_hashed(key, h);
        if new {
            self.tasks.push(TaskRecord::default());
        }
        TaskId(id)
    }

    /// The derived key of a task: `function-<16 hex digits>`, a stable hash of the function name,
    /// the params text and the input keys in order.
    pub(crate) fn derive_key(
        &self,
        function: &str,
        params: Option<&str>,
        inputs: &[TaskId],
    ) -> String {
        let mut h = Xxh3::new();
        h.update(function.as_bytes());
        h.update(&[0]);
        h.update(params.unwrap_or("null").as_bytes());
        for &i in inputs {
            h.update(&[0]);
            h.update(self.key(i).as_bytes());
        }
        format!("{function}-{:016x}", h.digest())
    }

    /// Stores a task whose inputs are in `pending_inputs`, which this empties. Returns its id.
    ///
    /// Errors are recorded, not returned: they are all reported by [`Graph::validate`]. A derived
    /// key that already exists with the same function, params, inputs and annotations is the same
    /// task (returned as is); anything else reusing a key is a duplicate.
    pub(crate) fn store(&mut self, task: NewTask<'_>) -> TaskId {
        let derived;
        let key = match task.key {
            Some(k) => k,
            None => {
                derived =
                    self.derive_key(task.function, task.params.as_deref(), &self.pending_inputs);
                &derived
            }
        };
        if key.is_empty() {
            self.errors.push(GraphError::EmptyKey {
                function: task.function.to_owned(),
            });
        }
        if task.function.is_empty() {
            self.errors.push(GraphError::EmptyFunction {
                task: key.to_owned(),
            });
        }
        let id = match task.slot {
            Some(id) => id,
            None => self.slot(key),
        };
        let function = self.functions.intern(task.function).0;
        let inputs_start =
            u32::try_from(self.input_arena.len()).expect("more than 2^32 input edges");
        let record = TaskRecord {
            defined: true,
            function,
            params: task.params,
            inputs_start,
            inputs_len: self.pending_inputs.len() as u32,
            place: task.place,
            resources: task.resources,
            priority: task.priority,
            retries: task.retries,
            size_hint: task.size_hint,
            timeout_ms: task.timeout_ms,
            once_cell: task.once_cell,
            durable: task.durable,
        };
        let existing = &self.tasks[id.index()];
        if existing.defined {
            let same_derived = task.key.is_none()
                && existing.same_task(&record)
                && self.inputs(id) == self.pending_inputs.as_slice();
            if !same_derived {
                self.errors.push(GraphError::DuplicateKey {
                    key: key.to_owned(),
                });
            }
            self.pending_inputs.clear();
            return id;
        }
        self.input_arena.append(&mut self.pending_inputs);
        self.tasks[id.index()] = record;
        self.defined += 1;
        self.definition_order.push(id);
        id
    }
}
