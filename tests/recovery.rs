//! Recovery with real processes over QUIC on 127.0.0.1: workers killed at several moments of a
//! graph whose sources feed both a slow task and a task that reads the slow one too (the graph
//! that used to hang), a chain with a kill, recycling at a task lifespan on a concat tree,
//! twenty clients sharing keys, runs back to back, a key reused for another definition, and how
//! fast the scheduler notices a dead worker or client.

mod common;

use std::time::{Duration, Instant};

use common::{
    binary, chain_graph, graph_file, read_report, shared_input_graph, start_drover_run, stdout_of,
    total_reruns, Cluster, Proc,
};

/// A worker whose finished tasks are logged (`task done`), so a test can act at a moment.
fn logged_worker(c: &Cluster, name: &str, extra: &[&str]) -> Proc {
    let access = c.access();
    let mut args = vec!["--access-file", access.as_str(), "--name", name];
    args.extend_from_slice(extra);
    let mut w = Proc::start_logging(name, &binary("worker"), &args, "info,drover_worker=debug");
    w.wait_for("worker connected");
    w
}

#[test]
fn shared_inputs_survive_a_kill_at_several_moments() {
    let dir = tempfile::tempdir().unwrap();
    let g = graph_file(dir.path(), "g.json", &shared_input_graph(30, 300));
    let expected = format!("all: {}", "1000".repeat(30));
    // Moments: after the victim finished this many tasks.
    for moment in [2, 12, 24] {
        let mut c = Cluster::start_with(&["--idle-timeout-secs", "10"]);
        let _w1 = logged_worker(&c, "w1", &["--nthreads", "2"]);
        let mut victim = logged_worker(&c, "w2", &["--nthreads", "2"]);
        let _w3 = logged_worker(&c, "w3", &["--nthreads", "2"]);
        let report = dir.path().join(format!("r{moment}.json"));
        let run = start_drover_run(&g, &c.access(), &["--report", report.to_str().unwrap()]);
        for _ in 0..moment {
            victim.wait_for("task done");
        }
        let killed = Instant::now();
        victim.kill();
        let (code, lines) = run.finish();
        let took = killed.elapsed();
        assert_eq!(
            code,
            Some(0),
            "kill after {moment} tasks:\n{}",
            lines.join("\n")
        );
        assert_eq!(stdout_of(&lines), vec![expected.as_str()]);
        c.scheduler.wait_for("worker left");
        let log = c.scheduler.seen.join("\n");
        assert!(
            !log.contains("not held by this worker"),
            "a worker was told to fetch from itself:\n{log}"
        );
        let r = read_report(&report);
        eprintln!(
            "kill after {moment} tasks of the victim: done {:.1} s after the kill, {} reruns",
            took.as_secs_f64(),
            total_reruns(&r)
        );
    }
}

#[test]
fn a_chain_survives_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let g = graph_file(dir.path(), "chain.json", &chain_graph(30, 60));
    let mut c = Cluster::start_with(&["--idle-timeout-secs", "10"]);
    // The chain starts on `a` (the only worker), `b` joins; `a` dies 8 tasks in, so `b` makes
    // again what was only on `a`, from the start of the chain.
    let mut a = logged_worker(&c, "a", &[]);
    let run = start_drover_run(&g, &c.access(), &[]);
    a.wait_for("task done");
    let _b = logged_worker(&c, "b", &[]);
    for _ in 1..8 {
        a.wait_for("task done");
    }
    a.kill();
    let (code, lines) = run.finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    assert_eq!(stdout_of(&lines), vec!["c30: xxxxxxxxxx"]);
    c.scheduler.wait_for("worker left");
}

