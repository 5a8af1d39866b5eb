//! Feeds arbitrary bytes to the JSON graph decoder, then validation, the propagate-pools pass
//! and every export: each must return an error or a value, never panic.
//!
//! Run with `cargo fuzz run graph_json` (needs cargo-fuzz and a nightly toolchain).

#![no_main]

use drover_graph::export::{export, ExportOptions, Format};
use drover_graph::{propagate_pools, Graph};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
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
});
