//! The binary wire form of a graph: what the Rust client sends the scheduler instead of JSON
//! text (JSON stays for files and other languages).
//!
//! Postcard of a [`WireGraph`]: every key once, in a table; each defined task names its inputs
//! by index into that table, so decoding interns each key once and resolves edges without
//! hashing; params travel as their JSON text. The decoder checks everything the JSON reader
//! checks (annotations through the same code, params as JSON, indices in range), and
//! canonicalises params the same way, so a graph gets the same fingerprints whichever form
//! it came in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::json::{spec_resources, SpecParts};
use crate::model::Place;
use crate::{Graph, Lifetime, OnceCell, TaskId};

/// The version of the wire form: a decoder refuses others.
pub const WIRE_VERSION: u32 = 1;

/// A graph on the wire: the layout. The encoder and decoder (module `stream`) write and read
/// its fields one by one, the tasks streamed; the tests build it whole, to check the encoder
/// writes exactly its bytes and to craft bad input.
/// Strings are borrowed both ways: encoding copies nothing but into the output, decoding reads
/// keys and names in place.
#[cfg(test)]
#[derive(Debug, Serialize, Deserialize)]
struct WireGraph<'a> {
    version: u32,
    #[serde(borrow)]
    namespace: Option<&'a str>,
    /// 0: optimised, 1: linear.
    pass: u8,
    /// Every key the graph mentions, defined or not.
    #[serde(borrow)]
    keys: Vec<&'a str>,
    /// The defined tasks, in definition order.
    #[serde(borrow)]
    tasks: Vec<WireTask<'a>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireTask<'a> {
    /// Index into `keys`.
    key: u32,
    function: &'a str,
    /// Params as JSON text.
    #[serde(borrow)]
    params: Option<&'a str>,
    /// Indices into `keys`.
    inputs: Vec<u32>,
    #[serde(borrow)]
    pool: Option<&'a str>,
    any_pool: bool,
    #[serde(borrow)]
    resources: Vec<(&'a str, f64)>,
    priority: i32,
    retries: u32,
    size_hint: Option<u64>,
    /// Seconds.
    timeout: Option<f64>,
    /// (lifetime is the run's, lazy).
    once_cell: Option<(bool, bool)>,
    durable: Option<u64>,
}

/// What can be wrong with wire bytes.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Not a wire graph at all.
    #[error("malformed graph (binary form): {0}")]
    Malformed(#[from] postcard::Error),
    /// Another version of the form.
    #[error("graph in binary form version {0}, expected {WIRE_VERSION}")]
    Version(u32),
    /// An index past the key table.
    #[error("malformed graph (binary form): key index {0} out of range")]
    Index(u32),
    /// Params that are not JSON.
    #[error("task {key:?}: params are not JSON: {error}")]
    Params {
        /// The task.
        key: String,
        /// The parser's complaint.
        error: String,
    },
}

impl Graph {
    /// The graph in the binary wire form ([`Graph::from_wire`] reads it back).
    ///
    /// Streamed: the bytes of [`WireGraph`] written task by task, without a list of all the
    /// tasks first.
    pub fn to_wire(&self) -> Vec<u8> {
        // About the size of the encoding (keys and a few bytes per task and edge).
        let guess = self.len() * 32 + self.edge_count() * 3;
        let out = Vec::with_capacity(guess);
        postcard::to_extend(&stream::Encode(self), out).expect("wire graphs serialise")
    }

    /// Task `id` as the wire form has it.
    fn wire_task(&self, id: TaskId) -> WireTask<'_> {
        WireTask {
            key: id.0,
            function: self.function(id),
            params: self.params(id),
            inputs: self.inputs(id).iter().map(|i| i.0).collect(),
            pool: match self.place(id) {
                Place::Pinned(p) => Some(self.pool_name(p)),
                _ => None,
            },
            any_pool: self.place(id) == Place::Any,
            resources: self.resources(id).iter().collect(),
            priority: self.priority(id),
            retries: self.retries(id),
            size_hint: self.size_hint(id),
            timeout: self.timeout(id).map(|d| d.as_secs_f64()),
            once_cell: self
                .once_cell(id)
                .map(|c| (c.lifetime == Lifetime::Run, c.lazy)),
            durable: self.durable(id),
        }
    }

    /// Reads a graph in the binary wire form. Bad annotations are recorded for
    /// [`Graph::validate`], as for a JSON file; bytes that are not a wire graph are an error.
    ///
    /// Streamed: each task is added as it is decoded, never a list of all of them (a million
    /// decoded tasks were over 150 MB of fresh memory, most of their cost page faults).
    pub fn from_wire(bytes: &[u8]) -> Result<Graph, WireError> {
        let mut error = None;
        let mut de = postcard::Deserializer::from_bytes(bytes);
        let decoded = serde::de::DeserializeSeed::deserialize(
            stream::GraphSeed { error: &mut error },
            &mut de,
        );
        match (decoded, error) {
            (_, Some(e)) => Err(e),
            (Ok(g), None) => Ok(g),
            (Err(e), None) => Err(WireError::Malformed(e)),
        }
    }

    /// Adds one decoded task; `ids` are the slots of the key table `keys`.
    fn add_wire_task(
        &mut self,
        keys: &[&str],
        ids: &Slots,
        t: &WireTask<'_>,
    ) -> Result<(), WireError> {
        let id = |i: u32| ids.get(i).ok_or(WireError::Index(i));
        let key: &str = keys.get(t.key as usize).ok_or(WireError::Index(t.key))?;
        self.pending_inputs.clear();
        for &i in &t.inputs {
            let input = id(i)?;
            self.pending_inputs.push(input);
        }
        // Canonical text, as the JSON reader makes it: the same graph, the same fingerprint.
        let params = match t.params {
            None => None,
            Some(text) => {
                let v: serde_json::Value =
                    serde_json::from_str(text).map_err(|e| WireError::Params {
                        key: key.to_owned(),
                        error: e.to_string(),
                    })?;
                (!v.is_null()).then(|| v.to_string().into_boxed_str())
            }
        };
        let resources: BTreeMap<String, serde_json::Value> = t
            .resources
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::json!(v)))
            .collect();
        self.add_parts(SpecParts {
            key,
            slot: Some(id(t.key)?),
            function: t.function,
            params,
            pool: t.pool,
            any_pool: t.any_pool,
            resources: spec_resources(&resources),
            priority: t.priority,
            retries: t.retries,
            size_hint: t.size_hint,
            timeout: t.timeout,
            once_cell: t.once_cell.map(|(run, lazy)| OnceCell {
                lifetime: if run { Lifetime::Run } else { Lifetime::Worker },
                lazy,
            }),
            durable: t.durable,
        });
        Ok(())
    }
}

