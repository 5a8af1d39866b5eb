//! End to end with real processes: a `scheduler`, `worker`s (stock or the pools example acting
//! as one), and clients (`drover run`, the pools example), all over QUIC on 127.0.0.1.

mod common;

use common::{binary, drover_run, start_drover_run, Cluster, Proc};

fn write_graph(dir: &tempfile::TempDir, name: &str, json: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, json).unwrap();
    p.to_str().unwrap().to_owned()
}

fn report(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn task<'a>(report: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
    report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == key)
        .unwrap_or_else(|| panic!("{key} not in {report}"))
}

#[test]
fn pools_example_across_a_scheduler_and_three_workers_in_two_pools() {
    let mut c = Cluster::start();
    let pools = binary("examples/pools");
    c.add_worker(&pools, &["worker"], "a1", "pool-A=1");
    c.add_worker(&pools, &["worker"], "a2", "pool-A=1");
    c.add_worker(&pools, &["worker"], "b1", "pool-B=1");
    let svg = c.dir.path().join("pools.svg");
    let access = c.access();
    let client = Proc::start(
        "pools",
        &pools,
        &["--access-file", &access, "--svg", svg.to_str().unwrap()],
    );
    let (code, lines) = client.finish();
    let out = lines.join("\n");
    assert_eq!(code, Some(0), "{out}");
    // The example checks the numbers against its own computation and every task's pool.
    assert!(out.contains("results and placements check out"), "{out}");
    assert!(out.contains("run_in_b   pool B  worker b1"), "{out}");
    assert!(svg.exists());
}

#[test]
fn a_chain_across_workers_moves_data_peer_to_peer() {
    let mut c = Cluster::start();
    let worker = binary("worker");
    c.add_worker(&worker, &[], "wa", "pool-A=1");
    c.add_worker(&worker, &[], "wb", "pool-B=1");
    // A chain alternating pools: each hop moves the growing result to the other worker.
    let mut tasks = vec![
        r#"{"key": "t0", "function": "bytes", "params": {"n": 100000}, "pool": "A"}"#.to_owned(),
    ];
    for i in 1..=6 {
        let pool = if i % 2 == 0 { "A" } else { "B" };
        tasks.push(format!(
            r#"{{"key": "t{i}", "function": "concat", "inputs": ["t{}"], "pool": "{pool}"}}"#,
            i - 1
        ));
    }
    tasks.push(r#"{"key": "n", "function": "len", "inputs": ["t6"], "pool": "A"}"#.to_owned());
    let graph = write_graph(
        &c.dir,
        "chain.json",
        &format!("{{\"tasks\": [{}]}}", tasks.join(",")),
    );
    let report_path = c.dir.path().join("report.json");
    let outputs = c.dir.path().join("out");
    let access = c.access();
    let run = start_drover_run(
        &graph,
        &access,
        &[
            "--report",
            report_path.to_str().unwrap(),
            "--outputs",
            outputs.to_str().unwrap(),
        ],
    );
    let (code, lines) = run.finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    assert!(
        lines.iter().any(|l| l == "stdout: n: 100000"),
        "{}",
        lines.join("\n")
    );
    assert_eq!(std::fs::read(outputs.join("n")).unwrap(), b"100000");
    let r = report(&report_path);
    // t0 (A) -> t1 (B) -> ... -> t6 (A): six hops of 100000 bytes between the two workers.
    assert_eq!(r["bytes_between_workers"], 600_000, "{r}");
    assert_eq!(r["bytes_between_pools"], 600_000, "{r}");
    for i in 0..=6 {
        let t = task(&r, &format!("t{i}"));
        let (pool, worker) = if i % 2 == 0 { ("A", "wa") } else { ("B", "wb") };
        assert_eq!(
            (t["pool"].as_str(), t["worker"].as_str()),
            (Some(pool), Some(worker)),
            "{t}"
        );
        assert_eq!(t["status"], "finished");
        assert_eq!(t["output_bytes"], 100_000);
    }
}

#[test]
fn a_pool_without_workers_warns_then_completes_when_one_joins() {
    let mut c = Cluster::start();
    let worker = binary("worker");
    c.add_worker(&worker, &[], "plain", "");
    let graph = write_graph(
        &c.dir,
        "z.json",
        r#"{"tasks": [
            {"key": "z", "function": "bytes", "params": {"n": 5, "fill": "z"}, "pool": "Z"},
            {"key": "free", "function": "bytes", "params": {"n": 2}}
        ]}"#,
    );
    let access = c.access();
    let mut run = start_drover_run(&graph, &access, &[]);
    let warning = run.wait_for("has no workers");
    assert!(warning.contains("pool \"Z\""), "{warning}");
    c.add_worker(&worker, &[], "zed", "pool-Z=1");
    let (code, lines) = run.finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    assert!(
        lines.iter().any(|l| l == "stdout: z: zzzzz"),
        "{}",
        lines.join("\n")
    );
}

