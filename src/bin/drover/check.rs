//! `drover check GRAPH.json [--json]`.

use std::path::PathBuf;

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

/// Runs the command.
pub fn run(args: Args) -> Result<(), Failure> {
    let (file, planned) = load(&args.graph)?;
    let g = &planned.graph;
    let p = &planned.propagation;
    // Rows in the file's order, which is the order the user wrote.
    let tasks: Vec<TaskRow> = file
        .tasks
        .iter()
        .map(|t| {
            let id = g
                .id_of(&t.key)
                .expect("a valid graph defines every key in its file");
            TaskRow {
                key: g.key(id),
                pool: p.pool_name(g, id),
                reason: p.reason(id),
            }
        })
        .collect();
    let report = Report {
        tasks,
        transfer_estimate: p.estimate,
    };
    if args.json {
        let text = serde_json::to_string_pretty(&report).expect("report serialises") + "\n";
        return crate::write_output(&"-".into(), &text);
    }
    let key_w = report
        .tasks
        .iter()
        .map(|r| r.key.len())
        .max()
        .unwrap_or(0)
        .max(4);
    let pool_w = report
        .tasks
        .iter()
        .map(|r| r.pool.map_or(1, str::len))
        .max()
        .unwrap_or(0)
        .max(4);
    let mut out = format!("{:key_w$}  {:pool_w$}  REASON\n", "TASK", "POOL");
    for r in &report.tasks {
        out.push_str(&format!(
            "{:key_w$}  {:pool_w$}  {}\n",
            r.key,
            r.pool.unwrap_or("-"),
            r.reason
        ));
    }
    let e = report.transfer_estimate;
    out.push_str(&format!(
        "\nestimated bytes crossing pools: without the pass {}, forward only {}, full pass {}\n",
        e.without, e.forward, e.full
    ));
    crate::write_output(&"-".into(), &out)
}
