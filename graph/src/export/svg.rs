//! SVG export, laid out and rendered in pure Rust by the `layout-rs` crate (no Graphviz needed).
//! Same conventions as the DOT export: pool colours with a legend, pinned tasks with a thick
//! border, any-pool rounded and white, free tasks grey, cross-pool edges dashed.

use layout::backends::svg::SVGWriter;
use layout::core::base::Orientation;
use layout::core::color::Color;
use layout::core::style::{LineStyleKind, StyleAttr};
use layout::std_shapes::render::get_shape_size;
use layout::std_shapes::shapes::{Arrow, Element, LineEndKind, ShapeKind};
use layout::topo::layout::VisualGraph;

use super::{build_view, human_bytes, ExportOptions, ANY_FILL, FREE_FILL};
use crate::{Graph, Propagation, Reason, Topology};

const FONT: usize = 14;

fn colour(hex: &str) -> Color {
    let v = u32::from_str_radix(hex.trim_start_matches('#'), 16).expect("palette colours are hex");
    // layout-rs colours are RGBA.
    Color::new((v << 8) | 0xff)
}

fn look(fill: &str, reason: Reason) -> StyleAttr {
    let (line, width, rounded) = match reason {
        Reason::Pinned | Reason::OnceCell => ("#000000", 3, 0),
        Reason::Forward | Reason::Backward => ("#333333", 1, 0),
        Reason::Any => ("#555555", 1, 12),
        Reason::Tie | Reason::None => ("#999999", 1, 0),
    };
    StyleAttr::new(colour(line), width, Some(colour(fill)), rounded, FONT)
}

fn add_box(vg: &mut VisualGraph, label: &str, style: StyleAttr) -> layout::adt::dag::NodeHandle {
    let shape = ShapeKind::new_box(label);
    let size = get_shape_size(Orientation::TopToBottom, &shape, FONT, false);
    vg.add_node(Element::create(
        shape,
        style,
        Orientation::TopToBottom,
        size,
    ))
}

/// The graph as an SVG document.
pub fn to_svg(
    graph: &Graph,
    topo: &Topology,
    prop: &Propagation,
    options: ExportOptions,
) -> String {
    let view = build_view(graph, topo, prop, options);
    let mut vg = VisualGraph::new(Orientation::TopToBottom);

    let mut legend = String::from("legend\n");
    if let Some((tasks, groups)) = view.summary {
        legend.push_str(&format!("{tasks} tasks as {groups} groups\n"));
    }
    legend.push_str("thick border: pinned\nrounded white: any pool\ngrey: free (tie / none)\ndashed edge: crosses pools");
    add_box(&mut vg, &legend, look(ANY_FILL, Reason::Forward));
    for (p, fill) in &view.legend {
        add_box(
            &mut vg,
            &format!("pool {}", graph.pool_name(*p)),
            look(fill, Reason::Forward),
        );
    }

    let handles: Vec<_> = view
        .nodes
        .iter()
        .map(|n| {
            let fill = match (n.pool, n.reason) {
                (Some(p), _) => view.colour(p),
                (None, Reason::Any) => ANY_FILL,
                (None, _) => FREE_FILL,
            };
            add_box(&mut vg, &n.label, look(fill, n.reason))
        })
        .collect();
    for e in &view.edges {
        let cross = {
            let (a, b) = (view.nodes[e.from].pool, view.nodes[e.to].pool);
            b.is_none() || a != b
        };
        let style = if cross {
            LineStyleKind::Dashed
        } else {
            LineStyleKind::Normal
        };
        let edge_look = StyleAttr::new(
            colour(if cross { "#c0392b" } else { "#333333" }),
            1,
            None,
            0,
            11,
        );
        let arrow = Arrow::new(
            LineEndKind::None,
            LineEndKind::Arrow,
            style,
            &human_bytes(e.bytes),
            &edge_look,
            &None,
            &None,
        );
        vg.add_edge(arrow, handles[e.from], handles[e.to]);
    }
    let mut svg = SVGWriter::new();
    vg.do_it(false, false, false, &mut svg);
    svg.finalize()
}
