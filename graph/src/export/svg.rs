//! SVG export in pure Rust (no Graphviz needed): the graph laid out in layers top to bottom
//! ([`super::layered`]), the legend in a panel of its own to the right. Same conventions as
//! the DOT export: pool colours, pinned tasks (and once-cells) with a thick border, any-pool
//! tasks rounded and white, free tasks grey, edges crossing pools dashed red, each edge
//! labelled with the bytes it carries.

use std::fmt::Write;

use super::layered::{layout, Rect};
use super::{build_view, human_bytes, ExportOptions, TaskState, View, ANY_FILL, FREE_FILL};
use crate::{Graph, Propagation, Reason, Topology};

/// Font size of node labels, px.
const FONT: f64 = 13.0;
/// Font size of edge labels, px.
const SMALL: f64 = 11.0;
/// Width of a character, px, a little over DejaVu Sans's (so text never touches a border).
const CHAR_W: f64 = 0.62 * FONT;
/// Height of a label line, px.
const LINE_H: f64 = 17.0;
/// Padding inside a node's border, px.
const PAD_X: f64 = 12.0;
/// Padding inside a node's border, px.
const PAD_Y: f64 = 8.0;
/// Margin around the picture, px.
const MARGIN: f64 = 16.0;
/// Space between the graph and the legend, px.
const LEGEND_GAP: f64 = 40.0;
/// The fonts asked for (DejaVu Sans is what the widths are measured for).
const FONT_FAMILY: &str = "DejaVu Sans, Verdana, Arial, sans-serif";

/// Text for XML.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c if (c as u32) < 0x20 && c != '\t' => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// Width of a line of text, px.
fn text_width(line: &str, bold: bool) -> f64 {
    line.chars().count() as f64 * CHAR_W * if bold { 1.08 } else { 1.0 }
}

/// A node's box: border colour, width, corner radius.
fn border(reason: Reason) -> (&'static str, f64, f64) {
    match reason {
        Reason::Pinned | Reason::OnceCell => ("#000000", 3.0, 0.0),
        Reason::Forward | Reason::Backward | Reason::Optimised => ("#333333", 1.0, 0.0),
        Reason::Any => ("#555555", 1.0, 12.0),
        Reason::Tie | Reason::None => ("#999999", 1.0, 0.0),
    }
}

/// The fill of a node.
fn fill(view: &View, pool: Option<crate::PoolId>, reason: Reason) -> &'static str {
    match (pool, reason) {
        (Some(p), _) => view.colour(p),
        (None, Reason::Any) => ANY_FILL,
        (None, _) => FREE_FILL,
    }
}

/// The size of a label's box.
fn label_size(label: &str) -> (f64, f64) {
    let lines: Vec<&str> = label.lines().collect();
    let w = lines
        .iter()
        .enumerate()
        .map(|(i, l)| text_width(l, i == 0))
        .fold(0.0, f64::max);
    (
        (w + 2.0 * PAD_X).ceil(),
        (lines.len().max(1) as f64 * LINE_H + 2.0 * PAD_Y).ceil(),
    )
}

/// Writes a label's lines centred in `r`, the first bold.
fn write_label(svg: &mut String, r: &Rect, label: &str) {
    let lines: Vec<&str> = label.lines().collect();
    let top = r.y + (r.h - lines.len() as f64 * LINE_H) / 2.0;
    for (i, line) in lines.iter().enumerate() {
        let weight = if i == 0 { " font-weight=\"bold\"" } else { "" };
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle"{weight}>{}</text>"#,
            r.x + r.w / 2.0,
            top + (i as f64 + 0.75) * LINE_H,
            esc(line)
        );
    }
}

/// A smooth path through `pts`: vertical tangents at every point, so edges leave and enter
/// nodes straight and bend between layers.
fn path(pts: &[(f64, f64)]) -> String {
    let mut d = format!("M{:.1},{:.1}", pts[0].0, pts[0].1);
    for w in pts.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        let dy = (y1 - y0) / 2.0;
        let _ = write!(
            d,
            " C{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}",
            x0,
            y0 + dy,
            x1,
            y1 - dy,
            x1,
            y1
        );
    }
    d
}

/// Whether an edge crosses pools (or enters a task of no pool).
fn crosses(view: &View, e: &super::ViewEdge) -> bool {
    let (a, b) = (view.nodes[e.from].pool, view.nodes[e.to].pool);
    b.is_none() || a != b
}

