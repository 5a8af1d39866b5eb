//! The JSON graph format: the same graphs as the Rust API, writable by hand or by any language.
//!
//! ```json
//! {"tasks": [
//!   {"key": "a", "function": "bytes", "params": {"n": 800}, "pool": "A", "size_hint": 800},
//!   {"key": "b", "function": "bytes", "params": {"n": 80}, "pool": "B", "size_hint": 80},
//!   {"key": "c", "function": "concat", "inputs": ["a", "b"], "resources": {"gpu": 1},
//!    "priority": 0, "retries": 2, "any_pool": false}
//! ]}
//! ```
//!
//! Only `key` and `function` are required. Inputs may name tasks defined later in the file.
//! Unknown fields are refused (a typo such as `"input"` must not be silently ignored).

use std::borrow::Cow;
use std::collections::BTreeMap;

use drover_annotations::{AnnotationError, Pool, Resources};
use serde::{Deserialize, Serialize};

use crate::builder::pool_resource;
use crate::error::GraphError;
use crate::model::{NewTask, Place};
use crate::Graph;

/// A whole graph file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphFile {
    /// The namespace of its durable tasks' progress (default `graph`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The rule that places free tasks: `"optimised"` (the default) or `"linear"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass: Option<crate::Pass>,
    /// The tasks, in any order.
    pub tasks: Vec<TaskSpec>,
}

/// A task's `durable` field: `true`, or `{"version": N}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DurableSpec {
    /// `true` (version 0) or `false` (not durable).
    Flag(bool),
    /// At a version.
    Version {
        /// Records of older versions count as not done.
        version: u64,
    },
}

impl DurableSpec {
    /// The version it is durable at, if it is.
    pub fn version(self) -> Option<u64> {
        match self {
            DurableSpec::Flag(true) => Some(0),
            DurableSpec::Flag(false) => None,
            DurableSpec::Version { version } => Some(version),
        }
    }
}

/// One task of a graph file. Field names are a contract with other tools: keep them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// The task's unique key.
    pub key: String,
    /// The registered function it runs.
    pub function: String,
    /// Params handed to the function; omitted or `null` for none.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub params: serde_json::Value,
    /// Keys of its inputs, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<String>,
    /// The pool it is pinned to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// True to forbid any pool restriction (never together with `pool`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub any_pool: bool,
    /// Resources consumed while running, e.g. `{"gpu": 1}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, serde_json::Value>,
    /// Higher runs first.
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub priority: i32,
    /// Re-runs after failure.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub retries: u32,
    /// Estimated output bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_hint: Option<u64>,
    /// Seconds a run may take before the task fails (a `command` task's process is killed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// Present for a once-cell: `function` is its loader, and each worker that needs it loads it
    /// once. `{}` for the defaults; `{"lifetime": "run", "lazy": true}` for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub once_cell: Option<crate::OnceCell>,
    /// Durable: `true`, or `{"version": N}` (see [`DurableSpec`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durable: Option<DurableSpec>,
}

/// A task of a graph file as the streaming reader takes it: [`TaskSpec`]'s fields and rules
/// (a task is read as one exactly when it reads as the other), with its strings borrowed from
/// the file's text where they need no unescaping. A million tasks' keys, functions and inputs
/// are then not a few million allocations.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskRef<'a> {
    #[serde(borrow)]
    key: Text<'a>,
    #[serde(borrow)]
    function: Text<'a>,
    #[serde(default)]
    params: Cow<'a, serde_json::Value>,
    #[serde(default, borrow)]
    inputs: Vec<Text<'a>>,
    #[serde(default, borrow)]
    pool: Option<Text<'a>>,
    #[serde(default)]
    any_pool: bool,
    #[serde(default)]
    resources: Cow<'a, BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    retries: u32,
    #[serde(default)]
    size_hint: Option<u64>,
    #[serde(default)]
    timeout: Option<f64>,
    #[serde(default)]
    once_cell: Option<crate::OnceCell>,
    #[serde(default)]
    durable: Option<DurableSpec>,
}

