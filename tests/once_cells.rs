//! Once-cells, shared objects and worker state with real scheduler and worker processes: one
//! load per process, eager loads overlapping upstream work, pool-restricted loads, loads in the
//! report, failing loaders and their retry, run-scoped cells dropped, shared objects sent once
//! per worker.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{binary, drover_run, read_report, Cluster, Proc};

/// The rows of a report's `tasks` of one kind.
fn rows<'a>(
    report: &'a serde_json::Value,
    kind: &'a str,
) -> impl Iterator<Item = &'a serde_json::Value> {
    report["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter(move |t| t["kind"] == kind)
}

/// Workers a0, a1 in pool A and b0 in pool B, two threads each.
fn two_pools() -> Cluster {
    let mut c = Cluster::start();
    let worker = binary("worker");
    for (name, res) in [("a0", "pool-A=1"), ("a1", "pool-A=1"), ("b0", "pool-B=1")] {
        c.add_worker(&worker, &["--nthreads", "2"], name, res);
    }
    c
}

/// A graph: once-cell `cell` (pool A, loading for 0.3 s), `up` in pool B sleeping 2 s, and six
/// users of both.
fn cell_graph(dir: &std::path::Path, cell: &str, lazy: bool) -> String {
    let mut tasks = vec![
        serde_json::json!({"key": cell, "function": "command", "pool": "A",
            "params": {"argv": ["sh", "-c", "sleep 0.3; printf data"]},
            "once_cell": {"lazy": lazy}}),
        serde_json::json!({"key": "up", "function": "sleep", "pool": "B", "params": {"ms": 2000}}),
    ];
    for i in 0..6 {
        tasks.push(serde_json::json!({"key": format!("{cell}-user-{i}"), "function": "concat", "inputs": [cell, "up"]}));
    }
    let path = dir.join(format!("{cell}.json"));
    std::fs::write(&path, serde_json::json!({ "tasks": tasks }).to_string()).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Index of the first row with this key and kind.
fn position(report: &serde_json::Value, key: &str, kind: &str) -> usize {
    report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .position(|t| t["key"] == key && t["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} row for {key}: {report}"))
}

#[test]
fn eager_loads_start_at_submission_in_the_cells_pool_and_lazy_ones_wait_for_a_user() {
    let c = two_pools();
    let dir = tempfile::tempdir().unwrap();
    for (cell, lazy) in [("eager", false), ("lazy", true)] {
        let graph = cell_graph(dir.path(), cell, lazy);
        let report_path = dir.path().join(format!("{cell}-report.json"));
        let (code, lines) = drover_run(&graph, &c.access(), report_path.to_str());
        let all = lines.join("\n");
        assert_eq!(code, Some(0), "{all}");
        assert!(
            lines
                .iter()
                .any(|l| l == &format!("stdout: {cell}-user-0: data")),
            "{all}"
        );
        let report = read_report(&report_path);
        // Loads only in pool A, at most one per worker, each with its own duration.
        let loads: Vec<&serde_json::Value> = rows(&report, "load").collect();
        let mut load_workers: Vec<&str> = loads
            .iter()
            .map(|l| l["worker"].as_str().unwrap())
            .collect();
        load_workers.sort();
        let distinct: BTreeSet<&str> = load_workers.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            load_workers.len(),
            "one load per worker: {report}"
        );
        assert!(distinct.iter().all(|w| w.starts_with('a')), "{report}");
        for l in &loads {
            assert_eq!(l["status"], "finished");
            assert_eq!(l["pool"], "A");
            assert!(l["duration_ms"].as_f64().unwrap() >= 250.0, "{l}");
        }
        // The users run where the cell loads, and each worker that ran one loaded it.
        let users: BTreeSet<&str> = rows(&report, "task")
            .filter(|t| t["key"] != "up")
            .map(|t| t["worker"].as_str().unwrap())
            .collect();
        assert!(users.iter().all(|w| w.starts_with('a')), "{report}");
        assert!(users.is_subset(&distinct), "{report}");
        assert_eq!(report["finished"], 7);
        assert_eq!(report["loads"], loads.len());
        let first_load = position(&report, cell, "load");
        let up = position(&report, "up", "task");
        let at = |i: usize| report["tasks"][i]["at_ms"].as_f64().unwrap();
        if lazy {
            // Loaded on a user's first need, after `up`.
            assert!(first_load > up && at(first_load) >= at(up), "{report}");
        } else {
            // Started with the graph, in parallel with `up`: done long before its 2 s.
            assert!(first_load < up, "{report}");
            assert!(at(first_load) + 1000.0 < at(up), "{report}");
            assert_eq!(
                distinct.len(),
                2,
                "both pool-A workers load at once: {report}"
            );
        }
    }
}