/// The edges' byte labels, placed where they collide with no node and no other label: the
/// biggest edges first, each at the first free spot of a few along its route (near its
/// target, near its source, midway), on the side of the line the line is not; a label with
/// no free spot is left out (the JSON export has every figure).
fn edge_labels(view: &View, lay: &super::layered::Layout) -> String {
    let mut order: Vec<usize> = (0..view.edges.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(view.edges[i].bytes), i));
    let mut taken: Vec<Rect> = lay.nodes.clone();
    let mut out = String::new();
    for i in order {
        let (e, route) = (&view.edges[i], &lay.routes[i]);
        if route.len() < 2 {
            continue;
        }
        let text = human_bytes(e.bytes);
        let w = text.chars().count() as f64 * 0.62 * SMALL + 4.0;
        let h = SMALL + 3.0;
        let last = route.len() - 1;
        let candidates = [
            (route[last - 1], route[last], 0.6),
            (route[0], route[1], 0.45),
            (route[last / 2], route[(last / 2 + 1).min(last)], 0.5),
        ];
        let spot = candidates.iter().find_map(|&(p, q, t)| {
            let (lx, ly) = (p.0 + (q.0 - p.0) * t, p.1 + (q.1 - p.1) * t);
            let right = q.0 - p.0 <= 1.0;
            let x = if right { lx + 6.0 } else { lx - 6.0 - w };
            let rect = Rect {
                x,
                y: ly - h / 2.0,
                w,
                h,
            };
            let free = !taken.iter().any(|r| {
                rect.x < r.x + r.w
                    && r.x < rect.x + rect.w
                    && rect.y < r.y + r.h
                    && r.y < rect.y + rect.h
            });
            free.then_some(rect)
        });
        let Some(rect) = spot else { continue };
        taken.push(rect);
        let colour = if crosses(view, e) {
            "#c0392b"
        } else {
            "#333333"
        };
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" font-size="{SMALL}" fill="{colour}" stroke="#ffffff" stroke-width="3" paint-order="stroke">{}</text>"##,
            rect.x + 2.0,
            rect.y + h - 3.5,
            esc(&text)
        );
    }
    out
}

/// The legend panel's rows: (swatch fill, border colour, border width, radius, dashed line
/// instead of a box, text).
fn legend_rows(
    graph: &Graph,
    view: &View,
) -> Vec<(&'static str, &'static str, f64, f64, bool, String)> {
    let mut rows = Vec::new();
    for (p, colour) in &view.legend {
        rows.push((
            *colour,
            "#333333",
            1.0,
            0.0,
            false,
            format!("pool {}", graph.pool_name(*p)),
        ));
    }
    rows.push((
        FREE_FILL,
        "#000000",
        3.0,
        0.0,
        false,
        "pinned (thick border)".to_owned(),
    ));
    rows.push((
        ANY_FILL,
        "#555555",
        1.0,
        6.0,
        false,
        "any pool (rounded, white)".to_owned(),
    ));
    rows.push((
        FREE_FILL,
        "#999999",
        1.0,
        0.0,
        false,
        "no pool: tie or none (grey)".to_owned(),
    ));
    rows.push((
        "none",
        "#c0392b",
        1.5,
        0.0,
        true,
        "edge crossing pools".to_owned(),
    ));
    rows
}

/// Height of the strip of task states at the bottom of a node of a live run's picture.
const STRIP_H: f64 = 7.0;

/// The graph as an SVG document.
pub fn to_svg(
    graph: &Graph,
    topo: &Topology,
    prop: &Propagation,
    options: ExportOptions,
) -> String {
    render(graph, build_view(graph, topo, prop, options))
}

/// A live run's picture: [`to_svg`], each node with a strip of its tasks' states (`states`
/// by task index: done green, failed red, running blue, ready light blue, waiting grey) and,
/// for a group, the counts; the legend lists the states.
pub fn to_svg_with_states(
    graph: &Graph,
    topo: &Topology,
    prop: &Propagation,
    options: ExportOptions,
    states: &[TaskState],
) -> String {
    let mut view = super::build_view_with_states(graph, topo, prop, options, Some(states));
    if view.summary.is_some() {
        for n in &mut view.nodes {
            if let Some(c) = n.states {
                let parts: Vec<String> = TaskState::ALL
                    .iter()
                    .zip(c)
                    .filter(|(_, k)| *k > 0)
                    .map(|(s, k)| format!("{k} {}", s.name()))
                    .collect();
                n.label.push('\n');
                n.label.push_str(&parts.join(" · "));
            }
        }
    }
    render(graph, view)
}

