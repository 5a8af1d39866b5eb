//! Detached runs with real processes: `drover submit` exits at once and the run goes on;
//! another process lists it, waits for it and fetches its outputs, or cancels it; unfetched
//! outputs go at the retention time. And the same through the Rust client, across clients.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{binary, Cluster, Proc, DEADLINE};

fn drover(args: &[&str]) -> Output {
    Command::new(binary("drover"))
        .args(args)
        .output()
        .expect("run drover")
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A cluster with one stock worker.
fn cluster(flags: &[&str]) -> Cluster {
    let mut flags = flags.to_vec();
    flags.extend(["--idle-timeout-secs", "5"]);
    let mut c = Cluster::start_with(&flags);
    c.add_worker(&binary("worker"), &[], "w1", "");
    c
}

fn graph(c: &Cluster, sleep_ms: u64) -> String {
    common::graph_file(
        c.dir.path(),
        "g.json",
        &serde_json::json!({"tasks": [
            {"key": "slow", "function": "sleep", "params": {"ms": sleep_ms}},
            {"key": "data", "function": "bytes", "params": {"n": 5, "fill": "d"}, "inputs": ["slow"]},
            {"key": "size", "function": "len", "inputs": ["data"]},
            {"key": "copy", "function": "concat", "inputs": ["data"]}
        ]}),
    )
}

fn submit(c: &Cluster, graph: &str, name: &str) -> String {
    let out = drover(&[
        "submit",
        graph,
        "--access-file",
        &c.access(),
        "--name",
        name,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(!id.is_empty() && !id.contains(' '), "{}", text(&out));
    id
}

fn runs(c: &Cluster) -> Vec<serde_json::Value> {
    let out = drover(&["runs", "--access-file", &c.access(), "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).expect("runs JSON")
}

fn state_of(c: &Cluster, id: &str) -> String {
    runs(c)
        .iter()
        .find(|r| r["id"] == id)
        .map(|r| r["state"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Waits (bounded) until the run `id` is in `state`: the scheduler's clock ticks each second.
fn wait_for_state(c: &Cluster, id: &str, state: &str) {
    let end = Instant::now() + DEADLINE;
    loop {
        let now = state_of(c, id);
        if now == state {
            return;
        }
        assert!(Instant::now() < end, "run {id} is {now:?}, never {state:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_submitted_run_outlives_its_client_and_another_process_waits_and_fetches() {
    let c = cluster(&[]);
    let g = graph(&c, 500);
    let id = submit(&c, &g, "nightly");
    // `drover submit` has exited; the run is listed, running, by someone.
    let listed = runs(&c);
    let run = listed
        .iter()
        .find(|r| r["id"] == id.as_str())
        .expect("listed");
    assert_eq!(run["name"], "nightly");
    assert_eq!(run["tasks"], 4);
    assert!(run["by"].as_str().unwrap().contains('@'), "{run}");
    let table = drover(&["runs", "--access-file", &c.access()]);
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        table.starts_with("ID") && table.contains(&id) && table.contains("nightly"),
        "{table}"
    );
    // Another process follows it to its end and fetches the outputs.
    let dir = tempfile::tempdir().unwrap();
    let outputs = dir.path().join("out");
    let report = dir.path().join("report.json");
    let out = drover(&[
        "wait",
        &id,
        "--access-file",
        &c.access(),
        "--outputs",
        outputs.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        printed.contains("size: 5") && printed.contains("copy: ddddd"),
        "{printed}"
    );
    assert_eq!(std::fs::read(outputs.join("copy")).unwrap(), b"ddddd");
    let report = common::read_report(&report);
    assert_eq!(
        (report["finished"].as_u64(), report["failed"].as_u64()),
        (Some(4), Some(0))
    );
    // Fetched and released: listed as such, and its outputs are gone.
    assert_eq!(state_of(&c, &id), "released");
    let again = drover(&["wait", &id, "--access-file", &c.access()]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(text(&again).contains("released"), "{}", text(&again));
}

#[test]
fn a_cancelled_run_ends_its_followers_and_unknown_ids_are_named() {
    let c = cluster(&[]);
    let g = graph(&c, 3_000);
    let id = submit(&c, &g, "long");
    let waiter = Proc::start(
        "drover wait",
        &binary("drover"),
        &["wait", &id, "--access-file", &c.access()],
    );
    // Whether the waiter attached before the cancel or after, it ends saying so.
    let out = drover(&["cancel", &id, "--access-file", &c.access()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("cancelled"), "{}", text(&out));
    let (code, lines) = waiter.finish_within(DEADLINE).expect("the waiter ends");
    assert_eq!(code, Some(1), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("cancelled")), "{lines:?}");
    assert_eq!(state_of(&c, &id), "cancelled");
    // Unknown ids are refused naming them, exit 1.
    for cmd in ["wait", "cancel"] {
        let out = drover(&[cmd, "9-ffff", "--access-file", &c.access()]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(
            text(&out).contains("no detached run \"9-ffff\""),
            "{}",
            text(&out)
        );
    }
    // A bad graph is refused before it is submitted: exit 1, nothing listed.
    let bad = common::graph_file(
        c.dir.path(),
        "bad.json",
        &serde_json::json!({"tasks": [{"key": "x", "function": "len", "inputs": ["nope"]}]}),
    );
    let out = drover(&["submit", &bad, "--access-file", &c.access()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(runs(&c).len(), 1);
}

#[test]
fn unfetched_outputs_go_at_the_retention_time() {
    let c = cluster(&["--retention-secs", "1"]);
    let g = graph(&c, 0);
    let id = submit(&c, &g, "short-lived");
    wait_for_state(&c, &id, "expired");
    let out = drover(&["wait", &id, "--access-file", &c.access()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("expired"), "{}", text(&out));
    // And a retention time later the record goes too.
    let end = Instant::now() + DEADLINE;
    while runs(&c).iter().any(|r| r["id"] == id.as_str()) {
        assert!(Instant::now() < end, "the record of {id} stays");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The Rust client: one client submits detached and leaves; another attaches by id, waits,
/// fetches and releases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_detaches_and_attaches_across_clients() {
    let cluster = drover::LocalCluster::start(2, drover::Registry::with_builtins())
        .await
        .unwrap();
    let mut g = drover::Graph::new();
    let slow = g
        .task("sleep", &serde_json::json!({"ms": 200}))
        .key("slow")
        .add();
    g.task("bytes", &serde_json::json!({"n": 3}))
        .key("out")
        .input(slow)
        .add();
    let first = cluster.client().await.unwrap();
    let id = first.submit_detached(&g, "from-rust").await.unwrap();
    first.close();
    drop(first);
    let second = cluster.client().await.unwrap();
    let listed = second.runs().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].id.as_str(), listed[0].name.as_str()),
        (id.as_str(), "from-rust")
    );
    let mut run = second.attach(&id).await.unwrap();
    assert_eq!(run.detached_id(), Some(id.as_str()));
    assert_eq!(run.kept_keys(), ["out".to_owned()]);
    let report = run.wait().await.unwrap();
    assert_eq!(report.finished, 2);
    assert_eq!(&run.get_bytes("out").await.unwrap()[..], b"xxx");
    let info = run.release_detached().await.unwrap().unwrap();
    assert_eq!(info.state, "released");
    assert!(matches!(
        second.attach("nope").await,
        Err(drover::ClientError::Refused(_))
    ));
    second.close();
    cluster.shutdown().await;
}
