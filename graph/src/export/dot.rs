//! Graphviz DOT export: one colour per pool with a legend; pinned tasks bold, propagated ones
//! plain, any-pool dashed white, free (tie/none) dotted grey; edges labelled with bytes.

use std::fmt::Write;

use super::{build_view, human_bytes, ExportOptions, ViewNode, ANY_FILL, FREE_FILL};
use crate::{Graph, Propagation, Reason, Topology};

/// Quotes `s` as a DOT string, turning newlines into `\n` line breaks.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Style attributes for a node of the given pool and reason.
fn node_style(fill: &str, reason: Reason) -> String {
    match reason {
        Reason::Pinned | Reason::OnceCell => format!(
            "style=\"filled,bold\", penwidth=3, fillcolor={}",
            quote(fill)
        ),
        Reason::Forward | Reason::Backward | Reason::Optimised => {
            format!("style=filled, fillcolor={}", quote(fill))
        }
        Reason::Any => format!(
            "style=\"filled,dashed,rounded\", fillcolor={}",
            quote(ANY_FILL)
        ),
        Reason::Tie | Reason::None => {
            format!("style=\"filled,dotted\", fillcolor={}", quote(FREE_FILL))
        }
    }
}

/// The graph as DOT text.
pub fn to_dot(
    graph: &Graph,
    topo: &Topology,
    prop: &Propagation,
    options: ExportOptions,
) -> String {
    let view = build_view(graph, topo, prop, options);
    let mut out = String::new();
    out.push_str("digraph drover {\n  rankdir=TB;\n  node [shape=box, fontname=\"Helvetica\"];\n");
    out.push_str("  edge [fontname=\"Helvetica\", fontsize=10];\n");
    if let Some((tasks, groups)) = view.summary {
        let _ = writeln!(
            out,
            "  label={}; labelloc=t;",
            quote(&format!(
                "{tasks} tasks summarised as {groups} groups (function, pool, reason)"
            ))
        );
    }
    out.push_str("  subgraph cluster_legend {\n    label=\"legend\"; style=dashed;\n");
    for (p, colour) in &view.legend {
        let _ = writeln!(
            out,
            "    {} [label={}, {}];",
            quote(&format!("legend:pool:{}", graph.pool_name(*p))),
            quote(&format!("pool {}", graph.pool_name(*p))),
            node_style(colour, Reason::Forward)
        );
    }
    let _ = writeln!(
        out,
        "    \"legend:pinned\" [label=\"pinned (bold)\", {}];",
        node_style(FREE_FILL, Reason::Pinned)
    );
    let _ = writeln!(
        out,
        "    \"legend:any\" [label=\"any pool\", {}];",
        node_style(ANY_FILL, Reason::Any)
    );
    let _ = writeln!(
        out,
        "    \"legend:free\" [label=\"free (tie / none)\", {}];",
        node_style(FREE_FILL, Reason::None)
    );
    out.push_str(
        "    \"legend:cross\" [label=\"dashed red edge: crosses pools\", shape=plaintext];\n",
    );
    out.push_str("  }\n");
    for (
        i,
        ViewNode {
            label,
            pool,
            reason,
            ..
        },
    ) in view.nodes.iter().enumerate()
    {
        let fill = pool.map(|p| view.colour(p)).unwrap_or(FREE_FILL);
        let _ = writeln!(
            out,
            "  n{i} [label={}, {}];",
            quote(label),
            node_style(fill, *reason)
        );
    }
    for e in &view.edges {
        let (a, b) = (view.nodes[e.from].pool, view.nodes[e.to].pool);
        let cross = if b.is_none() || a != b {
            ", style=dashed, color=\"#c0392b\""
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  n{} -> n{} [label={}{cross}];",
            e.from,
            e.to,
            quote(&human_bytes(e.bytes))
        );
    }
    out.push_str("}\n");
    out
}