/// The graph's slots of the key table's entries.
enum Slots {
    /// Entry `k` is slot `k`, for all `n` entries: a table without a repeated key (what the
    /// encoder writes), decoded into an empty graph. Edges then need no lookup: a table of 4M
    /// slots is beyond the cache, and reading it at random was most of decoding's time.
    Identity(u32),
    /// Any other table.
    Table(Vec<TaskId>),
}

impl Slots {
    /// The slot of entry `i`, if the table has one.
    fn get(&self, i: u32) -> Option<TaskId> {
        match self {
            Slots::Identity(n) => (i < *n).then_some(TaskId(i)),
            Slots::Table(ids) => ids.get(i as usize).copied(),
        }
    }
}

/// The streaming decoder of [`WireGraph`]: the same fields in the same order, with the tasks
/// added to the graph one by one.
mod stream {
    use std::fmt;

    use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
    use serde::ser::{Serialize, SerializeStruct, Serializer};

    use super::{Slots, WireError, WireTask, WIRE_VERSION};
    use crate::{Graph, Pass, TaskId};

    /// [`WireGraph`](super::WireGraph)'s fields.
    const FIELDS: &[&str] = &["version", "namespace", "pass", "keys", "tasks"];

    /// Encodes a graph as its [`WireGraph`](super::WireGraph), field by field.
    pub(super) struct Encode<'g>(pub &'g Graph);

    impl Serialize for Encode<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let g = self.0;
            let mut st = s.serialize_struct("WireGraph", FIELDS.len())?;
            st.serialize_field("version", &WIRE_VERSION)?;
            st.serialize_field("namespace", &g.namespace.as_deref())?;
            st.serialize_field("pass", &u8::from(g.pass == Pass::Linear))?;
            st.serialize_field("keys", &Keys(g))?;
            st.serialize_field("tasks", &Tasks(g))?;
            st.end()
        }
    }

    /// Every key of the graph, defined or not, by slot.
    struct Keys<'g>(&'g Graph);

    impl Serialize for Keys<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(self.0.task_ids().map(|t| self.0.key(t)))
        }
    }

    /// The defined tasks in definition order.
    struct Tasks<'g>(&'g Graph);

    impl Serialize for Tasks<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let g = self.0;
            s.collect_seq(g.definition_order().iter().map(|&id| g.wire_task(id)))
        }
    }

    /// Decodes a graph; a problem that is not postcard's own is left in `error` (postcard's
    /// custom errors carry no message).
    pub(super) struct GraphSeed<'e> {
        pub error: &'e mut Option<WireError>,
    }

    /// Stops the decoding with `e`, kept in `slot`.
    fn fail<E: de::Error>(slot: &mut Option<WireError>, e: WireError) -> E {
        let text = e.to_string();
        *slot = Some(e);
        E::custom(text)
    }

    impl<'de> DeserializeSeed<'de> for GraphSeed<'_> {
        type Value = Graph;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Graph, D::Error> {
            d.deserialize_struct("WireGraph", FIELDS, self)
        }
    }

    impl<'de> Visitor<'de> for GraphSeed<'_> {
        type Value = Graph;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a graph in the binary form")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Graph, A::Error> {
            let missing = |i| de::Error::invalid_length(i, &"5 fields");
            let version: u32 = seq.next_element()?.ok_or_else(|| missing(0))?;
            if version != WIRE_VERSION {
                return Err(fail(self.error, WireError::Version(version)));
            }
            let namespace: Option<&'de str> = seq.next_element()?.ok_or_else(|| missing(1))?;
            let pass: u8 = seq.next_element()?.ok_or_else(|| missing(2))?;
            let keys: Vec<&'de str> = seq.next_element()?.ok_or_else(|| missing(3))?;
            // About 2 inputs a task: the input table rarely grows.
            let mut g = Graph::with_capacity(keys.len(), keys.len().saturating_mul(2));
            g.namespace = namespace.map(str::to_owned);
            g.pass = if pass == 1 {
                Pass::Linear
            } else {
                Pass::Optimised
            };
            // A batch of keys at a time: their index slots are asked for at once, so the
            // memory fetches overlap (see `Interner::prefetch`).
            let mut ids: Vec<TaskId> = Vec::with_capacity(keys.len());
            let mut identity = true;
            let mut hashes = Vec::with_capacity(64);
            for batch in keys.chunks(64) {
                hashes.clear();
                hashes.extend(batch.iter().map(|k| g.keys.prefetch(k)));
                for (k, &h) in batch.iter().zip(&hashes) {
                    let id = g.slot_hashed(k, h);
                    identity &= id.index() == ids.len();
                    ids.push(id);
                }
            }
            let ids = if identity {
                Slots::Identity(ids.len() as u32)
            } else {
                Slots::Table(ids)
            };
            seq.next_element_seed(TasksSeed {
                graph: &mut g,
                keys: &keys,
                ids: &ids,
                error: self.error,
            })?
            .ok_or_else(|| missing(4))?;
            Ok(g)
        }
    }

    /// Adds the tasks of the sequence to `graph`.
    struct TasksSeed<'a, 'k> {
        graph: &'a mut Graph,
        keys: &'a [&'k str],
        ids: &'a Slots,
        error: &'a mut Option<WireError>,
    }

    impl<'de> DeserializeSeed<'de> for TasksSeed<'_, '_> {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }

    impl<'de> Visitor<'de> for TasksSeed<'_, '_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a sequence of tasks")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while let Some(t) = seq.next_element::<WireTask<'de>>()? {
                if let Err(e) = self.graph.add_wire_task(self.keys, self.ids, &t) {
                    return Err(fail(self.error, e));
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{fingerprints, Pass};

    fn sample() -> Graph {
        let text = r#"{"namespace": "ns", "pass": "linear", "tasks": [
          {"key": "a", "function": "load", "pool": "A", "size_hint": 800, "params": {"z": 1, "a": [1, 2]}},
          {"key": "cell", "function": "model", "once_cell": {"lifetime": "run", "lazy": true}},
          {"key": "b", "function": "f", "inputs": ["a", "cell", "a"], "resources": {"gpu": 1.5},
           "priority": 3, "retries": 2, "timeout": 0.25, "durable": {"version": 4}},
          {"key": "c", "function": "g", "inputs": ["b"], "any_pool": true, "durable": true}
        ]}"#;
        Graph::from_json_str(text).unwrap()
    }

    /// Task `key` (an index into the key table) running `f` on `inputs`, nothing annotated.
    fn plain_task(key: u32, inputs: Vec<u32>) -> WireTask<'static> {
        WireTask {
            key,
            function: "f",
            params: None,
            inputs,
            pool: None,
            any_pool: false,
            resources: vec![],
            priority: 0,
            retries: 0,
            size_hint: None,
            timeout: None,
            once_cell: None,
            durable: None,
        }
    }

    #[test]
    fn the_streamed_encoding_is_the_layout_s_bytes() {
        for g in [sample(), Graph::from_json_str(r#"{"tasks": []}"#).unwrap()] {
            let whole = WireGraph {
                version: WIRE_VERSION,
                namespace: g.namespace.as_deref(),
                pass: u8::from(g.pass == Pass::Linear),
                keys: g.task_ids().map(|t| g.key(t)).collect(),
                tasks: g
                    .definition_order()
                    .iter()
                    .map(|&id| g.wire_task(id))
                    .collect(),
            };
            assert_eq!(g.to_wire(), postcard::to_stdvec(&whole).unwrap());
        }
    }

    #[test]
    fn round_trips_with_the_same_file_form_and_fingerprints() {
        let g = sample();
        let back = Graph::from_wire(&g.to_wire()).unwrap();
        assert_eq!(back.to_file(), g.to_file());
        assert_eq!(back.pass(), Pass::Linear);
        let (t1, t2) = (g.validate().unwrap(), back.validate().unwrap());
        assert_eq!(fingerprints(&g, &t1), fingerprints(&back, &t2));
    }

    #[test]
    fn the_rust_api_graph_gets_the_fingerprints_of_its_json_text() {
        #[derive(serde::Serialize)]
        struct P {
            z: u32,
            a: u32,
        }
        let mut g = Graph::new();
        let a = g.task("load", &P { z: 1, a: 2 }).key("a").add();
        g.task("f", &()).key("b").input(a).add();
        let via_json = Graph::from_json_str(&serde_json::to_string(&g.to_file()).unwrap()).unwrap();
        let via_wire = Graph::from_wire(&g.to_wire()).unwrap();
        let p = |g: &Graph| fingerprints(g, &g.validate().unwrap());
        assert_eq!(p(&via_json), p(&via_wire));
    }

    #[test]
    fn bad_annotations_are_recorded_like_json_and_garbage_is_an_error() {
        let task = |pool: &'static str| WireTask {
            pool: Some(pool),
            resources: vec![("gpu", -1.0)],
            timeout: Some(-2.0),
            ..plain_task(0, vec![1])
        };
        let wire = WireGraph {
            version: WIRE_VERSION,
            namespace: None,
            pass: 0,
            keys: vec!["x", "missing"],
            tasks: vec![task("bad pool!")],
        };
        let g = Graph::from_wire(&postcard::to_stdvec(&wire).unwrap()).unwrap();
        let errors = g.validate().unwrap_err().to_string();
        let json = r#"{"tasks": [{"key": "x", "function": "f", "inputs": ["missing"],
            "pool": "bad pool!", "resources": {"gpu": -1.0}, "timeout": -2.0}]}"#;
        let from_json = Graph::from_json_str(json).unwrap().validate().unwrap_err();
        assert_eq!(errors, from_json.to_string());
        assert!(
            errors.contains("missing") && errors.contains("bad pool!"),
            "{errors}"
        );
        // Garbage, an index out of range, params that are not JSON, another version.
        for junk in [&b""[..], b"\x01\x02\x03", &[0xff; 40]] {
            assert!(Graph::from_wire(junk).is_err());
        }
        let mut bad = WireGraph {
            tasks: vec![WireTask {
                inputs: vec![7],
                ..task("A")
            }],
            ..wire
        };
        let err = Graph::from_wire(&postcard::to_stdvec(&bad).unwrap()).unwrap_err();
        assert!(matches!(err, WireError::Index(7)), "{err}");
        bad.tasks[0].inputs = vec![];
        bad.tasks[0].params = Some("{not json");
        let err = Graph::from_wire(&postcard::to_stdvec(&bad).unwrap()).unwrap_err();
        assert!(err.to_string().contains("params are not JSON"), "{err}");
        bad.version = 9;
        let err = Graph::from_wire(&postcard::to_stdvec(&bad).unwrap()).unwrap_err();
        assert!(matches!(err, WireError::Version(9)), "{err}");
    }

    #[test]
    fn a_key_table_with_a_repeated_key_resolves_edges_through_its_slots() {
        // "a" twice: entries 0 and 2 are one slot, so entry 3 ("c") is slot 2.
        let wire = WireGraph {
            version: WIRE_VERSION,
            namespace: None,
            pass: 0,
            keys: vec!["a", "b", "a", "c"],
            tasks: vec![
                plain_task(0, vec![]),
                plain_task(1, vec![2]),
                plain_task(3, vec![1, 0]),
            ],
        };
        let g = Graph::from_wire(&postcard::to_stdvec(&wire).unwrap()).unwrap();
        let json = r#"{"tasks": [{"key": "a", "function": "f"},
            {"key": "b", "function": "f", "inputs": ["a"]},
            {"key": "c", "function": "f", "inputs": ["b", "a"]}]}"#;
        assert_eq!(g.to_file(), Graph::from_json_str(json).unwrap().to_file());
        let c = g.id_of("c").unwrap();
        let names: Vec<&str> = g.inputs(c).iter().map(|&i| g.key(i)).collect();
        assert_eq!(names, ["b", "a"]);
    }
}