#[test]
fn a_failing_loader_fails_its_users_on_that_worker_and_the_next_need_loads_again() {
    let mut c = Cluster::start();
    c.add_worker(&binary("worker"), &[], "w", "");
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("seen");
    let script = format!(
        "if [ -e '{0}' ]; then printf ok; else touch '{0}'; echo disk not ready >&2; exit 3; fi",
        marker.display()
    );
    let graph = dir.path().join("flaky.json");
    std::fs::write(
        &graph,
        serde_json::json!({"tasks": [
            // Lazy, so that `u`'s need is the first load (an eager load that failed would be
            // retried by `u`'s need at once).
            {"key": "flaky", "function": "command", "params": {"argv": ["sh", "-c", script]}, "once_cell": {"lazy": true}},
            {"key": "u", "function": "len", "inputs": ["flaky"]},
            {"key": "other", "function": "bytes", "params": {"n": 1}}
        ]})
        .to_string(),
    )
    .unwrap();
    let report_path = dir.path().join("report.json");
    let run = |report: &std::path::Path| {
        drover_run(graph.to_str().unwrap(), &c.access(), report.to_str())
    };
    let (code, lines) = run(&report_path);
    let all = lines.join("\n");
    assert_eq!(code, Some(1), "{all}");
    let report = read_report(&report_path);
    let load = rows(&report, "load").next().expect("a load row");
    assert_eq!(load["status"], "failed");
    assert!(
        load["error"].as_str().unwrap().contains("exit code 3"),
        "{report}"
    );
    let u = rows(&report, "task").find(|t| t["key"] == "u").unwrap();
    let error = u["error"].as_str().unwrap();
    assert!(
        error.contains("once-cell \"flaky\" failed to load on worker \"w\""),
        "{error}"
    );
    assert!(error.contains("disk not ready"), "{error}");
    // Unrelated tasks complete.
    assert!(lines.iter().any(|l| l == "stdout: other: x"), "{all}");
    // The next need loads again, and this time it works.
    let (code, lines) = run(&report_path);
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    assert!(
        lines.iter().any(|l| l == "stdout: u: 2"),
        "{}",
        lines.join("\n")
    );
    let report = read_report(&report_path);
    assert_eq!(
        rows(&report, "load")
            .filter(|l| l["status"] == "finished")
            .count(),
        1,
        "{report}"
    );

    // With `retries`, one need is enough: the loader is tried again within the load.
    let marker2 = dir.path().join("seen2");
    let script2 = script.replace(
        &marker.display().to_string(),
        &marker2.display().to_string(),
    );
    std::fs::write(
        &graph,
        serde_json::json!({"tasks": [
            {"key": "flaky2", "function": "command", "retries": 1,
             "params": {"argv": ["sh", "-c", script2]}, "once_cell": {}},
            {"key": "u2", "function": "len", "inputs": ["flaky2"]}
        ]})
        .to_string(),
    )
    .unwrap();
    let (code, lines) = run(&report_path);
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    let report = read_report(&report_path);
    let statuses: Vec<&str> = rows(&report, "load")
        .map(|l| l["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, vec!["finished"], "{report}");
}

#[test]
fn a_run_scoped_cell_is_dropped_on_its_workers_when_the_run_ends() {
    let c = Cluster::start();
    let access = c.access();
    let mut w = Proc::start(
        "w",
        &binary("worker"),
        &["--access-file", &access, "--name", "w"],
    );
    w.wait_for("worker connected");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.bin");
    std::fs::write(&data, vec![7u8; 1000]).unwrap();
    let graph = dir.path().join("scoped.json");
    std::fs::write(
        &graph,
        serde_json::json!({"tasks": [
            {"key": "scoped", "function": "file", "params": {"path": data}, "once_cell": {"lifetime": "run"}},
            {"key": "kept", "function": "file", "params": {"path": data}, "once_cell": {}},
            {"key": "n", "function": "len", "inputs": ["scoped", "kept"]}
        ]})
        .to_string(),
    )
    .unwrap();
    let report = dir.path().join("r.json");
    let (code, lines) = drover_run(graph.to_str().unwrap(), &access, report.to_str());
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    assert!(
        lines.iter().any(|l| l == "stdout: n: 2000"),
        "{}",
        lines.join("\n")
    );
    let line = w.wait_for("dropped once-cell");
    assert!(line.contains("scoped"), "{line}");
    assert!(!w
        .seen
        .iter()
        .any(|l| l.contains("dropped once-cell") && l.contains("kept")));
}

#[test]
fn a_client_releases_a_cell_by_name_on_every_worker() {
    let c = Cluster::start();
    let access = c.access();
    let mut workers: Vec<Proc> = ["w0", "w1"]
        .iter()
        .map(|name| {
            let mut w = Proc::start(
                name,
                &binary("worker"),
                &["--access-file", &access, "--name", name],
            );
            w.wait_for("worker connected");
            w
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.bin");
    std::fs::write(&data, vec![1u8; 10]).unwrap();
    // The once-cell "table" and four users named PREFIX0..3.
    let graph = |prefix: &str| {
        let mut g = drover::Graph::new();
        let cell = g
            .once_named("file", &serde_json::json!({"path": data}))
            .key("table")
            .add();
        for i in 0..4 {
            g.task("len", &())
                .key(format!("{prefix}{i}"))
                .input(cell)
                .add();
        }
        g
    };
    let g = graph("n");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = drover::Client::connect(&access).await.unwrap();
        let mut run = client.submit(&g).await.unwrap();
        let report = run.wait().await.unwrap();
        assert_eq!(report.finished, 4);
        // Eager: both workers load (a load on a worker that ran no user may be reported after
        // the run completed, so their logs say it).
        assert!(report.loads_of("table").count() >= 1, "{report:?}");
        for w in &mut workers {
            w.wait_for("once-cell load ended");
        }
        client.release_cells(vec!["table".into()]).unwrap();
        for w in &mut workers {
            let line = w.wait_for("dropped once-cell");
            assert!(line.contains("table"), "{line}");
        }
        // A later need (new users) loads it again.
        let g = graph("again");
        let mut run = client.submit(&g).await.unwrap();
        let report = run.wait().await.unwrap();
        assert_eq!(report.finished, 4);
        assert!(report.loads_of("table").count() >= 1, "{report:?}");
        assert_eq!(
            String::from_utf8(run.get_bytes("again0").await.unwrap().to_vec()).unwrap(),
            "10"
        );
    });
}

/// Runs an example program to completion (it starts its own worker processes).
fn example(name: &str, args: &[&str]) -> (Option<i32>, Vec<String>) {
    Proc::start(name, &binary(&format!("examples/{name}")), args).finish()
}

#[test]
fn the_once_per_worker_example_loads_once_in_each_process_that_ran_a_partition() {
    let (code, lines) = example("once_per_worker", &["--load-ms", "300", "--processes", "4"]);
    let all = lines.join("\n");
    assert_eq!(code, Some(0), "{all}");
    let pid = |l: &str| l.rsplit(' ').next().unwrap().to_owned();
    let mut loads: BTreeMap<String, usize> = BTreeMap::new();
    for l in lines
        .iter()
        .filter(|l| l.contains("Very slowly loading the data on PID"))
    {
        *loads.entry(pid(l)).or_default() += 1;
    }
    let users: BTreeSet<String> = lines
        .iter()
        .filter(|l| l.contains("SlowDataLoader is"))
        .map(|l| pid(l))
        .collect();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("SlowDataLoader is"))
            .count(),
        30,
        "{all}"
    );
    assert!(loads.values().all(|&n| n == 1), "{all}");
    assert_eq!(
        loads.keys().cloned().collect::<BTreeSet<_>>(),
        users,
        "{all}"
    );
    assert!(all.contains("one load per worker process: ok"), "{all}");
    // The loads are rows of the report with their own duration.
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("load on local-plain-"))
            .count(),
        users.len(),
        "{all}"
    );
}

