//! Pictures and data of a graph with its pools: DOT (for Graphviz users), JSON (nodes, edges,
//! pool, reason) and SVG (rendered in pure Rust, no system tool).
//!
//! DOT and SVG share one [`View`]: either every task, or, above
//! [`ExportOptions::summarise_above`] tasks, one node per (function, pool, reason) group with
//! edges summed, so that large graphs stay readable.

mod dot;
mod json;
mod layered;
mod svg;

use std::collections::HashMap;

pub use dot::to_dot;
pub use json::{export_graph, to_json, ExportEdge, ExportGraph, ExportNode};
pub use svg::{to_svg, to_svg_with_states};

use crate::cost::estimated_size;
use crate::{Graph, PoolId, Propagation, Reason, TaskId, Topology};

/// Options shared by the picture formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportOptions {
    /// Above this many tasks, DOT and SVG collapse tasks with the same function, pool and reason
    /// into one node. `None` never summarises.
    pub summarise_above: Option<usize>,
}

impl Default for ExportOptions {
    /// Summarise above 300 tasks: a few hundred nodes still read well in a picture.
    fn default() -> Self {
        ExportOptions {
            summarise_above: Some(300),
        }
    }
}

/// The export formats, by their CLI names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Graphviz DOT text.
    Dot,
    /// JSON: nodes, edges, pool, reason.
    Json,
    /// SVG picture.
    Svg,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "dot" => Ok(Format::Dot),
            "json" => Ok(Format::Json),
            "svg" => Ok(Format::Svg),
            other => Err(format!(
                "unknown export format {other:?}: use dot, json or svg"
            )),
        }
    }
}

/// Renders `graph` with its pass result in `format`.
pub fn export(
    graph: &Graph,
    topo: &Topology,
    prop: &Propagation,
    format: Format,
    options: ExportOptions,
) -> String {
    match format {
        Format::Dot => to_dot(graph, topo, prop, options),
        Format::Json => to_json(graph, topo, prop),
        Format::Svg => to_svg(graph, topo, prop, options),
    }
}

/// Where a task is in a run, for pictures of a live run ([`svg::to_svg_with_states`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// Waiting for inputs.
    Waiting,
    /// Ready, queued.
    Ready,
    /// Running (assigned to a worker).
    Running,
    /// Finished.
    Done,
    /// Failed.
    Failed,
}

impl TaskState {
    /// Every state, in the order pictures draw them.
    pub const ALL: [TaskState; 5] = [
        TaskState::Done,
        TaskState::Failed,
        TaskState::Running,
        TaskState::Ready,
        TaskState::Waiting,
    ];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Waiting => "waiting",
            TaskState::Ready => "ready",
            TaskState::Running => "running",
            TaskState::Done => "done",
            TaskState::Failed => "failed",
        }
    }

    /// Its colour in pictures.
    pub fn colour(self) -> &'static str {
        match self {
            TaskState::Waiting => "#cbd5e0",
            TaskState::Ready => "#90cdf4",
            TaskState::Running => "#3182ce",
            TaskState::Done => "#2f855a",
            TaskState::Failed => "#c53030",
        }
    }

    fn index(self) -> usize {
        TaskState::ALL
            .iter()
            .position(|s| *s == self)
            .expect("listed")
    }
}

/// One node of a picture: a task, or a group of tasks when summarised.
#[derive(Debug, Clone)]
pub(crate) struct ViewNode {
    /// Lines of the label.
    pub label: String,
    pub pool: Option<PoolId>,
    pub reason: Reason,
    /// Its tasks by state (in [`TaskState::ALL`]'s order), for a live run's picture.
    pub states: Option<[u64; 5]>,
}

/// One edge of a picture, with estimated bytes (summed over grouped edges).
#[derive(Debug, Clone)]
pub(crate) struct ViewEdge {
    pub from: usize,
    pub to: usize,
    pub bytes: u64,
}

