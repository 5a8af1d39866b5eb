//! `drover check GRAPH.json [--json]`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::Failure;

/// Arguments of `drover check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The JSON graph file.
    graph: PathBuf,
    /// The placement rule: `optimised` (default: the linear pass, then the min-cut
    /// refinement) or `linear` (the forward and backward sweeps only). Overrides the file's
    /// `pass` field.
    #[arg(long)]
    pass: Option<drover::Pass>,
    /// Print JSON: {"tasks": [{"key", "pool", "reason"}], "transfer_estimate": {"without",
    /// "forward", "linear", "full", "lower_bound"}} (bytes crossing pools).
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct TaskRow<'a> {
    key: &'a str,
    pool: Option<&'a str>,
    reason: drover::Reason,
}

#[derive(Serialize)]
struct Report<'a> {
    tasks: Vec<TaskRow<'a>>,
    transfer_estimate: drover::TransferEstimate,
}

/// Columns wider than this are not padded further: a longer key or pool pushes its row's
/// next column right instead of widening every row.
const MAX_COLUMN: usize = 60;

/// `text` padded with spaces to `width` characters.
fn padded(out: &mut String, text: &str, width: usize) {
    out.push_str(text);
    let n = text.chars().count();
    out.extend(std::iter::repeat_n(' ', width.saturating_sub(n)));
}

/// The table of tasks: key, pool, reason.
fn table(rows: &[TaskRow]) -> String {
    let width =
        |f: &dyn Fn(&TaskRow) -> usize| rows.iter().map(f).max().unwrap_or(0).clamp(4, MAX_COLUMN);
    let key_w = width(&|r| r.key.chars().count());
    let pool_w = width(&|r| r.pool.map_or(1, |p| p.chars().count()));
    // About one line per task: reserved once, not grown a million times.
    let mut out = String::with_capacity((rows.len() + 1) * (key_w + pool_w + 14));
    padded(&mut out, "TASK", key_w);
    out.push_str("  ");
    padded(&mut out, "POOL", pool_w);
    out.push_str("  REASON\n");
    for r in rows {
        padded(&mut out, r.key, key_w);
        out.push_str("  ");
        padded(&mut out, r.pool.unwrap_or("-"), pool_w);
        out.push_str("  ");
        out.push_str(r.reason.as_str());
        out.push('\n');
    }
    out
}

/// Runs the command.
pub fn run(args: Args) -> Result<(), Failure> {
    let planned = crate::load_with(&args.graph, args.pass)?;
    let g = &planned.graph;
    let p = &planned.propagation;
    // Rows in the file's order, which is the order the user wrote.
    let tasks: Vec<TaskRow> = g
        .definition_order()
        .iter()
        .map(|&id| TaskRow {
            key: g.key(id),
            pool: p.pool_name(g, id),
            reason: p.reason(id),
        })
        .collect();
    let mut estimate = p.estimate;
    if g.pass() == drover::Pass::Optimised {
        estimate.lower_bound = drover::optimise::bound::lower_bound(g, &planned.topology, p);
    }
    let report = Report {
        tasks,
        transfer_estimate: estimate,
    };
    if args.json {
        let text = serde_json::to_string_pretty(&report).expect("report serialises") + "\n";
        return crate::write_output(Path::new("-"), &text);
    }
    let out = table(&report.tasks);
    let e = report.transfer_estimate;
    let mut out = out;
    // The objective: each output counts once per other pool that consumes it.
    out.push_str(&format!(
        "\nestimated bytes crossing pools: without the pass {}, forward {}, linear {}",
        e.without, e.forward, e.linear
    ));
    match g.pass() {
        drover::Pass::Optimised => {
            out.push_str(&format!(", optimised {}", e.full));
            if let Some(lb) = e.lower_bound {
                out.push_str(&format!(" (lower bound {lb})"));
            }
        }
        drover::Pass::Linear => out.push_str(" (the linear pass was asked for)"),
    }
    out.push('\n');
    crate::write_output(Path::new("-"), &out)
}
