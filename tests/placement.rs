//! What workers can do decides where tasks go, with real processes: functions (a stock worker
//! and a custom one in the same pool), absurd sizes that must fail their task and not their
//! worker, many sinks fetched in batches, and memory given back once no client can want a
//! result.

mod common;

use std::time::Instant;

use common::{
    binary, drover_run, graph_file, read_report, start_drover_run, stdout_of, Cluster, DEADLINE,
};

/// `random_array` exists only in the pools example's registry; `len` in both.
fn custom_graph() -> serde_json::Value {
    serde_json::json!({"tasks": [
        {"key": "r", "function": "random_array", "params": {"rows": 2, "cols": 2, "seed": 1}, "pool": "A"},
        {"key": "n", "function": "len", "inputs": ["r"], "pool": "A"},
        {"key": "x", "function": "bytes", "params": {"n": 3}, "pool": "A"}
    ]})
}

#[test]
fn tasks_go_only_to_workers_that_have_their_function() {
    let mut c = Cluster::start();
    c.add_worker(&binary("worker"), &[], "stock", "pool-A=1");
    c.add_worker(&binary("examples/pools"), &["worker"], "custom", "pool-A=1");
    let dir = tempfile::tempdir().unwrap();
    let g = graph_file(dir.path(), "g.json", &custom_graph());
    let report = dir.path().join("r.json");
    let (code, lines) = drover_run(&g, &c.access(), Some(report.to_str().unwrap()));
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    // Four f64s as postcard: a length byte and 32 bytes.
    let out = stdout_of(&lines);
    assert!(out.contains(&"n: 33") && out.contains(&"x: xxx"), "{out:?}");
    let r = read_report(&report);
    let ran_on = r["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == "r")
        .unwrap()["worker"]
        .clone();
    assert_eq!(ran_on, "custom");
}

#[test]
fn a_task_whose_function_no_worker_has_waits_with_a_warning_until_one_joins() {
    let mut c = Cluster::start();
    c.add_worker(&binary("worker"), &[], "stock", "pool-A=1");
    let dir = tempfile::tempdir().unwrap();
    let g = graph_file(dir.path(), "g.json", &custom_graph());
    let mut run = start_drover_run(&g, &c.access(), &[]);
    run.wait_for("has function \"random_array\"");
    c.add_worker(&binary("examples/pools"), &["worker"], "custom", "pool-A=1");
    let (code, lines) = run.finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    assert!(stdout_of(&lines).contains(&"n: 33"), "{}", lines.join("\n"));
}

#[test]
fn absurd_sizes_fail_their_task_and_the_worker_lives_on() {
    let mut c = Cluster::start();
    c.add_worker(&binary("worker"), &[], "w", "");
    let dir = tempfile::tempdir().unwrap();
    let g = graph_file(
        dir.path(),
        "g.json",
        &serde_json::json!({"tasks": [
            {"key": "huge", "function": "bytes", "params": {"n": 1_000_000_000_000_000u64}},
            {"key": "overflow", "function": "bytes", "params": {"n": u64::MAX, "fill": "é"}},
            {"key": "ok", "function": "bytes", "params": {"n": 2}}
        ]}),
    );
    let report = dir.path().join("r.json");
    let (code, lines) = drover_run(&g, &c.access(), Some(report.to_str().unwrap()));
    assert_eq!(code, Some(1), "{}", lines.join("\n"));
    assert_eq!(stdout_of(&lines), vec!["ok: xx"]);
    let r = read_report(&report);
    for key in ["huge", "overflow"] {
        let t = r["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["key"] == key)
            .unwrap();
        let e = t["error"].as_str().unwrap();
        assert!(
            e.starts_with("refusing to make a ") && e.contains("byte output"),
            "{key}: {e}"
        );
    }
    assert!(
        c.workers[0].child.try_wait().unwrap().is_none(),
        "the worker lives on"
    );
    // And it still works.
    let g2 = graph_file(
        dir.path(),
        "g2.json",
        &serde_json::json!({"tasks": [{"key": "after", "function": "bytes", "params": {"n": 1}}]}),
    );
    let (code, lines) = drover_run(&g2, &c.access(), None);
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
}

#[test]
fn a_worker_memory_limit_bounds_the_outputs_of_built_ins() {
    let c = Cluster::start();
    let access = c.access();
    let mut w = common::Proc::start(
        "limited",
        &binary("worker"),
        &["--access-file", &access, "--memory-limit", "100MB"],
    );
    w.wait_for("worker connected");
    let dir = tempfile::tempdir().unwrap();
    let g = graph_file(
        dir.path(),
        "g.json",
        &serde_json::json!({"tasks": [{"key": "big", "function": "bytes", "params": {"n": 200_000_000}}]}),
    );
    let report = dir.path().join("r.json");
    let (code, lines) = drover_run(&g, &access, Some(report.to_str().unwrap()));
    assert_eq!(code, Some(1), "{}", lines.join("\n"));
    let r = read_report(&report);
    let e = r["tasks"][0]["error"].as_str().unwrap().to_owned();
    assert_eq!(
        e,
        "refusing to make a 200000000-byte output: more than this worker's memory limit (100000000 bytes)"
    );
}

#[test]
fn many_sinks_stream_out_in_batches_in_graph_order() {
    let n = 20_000;
    let tasks: Vec<serde_json::Value> = (0..n)
        .map(|i| serde_json::json!({"key": format!("s{i}"), "function": "bytes", "params": {"n": i % 3}}))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let g = graph_file(dir.path(), "g.json", &serde_json::json!({ "tasks": tasks }));
    let outputs = dir.path().join("out");
    let started = Instant::now();
    let run = common::Proc::start(
        "drover run",
        &binary("drover"),
        &[
            "run",
            &g,
            "--local",
            "2",
            "--outputs",
            outputs.to_str().unwrap(),
        ],
    );
    let (code, lines) = run.finish();
    eprintln!(
        "{n} sinks, debug build: {:.1} s end to end",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        code,
        Some(0),
        "{}",
        lines[lines.len().saturating_sub(20)..].join("\n")
    );
    let out = stdout_of(&lines);
    assert_eq!(out.len(), n);
    for (i, line) in out.iter().enumerate() {
        assert_eq!(*line, format!("s{i}: {}", "x".repeat(i % 3)));
    }
    // One file per sink, and the index.
    assert_eq!(std::fs::read_dir(&outputs).unwrap().count(), n + 1);
    assert_eq!(std::fs::read(outputs.join("s4")).unwrap(), b"x");
}

/// The resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[test]
fn a_big_result_is_freed_once_no_client_can_want_it() {
    let mut c = Cluster::start();
    c.add_worker(&binary("worker"), &[], "w", "");
    let pid = c.workers[0].child.id();
    let before = rss(pid);
    let dir = tempfile::tempdir().unwrap();
    let g = graph_file(
        dir.path(),
        "g.json",
        &serde_json::json!({"tasks": [{"key": "big", "function": "bytes", "params": {"n": 300_000_000, "fill": "\u{1}"}}]}),
    );
    let (code, lines) = drover_run(&g, &c.access(), None);
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    assert_eq!(stdout_of(&lines), vec!["big: <300000000 bytes>"]);
    // The client has left: the scheduler frees the result; the worker's memory comes back.
    let end = Instant::now() + DEADLINE;
    loop {
        let now = rss(pid);
        if now < before + 100_000_000 {
            eprintln!("worker memory: {before} bytes before, {now} after the client left");
            break;
        }
        assert!(
            Instant::now() < end,
            "the worker still uses {now} bytes (it used {before} before the run)"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
