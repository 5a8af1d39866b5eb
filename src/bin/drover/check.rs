//! `drover check GRAPH.json [--json]`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{load, Failure};

/// Arguments of `drover check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The JSON graph file.
    graph: PathBuf,
    /// Print JSON: {"tasks": [{"key", "pool", "reason"}], "transfer_estimate": {...}}.
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
    let mut out = String::new();
    padded(&mut out, "TASK", key_w);
    out.push_str("  ");
    padded(&mut out, "POOL", pool_w);
    out.push_str("  REASON\n");
    for r in rows {
        padded(&mut out, r.key, key_w);
        out.push_str("  ");
        padded(&mut out, r.pool.unwrap_or("-"), pool_w);
        out.push_str(&format!("  {}\n", r.reason));
    }
    out
}

/// Runs the command.
pub fn run(args: Args) -> Result<(), Failure> {
    let planned = load(&args.graph)?;
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
    let report = Report {
        tasks,
        transfer_estimate: p.estimate,
    };
    if args.json {
        let text = serde_json::to_string_pretty(&report).expect("report serialises") + "\n";
        return crate::write_output(Path::new("-"), &text);
    }
    let out = table(&report.tasks);
    let e = report.transfer_estimate;
    let mut out = out;
    out.push_str(&format!(
        "\nestimated bytes crossing pools: without the pass {}, forward only {}, full pass {}\n",
        e.without, e.forward, e.full
    ));
    crate::write_output(Path::new("-"), &out)
}