/// What a picture shows.
#[derive(Debug, Clone)]
pub(crate) struct View {
    pub nodes: Vec<ViewNode>,
    pub edges: Vec<ViewEdge>,
    /// Set when tasks were grouped: (tasks, groups).
    pub summary: Option<(usize, usize)>,
    /// Pool ids sorted by name, with their colours.
    pub legend: Vec<(PoolId, &'static str)>,
}

impl View {
    /// The colour of pool `p`.
    pub fn colour(&self, p: PoolId) -> &'static str {
        self.legend
            .iter()
            .find(|(q, _)| *q == p)
            .map(|(_, c)| *c)
            .unwrap_or(FREE_FILL)
    }
}

/// Fill colours for pools, assigned in pool-name order (so the same graph always gets the same
/// colours, whatever order it was written in). Chosen to be distinct and light enough for text.
const PALETTE: [&str; 12] = [
    "#8dd3c7", "#fdb462", "#bebada", "#fb8072", "#80b1d3", "#b3de69", "#fccde5", "#ffffb3",
    "#bc80bd", "#ccebc5", "#ffed6f", "#d9d9d9",
];
/// Fill of tasks with no pool (tie or none).
pub(crate) const FREE_FILL: &str = "#f2f2f2";
/// Fill of any-pool tasks.
pub(crate) const ANY_FILL: &str = "#ffffff";

/// Bytes for people: `800 B`, `1.5 KiB`, `2.0 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// The label suffix saying pool and reason: `A · forward`, `any pool`, `no pool · tie`.
pub(crate) fn placement_text(graph: &Graph, pool: Option<PoolId>, reason: Reason) -> String {
    match (pool, reason) {
        (Some(p), r) => format!("{} · {r}", graph.pool_name(p)),
        (None, Reason::Any) => "any pool".to_owned(),
        (None, r) => format!("no pool · {r}"),
    }
}

pub(crate) fn build_view(
    graph: &Graph,
    topo: &Topology,
    prop: &Propagation,
    options: ExportOptions,
) -> View {
    build_view_with_states(graph, topo, prop, options, None)
}

/// [`build_view`], each node with its tasks' states when `states` (by task index) is given.
pub(crate) fn build_view_with_states(
    graph: &Graph,
    topo: &Topology,
    prop: &Propagation,
    options: ExportOptions,
    states: Option<&[TaskState]>,
) -> View {
    let mut view = build_view_plain(graph, topo, prop, options);
    if let Some(states) = states {
        let summarised = view.summary.is_some();
        let mut counts = vec![[0u64; 5]; view.nodes.len()];
        if summarised {
            let groups = group_of_tasks(graph, topo, prop);
            for t in graph.task_ids() {
                if let Some(s) = states.get(t.index()) {
                    counts[groups[t.index()]][s.index()] += 1;
                }
            }
        } else {
            for (i, &t) in topo.order().iter().enumerate() {
                if let Some(s) = states.get(t.index()) {
                    counts[i][s.index()] += 1;
                }
            }
        }
        for (n, c) in view.nodes.iter_mut().zip(counts) {
            n.states = Some(c);
        }
    }
    view
}

/// Each task's group in the summarised view (numbered as `grouped_view` numbers them).
fn group_of_tasks(graph: &Graph, topo: &Topology, prop: &Propagation) -> Vec<usize> {
    let mut group_of: HashMap<(&str, Option<PoolId>, Reason), usize> = HashMap::new();
    let mut out = vec![0usize; graph.len()];
    for &t in topo.order() {
        let key = (graph.function(t), prop.pool(t), prop.reason(t));
        let next = group_of.len();
        out[t.index()] = *group_of.entry(key).or_insert(next);
    }
    out
}