#[test]
fn recycling_at_a_lifespan_hands_every_result_over() {
    // A concat tree over 1,024 one-byte leaves: 2,047 tasks.
    let mut tasks = Vec::new();
    let mut level: Vec<String> = (0..1024)
        .map(|i| {
            let k = format!("leaf{i}");
            tasks.push(serde_json::json!({"key": k, "function": "bytes", "params": {"n": 1}}));
            k
        })
        .collect();
    let mut depth = 0;
    while level.len() > 1 {
        depth += 1;
        level = level
            .chunks(2)
            .enumerate()
            .map(|(i, pair)| {
                let k = format!("n{depth}-{i}");
                tasks.push(serde_json::json!({"key": k, "function": "concat", "inputs": pair}));
                k
            })
            .collect();
    }
    let dir = tempfile::tempdir().unwrap();
    let g = graph_file(
        dir.path(),
        "tree.json",
        &serde_json::json!({ "tasks": tasks }),
    );
    let c = Cluster::start_with(&["--idle-timeout-secs", "10"]);
    let access = c.access();
    let mut sup = Proc::start(
        "supervisor",
        &binary("worker"),
        &[
            "--access-file",
            &access,
            "--name",
            "pw",
            "--nprocs",
            "2",
            "--lifespan-tasks",
            "50",
        ],
    );
    sup.wait_for("worker connected");
    let report = dir.path().join("r.json");
    let run = start_drover_run(&g, &access, &["--report", report.to_str().unwrap()]);
    let (code, lines) = run.finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    assert_eq!(
        stdout_of(&lines),
        vec![format!("{}: {}", level[0], "x".repeat(1024)).as_str()]
    );
    let r = read_report(&report);
    assert_eq!(total_reruns(&r), 0, "recycling recomputes nothing");
    sup.wait_for("recycling; starting its successor");
    let log = sup.seen.join("\n");
    assert!(
        !log.contains("could not copy") && !log.contains("will be recomputed"),
        "{log}"
    );
}

/// Twenty clients at once, each with 50 keys shared by all and 100 of its own.
#[test]
fn twenty_concurrent_clients_share_keys_and_rerun_nothing() {
    let mut c = Cluster::start_with(&["--idle-timeout-secs", "10"]);
    for w in ["w1", "w2", "w3"] {
        c.add_worker(&binary("worker"), &["--nthreads", "2"], w, "");
    }
    let dir = tempfile::tempdir().unwrap();
    let access = c.access();
    let mut runs = Vec::new();
    for client in 0..20 {
        let mut tasks = Vec::new();
        for i in 0..50 {
            tasks.push(serde_json::json!({"key": format!("shared{i}"), "function": "bytes", "params": {"n": i % 7 + 1}}));
        }
        for i in 0..100 {
            tasks.push(serde_json::json!({"key": format!("c{client}-{i}"), "function": "len", "inputs": [format!("shared{}", i % 50), format!("shared{}", (i * 7) % 50)]}));
        }
        let g = graph_file(
            dir.path(),
            &format!("g{client}.json"),
            &serde_json::json!({ "tasks": tasks }),
        );
        let report = dir.path().join(format!("r{client}.json"));
        let run = start_drover_run(&g, &access, &["--report", report.to_str().unwrap()]);
        runs.push((client, run, report));
    }
    for (client, run, report) in runs {
        let (code, lines) = run.finish();
        assert_eq!(code, Some(0), "client {client}:\n{}", lines.join("\n"));
        let out = stdout_of(&lines);
        assert_eq!(out.len(), 100, "client {client}");
        for i in 0..100 {
            let want = (i % 50) % 7 + 1 + ((i * 7) % 50) % 7 + 1;
            assert!(
                out.contains(&format!("c{client}-{i}: {want}").as_str()),
                "client {client}: {out:?}"
            );
        }
        let r = read_report(&report);
        let rerun: Vec<&serde_json::Value> = r["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["reruns"].as_u64() != Some(0))
            .collect();
        assert_eq!(
            total_reruns(&r),
            0,
            "client {client}: {rerun:?}\n{}",
            c.scheduler.seen.join("\n")
        );
    }
    let log = c.scheduler.seen.join("\n");
    assert!(!log.contains("inputs lost"), "{log}");
}

#[test]
fn two_runs_of_one_graph_back_to_back_rerun_nothing() {
    let mut c = Cluster::start_with(&["--idle-timeout-secs", "10"]);
    c.add_worker(&binary("worker"), &["--nthreads", "2"], "w1", "");
    c.add_worker(&binary("worker"), &["--nthreads", "2"], "w2", "");
    let dir = tempfile::tempdir().unwrap();
    let g = graph_file(dir.path(), "g.json", &shared_input_graph(10, 20));
    let expected = format!("all: {}", "1000".repeat(10));
    for round in 0..2 {
        let report = dir.path().join(format!("r{round}.json"));
        let run = start_drover_run(&g, &c.access(), &["--report", report.to_str().unwrap()]);
        let (code, lines) = run.finish();
        assert_eq!(code, Some(0), "{}", lines.join("\n"));
        assert_eq!(stdout_of(&lines), vec![expected.as_str()]);
        assert_eq!(total_reruns(&read_report(&report)), 0, "round {round}");
    }
    let log = c.scheduler.seen.join("\n");
    assert!(!log.contains("inputs lost"), "{log}");
}

#[test]
fn a_key_reused_for_another_definition_is_computed_anew_or_refused_while_in_use() {
    let c = Cluster::start();
    let mut w = logged_worker(&c, "w", &["--nthreads", "2"]);
    let dir = tempfile::tempdir().unwrap();
    let access = c.access();
    let first = graph_file(
        dir.path(),
        "first.json",
        &serde_json::json!({"tasks": [
            {"key": "a", "function": "bytes", "params": {"n": 5, "fill": "p"}},
            {"key": "c", "function": "concat", "inputs": ["a"]}
        ]}),
    );
    let (code, lines) = common::drover_run(&first, &access, None);
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    assert_eq!(stdout_of(&lines), vec!["c: ppppp"]);
    // The same key, another definition, from a new client: computed anew.
    let second = graph_file(
        dir.path(),
        "second.json",
        &serde_json::json!({"tasks": [
            {"key": "a", "function": "bytes", "params": {"n": 3, "fill": "s"}}
        ]}),
    );
    let (code, lines) = common::drover_run(&second, &access, None);
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    assert_eq!(stdout_of(&lines), vec!["a: sss"]);
    // While a live run uses "x", a graph that redefines it is refused, naming it.
    let slow = graph_file(
        dir.path(),
        "slow.json",
        &serde_json::json!({"tasks": [
            {"key": "x", "function": "bytes", "params": {"n": 2, "fill": "q"}},
            {"key": "wait", "function": "sleep", "params": {"ms": 60000}, "inputs": ["x"]}
        ]}),
    );
    let mut live = start_drover_run(&slow, &access, &[]);
    let redefine = graph_file(
        dir.path(),
        "redefine.json",
        &serde_json::json!({"tasks": [
            {"key": "x", "function": "bytes", "params": {"n": 4, "fill": "r"}}
        ]}),
    );
    // Once the live run's "x" ran (after the earlier runs' three tasks), redefine it.
    for _ in 0..4 {
        w.wait_for("task done");
    }
    let (code, lines) = common::drover_run(&redefine, &access, None);
    let text = lines.join("\n");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("redefines 1 key(s) that a live run still uses")
            && text.contains("key \"x\"")
            && text.contains("\"bytes\""),
        "{text}"
    );
    live.kill();
}

