//! Losing the scheduler, with real processes: a client (`drover run`) reconnects to a restarted
//! scheduler and resubmits its run; it gives up after its patience; SIGTERM to the scheduler
//! ends clients' runs and workers cleanly.

mod common;

use std::path::Path;

use common::{
    binary, free_port, read_report, signal, start_drover_run, total_reruns, wait_for_file, Proc,
};

/// A graph whose `gate` task touches `STARTED` in `dir`, then waits for `GO` there.
fn gated_graph(dir: &Path) -> String {
    let started = dir.join("STARTED");
    let go = dir.join("GO");
    let script = format!(
        "touch '{}'; while [ ! -e '{}' ]; do sleep 0.02; done; printf g",
        started.display(),
        go.display()
    );
    let graph = serde_json::json!({"tasks": [
        {"key": "first", "function": "bytes", "params": {"n": 3, "fill": "f"}},
        {"key": "gate", "function": "command", "inputs": ["first"],
         "params": {"argv": ["sh", "-c", script]}},
        {"key": "last", "function": "concat", "inputs": ["first", "gate"]}
    ]});
    let path = dir.join("gated.json");
    std::fs::write(&path, graph.to_string()).unwrap();
    path.to_str().unwrap().to_owned()
}

/// A scheduler on a fixed port (so a restarted one is where the access file says).
struct Fixed {
    dir: tempfile::TempDir,
    args: Vec<String>,
}

impl Fixed {
    fn new() -> Fixed {
        let dir = tempfile::tempdir().unwrap();
        let args = vec![
            "--listen".to_owned(),
            format!("127.0.0.1:{}", free_port()),
            "--state-dir".into(),
            dir.path().to_str().unwrap().into(),
            "--idle-timeout-secs".into(),
            "2".into(),
        ];
        Fixed { dir, args }
    }

    fn start(&self) -> Proc {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut s = Proc::start("scheduler", &binary("scheduler"), &args);
        s.wait_for("scheduler listening");
        s
    }

    fn access(&self) -> String {
        self.dir
            .path()
            .join("access.json")
            .to_str()
            .unwrap()
            .to_owned()
    }

    fn worker(&self) -> Proc {
        let access = self.access();
        let args = [
            "--access-file",
            &access,
            "--name",
            "w",
            "--idle-timeout-secs",
            "1",
        ];
        let mut w = Proc::start("worker", &binary("worker"), &args);
        w.wait_for("worker connected");
        w
    }

    fn drover_run(&self, graph: &str, extra: &[&str]) -> Proc {
        start_drover_run(graph, &self.access(), extra)
    }
}

#[test]
fn a_client_reconnects_to_a_restarted_scheduler_and_its_run_completes() {
    let f = Fixed::new();
    let mut scheduler = f.start();
    let mut worker = f.worker();
    let work = tempfile::tempdir().unwrap();
    let graph = gated_graph(work.path());
    let report = work.path().join("report.json");
    let mut run = f.drover_run(
        &graph,
        &[
            "--idle-timeout-secs",
            "1",
            "--report",
            report.to_str().unwrap(),
        ],
    );
    // `first` is done and `gate` running when the scheduler dies.
    wait_for_file(&work.path().join("STARTED"));
    scheduler.kill();
    run.wait_for("lost the scheduler");
    std::fs::remove_file(work.path().join("STARTED")).unwrap();
    let _scheduler = f.start();
    run.wait_for("reconnected to the scheduler");
    worker.wait_for("worker connected");
    // The resubmitted run starts `gate` again on the new scheduler's worker.
    wait_for_file(&work.path().join("STARTED"));
    std::fs::write(work.path().join("GO"), "").unwrap();
    let (code, lines) = run.finish();
    let all = lines.join("\n");
    assert_eq!(code, Some(0), "{all}");
    assert!(lines.iter().any(|l| l == "stdout: last: fffg"), "{all}");
    let report = read_report(&report);
    assert_eq!(report["finished"], 3, "{report}");
    // `first` ran on both schedulers; `gate` too (its first run never finished).
    assert!(total_reruns(&report) >= 1, "{report}");
}

#[test]
fn a_client_gives_up_after_its_patience_with_a_clear_message() {
    let f = Fixed::new();
    let mut scheduler = f.start();
    let _worker = f.worker();
    let work = tempfile::tempdir().unwrap();
    let graph = gated_graph(work.path());
    let run = f.drover_run(
        &graph,
        &["--idle-timeout-secs", "1", "--reconnect-secs", "1"],
    );
    wait_for_file(&work.path().join("STARTED"));
    scheduler.kill();
    let (code, lines) = run.finish();
    let all = lines.join("\n");
    assert_eq!(code, Some(1), "{all}");
    assert!(
        all.contains("gave up after 1 s without the scheduler at 127.0.0.1:"),
        "{all}"
    );
}

#[test]
fn sigterm_to_the_scheduler_ends_runs_and_workers_cleanly() {
    let f = Fixed::new();
    let scheduler = f.start();
    let worker = f.worker();
    let work = tempfile::tempdir().unwrap();
    let graph = gated_graph(work.path());
    // Patient: a shutdown must end the run at once, not after the patience.
    let run = f.drover_run(&graph, &["--reconnect-secs", "600"]);
    wait_for_file(&work.path().join("STARTED"));
    signal(scheduler.child.id(), "TERM");
    let (code, lines) = scheduler.finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    let (code, lines) = run.finish();
    let all = lines.join("\n");
    assert_eq!(code, Some(1), "{all}");
    assert!(all.contains("the scheduler shut down"), "{all}");
    let (code, lines) = worker.finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    // Release the orphaned command.
    std::fs::write(work.path().join("GO"), "").unwrap();
}
