//! Random graph JSON, well formed or not: decoding, validation, the pass and every export
//! return a value or an error, never panic (huge size hints, long and odd keys, bad fields).

use drover_graph::export::{export, ExportOptions, Format};
use drover_graph::{propagate_pools, Graph};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Strings a hostile file may hold: empty, odd characters, very long.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-c]{1,2}",
        "[ -~]{0,12}",
        "\\PC{0,6}",
        (1usize..4).prop_map(|n| "k".repeat(n * 30_000)),
    ]
}

/// Numbers at the edges.
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(u64::MAX)),
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(1.5e300)),
        Just(json!(f64::MIN_POSITIVE)),
        any::<u32>().prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
    ]
}

/// Any small JSON value.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A task object: mostly the real fields, sometimes of the wrong type, sometimes unknown ones.
fn task(keys: Vec<String>) -> impl Strategy<Value = Value> {
    let pick = prop::sample::select(keys);
    (
        pick.clone(),
        prop::option::of(prop::collection::vec(pick, 0..4)),
        prop::option::of(number()),
        prop::option::of(prop_oneof![text().prop_map(Value::String), value()]),
        prop::option::of(value()),
        prop::option::of(prop::sample::select(vec!["bytes", "len", "concat", ""])),
        prop::option::of(value()),
        prop::option::of(("[a-z_]{1,8}", value())),
    )
        .prop_map(
            |(key, inputs, size, pool, params, function, other, unknown)| {
                let mut t = serde_json::Map::new();
                t.insert("key".into(), json!(key));
                t.insert("function".into(), json!(function.unwrap_or("bytes")));
                if let Some(i) = inputs {
                    t.insert("inputs".into(), json!(i));
                }
                if let Some(s) = size {
                    t.insert("size_hint".into(), s);
                }
                if let Some(p) = pool {
                    t.insert("pool".into(), p);
                }
                if let Some(p) = params {
                    t.insert("params".into(), p);
                }
                if let Some(o) = other {
                    for field in [
                        "resources",
                        "priority",
                        "retries",
                        "timeout",
                        "durable",
                        "once_cell",
                        "any_pool",
                    ] {
                        if field.len() % 3 == (o.to_string().len() % 3) {
                            t.insert(field.into(), o.clone());
                        }
                    }
                }
                if let Some((name, v)) = unknown {
                    t.insert(name, v);
                }
                Value::Object(t)
            },
        )
}

fn graph_json() -> impl Strategy<Value = String> {
    prop::collection::vec(text(), 1..6)
        .prop_flat_map(|keys| prop::collection::vec(task(keys), 0..8))
        .prop_map(|tasks| json!({ "tasks": tasks }).to_string())
}

/// Decodes, validates, passes and exports `text`; any panic fails the property.
fn exercise(text: &str) {
    let Ok(graph) = Graph::from_json_str(text) else {
        return;
    };
    let Ok(topo) = graph.validate() else {
        return;
    };
    let prop = propagate_pools(&graph, &topo);
    for format in [Format::Dot, Format::Json, Format::Svg] {
        let _ = export(&graph, &topo, &prop, format, ExportOptions::default());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_graph_json_never_panics(text in graph_json()) {
        exercise(&text);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(text) = std::str::from_utf8(&bytes) {
            exercise(text);
        }
    }
}

/// The cases the issue names: five edges of size u64::MAX saturate instead of wrapping.
#[test]
fn huge_size_hints_saturate() {
    let mut tasks = vec![
        json!({"key": "sink", "function": "concat", "inputs": ["a0", "a1", "a2", "a3", "a4"], "pool": "B"}),
    ];
    for i in 0..5 {
        tasks.push(json!({"key": format!("a{i}"), "function": "bytes", "pool": "A", "size_hint": u64::MAX}));
    }
    let g = Graph::from_json_str(&json!({ "tasks": tasks }).to_string()).unwrap();
    let topo = g.validate().unwrap();
    let prop = propagate_pools(&g, &topo);
    assert_eq!(prop.estimate.without, u64::MAX);
    exercise(&json!({ "tasks": tasks }).to_string());
}