#[test]
fn a_killed_worker_or_client_is_noticed_within_moments() {
    // An idle timeout of 30 s: only the lifeline can explain a fast notice.
    let mut c = Cluster::start_logging(
        &["--idle-timeout-secs", "30"],
        "info,drover_protocol::lifeline=debug",
    );
    let access = c.access();
    let mut w = Proc::start(
        "victim",
        &binary("worker"),
        &[
            "--access-file",
            &access,
            "--name",
            "victim",
            "--idle-timeout-secs",
            "30",
        ],
    );
    w.wait_for("worker connected");
    c.scheduler.wait_for("lifeline open");
    let killed = Instant::now();
    w.kill();
    c.scheduler.wait_for("worker left");
    let worker_notice = killed.elapsed();
    // A client with a long run, killed.
    let dir = tempfile::tempdir().unwrap();
    let g = graph_file(
        dir.path(),
        "g.json",
        &serde_json::json!({"tasks": [{"key": "t", "function": "sleep", "params": {"ms": 60000}}]}),
    );
    let mut run = start_drover_run(&g, &access, &["--idle-timeout-secs", "30"]);
    c.scheduler.wait_for("lifeline open");
    let killed = Instant::now();
    run.kill();
    c.scheduler.wait_for("client left");
    let client_notice = killed.elapsed();
    eprintln!(
        "kill -9 to the scheduler's log line: worker {} ms, client {} ms",
        worker_notice.as_millis(),
        client_notice.as_millis()
    );
    assert!(worker_notice < Duration::from_secs(5), "{worker_notice:?}");
    assert!(client_notice < Duration::from_secs(5), "{client_notice:?}");
}
