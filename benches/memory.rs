//! Memory under load and after it, with real processes: the release binaries (`cargo build
//! --release --workspace` first) run a scheduler and 2 workers on 127.0.0.1; 20 `drover run`
//! clients at once submit 5,000 no-op tasks each (half the keys shared by all), three rounds (or N).
//! Printed: each process's resident memory (VmRSS) before, during the first round, and after
//! each round once every client left.
//!
//! ```text
//! cargo bench --bench memory [-- --rounds N]
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{binary, graph_file, start_drover_run, Cluster};

/// Resident memory of process `pid`, MiB.
fn rss(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: u32 = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(3);
    let mut cluster = Cluster::start_with(&["--idle-timeout-secs", "10"]);
    for w in ["w1", "w2"] {
        cluster.add_worker(&binary("worker"), &[], w, "");
    }
    let dir = tempfile::tempdir().unwrap();
    let graphs: Vec<String> = (0..20)
        .map(|c| {
            let mut tasks = Vec::new();
            for i in 0..2500 {
                tasks.push(serde_json::json!({"key": format!("shared{i}"), "function": "noop"}));
                tasks.push(serde_json::json!({"key": format!("c{c}-{i}"), "function": "noop"}));
            }
            graph_file(
                dir.path(),
                &format!("g{c}.json"),
                &serde_json::json!({ "tasks": tasks }),
            )
        })
        .collect();
    let pids: Vec<(String, u32)> =
        std::iter::once(("scheduler".to_owned(), cluster.scheduler.child.id()))
            .chain(
                cluster
                    .workers
                    .iter()
                    .map(|w| (w.name.clone(), w.child.id())),
            )
            .collect();
    let show = |when: &str| {
        let figures: Vec<String> = pids
            .iter()
            .map(|(name, pid)| format!("{name} {:.1} MiB", rss(*pid)))
            .collect();
        println!("{when:<22} {}", figures.join(", "));
    };
    show("before");
    let access = cluster.access();
    for round in 1..=rounds {
        let start = Instant::now();
        let runs: Vec<_> = graphs
            .iter()
            .map(|g| start_drover_run(g, &access, &[]))
            .collect();
        if round == 1 {
            std::thread::sleep(Duration::from_millis(1500));
            show("during round 1");
        }
        for r in runs {
            let (code, _) = r.finish();
            assert_eq!(code, Some(0));
        }
        // The departures are noticed and the heap trimmed within a second or two.
        std::thread::sleep(Duration::from_secs(3));
        show(&format!(
            "after round {round} ({:.1} s)",
            start.elapsed().as_secs_f64()
        ));
    }
}