/// A string of the file: borrowed from its text unless it had escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}
fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// A graph file that could not be read as JSON of the right shape.
#[derive(Debug, thiserror::Error)]
#[error("invalid graph JSON at line {line}, column {column}: {message}")]
pub struct JsonError {
    /// 1-based line of the problem.
    pub line: usize,
    /// 1-based column of the problem.
    pub column: usize,
    /// serde's description.
    pub message: String,
}

impl From<serde_json::Error> for JsonError {
    fn from(e: serde_json::Error) -> JsonError {
        let full = e.to_string();
        // serde_json appends " at line L column C"; keep just the description.
        let message = match full.rfind(" at line ") {
            Some(i) => full[..i].to_owned(),
            None => full,
        };
        JsonError {
            line: e.line(),
            column: e.column(),
            message,
        }
    }
}

impl Graph {
    /// Reads a graph from JSON text. Malformed JSON gets serde's line and column; a well-formed
    /// file with a bad graph yields a graph whose [`Graph::validate`] reports the same errors the
    /// Rust API would.
    pub fn from_json_str(text: &str) -> Result<Graph, JsonError> {
        // Streamed: each task is added as it is read, never a list of all of them.
        let mut de = serde_json::Deserializer::from_str(text);
        let graph = serde::de::DeserializeSeed::deserialize(
            stream::GraphSeed {
                // A guess of the task count from the text (about 60 bytes a task), so the
                // tables rarely grow.
                capacity: text.len() / 64,
            },
            &mut de,
        )?;
        de.end()?;
        Ok(graph)
    }

    /// Builds a graph from a parsed file.
    pub fn from_file(file: &GraphFile) -> Graph {
        let edges = file.tasks.iter().map(|t| t.inputs.len()).sum();
        let mut g = Graph::with_capacity(file.tasks.len(), edges);
        g.namespace = file.namespace.clone();
        g.pass = file.pass.unwrap_or_default();
        for t in &file.tasks {
            g.add_spec(t);
        }
        g
    }

    /// Adds one task from its file form. Problems are recorded for [`Graph::validate`].
    pub fn add_spec(&mut self, t: &TaskSpec) -> crate::TaskId {
        self.add_ref(
            &TaskRef {
                key: Text(Cow::Borrowed(&t.key)),
                function: Text(Cow::Borrowed(&t.function)),
                params: Cow::Borrowed(&t.params),
                inputs: t.inputs.iter().map(|k| Text(Cow::Borrowed(k))).collect(),
                pool: t.pool.as_deref().map(|p| Text(Cow::Borrowed(p))),
                any_pool: t.any_pool,
                resources: Cow::Borrowed(&t.resources),
                priority: t.priority,
                retries: t.retries,
                size_hint: t.size_hint,
                timeout: t.timeout,
                once_cell: t.once_cell,
                durable: t.durable,
            },
            None,
        )
    }

    /// Adds one task as the file reader saw it. `hashes`, when given, are those of its inputs'
    /// keys and then its own (from `Interner::prefetch`).
    fn add_ref(&mut self, t: &TaskRef<'_>, hashes: Option<&[u64]>) -> crate::TaskId {
        self.pending_inputs.clear();
        let hash_of = |n: usize, key: &str| match hashes {
            Some(h) => h[n],
            None => crate::interner::hash(key),
        };
        for (n, k) in t.inputs.iter().enumerate() {
            let id = self.slot_hashed(&k.0, hash_of(n, &k.0));
            self.pending_inputs.push(id);
        }
        let slot = Some(self.slot_hashed(&t.key.0, hash_of(t.inputs.len(), &t.key.0)));
        let params = (!t.params.is_null()).then(|| t.params.to_string().into_boxed_str());
        self.add_parts(SpecParts {
            key: &t.key.0,
            slot,
            function: &t.function.0,
            params,
            pool: t.pool.as_ref().map(|p| &*p.0),
            any_pool: t.any_pool,
            resources: spec_resources(&t.resources),
            priority: t.priority,
            retries: t.retries,
            size_hint: t.size_hint,
            timeout: t.timeout,
            once_cell: t.once_cell,
            durable: t.durable.and_then(DurableSpec::version),
        })
    }