fn render(graph: &Graph, view: View) -> String {
    let live = view.nodes.iter().any(|n| n.states.is_some());
    let sizes: Vec<(f64, f64)> = view
        .nodes
        .iter()
        .map(|n| {
            let (w, h) = label_size(&n.label);
            (w, if live { h + STRIP_H } else { h })
        })
        .collect();
    let edges: Vec<(usize, usize)> = view.edges.iter().map(|e| (e.from, e.to)).collect();
    let lay = layout(&sizes, &edges);

    // The legend, beside the graph.
    let mut rows = legend_rows(graph, &view);
    if live {
        for st in TaskState::ALL {
            rows.push((
                st.colour(),
                st.colour(),
                1.0,
                0.0,
                false,
                format!("task {}", st.name()),
            ));
        }
    }
    let mut title = "Legend".to_owned();
    if let Some((tasks, groups)) = view.summary {
        title = format!("Legend ({tasks} tasks shown as {groups} groups)");
    }
    let swatch = 28.0;
    let legend_w = rows
        .iter()
        .map(|r| text_width(&r.5, false) + swatch + 12.0)
        .fold(text_width(&title, true), f64::max)
        + 2.0 * PAD_X;
    let legend_h = (rows.len() + 1) as f64 * (LINE_H + 6.0) + 2.0 * PAD_Y;
    let graph_x = MARGIN;
    let graph_y = MARGIN;
    let legend_x = graph_x + lay.width + LEGEND_GAP;
    let width = (legend_x + legend_w + MARGIN).ceil();
    let height = (graph_y + lay.height.max(legend_h) + MARGIN).ceil();

    let mut svg = String::with_capacity(512 + 400 * view.nodes.len());
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="{FONT_FAMILY}" font-size="{FONT}">"#
    );
    svg.push_str(
        "<defs>\
<marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#333333\"/></marker>\
<marker id=\"arrow-cross\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#c0392b\"/></marker>\
</defs>\n",
    );
    let _ = writeln!(
        svg,
        r##"<rect width="{width}" height="{height}" fill="#ffffff"/>"##
    );
    let _ = writeln!(svg, r#"<g transform="translate({graph_x},{graph_y})">"#);
    // Edges first, under the nodes; their labels last, over everything.
    for (e, route) in view.edges.iter().zip(&lay.routes) {
        if route.len() < 2 {
            continue;
        }
        let (stroke, dash, marker) = if crosses(&view, e) {
            ("#c0392b", r#" stroke-dasharray="6,4""#, "arrow-cross")
        } else {
            ("#333333", "", "arrow")
        };
        let _ = writeln!(
            svg,
            r#"<path d="{}" fill="none" stroke="{stroke}" stroke-width="1.3"{dash} marker-end="url(#{marker})"/>"#,
            path(route)
        );
    }
    let labels = edge_labels(&view, &lay);
    for (n, r) in view.nodes.iter().zip(&lay.nodes) {
        let (line, stroke_w, radius) = border(n.reason);
        let _ = writeln!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="{radius}" fill="{}" stroke="{line}" stroke-width="{stroke_w}"/>"#,
            r.x,
            r.y,
            r.w,
            r.h,
            fill(&view, n.pool, n.reason)
        );
        if let Some(counts) = n.states {
            let label_box = Rect {
                h: r.h - STRIP_H,
                ..*r
            };
            write_label(&mut svg, &label_box, &n.label);
            let total: u64 = counts.iter().sum();
            let mut x = r.x + 1.5;
            let width = r.w - 3.0;
            for (st, k) in TaskState::ALL.iter().zip(counts) {
                if k == 0 || total == 0 {
                    continue;
                }
                let w = width * k as f64 / total as f64;
                let _ = writeln!(
                    svg,
                    r#"<rect x="{x:.1}" y="{:.1}" width="{w:.1}" height="{:.1}" fill="{}" class="state-{}"/>"#,
                    r.y + r.h - STRIP_H - 1.5,
                    STRIP_H,
                    st.colour(),
                    st.name()
                );
                x += w;
            }
        } else {
            write_label(&mut svg, r, &n.label);
        }
    }
    svg.push_str(&labels);
    svg.push_str("</g>\n");

    // The legend panel.
    let _ = writeln!(svg, r#"<g transform="translate({legend_x:.1},{graph_y})">"#);
    let _ = writeln!(
        svg,
        r##"<rect width="{legend_w:.1}" height="{legend_h:.1}" rx="6" fill="#fafafa" stroke="#bbbbbb"/>"##
    );
    let row_h = LINE_H + 6.0;
    let _ = writeln!(
        svg,
        r#"<text x="{PAD_X}" y="{:.1}" font-weight="bold">{}</text>"#,
        PAD_Y + 0.75 * LINE_H,
        esc(&title)
    );
    for (i, (fill, line, width, radius, dashed, text)) in rows.iter().enumerate() {
        let y = PAD_Y + (i + 1) as f64 * row_h;
        if *dashed {
            let _ = writeln!(
                svg,
                r#"<line x1="{PAD_X}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{line}" stroke-width="{width}" stroke-dasharray="6,4"/>"#,
                y + row_h / 2.0 - 2.0,
                PAD_X + swatch,
                y + row_h / 2.0 - 2.0
            );
        } else {
            let _ = writeln!(
                svg,
                r#"<rect x="{PAD_X}" y="{:.1}" width="{swatch}" height="{:.1}" rx="{radius}" fill="{fill}" stroke="{line}" stroke-width="{width}"/>"#,
                y + 2.0,
                row_h - 8.0
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            PAD_X + swatch + 10.0,
            y + 0.75 * LINE_H,
            esc(text)
        );
    }
    svg.push_str("</g>\n</svg>\n");
    svg
}

/// Where things are in a picture, for tests: node rectangles and the legend's, in picture
/// coordinates, and the picture's size.
#[cfg(test)]
pub(crate) fn geometry(
    graph: &Graph,
    topo: &Topology,
    prop: &Propagation,
    options: ExportOptions,
) -> (Vec<Rect>, usize) {
    let view = build_view(graph, topo, prop, options);
    let sizes: Vec<(f64, f64)> = view.nodes.iter().map(|n| label_size(&n.label)).collect();
    let edges: Vec<(usize, usize)> = view.edges.iter().map(|e| (e.from, e.to)).collect();
    let lay = layout(&sizes, &edges);
    (lay.nodes, lay.crossings)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 10-task graph shaped like the issue's complaint: two pinned sources, a fan-out and
    /// joins.
    fn ten() -> Graph {
        let mut g = Graph::new();
        let a = g.pool("A", |g| g.task("load", &()).key("a").size_hint(800).add());
        let b = g.pool("B", |g| g.task("load", &()).key("b").size_hint(80).add());
        let c = g.task("clean", &()).key("c").input(a).add();
        let d = g.task("clean", &()).key("d").input(b).add();
        let e = g.task("mean", &()).key("e").input(c).size_hint(8).add();
        let f = g.task("join", &()).key("f").input(d).input(e).add();
        let h = g.task("sum", &()).key("h").input(c).add();
        let i = g.any_pool(|g| g.task("report", &()).key("i").input(f).input(h).add());
        g.task("check", &()).key("j").input(a).input(i).add();
        g.task("log", &()).key("k").input(b).add();
        g
    }

    fn plan(g: &Graph) -> (Topology, Propagation) {
        let topo = g.validate().unwrap();
        let prop = crate::propagate_pools(g, &topo);
        (topo, prop)
    }

    #[test]
    fn a_ten_task_picture_is_compact_layered_and_readable() {
        let g = ten();
        let (topo, prop) = plan(&g);
        let (nodes, crossings) = geometry(&g, &topo, &prop, ExportOptions::default());
        let svg = to_svg(&g, &topo, &prop, ExportOptions::default());
        let size = |attr: &str| -> f64 {
            let at = svg.find(&format!("{attr}=\"")).unwrap() + attr.len() + 2;
            svg[at..].split('"').next().unwrap().parse().unwrap()
        };
        let (w, h) = (size("width"), size("height"));
        // Was 2,062 px wide and flat with crossings.
        assert!(w < 1100.0 && h < 800.0, "{w} x {h}");
        assert!(crossings <= 1, "{crossings} crossings");
        for (i, a) in nodes.iter().enumerate() {
            for b in &nodes[i + 1..] {
                assert!(!a.overlaps(b), "{a:?} {b:?}");
            }
        }
        // Tight: the graph fills the height (no big empty band), nothing is outside.
        let bottom = nodes.iter().map(|r| r.y + r.h).fold(0.0, f64::max);
        let right = nodes.iter().map(|r| r.x + r.w).fold(0.0, f64::max);
        assert!(
            h - (bottom + MARGIN * 2.0) < 1.0 || h < 400.0,
            "{h} vs {bottom}"
        );
        assert!(right + MARGIN < w, "{right} {w}");
        // The legend sits right of every node.
        let legend_x: f64 = svg
            .lines()
            .filter_map(|l| l.strip_prefix("<g transform=\"translate("))
            .nth(1)
            .and_then(|t| t.split(',').next())
            .unwrap()
            .parse()
            .unwrap();
        assert!(legend_x > right + MARGIN, "{legend_x} {right}");
        // Sources above consumers: a is above c above e above f.
        let y = |k: &str| nodes[topo.order().iter().position(|&t| g.key(t) == k).unwrap()].y;
        assert!(y("a") < y("c") && y("c") < y("e") && y("e") < y("f"));
    }

    #[test]
    fn labels_are_escaped_and_fit_their_boxes() {
        let mut g = Graph::new();
        g.task("f<&>\"", &()).key("<key & \"quoted\">").add();
        let (topo, prop) = plan(&g);
        let svg = to_svg(&g, &topo, &prop, ExportOptions::default());
        assert!(
            svg.contains("&lt;key &amp; &quot;quoted&quot;&gt;"),
            "{svg}"
        );
        assert!(!svg.contains("<key"));
        let (w, _) = label_size("a fairly long label line");
        assert!(w >= text_width("a fairly long label line", true) + 2.0 * PAD_X - 1.0);
    }
}