fn build_view_plain(
    graph: &Graph,
    topo: &Topology,
    prop: &Propagation,
    options: ExportOptions,
) -> View {
    let mut names: Vec<PoolId> = graph.pools().map(|(p, _)| p).collect();
    names.sort_by(|a, b| graph.pool_name(*a).cmp(graph.pool_name(*b)));
    let legend = names
        .into_iter()
        .enumerate()
        .map(|(i, p)| (p, PALETTE[i % PALETTE.len()]))
        .collect();
    let summarise = options
        .summarise_above
        .is_some_and(|limit| graph.len() > limit);
    if summarise {
        grouped_view(graph, topo, prop, legend)
    } else {
        task_view(graph, topo, prop, legend)
    }
}

fn task_view(
    graph: &Graph,
    topo: &Topology,
    prop: &Propagation,
    legend: Vec<(PoolId, &'static str)>,
) -> View {
    // Nodes in topological order, so pictures read top-down the way the work flows.
    let mut index = vec![0usize; graph.len()];
    let mut nodes = Vec::with_capacity(graph.len());
    for (i, &t) in topo.order().iter().enumerate() {
        index[t.index()] = i;
        nodes.push(ViewNode {
            label: format!(
                "{}\n{}{}\n{}",
                graph.key(t),
                if graph.is_once_cell(t) {
                    "once-cell: "
                } else {
                    ""
                },
                graph.function(t),
                placement_text(graph, prop.pool(t), prop.reason(t))
            ),
            pool: prop.pool(t),
            reason: prop.reason(t),
            states: None,
        });
    }
    let mut edges = Vec::with_capacity(graph.edge_count());
    let mut mark = vec![u32::MAX; graph.len()];
    for &t in topo.order() {
        crate::cost::for_each_distinct_input(graph, t, &mut mark, |input| {
            edges.push(ViewEdge {
                from: index[input.index()],
                to: index[t.index()],
                bytes: estimated_size(graph, input),
            })
        });
    }
    View {
        nodes,
        edges,
        summary: None,
        legend,
    }
}

fn grouped_view(
    graph: &Graph,
    topo: &Topology,
    prop: &Propagation,
    legend: Vec<(PoolId, &'static str)>,
) -> View {
    type GroupKey<'g> = (&'g str, Option<PoolId>, Reason);
    let mut group_of: HashMap<GroupKey<'_>, usize> = HashMap::new();
    let mut members: Vec<(GroupKey<'_>, usize)> = Vec::new();
    let mut task_group = vec![0usize; graph.len()];
    // Groups are numbered in topological order of their first task: deterministic.
    for &t in topo.order() {
        let key = (graph.function(t), prop.pool(t), prop.reason(t));
        let g = *group_of.entry(key).or_insert_with(|| {
            members.push((key, 0));
            members.len() - 1
        });
        members[g].1 += 1;
        task_group[t.index()] = g;
    }
    let nodes = members
        .iter()
        .map(|&((function, pool, reason), count)| ViewNode {
            label: format!(
                "{function} ×{count}\n{}",
                placement_text(graph, pool, reason)
            ),
            pool,
            reason,
            states: None,
        })
        .collect::<Vec<_>>();
    let mut edge_bytes: HashMap<(usize, usize), u64> = HashMap::new();
    let mut mark = vec![u32::MAX; graph.len()];
    for &t in topo.order() {
        let to = task_group[t.index()];
        crate::cost::for_each_distinct_input(graph, t, &mut mark, |input: TaskId| {
            let from = task_group[input.index()];
            if from != to {
                let e = edge_bytes.entry((from, to)).or_default();
                *e = e.saturating_add(estimated_size(graph, input));
            }
        });
    }
    let mut edges: Vec<ViewEdge> = edge_bytes
        .into_iter()
        .map(|((from, to), bytes)| ViewEdge { from, to, bytes })
        .collect();
    edges.sort_by_key(|e| (e.from, e.to));
    View {
        summary: Some((graph.len(), nodes.len())),
        nodes,
        edges,
        legend,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_reads_well() {
        assert_eq!(human_bytes(800), "800 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
    }
}