    /// Adds one task whose inputs are already in `pending_inputs`, checking its annotations as
    /// the file form does (the JSON file and the binary wire form share this).
    pub(crate) fn add_parts(&mut self, t: SpecParts<'_>) -> crate::TaskId {
        let mut errors = Vec::new();
        let place = match (t.pool, t.any_pool) {
            (Some(p), true) => {
                errors.push(GraphError::PoolAndAnyPool {
                    task: t.key.to_owned(),
                    pool: p.to_owned(),
                });
                Place::Any
            }
            (Some(p), false) => match Pool::new(p) {
                Ok(pool) => Place::Pinned(self.intern_pool(&pool)),
                Err(error) => {
                    errors.push(GraphError::BadPool {
                        task: t.key.to_owned(),
                        error,
                    });
                    Place::Free
                }
            },
            (None, true) => Place::Any,
            (None, false) => Place::Free,
        };
        let resources = match t.resources {
            Ok(r) => {
                if let Some(resource) = pool_resource(&r) {
                    errors.push(GraphError::PoolResourceOnTask {
                        task: t.key.to_owned(),
                        pool: resource[drover_annotations::POOL_RESOURCE_PREFIX.len()..].to_owned(),
                        resource,
                    });
                }
                self.intern_resources(&r)
            }
            Err(error) => {
                errors.push(GraphError::BadResources {
                    task: t.key.to_owned(),
                    error,
                });
                0
            }
        };
        let timeout_ms = match t.timeout {
            None => None,
            Some(s) if s.is_finite() && s > 0.0 => Some(((s * 1000.0).ceil() as u64).max(1)),
            Some(seconds) => {
                errors.push(GraphError::BadTimeout {
                    task: t.key.to_owned(),
                    seconds,
                });
                None
            }
        };
        let id = self.store(NewTask {
            slot: t.slot,
            key: Some(t.key),
            function: t.function,
            params: t.params,
            place,
            resources,
            priority: t.priority,
            retries: t.retries,
            size_hint: t.size_hint,
            timeout_ms,
            once_cell: t.once_cell,
            durable: t.durable,
        });
        self.errors.append(&mut errors);
        id
    }

    /// The graph in its file form (round-trips through [`Graph::from_file`]).
    pub fn to_file(&self) -> GraphFile {
        let tasks = self
            .task_ids()
            .filter(|&id| self.is_defined(id))
            .map(|id| TaskSpec {
                key: self.key(id).to_owned(),
                function: self.function(id).to_owned(),
                params: self
                    .params(id)
                    .map(|p| serde_json::from_str(p).expect("params are stored as valid JSON"))
                    .unwrap_or_default(),
                inputs: self
                    .inputs(id)
                    .iter()
                    .map(|&i| self.key(i).to_owned())
                    .collect(),
                pool: match self.place(id) {
                    Place::Pinned(p) => Some(self.pool_name(p).to_owned()),
                    _ => None,
                },
                any_pool: self.place(id) == Place::Any,
                resources: self
                    .resources(id)
                    .iter()
                    .map(|(k, v)| (k.to_owned(), serde_json::json!(v)))
                    .collect(),
                priority: self.priority(id),
                retries: self.retries(id),
                size_hint: self.size_hint(id),
                timeout: self.timeout(id).map(|d| d.as_secs_f64()),
                once_cell: self.once_cell(id),
                durable: self.durable(id).map(|version| match version {
                    0 => DurableSpec::Flag(true),
                    version => DurableSpec::Version { version },
                }),
            })
            .collect();
        GraphFile {
            namespace: self.namespace.clone(),
            pass: (self.pass != crate::Pass::default()).then_some(self.pass),
            tasks,
        }
    }
}

/// One task's fields as the file and wire forms give them (inputs aside).
pub(crate) struct SpecParts<'a> {
    pub key: &'a str,
    /// The key's slot, if already interned.
    pub slot: Option<crate::TaskId>,
    pub function: &'a str,
    /// Params as canonical JSON text.
    pub params: Option<Box<str>>,
    pub pool: Option<&'a str>,
    pub any_pool: bool,
    pub resources: Result<Resources, AnnotationError>,
    pub priority: i32,
    pub retries: u32,
    pub size_hint: Option<u64>,
    pub timeout: Option<f64>,
    pub once_cell: Option<crate::OnceCell>,
    pub durable: Option<u64>,
}

