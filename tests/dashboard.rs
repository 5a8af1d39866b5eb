//! The dashboard, `/metrics` and `drover status`, with a real scheduler and workers: the
//! token gate, Prometheus metrics that move, the status as JSON, and the pages driven in
//! headless Chromium (they load without errors, list the workers, show a run reach 100% and
//! draw the task stream; screenshots go to `target/dashboard/`).

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::process::Command;

use browser::{get, http};
use common::{binary, Cluster};
use serde_json::{json, Value};

/// A cluster with a dashboard at `addr`, workers in pools A (2 threads) and B.
fn cluster(addr: &str) -> Cluster {
    let mut c = Cluster::start_with(&["--idle-timeout-secs", "5", "--dashboard", addr]);
    c.add_worker(&binary("worker"), &["--nthreads", "2"], "wa", "pool-A=1");
    c.add_worker(&binary("worker"), &[], "wb", "pool-B=1");
    c
}

/// The dashboard's `HOST:PORT` from access.json.
fn dashboard(c: &Cluster) -> String {
    let access: Value =
        serde_json::from_str(&std::fs::read_to_string(c.access()).unwrap()).unwrap();
    access["dashboard"]
        .as_str()
        .expect("access.json names the dashboard")
        .trim_start_matches("http://")
        .replace("0.0.0.0", "127.0.0.1")
}

fn token(c: &Cluster) -> String {
    std::fs::read_to_string(c.dir.path().join("token"))
        .unwrap()
        .trim()
        .to_owned()
}

/// A graph file `NAME.json` whose keys all start with `NAME` (so two graphs share no task).
fn graph(c: &Cluster, name: &str, sleep_ms: u64) -> String {
    let k = |key: &str| format!("{name}-{key}");
    common::graph_file(
        c.dir.path(),
        &format!("{name}.json"),
        &json!({"tasks": [
            {"key": k("a"), "function": "bytes", "params": {"n": 2000}, "pool": "A"},
            {"key": k("b"), "function": "bytes", "params": {"n": 300}, "pool": "B"},
            {"key": k("slow1"), "function": "sleep", "params": {"ms": sleep_ms}, "inputs": [k("a")]},
            {"key": k("slow2"), "function": "sleep", "params": {"ms": sleep_ms}, "inputs": [k("a")]},
            {"key": k("join"), "function": "concat", "inputs": [k("b"), k("slow1"), k("slow2"), k("a")]},
            {"key": k("size"), "function": "len", "inputs": [k("join")]},
            {"key": k("bad"), "function": "command", "params": {"argv": ["false"]}}
        ]}),
    )
}

/// The value of the metric line starting with `name` (labels included), if any.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_and_status_move_with_the_work() {
    let c = cluster("127.0.0.1:0");
    let addr = dashboard(&c);
    let before = get(&addr, "/metrics", &[]);
    assert_eq!(before.status, 200, "{before:?}");
    for name in [
        "drover_tasks{",
        "drover_workers{",
        "drover_bytes_between_workers_total",
        "drover_bytes_between_pools_total",
        "drover_event_loop_seconds_bucket",
        "drover_durable_commits_total",
        "drover_clients",
    ] {
        assert!(before.body.contains(name), "no {name} in:\n{}", before.body);
    }
    assert_eq!(
        metric(&before.body, "drover_workers{pool=\"A\"}"),
        Some(1.0)
    );
    let g = graph(&c, "first", 10);
    let (code, lines) = common::drover_run(&g, &c.access(), None);
    assert_eq!(code, Some(1), "the bad task fails: {lines:?}");
    let after = get(&addr, "/metrics", &[]).body;
    assert_eq!(
        metric(&after, "drover_tasks_finished_total{function=\"sleep\"}"),
        Some(2.0),
        "{after}"
    );
    assert_eq!(
        metric(&after, "drover_tasks_failed_total{function=\"command\"}"),
        Some(1.0)
    );
    assert!(
        metric(
            &after,
            "drover_task_duration_seconds_count{function=\"sleep\"}"
        ) == Some(2.0)
    );
    assert!(
        metric(&after, "drover_bytes_between_pools_total").unwrap() > 0.0,
        "{after}"
    );
    // drover status --json: the same cluster.
    let out = Command::new(binary("drover"))
        .args(["status", "--json", "--access-file", &c.access()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{status}");
    assert!(names.contains(&"wa") && names.contains(&"wb"));
    let wa = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "wa")
        .unwrap();
    assert_eq!(wa["pools"], json!(["A"]));
    assert!(wa["finished"].as_u64().unwrap() >= 3, "{wa}");
    assert!(
        wa["insights"]["compute_us"].as_u64().unwrap() >= 20_000,
        "{wa}"
    );
    assert!(status["bytes_between_pools"].as_u64().unwrap() > 0);
    assert!(!status["slowest"].as_array().unwrap().is_empty());
    // The text form.
    let out = Command::new(binary("drover"))
        .args(["status", "--access-file", &c.access()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("workers (2):") && text.contains("pools:"),
        "{text}"
    );
    // drover run --insights: a table at the end, and the report carries it.
    let g = graph(&c, "second", 10);
    let report = c.dir.path().join("report.json");
    let out = Command::new(binary("drover"))
        .args([
            "run",
            &g,
            "--access-file",
            &c.access(),
            "--insights",
            "--report",
        ])
        .arg(&report)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stderr.contains("insights: this run computed")
            && stderr.contains("all workers")
            && stderr.contains("in its event loop"),
        "{stderr}"
    );
    let report = common::read_report(&report);
    let insights = &report["insights"];
    assert_eq!(
        insights["workers"].as_array().unwrap().len(),
        2,
        "{insights}"
    );
    assert!(
        insights["compute_us"].as_u64().unwrap() >= 20_000,
        "{insights}"
    );
    assert!(insights["slowest"][0][0]
        .as_str()
        .unwrap()
        .starts_with("second-slow"));
    // One server-sent event arrives at once, with the status.
    let ev = first_event(&addr);
    assert!(
        ev.contains("event: update") && ev.contains("\"workers\""),
        "{ev}"
    );
}