#[test]
fn the_shared_objects_example_sends_the_value_once_per_worker() {
    let (code, lines) = example("shared_objects", &[]);
    let all = lines.join("\n");
    assert_eq!(code, Some(0), "{all}");
    assert!(all.contains("100 tasks ok on 3 workers"), "{all}");
    assert!(all.contains("was sent 3 times"), "{all}");
}

#[test]
fn the_worker_state_example_keeps_state_per_process_and_runs_its_hooks() {
    let (code, lines) = example("worker_state", &[]);
    let all = lines.join("\n");
    assert_eq!(code, Some(0), "{all}");
    let count = |s: &str| lines.iter().filter(|l| l.contains(s)).count();
    assert_eq!(count("starting on PID"), 3, "{all}");
    assert_eq!(count("exiting:"), 3, "{all}");
    assert!(count("loading the big model") <= 3, "{all}");
    let models: BTreeSet<&str> = lines
        .iter()
        .filter(|l| l.contains("loading the big model"))
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(
        models.len(),
        count("loading the big model"),
        "one model per process: {all}"
    );
    assert!(
        all.contains("60 predictions ok; sum of squares 328350 (expected 328350)"),
        "{all}"
    );
    // Pools are part of a worker's identity.
    assert!(all.contains("pools [\"A\"], resources pool-A=1"), "{all}");
}