/// Checks a file's resource map: names, numeric and non-negative amounts.
pub(crate) fn spec_resources(
    map: &BTreeMap<String, serde_json::Value>,
) -> Result<Resources, AnnotationError> {
    let mut r = Resources::new();
    for (name, v) in map {
        let amount = v
            .as_f64()
            .ok_or_else(|| AnnotationError::NonNumericAmount {
                name: name.clone(),
                amount: v.to_string(),
            })?;
        r.insert(name, amount)?;
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_json_gets_line_and_column() {
        let err = Graph::from_json_str("{\"tasks\": [\n  {\"key\": \"a\", }\n]}").unwrap_err();
        assert_eq!((err.line, err.column), (2, 16));
        let err = Graph::from_json_str(r#"{"tasks": [{"key": "a"}]}"#).unwrap_err();
        assert!(
            err.to_string().contains("missing field `function`"),
            "{err}"
        );
        let err =
            Graph::from_json_str(r#"{"tasks": [{"key": "a", "function": "f", "input": []}]}"#)
                .unwrap_err();
        assert!(err.to_string().contains("unknown field `input`"), "{err}");
    }

    #[test]
    fn file_errors_match_the_rust_api() {
        let text = r#"{"tasks": [
            {"key": "a", "function": "f", "pool": "A", "any_pool": true},
            {"key": "b", "function": "f", "resources": {"gpu": -2}},
            {"key": "c", "function": "f", "resources": {"gpu": "x"}},
            {"key": "d", "function": "f", "pool": ""},
            {"key": "d", "function": "f", "inputs": ["zz"]}
        ]}"#;
        let g = Graph::from_json_str(text).unwrap();
        let errs: Vec<String> = g
            .validate()
            .unwrap_err()
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            errs[0],
            "task \"a\" has both \"pool\": \"A\" and \"any_pool\": true; choose one"
        );
        assert!(errs[1].contains("\"b\" has bad resources") && errs[1].contains("not negative"));
        assert!(errs[2].contains("\"c\" has bad resources") && errs[2].contains("not a number"));
        assert_eq!(errs[3], "task \"d\": pool name is empty");
        assert_eq!(errs[4], "duplicate key \"d\": two tasks have this key");
        // The duplicate's inputs are dropped with it; no unknown-input noise from a rejected task.
        assert_eq!(errs.len(), 5, "{errs:?}");

        let mut rust = Graph::new();
        rust.task("f", &()).key("d").pool("").add();
        let rust_errs = rust.validate().unwrap_err().errors;
        assert_eq!(rust_errs[0].to_string(), errs[3]);
    }

    #[test]
    fn timeouts_are_positive_seconds() {
        let g =
            Graph::from_json_str(r#"{"tasks": [{"key": "t", "function": "f", "timeout": 1.5}]}"#)
                .unwrap();
        assert_eq!(
            g.timeout(g.id_of("t").unwrap()),
            Some(std::time::Duration::from_millis(1500))
        );
        assert_eq!(Graph::from_file(&g.to_file()).to_file(), g.to_file());
        for bad in ["0", "-2"] {
            let text =
                format!(r#"{{"tasks": [{{"key": "t", "function": "f", "timeout": {bad}}}]}}"#);
            let errs = Graph::from_json_str(&text).unwrap().validate().unwrap_err();
            assert!(
                errs.to_string().contains("task \"t\" has timeout"),
                "{errs}"
            );
        }
        let mut rust = Graph::new();
        rust.task("f", &())
            .key("z")
            .timeout(std::time::Duration::ZERO)
            .add();
        assert!(rust
            .validate()
            .unwrap_err()
            .to_string()
            .contains("task \"z\" has timeout 0"));
    }

    #[test]
    fn round_trips_through_the_file_form() {
        let text = r#"{"tasks": [
            {"key": "c", "function": "concat", "inputs": ["a", "b"], "resources": {"gpu": 1},
             "priority": 3, "retries": 2, "size_hint": 10},
            {"key": "a", "function": "bytes", "params": {"n": 800, "fill": "y"}, "pool": "A"},
            {"key": "b", "function": "bytes", "any_pool": true}
        ]}"#;
        let g = Graph::from_json_str(text).unwrap();
        g.validate().unwrap();
        let file = g.to_file();
        let again = Graph::from_file(&file);
        assert_eq!(again.to_file(), file);
        let c = g.id_of("c").unwrap();
        assert_eq!(g.inputs(c), [g.id_of("a").unwrap(), g.id_of("b").unwrap()]);
        assert_eq!(
            (g.priority(c), g.retries(c), g.size_hint(c)),
            (3, 2, Some(10))
        );
        assert_eq!(
            g.params(g.id_of("a").unwrap()),
            Some(r#"{"fill":"y","n":800}"#)
        );
        assert_eq!(g.place(g.id_of("b").unwrap()), Place::Any);
    }
}

/// Reading a graph file straight into a [`Graph`], task by task.
mod stream {
    use std::fmt;

    use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

    use super::TaskRef;
    use crate::Graph;

    /// The fields of a graph file.
    const FIELDS: &[&str] = &["namespace", "pass", "tasks"];

    /// Makes a graph with room for `capacity` tasks from a graph file.
    pub(super) struct GraphSeed {
        pub capacity: usize,
    }

    impl<'de> DeserializeSeed<'de> for GraphSeed {
        type Value = Graph;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Graph, D::Error> {
            d.deserialize_map(GraphVisitor(self.capacity))
        }
    }

    struct GraphVisitor(usize);

    impl<'de> Visitor<'de> for GraphVisitor {
        type Value = Graph;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("struct GraphFile")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Graph, A::Error> {
            let mut g = Graph::with_capacity(self.0, self.0 * 2);
            let (mut tasks, mut namespace, mut pass) = (false, false, false);
            while let Some(field) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                match &*field {
                    "namespace" => {
                        if namespace {
                            return Err(de::Error::duplicate_field("namespace"));
                        }
                        namespace = true;
                        g.namespace = map.next_value::<Option<String>>()?;
                    }
                    "pass" => {
                        if pass {
                            return Err(de::Error::duplicate_field("pass"));
                        }
                        pass = true;
                        g.pass = map.next_value::<Option<crate::Pass>>()?.unwrap_or_default();
                    }
                    "tasks" => {
                        if tasks {
                            return Err(de::Error::duplicate_field("tasks"));
                        }
                        tasks = true;
                        map.next_value_seed(TasksSeed(&mut g))?;
                    }
                    other => return Err(de::Error::unknown_field(other, FIELDS)),
                }
            }
            if !tasks {
                return Err(de::Error::missing_field("tasks"));
            }
            Ok(g)
        }
    }

    struct TasksSeed<'g>(&'g mut Graph);

    /// Tasks read before they are added (see [`TasksSeed`]'s `visit_seq`).
    const BATCH: usize = 32;

    impl<'de> DeserializeSeed<'de> for TasksSeed<'_> {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }

    impl<'de> Visitor<'de> for TasksSeed<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a sequence")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            // Tasks are read a batch at a time: the index slots of all the batch's keys are
            // asked for at once (so the memory fetches overlap), then the tasks are added in
            // order, exactly as one by one.
            let g = self.0;
            let mut batch: Vec<TaskRef<'de>> = Vec::with_capacity(BATCH);
            let mut hashes: Vec<u64> = Vec::with_capacity(BATCH * 4);
            loop {
                batch.clear();
                while batch.len() < BATCH {
                    match seq.next_element::<TaskRef<'de>>()? {
                        Some(task) => batch.push(task),
                        None => break,
                    }
                }
                if batch.is_empty() {
                    return Ok(());
                }
                hashes.clear();
                for t in &batch {
                    for k in t.inputs.iter().chain(std::iter::once(&t.key)) {
                        hashes.push(g.keys.prefetch(&k.0));
                    }
                }
                // Then the strings the first slots name, in two steps (their ends, then their
                // text): most keys are found at their first slot.
                for text in [false, true] {
                    for &h in &hashes {
                        g.keys.prefetch_string(h, text);
                    }
                }
                let mut at = 0;
                for t in &batch {
                    let n = t.inputs.len() + 1;
                    g.add_ref(t, Some(&hashes[at..at + n]));
                    at += n;
                }
            }
        }
    }
}