#[test]
fn a_failing_command_fails_its_dependents_and_spares_the_rest() {
    let mut c = Cluster::start();
    c.add_worker(&binary("worker"), &[], "w", "");
    let graph = write_graph(
        &c.dir,
        "fail.json",
        r#"{"tasks": [
            {"key": "bad", "function": "command", "params": {"argv": ["sh", "-c", "echo broken pipe dream >&2; exit 7"]}},
            {"key": "child", "function": "concat", "inputs": ["bad"]},
            {"key": "grandchild", "function": "len", "inputs": ["child"]},
            {"key": "fine", "function": "command", "params": {"argv": ["echo", "hello"]}}
        ]}"#,
    );
    let report_path = c.dir.path().join("report.json");
    let access = c.access();
    let (code, lines) = drover_run(&graph, &access, report_path.to_str());
    assert_eq!(code, Some(1), "{}", lines.join("\n"));
    assert!(
        lines.iter().any(|l| l == "stdout: fine: hello"),
        "{}",
        lines.join("\n")
    );
    let r = report(&report_path);
    let bad = task(&r, "bad");
    assert_eq!(bad["status"], "failed");
    let err = bad["error"].as_str().unwrap();
    assert!(
        err.contains("exit code 7") && err.contains("broken pipe dream"),
        "{err}"
    );
    let child = task(&r, "child")["error"].as_str().unwrap().to_owned();
    assert!(child.starts_with("input \"bad\" failed"), "{child}");
    let grandchild = task(&r, "grandchild")["error"].as_str().unwrap().to_owned();
    assert!(
        grandchild.starts_with("input \"child\" failed"),
        "{grandchild}"
    );
    assert_eq!(task(&r, "fine")["status"], "finished");
}

#[test]
fn drover_run_local_runs_a_json_graph() {
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("report.json");
    let run = Proc::start(
        "drover run",
        &binary("drover"),
        &[
            "run",
            &format!("{}/tests/data/pools.json", env!("CARGO_MANIFEST_DIR")),
            "--local",
            "A=1,B=1",
            "--report",
            report_path.to_str().unwrap(),
        ],
    );
    let (code, lines) = run.finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    assert!(
        lines.iter().any(|l| l == "stdout: run_in_a: 800"),
        "{}",
        lines.join("\n")
    );
    let r = report(&report_path);
    assert_eq!(task(&r, "run_in_b")["pool"], "B");
    assert_eq!(task(&r, "a.mean()")["pool"], "A");
    // `side` opted out of pools: it runs where it would start first, next to `a` or on the
    // idle worker of B (then `a`'s 800 bytes move for it), depending on timing.
    let side = task(&r, "side")["moved_bytes"].as_u64().unwrap();
    assert!(side == 0 || side == 800, "{r}");
    assert_eq!(
        r["bytes_between_pools"].as_u64().unwrap(),
        3 + side,
        "only a.mean()'s 3 bytes cross for the pools: {r}"
    );
}

#[test]
fn the_blocking_client_streams_events_and_fetches_outputs() {
    let mut c = Cluster::start();
    c.add_worker(&binary("worker"), &[], "w1", "pool-A=1");
    c.add_worker(&binary("worker"), &[], "w2", "");
    let client = drover::BlockingClient::connect(c.access()).unwrap();
    let mut g = drover::Graph::new();
    let a = g
        .task("bytes", &serde_json::json!({"n": 4, "fill": "q"}))
        .key("a")
        .pool("A")
        .add();
    let b = g.task("concat", &()).key("b").input(a).input(a).add();
    let mut run = client.submit(&g).unwrap();
    let mut seen = Vec::new();
    while let Some(ev) = run.next_event() {
        if let drover::RunEvent::Task(t) = ev {
            seen.push((t.key, t.worker, t.pool, t.output_bytes));
        }
    }
    assert_eq!(seen.len(), 2);
    assert!(
        seen.contains(&("a".into(), Some("w1".into()), Some("A".into()), 4)),
        "{seen:?}"
    );
    assert_eq!(&run.get_bytes(g.key(b.id())).unwrap()[..], b"qqqqqqqq");
    // An invalid graph is refused with the same message as `drover check` gives.
    let err = client
        .submit_json(
            r#"{"tasks": [{"key": "x", "function": "f", "inputs": ["nope"]}]}"#.into(),
            &[],
        )
        .unwrap_err();
    assert!(err.to_string().contains("unknown input \"nope\""), "{err}");
}

#[test]
fn a_restarted_scheduler_keeps_its_certificate_and_token() {
    let mut c = Cluster::start();
    let first = std::fs::read_to_string(c.access()).unwrap();
    c.scheduler.child.kill().unwrap();
    c.scheduler.child.wait().unwrap();
    let state = c.dir.path().to_str().unwrap().to_owned();
    let mut again = Proc::start(
        "scheduler",
        &binary("scheduler"),
        &["--listen", "127.0.0.1:0", "--state-dir", &state],
    );
    again.wait_for("scheduler listening");
    let second = std::fs::read_to_string(c.access()).unwrap();
    let (a, b): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&first).unwrap(),
        serde_json::from_str(&second).unwrap(),
    );
    assert_eq!(a["certificate"], b["certificate"]);
    assert_eq!(a["token"], b["token"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(c.access()).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    c.scheduler = again;
    c.add_worker(&binary("worker"), &[], "w", "");
    // Deleting the token rotates it and keeps the certificate; the old token is refused.
    c.scheduler.kill();
    std::fs::remove_file(c.dir.path().join("token")).unwrap();
    let mut rotated = Proc::start(
        "scheduler",
        &binary("scheduler"),
        &["--listen", "127.0.0.1:0", "--state-dir", &state],
    );
    rotated.wait_for("scheduler listening");
    let third: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(c.access()).unwrap()).unwrap();
    assert_eq!(third["certificate"], a["certificate"]);
    assert_ne!(third["token"], a["token"]);
    let old = c.dir.path().join("old-access.json");
    let mut stale = serde_json::from_str::<serde_json::Value>(&second).unwrap();
    stale["address"] = third["address"].clone();
    std::fs::write(&old, stale.to_string()).unwrap();
    let err = drover::BlockingClient::connect(&old)
        .unwrap_err()
        .to_string();
    assert!(err.contains("wrong token"), "{err}");
    c.scheduler = rotated;
}
