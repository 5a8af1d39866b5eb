//! `drover status [--access-file F] [--json] [--watch]`: the cluster at a glance.

use std::io::Write;

use drover::ClusterStatus;

use crate::Failure;

/// Arguments of `drover status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The scheduler named in this access.json.
    #[arg(long, default_value = "access.json")]
    access_file: std::path::PathBuf,
    /// Print the status as JSON (workers, pools, runs, detached runs, bytes moved, insights).
    #[arg(long, conflicts_with = "watch")]
    json: bool,
    /// Refresh in place every second until interrupted.
    #[arg(long)]
    watch: bool,
}

fn bytes(n: u64) -> String {
    drover::export::human_bytes(n)
}

/// The status as text.
fn render(s: &ClusterStatus) -> String {
    let t = &s.tasks;
    let mut out = format!(
        "tasks: {} waiting, {} ready, {} running, {} done, {} failed; moved {} between workers, {} between pools (pass estimate {})\n\n",
        t.waiting,
        t.ready,
        t.running,
        t.done,
        t.failed,
        bytes(s.bytes_between_workers),
        bytes(s.bytes_between_pools),
        bytes(s.estimated_bytes_between_pools)
    );
    let workers: Vec<Vec<String>> = s
        .workers
        .iter()
        .map(|w| {
            vec![
                w.name.clone(),
                if w.pools.is_empty() {
                    "-".into()
                } else {
                    w.pools.join(",")
                },
                if w.resources.is_empty() {
                    "-".into()
                } else {
                    w.resources.clone()
                },
                w.nthreads.to_string(),
                format!("{}/{}", w.running, w.queued),
                format!("{:.1}", w.tasks_per_s),
                w.memory_bytes.map_or("-".into(), bytes),
                format!("{:.1} s ago", w.last_heard_ago_ms as f64 / 1000.0),
            ]
        })
        .collect();
    out.push_str(&format!("workers ({}):\n", s.workers.len()));
    out.push_str(&crate::columns(
        &[
            "NAME",
            "POOLS",
            "RESOURCES",
            "THREADS",
            "RUNNING/QUEUED",
            "TASKS/S",
            "MEMORY",
            "LAST HEARD",
        ],
        &workers,
    ));
    if !s.pools.is_empty() {
        let pools: Vec<Vec<String>> = s
            .pools
            .iter()
            .map(|p| {
                vec![
                    p.name.clone(),
                    p.workers.to_string(),
                    format!(
                        "{}/{}/{}",
                        p.tasks.waiting + p.tasks.ready,
                        p.tasks.running,
                        p.tasks.done
                    ),
                    p.tasks.failed.to_string(),
                    bytes(p.bytes_in),
                ]
            })
            .collect();
        out.push_str("\npools:\n");
        out.push_str(&crate::columns(
            &[
                "POOL",
                "WORKERS",
                "WAITING/RUNNING/DONE",
                "FAILED",
                "BYTES IN",
            ],
            &pools,
        ));
    }
    if !s.runs.is_empty() {
        let runs: Vec<Vec<String>> = s
            .runs
            .iter()
            .map(|r| {
                let total = r.tasks.total();
                let settled = r.tasks.done + r.tasks.failed;
                vec![
                    r.id.clone(),
                    r.name.clone(),
                    format!(
                        "{settled}/{total} ({}%)",
                        (settled * 100).checked_div(total).unwrap_or(100)
                    ),
                    r.tasks.failed.to_string(),
                ]
            })
            .collect();
        out.push_str("\nruns:\n");
        out.push_str(&crate::columns(
            &["RUN", "NAME", "PROGRESS", "FAILED"],
            &runs,
        ));
    }
    out
}

/// Runs the command.
pub fn run(args: Args) -> Result<(), Failure> {
    crate::detached::with_client(&args.access_file, async |client| loop {
        let status = client
            .status()
            .await
            .map_err(|e| Failure::Lost(e.to_string()))?;
        let mut out = std::io::stdout().lock();
        if args.json {
            let text = serde_json::to_string_pretty(&status).expect("status serialises");
            let _ = writeln!(out, "{text}");
            return Ok(());
        }
        if args.watch {
            // Clear the screen and go home, then draw.
            let _ = write!(out, "\x1b[2J\x1b[H");
        }
        let _ = write!(out, "{}", render(&status));
        let _ = out.flush();
        drop(out);
        if !args.watch {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    })
}
