//! JSON export: every task with its pool and reason, every distinct edge with estimated bytes.

use serde::Serialize;

use crate::cost::{estimated_size, for_each_distinct_input, TransferEstimate};
use crate::{Graph, Propagation, Reason, Topology};

/// A task in the JSON export.
#[derive(Debug, Clone, Serialize)]
pub struct ExportNode {
    /// The task key.
    pub key: String,
    /// Its function.
    pub function: String,
    /// Its pool after the pass, or null.
    pub pool: Option<String>,
    /// Why it has that pool.
    pub reason: Reason,
    /// Estimated output bytes (hint or default).
    pub size: u64,
}

/// An edge in the JSON export: `from` is an input of `to`.
#[derive(Debug, Clone, Serialize)]
pub struct ExportEdge {
    /// The input's key.
    pub from: String,
    /// The consumer's key.
    pub to: String,
    /// Estimated bytes moved along it.
    pub bytes: u64,
    /// True when the ends are not in the same pool after the pass.
    pub cross_pool: bool,
}

/// The whole JSON export.
#[derive(Debug, Clone, Serialize)]
pub struct ExportGraph {
    /// Tasks in topological order.
    pub nodes: Vec<ExportNode>,
    /// Distinct edges, grouped by consumer in topological order.
    pub edges: Vec<ExportEdge>,
    /// The pools, sorted by name.
    pub pools: Vec<String>,
    /// Estimated cross-pool bytes.
    pub transfer_estimate: TransferEstimate,
}

/// Builds the JSON export structure.
pub fn export_graph(graph: &Graph, topo: &Topology, prop: &Propagation) -> ExportGraph {
    let nodes = topo
        .order()
        .iter()
        .map(|&t| ExportNode {
            key: graph.key(t).to_owned(),
            function: graph.function(t).to_owned(),
            pool: prop.pool_name(graph, t).map(str::to_owned),
            reason: prop.reason(t),
            size: estimated_size(graph, t),
        })
        .collect();
    let mut edges = Vec::with_capacity(graph.edge_count());
    let mut mark = vec![u32::MAX; graph.len()];
    for &t in topo.order() {
        for_each_distinct_input(graph, t, &mut mark, |input| {
            let (a, b) = (prop.pool(input), prop.pool(t));
            edges.push(ExportEdge {
                from: graph.key(input).to_owned(),
                to: graph.key(t).to_owned(),
                bytes: estimated_size(graph, input),
                cross_pool: b.is_none() || a != b,
            });
        });
    }
    let mut pools: Vec<String> = graph.pools().map(|(_, n)| n.to_owned()).collect();
    pools.sort();
    ExportGraph {
        nodes,
        edges,
        pools,
        transfer_estimate: prop.estimate,
    }
}

/// The graph as pretty-printed JSON text.
pub fn to_json(graph: &Graph, topo: &Topology, prop: &Propagation) -> String {
    let mut s = serde_json::to_string_pretty(&export_graph(graph, topo, prop))
        .expect("export structures always serialise");
    s.push('\n');
    s
}
