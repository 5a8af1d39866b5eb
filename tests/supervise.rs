//! `worker --nprocs`, `--lifespan-tasks`: a supervisor restarting and recycling worker
//! processes, with real processes.

mod common;

use common::{binary, drover_run, read_report, signal, total_reruns, Cluster, Proc};

/// The pid in a supervisor log line `... started worker process process=NAME pid=1234`.
fn pid_of(line: &str) -> u32 {
    let plain: String = line.chars().filter(|c| !c.is_control()).collect();
    let i = plain.rfind("pid=").expect("a pid field");
    plain[i + 4..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("a pid")
}

fn sigterm(pid: u32) {
    signal(pid, "TERM");
}

fn sigkill(pid: u32) {
    signal(pid, "KILL");
}

#[test]
fn a_supervisor_restarts_a_killed_process_and_retires_all_on_sigterm() {
    let mut c = Cluster::start();
    let access = c.access();
    let mut sup = Proc::start(
        "supervisor",
        &binary("worker"),
        &["--access-file", &access, "--name", "sup", "--nprocs", "2"],
    );
    let first = pid_of(&sup.wait_for("started worker process"));
    sup.wait_for("started worker process");
    c.scheduler.wait_for("name=sup-");
    c.scheduler.wait_for("name=sup-");
    sigkill(first);
    sup.wait_for("worker process died; restarting");
    let again = pid_of(&sup.wait_for("started worker process"));
    assert_ne!(again, first);
    // The restarted process joins the scheduler as a new worker and runs tasks.
    c.scheduler.wait_for("name=sup-");
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.json");
    std::fs::write(
        &g,
        r#"{"tasks": [{"key": "a", "function": "bytes", "params": {"n": 1}}]}"#,
    )
    .unwrap();
    let (code, lines) = drover_run(g.to_str().unwrap(), &access, None);
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    // SIGTERM retires every process; the supervisor exits 0.
    sigterm(sup.child.id());
    let (code, lines) = sup.finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    assert!(
        std::fs::metadata(format!("/proc/{again}")).is_err() || {
            // a zombie until reaped by nobody: its state is Z
            std::fs::read_to_string(format!("/proc/{again}/stat")).is_ok_and(|s| s.contains(") Z "))
        }
    );
}

#[test]
fn lifespan_tasks_recycles_processes_without_recomputing() {
    let mut c = Cluster::start();
    let access = c.access();
    let mut sup = Proc::start(
        "supervisor",
        &binary("worker"),
        &[
            "--access-file",
            &access,
            "--name",
            "life",
            "--nprocs",
            "1",
            "--lifespan-tasks",
            "2",
        ],
    );
    sup.wait_for("started worker process");
    c.scheduler.wait_for("name=life-0");
    // A chain: each result is needed by the next task, so a recycled process must hand it over.
    let mut tasks = vec![r#"{"key": "t0", "function": "bytes", "params": {"n": 10}}"#.to_owned()];
    for i in 1..6 {
        tasks.push(format!(
            r#"{{"key": "t{i}", "function": "concat", "inputs": ["t{}"]}}"#,
            i - 1
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.json");
    std::fs::write(&g, format!("{{\"tasks\": [{}]}}", tasks.join(","))).unwrap();
    let report = dir.path().join("r.json");
    let (code, lines) = drover_run(g.to_str().unwrap(), &access, Some(report.to_str().unwrap()));
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    assert!(
        lines.iter().any(|l| l == "stdout: t5: xxxxxxxxxx"),
        "{}",
        lines.join("\n")
    );
    sup.wait_for("starting its successor");
    let r = read_report(&report);
    let workers: std::collections::BTreeSet<&str> = r["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["worker"].as_str().unwrap())
        .collect();
    assert!(
        workers.len() >= 2,
        "the chain outlived a process lifespan: {workers:?}"
    );
    let reruns = total_reruns(&r);
    assert_eq!(reruns, 0, "{r}");
    sigterm(sup.child.id());
    assert_eq!(sup.finish().0, Some(0));
}
