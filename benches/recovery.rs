//! Recovery with real processes, many trials: the release binaries (`cargo build --release
//! --workspace` first) run a scheduler, workers and `drover run` on 127.0.0.1, and a worker is
//! `kill -9`ed at several moments. Each trial must end with the right output; the figures are
//! how long after the kill the run ended, how many tasks ran again, and hangs (no end within
//! 60 s).
//!
//! ```text
//! cargo bench --bench recovery [-- --trials N]
//! ```
//!
//! Scenarios:
//! 1. 60 x (bytes -> sleep 300 ms -> len of both) -> concat, on 3 workers x 2 threads, the
//!    victim killed after 2, 10, 20 and 30 of its tasks (the graph that hung 9 trials in 10).
//! 2. A 30-link chain (each link waits 50 ms), its worker killed 10 links in.
//! 3. How soon the scheduler notices a killed worker and a killed client (lifelines).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{
    binary, chain_graph, shared_input_graph, start_drover_run, stdout_of, total_reruns, Cluster,
    Proc,
};

fn worker(c: &Cluster, name: &str, nthreads: &str) -> Proc {
    let access = c.access();
    let mut w = Proc::start_logging(
        name,
        &binary("worker"),
        &[
            "--access-file",
            &access,
            "--name",
            name,
            "--nthreads",
            nthreads,
        ],
        "info,drover_worker=debug",
    );
    w.wait_for("worker connected");
    w
}

#[derive(Default)]
struct Tally {
    ok: u32,
    wrong: u32,
    hung: u32,
    after_kill: Vec<f64>,
    reruns: Vec<u64>,
}

impl Tally {
    fn line(&self, what: &str) -> String {
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let max = self.after_kill.iter().cloned().fold(0.0, f64::max);
        let reruns: Vec<f64> = self.reruns.iter().map(|&r| r as f64).collect();
        format!(
            "{what}: {} ok, {} wrong, {} hung; ended {:.2} s after the kill on average (max {:.2}); {:.1} reruns on average",
            self.ok,
            self.wrong,
            self.hung,
            mean(&self.after_kill),
            max,
            mean(&reruns)
        )
    }
}

/// One trial: starts a cluster, runs `graph`, kills the victim after it finished `moment`
/// tasks, and records the outcome.
fn trial(
    graph: &str,
    expected: &str,
    workers: usize,
    nthreads: &str,
    moment: usize,
    tally: &mut Tally,
) {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start_with(&["--idle-timeout-secs", "10"]);
    let mut ws: Vec<Proc> = (0..workers)
        .map(|i| worker(&c, &format!("w{i}"), nthreads))
        .collect();
    let report = dir.path().join("r.json");
    let run = start_drover_run(graph, &c.access(), &["--report", report.to_str().unwrap()]);
    let victim = &mut ws[0];
    for _ in 0..moment {
        victim.wait_for("task done");
    }
    victim.kill();
    let killed = Instant::now();
    match run.finish_within(Duration::from_secs(60)) {
        Err(_) => tally.hung += 1,
        Ok((code, lines)) => {
            tally.after_kill.push(killed.elapsed().as_secs_f64());
            if code == Some(0) && stdout_of(&lines) == [expected] {
                tally.ok += 1;
                tally
                    .reruns
                    .push(total_reruns(&common::read_report(&report)));
            } else {
                tally.wrong += 1;
                eprintln!("wrong: code {code:?}: {}", lines.join("\n"));
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let trials: usize = args
        .iter()
        .position(|a| a == "--trials")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared.json");
    std::fs::write(&shared, shared_input_graph(60, 300).to_string()).unwrap();
    let shared = shared.to_str().unwrap().to_owned();
    let expected = format!("all: {}", "1000".repeat(60));
    for moment in [2, 10, 20, 30] {
        let mut tally = Tally::default();
        for _ in 0..trials {
            trial(&shared, &expected, 3, "2", moment, &mut tally);
        }
        println!(
            "{}",
            tally.line(&format!(
                "shared inputs, killed after {moment} of its tasks"
            ))
        );
    }
    let chain = dir.path().join("chain.json");
    std::fs::write(&chain, chain_graph(30, 50).to_string()).unwrap();
    let chain = chain.to_str().unwrap().to_owned();
    let mut tally = Tally::default();
    for _ in 0..trials {
        // One worker runs the chain; it is the victim, the other takes over.
        trial(&chain, "c30: xxxxxxxxxx", 2, "1", 10, &mut tally);
    }
    println!("{}", tally.line("30-link chain, killed 10 links in"));
    // Notice times.
    let mut c = Cluster::start_logging(
        &["--idle-timeout-secs", "30"],
        "info,drover_protocol::lifeline=debug",
    );
    let mut times = Vec::new();
    for _ in 0..trials {
        let access = c.access();
        let mut w = Proc::start(
            "victim",
            &binary("worker"),
            &["--access-file", &access, "--idle-timeout-secs", "30"],
        );
        w.wait_for("worker connected");
        c.scheduler.wait_for("lifeline open");
        let t = Instant::now();
        w.kill();
        c.scheduler.wait_for("worker left");
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "kill -9 of a worker to the scheduler's 'worker left' (idle timeout 30 s): median {:.0} ms, max {:.0} ms",
        times[times.len() / 2],
        times[times.len() - 1]
    );
}