/// Reads the first server-sent event of `/api/events`.
fn first_event(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(s, "GET /api/events HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while !String::from_utf8_lossy(&got).contains("\n\n") || got.len() < 200 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the event stream ended");
        got.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&got).contains("\"latest_ms\"") {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn beyond_loopback_nothing_is_served_without_the_token() {
    let c = cluster("0.0.0.0:0");
    let addr = dashboard(&c);
    let token = token(&c);
    for path in ["/api/status", "/metrics", "/app.js", "/api/events"] {
        let r = get(&addr, path, &[]);
        assert_eq!(r.status, 401, "{path}: {r:?}");
        let wrong = get(&addr, path, &[("Authorization", "Bearer nope")]);
        assert_eq!(wrong.status, 401, "{path}");
    }
    let page = get(&addr, "/", &[]);
    assert!(
        page.status == 303 && page.header("location") == Some("/login"),
        "{page:?}"
    );
    let bearer = format!("Bearer {token}");
    let ok = get(&addr, "/api/status", &[("Authorization", &bearer)]);
    assert_eq!(ok.status, 200);
    assert!(ok.body.contains("\"workers\""));
    assert_eq!(
        get(&addr, "/metrics", &[("Authorization", &bearer)]).status,
        200
    );
    // The login page: a wrong token is refused, the right one gives a cookie that works.
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let bad = http(&addr, "POST", "/login", &form, "token=nope");
    assert_eq!(bad.status, 401);
    assert!(bad.body.contains("Wrong token"));
    let good = http(&addr, "POST", "/login", &form, &format!("token={token}"));
    assert_eq!(good.status, 303, "{good:?}");
    let cookie = good
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with("drover_token="));
    let page = get(&addr, "/", &[("Cookie", &cookie)]);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<title>Drover</title>"));
    // And it says so at start.
    let log = c.scheduler.seen.join("\n");
    assert!(log.contains("the cluster token is needed"), "{log}");
}

#[test]
fn the_pages_work_in_a_browser() {
    let Some(chromium) = browser::chromium() else {
        if std::env::var_os("DROVER_SKIP_BROWSER").is_some() {
            eprintln!("DROVER_SKIP_BROWSER: not testing the pages in a browser");
            return;
        }
        panic!("Chromium is missing: install Debian's chromium (.ci/run does), or set DROVER_SKIP_BROWSER=1");
    };
    let c = cluster("127.0.0.1:0");
    let addr = dashboard(&c);
    let shots = common::target_dir().parent().unwrap().join("dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    // A detached run, kept after it ends, so the Runs page can show it at 100%.
    let g = graph(&c, "shown", 300);
    let out = Command::new(binary("drover"))
        .args([
            "submit",
            &g,
            "--access-file",
            &c.access(),
            "--name",
            "shown",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let mut b = browser::Browser::start(&chromium);
    b.open(&format!("http://{addr}/#cluster"));
    b.wait_until(
        "document.querySelectorAll('#workers tr[data-worker]').length === 2",
        "both workers on the cluster page",
    );
    b.wait_until(
        "document.getElementById('live').textContent === 'live'",
        "the live stream connected",
    );
    b.screenshot(&shots.join("cluster.png"));
    let out = Command::new(binary("drover"))
        .args(["wait", &id, "--keep", "--access-file", &c.access()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "the bad task fails");
    b.eval("document.querySelector('a[data-tab=runs]').click()");
    b.wait_until(
        &format!(
            "[...document.querySelectorAll('.run')].some(r => r.dataset.run === '{id}' && r.querySelector('.pct').textContent.includes('100%'))"
        ),
        "the run at 100%",
    );
    b.wait_until(
        "document.querySelector('.failures') !== null",
        "the failed task with its message",
    );
    // Its graph, drawn with pools and task states.
    b.eval(&format!(
        "document.querySelector('.run[data-run=\"{id}\"] a.toggle').click()"
    ));
    b.wait_until(
        "[...document.querySelectorAll('.picture img')].some(i => i.complete && i.naturalWidth > 100)",
        "the run's graph",
    );
    b.screenshot(&shots.join("runs.png"));
    let svg = get(&addr, &format!("/api/runs/{id}/graph.svg"), &[]);
    assert_eq!(svg.status, 200);
    assert!(
        svg.body.contains("state-done") && svg.body.contains("state-failed"),
        "{}",
        svg.body
    );
    b.eval("document.querySelector('a[data-tab=stream]').click()");
    b.wait_until(
        "Number(document.getElementById('stream-canvas').dataset.bars) >= 5",
        "bars on the task stream",
    );
    b.screenshot(&shots.join("stream.png"));
    for tab in ["pools", "insights", "progress"] {
        b.eval(&format!(
            "document.querySelector('a[data-tab={tab}]').click()"
        ));
        b.wait_until(
            &format!("document.getElementById('{tab}').classList.contains('shown')"),
            tab,
        );
        b.screenshot(&shots.join(format!("{tab}.png")));
    }
    b.wait_until(
        "document.querySelectorAll('#pool-table tr[data-pool]').length === 2",
        "both pools",
    );
    assert_eq!(
        b.eval("document.getElementById('errors').textContent"),
        json!("")
    );
    assert!(b.errors.is_empty(), "errors in the page: {:?}", b.errors);
}
