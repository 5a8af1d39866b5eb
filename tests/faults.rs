//! Faults and hostile input against real processes: wrong credentials, garbage frames, tasks
//! whose function or params are wrong.

mod common;

use std::time::Duration;

use common::{
    binary, drover_run, free_port, read_report, start_drover_run, total_reruns, Cluster, Proc,
};
use drover_protocol::codec::encode;
use drover_protocol::endpoint::{client_endpoint, connect, say_hello};
use drover_protocol::tls::Identity;
use drover_protocol::{AccessFile, Hello, Role, PROTOCOL_VERSION};

fn access(c: &Cluster) -> AccessFile {
    AccessFile::load(std::path::Path::new(&c.access())).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn client_hello(token: &str) -> Hello {
    Hello {
        protocol: PROTOCOL_VERSION,
        token: token.to_owned(),
        role: Role::Client {
            name: "intruder".into(),
        },
    }
}

#[test]
fn wrong_or_missing_tokens_are_refused_and_logged() {
    let mut c = Cluster::start();
    let a = access(&c);
    rt().block_on(async {
        for (token, why) in [("not-the-token", "wrong token"), ("", "no token")] {
            let ep = client_endpoint().unwrap();
            let conn = connect(
                &ep,
                a.socket_addr().unwrap(),
                &a.cert_der().unwrap(),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
            let err = say_hello(&conn, &client_hello(token))
                .await
                .expect_err("refused");
            assert!(err.to_string().contains(why), "{err}");
        }
        // The real token still works.
        let ep = client_endpoint().unwrap();
        let conn = connect(
            &ep,
            a.socket_addr().unwrap(),
            &a.cert_der().unwrap(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        say_hello(&conn, &client_hello(&a.token)).await.unwrap();
    });
    c.scheduler.wait_for("wrong token");
    c.scheduler.wait_for("no token");
    // A client with a wrong token through the public API gets a clear error.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("access.json");
    AccessFile {
        token: "nope".into(),
        ..a
    }
    .save(&bad)
    .unwrap();
    let err = drover::BlockingClient::connect(&bad)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("refused") && err.contains("wrong token"),
        "{err}"
    );
}

#[test]
fn a_wrong_certificate_is_refused_before_anything_is_sent() {
    let mut c = Cluster::start();
    let a = access(&c);
    let other = Identity::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("access.json");
    AccessFile::new(a.socket_addr().unwrap(), &other.cert, &a.token)
        .save(&bad)
        .unwrap();
    let err = drover::BlockingClient::connect(&bad)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot connect") && err.contains("certificate"),
        "{err}"
    );
    c.scheduler.wait_for("TLS handshake");
    // A worker with the wrong certificate is refused the same way.
    let w = Proc::start(
        "worker",
        &binary("worker"),
        &["--access-file", bad.to_str().unwrap()],
    );
    let (code, lines) = w.finish();
    assert_eq!(code, Some(1));
    assert!(
        lines.join("\n").contains("certificate"),
        "{}",
        lines.join("\n")
    );
}

#[test]
fn garbage_frames_close_only_their_connection() {
    let mut c = Cluster::start();
    c.add_worker(&binary("worker"), &[], "w", "");
    let a = access(&c);
    let addr = a.socket_addr().unwrap();
    let cert = a.cert_der().unwrap();
    let rt = rt();
    rt.block_on(async {
        let ep = client_endpoint().unwrap();
        // A long-lived honest client, to show other connections are unaffected.
        let honest = connect(&ep, addr, &cert, Duration::from_secs(5))
            .await
            .unwrap();
        let _session = say_hello(&honest, &client_hello(&a.token)).await.unwrap();
        let valid = encode(&vec![drover_protocol::FromClient::Locate {
            req: 1,
            keys: vec!["k".into()],
        }])
        .unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for lane in 0..4u64 {
            let (ep, cert, token, valid) =
                (ep.clone(), cert.clone(), a.token.clone(), valid.clone());
            tasks.spawn(async move {
                let mut seed =
                    0x2545_f491_4f6c_dd1d ^ (lane + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let mut next = move || {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed
                };
                for round in 0..500u32 {
                    let conn = connect(&ep, addr, &cert, Duration::from_secs(5))
                        .await
                        .unwrap();
                    let (mut send, _recv) = if round % 2 == 0 {
                        let s = say_hello(&conn, &client_hello(&token)).await.unwrap();
                        (s.send, s.recv)
                    } else {
                        conn.open_bi().await.unwrap()
                    };
                    let frame: Vec<u8> = match round % 5 {
                        // random bytes
                        0 => (0..(next() % 300)).map(|_| next() as u8).collect(),
                        // an oversized length prefix
                        1 => [u32::MAX.to_le_bytes().to_vec(), vec![1, 2, 3]].concat(),
                        // a valid frame, truncated
                        2 => valid[..valid.len() - 1 - (next() as usize % (valid.len() - 1))]
                            .to_vec(),
                        // a valid frame with a flipped byte
                        3 => {
                            let mut f = valid.clone();
                            let i = 4 + next() as usize % (f.len() - 4);
                            f[i] ^= 0xff;
                            f
                        }
                        // a length prefix that promises more than is sent
                        _ => [100u32.to_le_bytes().to_vec(), vec![0; 10]].concat(),
                    };
                    let _ = send.write_all(&frame).await;
                    let _ = send.finish();
                    if round % 50 == 0 {
                        // Now and then wait for the scheduler to act on it.
                        let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
                    } else {
                        conn.close(quinn::VarInt::from_u32(0), b"done");
                    }
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        assert!(
            honest.close_reason().is_none(),
            "the honest client was disconnected: {:?}",
            honest.close_reason()
        );
    });
    c.scheduler.wait_for("bad frame");
    // The scheduler still runs graphs.
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.json");
    std::fs::write(&g, r#"{"tasks": [{"key": "a", "function": "bytes", "params": {"n": 3}}, {"key": "b", "function": "len", "inputs": ["a"]}]}"#).unwrap();
    let access = c.access();
    let (code, lines) = drover_run(g.to_str().unwrap(), &access, None);
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    assert!(
        lines.iter().any(|l| l == "stdout: b: 3"),
        "{}",
        lines.join("\n")
    );
}

#[test]
fn bad_params_fail_only_their_tasks() {
    let mut c = Cluster::start();
    c.add_worker(&binary("worker"), &[], "w", "");
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.json");
    std::fs::write(
        &g,
        r#"{"tasks": [
            {"key": "badparams", "function": "bytes", "params": {"n": "many"}},
            {"key": "ok", "function": "bytes", "params": {"n": 2}}
        ]}"#,
    )
    .unwrap();
    let report = dir.path().join("r.json");
    let access = c.access();
    let (code, lines) = drover_run(g.to_str().unwrap(), &access, Some(report.to_str().unwrap()));
    assert_eq!(code, Some(1), "{}", lines.join("\n"));
    let r = read_report(&report);
    let err = |k: &str| {
        r["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["key"] == k)
            .unwrap()["error"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    assert!(
        err("badparams").starts_with("params do not fit"),
        "{}",
        err("badparams")
    );
    assert!(
        err("badparams").contains("invalid type"),
        "{}",
        err("badparams")
    );
    assert!(lines.iter().any(|l| l == "stdout: ok: xx"));
}

#[test]
fn a_worker_killed_mid_graph_loses_nothing() {
    let mut c = Cluster::start_logging(
        &["--idle-timeout-secs", "5"],
        "info,drover_scheduler::core=debug",
    );
    let access = c.access();
    let worker = binary("worker");
    let start = |name: &str, log: &str| {
        let mut w = Proc::start_logging(
            name,
            &worker,
            &[
                "--access-file",
                &access,
                "--name",
                name,
                "--idle-timeout-secs",
                "3",
            ],
            log,
        );
        w.wait_for("worker connected");
        w
    };
    let _survivor = start("survivor", "info");
    let mut victim = start("victim", "info,drover_worker=debug");
    // Eight data tasks, eight slow tasks, and a final task that needs every result: whatever
    // the victim made and still held must be recomputed from lineage after it dies.
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.json");
    std::fs::write(&g, fan_in_graph()).unwrap();
    let report = dir.path().join("r.json");
    let run = start_drover_run(
        g.to_str().unwrap(),
        &access,
        &["--report", report.to_str().unwrap()],
    );
    // Kill the victim as soon as the scheduler has one of its results (still needed by "all").
    let joined = c.scheduler.wait_for("name=victim");
    let id: String = joined[joined.find("worker=").expect("worker id") + 7..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    c.scheduler
        .wait_for_all(&["task finished", &format!("worker={id}")]);
    victim.kill();
    let (code, lines) = run.finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    assert!(
        lines.iter().any(|l| l == "stdout: n: 8008"),
        "{}",
        lines.join("\n")
    );
    let r = read_report(&report);
    let tasks = r["tasks"].as_array().unwrap();
    assert!(tasks.iter().all(|t| t["status"] == "finished"), "{r}");
    let reruns = total_reruns(&r);
    assert!(
        reruns >= 1,
        "something the victim held or ran must have been re-run: {r}"
    );
    c.scheduler.wait_for("worker left");
}

/// Eight data tasks, eight slow tasks reading them, and a final task that needs every result
/// (its length, printed as `n`, is 8008): whatever a worker made and still holds when it goes
/// must be handed over or recomputed.
fn fan_in_graph() -> String {
    let mut tasks = Vec::new();
    let mut all = Vec::new();
    for i in 0..8 {
        tasks.push(format!(
            r#"{{"key": "d{i}", "function": "bytes", "params": {{"n": 1000, "fill": "{i}"}}}}"#
        ));
        tasks.push(format!(
            r#"{{"key": "s{i}", "function": "command", "inputs": ["d{i}"], "params": {{"argv": ["sh", "-c", "sleep 0.2; printf s"]}}}}"#
        ));
        all.push(format!("\"d{i}\", \"s{i}\""));
    }
    tasks.push(format!(
        r#"{{"key": "all", "function": "concat", "inputs": [{}]}}"#,
        all.join(", ")
    ));
    tasks.push(r#"{"key": "n", "function": "len", "inputs": ["all"]}"#.to_owned());
    format!("{{\"tasks\": [{}]}}", tasks.join(","))
}

/// Whether a process whose command line contains `marker` is running.
fn process_running(marker: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
    })
}

#[test]
fn a_task_past_its_timeout_fails_and_its_process_is_killed() {
    let mut c = Cluster::start();
    c.add_worker(&binary("worker"), &[], "w", "");
    let marker = format!("drover-timeout-test-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.json");
    std::fs::write(
        &g,
        format!(
            r#"{{"tasks": [
                {{"key": "slow", "function": "command", "timeout": 0.3, "retries": 1,
                  "params": {{"argv": ["sh", "-c", "sleep 30 # {marker}"]}}}},
                {{"key": "quick", "function": "command", "timeout": 30, "params": {{"argv": ["echo", "in time"]}}}}
            ]}}"#
        ),
    )
    .unwrap();
    let report = dir.path().join("r.json");
    let access = c.access();
    let (code, lines) = drover_run(g.to_str().unwrap(), &access, Some(report.to_str().unwrap()));
    assert_eq!(code, Some(1), "{}", lines.join("\n"));
    let r = read_report(&report);
    let slow = r["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == "slow")
        .unwrap();
    // Reported by the worker's timer or by the killed command, whichever is first.
    assert!(
        slow["error"]
            .as_str()
            .unwrap()
            .starts_with("task timed out after 0.3 s"),
        "{slow}"
    );
    assert_eq!(slow["reruns"], 1, "retries apply to timeouts: {slow}");
    assert!(
        lines.iter().any(|l| l == "stdout: quick: in time"),
        "{}",
        lines.join("\n")
    );
    // The shell was killed at its deadline, not left sleeping for 30 s.
    let end = std::time::Instant::now() + common::DEADLINE;
    while process_running(&marker) {
        assert!(
            std::time::Instant::now() < end,
            "the timed-out command is still running"
        );
        std::thread::yield_now();
    }
}

#[test]
fn a_task_that_kills_its_workers_is_failed_as_suspicious() {
    // Short idle timeout: each death is noticed within a second.
    let mut c = Cluster::start_with(&["--idle-timeout-secs", "1", "--max-worker-deaths", "3"]);
    for name in ["w1", "w2", "w3", "w4"] {
        c.add_worker(&binary("worker"), &[], name, "");
    }
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.json");
    // The command's parent is its guard; the guard's parent is the worker.
    std::fs::write(
        &g,
        r#"{"tasks": [
            {"key": "killer", "function": "command", "params": {"argv": ["sh", "-c", "kill -9 $(cut -d' ' -f4 /proc/$PPID/stat); sleep 5"]}},
            {"key": "fine", "function": "bytes", "params": {"n": 1}, "priority": -1}
        ]}"#,
    )
    .unwrap();
    let report = dir.path().join("r.json");
    let access = c.access();
    let (code, lines) = drover_run(g.to_str().unwrap(), &access, Some(report.to_str().unwrap()));
    assert_eq!(code, Some(1), "{}", lines.join("\n"));
    let r = read_report(&report);
    let killer = r["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == "killer")
        .unwrap();
    let err = killer["error"].as_str().unwrap();
    assert!(
        err.starts_with("suspicious task: it was running on 3 workers that died"),
        "{err}"
    );
    assert!(
        lines.iter().any(|l| l == "stdout: fine: x"),
        "{}",
        lines.join("\n")
    );
    // Three workers died; the fourth lives on.
    let dead = c
        .workers
        .iter_mut()
        .map(|w| w.child.try_wait().unwrap().is_some())
        .filter(|d| *d)
        .count();
    assert_eq!(dead, 3);
}

#[test]
fn workers_reconnect_to_a_restarted_scheduler_or_give_up_after_their_patience() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap().to_owned();
    // A fixed port, so the restarted scheduler is where the access file says.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let sched_args = [
        "--listen",
        &listen,
        "--state-dir",
        &state,
        "--idle-timeout-secs",
        "2",
    ];
    let mut scheduler = Proc::start("scheduler", &binary("scheduler"), &sched_args);
    scheduler.wait_for("scheduler listening");
    let access = dir.path().join("access.json").to_str().unwrap().to_owned();
    let worker_args = |name: &'static str, patience: &'static str| {
        vec![
            "--access-file".to_owned(),
            access.clone(),
            "--name".into(),
            name.into(),
            "--idle-timeout-secs".into(),
            "1".into(),
            "--reconnect-secs".into(),
            patience.into(),
        ]
    };
    let patient_args = worker_args("patient", "60");
    let patient_args: Vec<&str> = patient_args.iter().map(String::as_str).collect();
    let mut patient = Proc::start("patient", &binary("worker"), &patient_args);
    patient.wait_for("worker connected");
    let impatient_args = worker_args("impatient", "1");
    let impatient_args: Vec<&str> = impatient_args.iter().map(String::as_str).collect();
    let mut impatient = Proc::start("impatient", &binary("worker"), &impatient_args);
    impatient.wait_for("worker connected");

    scheduler.kill();
    // The impatient worker gives up with a clear message.
    let (code, lines) = impatient.finish();
    assert_eq!(code, Some(1), "{}", lines.join("\n"));
    assert!(
        lines
            .join("\n")
            .contains("gave up after 1 s without the scheduler"),
        "{}",
        lines.join("\n")
    );
    // The patient one finds the restarted scheduler and works for it.
    let mut scheduler = Proc::start("scheduler", &binary("scheduler"), &sched_args);
    scheduler.wait_for("scheduler listening");
    patient.wait_for("worker connected");
    let g = dir.path().join("g.json");
    std::fs::write(
        &g,
        r#"{"tasks": [{"key": "x", "function": "bytes", "params": {"n": 2, "fill": "r"}}]}"#,
    )
    .unwrap();
    let (code, lines) = drover_run(g.to_str().unwrap(), &access, None);
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    assert!(
        lines.iter().any(|l| l == "stdout: x: rr"),
        "{}",
        lines.join("\n")
    );
}

#[test]
fn sigterm_retires_a_worker_without_recomputing_anything() {
    let c = Cluster::start();
    let access = c.access();
    let worker = binary("worker");
    let start = |name: &str, log: &str| {
        let mut w = Proc::start_logging(
            name,
            &worker,
            &["--access-file", &access, "--name", name],
            log,
        );
        w.wait_for("worker connected");
        w
    };
    let _stayer = start("stayer", "info");
    let mut leaver = start("leaver", "info,drover_worker=debug");
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.json");
    std::fs::write(&g, fan_in_graph()).unwrap();
    let report = dir.path().join("r.json");
    let run = start_drover_run(
        g.to_str().unwrap(),
        &access,
        &["--report", report.to_str().unwrap()],
    );
    leaver.wait_for("task done");
    let pid = leaver.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let (code, lines) = run.finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    assert!(
        lines.iter().any(|l| l == "stdout: n: 8008"),
        "{}",
        lines.join("\n")
    );
    let (code, leaver_lines) = leaver.finish();
    assert_eq!(
        code,
        Some(0),
        "the retired worker exits 0:\n{}",
        leaver_lines.join("\n")
    );
    assert!(
        leaver_lines.iter().any(|l| l.contains("retired: exiting")),
        "{}",
        leaver_lines.join("\n")
    );
    let r = read_report(&report);
    let reruns = total_reruns(&r);
    assert_eq!(reruns, 0, "nothing is recomputed: {r}");
}

#[test]
fn a_killed_worker_leaves_no_command_process_behind() {
    let mut c = Cluster::start();
    c.add_worker(&binary("worker"), &[], "doomed", "");
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let graph = dir.path().join("g.json");
    let script = format!(
        "echo $$ > '{}.tmp'; mv '{0}.tmp' '{0}'; exec sleep 1000",
        pid_file.display()
    );
    std::fs::write(
        &graph,
        serde_json::json!({"tasks": [{"key": "long", "function": "command", "params": {"argv": ["sh", "-c", script]}}]})
            .to_string(),
    )
    .unwrap();
    let access = c.access();
    let _run = start_drover_run(graph.to_str().unwrap(), &access, &[]);
    common::wait_for_file(&pid_file);
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_owned();
    let alive = || std::path::Path::new(&format!("/proc/{pid}")).exists();
    assert!(alive());
    c.workers[0].kill();
    let end = std::time::Instant::now() + common::DEADLINE;
    while alive() {
        // A zombie is gone too: it only waits for its parent to be reaped.
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if state.split_whitespace().nth(2) == Some("Z") {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "command process {pid} outlived its worker"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
