//! Hostile neighbours and hostile files, with real processes: a second scheduler on a state dir
//! in use, secret files readable by others.

mod common;

use common::{binary, Cluster, Proc};

/// A second scheduler on the same state dir is refused, naming the first (its pid and
/// address), and leaves `access.json` pointing at the first.
#[test]
fn a_second_scheduler_on_a_state_dir_in_use_is_refused_naming_the_first() {
    let cluster = Cluster::start();
    let state = cluster.dir.path().to_str().unwrap().to_owned();
    let before = std::fs::read_to_string(cluster.access()).unwrap();
    let second = Proc::start(
        "second",
        &binary("scheduler"),
        &["--state-dir", &state, "--listen", "127.0.0.1:0"],
    );
    let (code, lines) = second.finish();
    assert_eq!(code, Some(2), "{lines:?}");
    let text = lines.join("\n");
    let pid = cluster.scheduler.child.id();
    assert!(
        text.contains("another scheduler holds it")
            && text.contains(&format!("pid {pid}, listening at 127.0.0.1:")),
        "{text}"
    );
    assert_eq!(std::fs::read_to_string(cluster.access()).unwrap(), before);
}

/// A port already taken stops the scheduler before it writes anything: no certificate, key,
/// token or access file is left in a fresh state dir, and the error names the address.
#[test]
fn a_port_in_use_is_found_before_any_secret_is_written() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let scheduler = Proc::start(
        "scheduler",
        &binary("scheduler"),
        &["--state-dir", state.to_str().unwrap(), "--listen", &addr],
    );
    let (code, lines) = scheduler.finish();
    assert_eq!(code, Some(2), "{lines:?}");
    let text = lines.join("\n");
    assert!(text.contains(&format!("cannot bind {addr}")), "{text}");
    for file in ["scheduler.crt", "scheduler.key", "token", "access.json"] {
        assert!(!state.join(file).exists(), "{file} was written: {text}");
    }
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Secret files readable by others: a restart warns naming each and makes them private;
/// with `--strict-permissions` it refuses to start, naming them.
#[cfg(unix)]
#[test]
fn secret_files_readable_by_others_are_named_and_made_private_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap().to_owned();
    let start = |extra: &[&str]| {
        let mut args = vec!["--state-dir", state.as_str(), "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        Proc::start("scheduler", &binary("scheduler"), &args)
    };
    // The first start makes them private.
    let mut first = start(&[]);
    first.wait_for("scheduler listening");
    first.kill();
    let (key, token) = (dir.path().join("scheduler.key"), dir.path().join("token"));
    assert_eq!((mode(&key), mode(&token)), (0o600, 0o600));
    chmod(&key, 0o644);
    chmod(&token, 0o644);
    // Strict: refused, both named, nothing changed.
    let (code, lines) = start(&["--strict-permissions"]).finish();
    assert_eq!(code, Some(2), "{lines:?}");
    let text = lines.join("\n");
    assert!(
        text.contains("secret files readable by other users")
            && text.contains("scheduler.key (mode 644)")
            && text.contains("token (mode 644)"),
        "{text}"
    );
    assert_eq!(mode(&key), 0o644);
    // Default: a warning naming each, and the modes fixed.
    let mut again = start(&[]);
    let warned = again.wait_for_all(&["readable by other users", "scheduler.key"]);
    assert!(warned.contains("644"), "{warned}");
    again.wait_for_all(&["readable by other users", "token"]);
    again.wait_for("scheduler listening");
    assert_eq!((mode(&key), mode(&token)), (0o600, 0o600));
    assert_eq!(mode(&dir.path().join("access.json")), 0o600);
}

/// `--outputs` writes one file per sink whatever the keys (spaces, underscores, slashes, a
/// 65,535-character key), and an index of which key is in which file.
#[test]
fn outputs_of_keys_that_look_alike_or_are_huge_never_overwrite_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let long = "k".repeat(65_535);
    let keys = ["a b", "a_b", "a/b", "index.json", long.as_str()];
    let tasks: Vec<serde_json::Value> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| serde_json::json!({"key": k, "function": "bytes", "params": {"n": i + 1}}))
        .collect();
    let graph = common::graph_file(dir.path(), "g.json", &serde_json::json!({ "tasks": tasks }));
    let out = dir.path().join("out");
    let run = Proc::start(
        "drover run",
        &binary("drover"),
        &[
            "run",
            &graph,
            "--local",
            "1",
            "--outputs",
            out.to_str().unwrap(),
        ],
    );
    let (code, lines) = run.finish();
    assert_eq!(code, Some(0), "{lines:?}");
    let index: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(index.len(), keys.len());
    for (i, k) in keys.iter().enumerate() {
        let file = &index[*k];
        assert_eq!(
            std::fs::read(out.join(file)).unwrap(),
            vec![b'x'; i + 1],
            "{k:.20}"
        );
    }
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), keys.len() + 1);
}

/// Odd graph files: a 65,536-character key is checked and printed, a file that is not UTF-8
/// is a bad graph (exit 1) like any other, huge size hints saturate; a command's missing
/// working directory is named.
#[test]
fn odd_graph_files_get_answers_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let drover = binary("drover");
    let check = |path: &std::path::Path| {
        let out = std::process::Command::new(&drover)
            .args(["check", path.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let long = "k".repeat(65_536);
    let mut tasks = vec![serde_json::json!({"key": long, "function": "bytes"})];
    tasks.push(
        serde_json::json!({"key": "sink", "function": "concat", "pool": "B",
        "inputs": ["a0", "a1", "a2", "a3", "a4"]}),
    );
    for i in 0..5 {
        tasks.push(
            serde_json::json!({"key": format!("a{i}"), "function": "bytes", "pool": "A",
            "size_hint": u64::MAX}),
        );
    }
    let g = common::graph_file(dir.path(), "g.json", &serde_json::json!({ "tasks": tasks }));
    let (code, out, err) = check(std::path::Path::new(&g));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&long), "the long key is printed whole");
    assert!(
        out.contains(&format!("without the pass {}", u64::MAX)),
        "{}",
        &out[out.len().saturating_sub(300)..]
    );
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, b"{\"tasks\": [\xff]}").unwrap();
    let (code, _, err) = check(&bad);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not UTF-8"), "{err}");
    // A command in a directory that is not there: the directory is named.
    let missing = dir.path().join("nowhere");
    let g = common::graph_file(
        dir.path(),
        "cwd.json",
        &serde_json::json!({"tasks": [{"key": "p", "function": "command",
            "params": {"argv": ["pwd"], "cwd": missing.to_str().unwrap()}}]}),
    );
    let (code, lines) = Proc::start("drover run", &drover, &["run", &g, "--local", "1"]).finish();
    assert_eq!(code, Some(1), "{lines:?}");
    let text = lines.join("\n");
    assert!(
        text.contains(&format!("its cwd {:?}", missing.to_str().unwrap())),
        "{text}"
    );
}

/// Whether a process whose command line contains `pattern` runs.
#[cfg(target_os = "linux")]
fn running(pattern: &str) -> bool {
    std::process::Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Waits (with a deadline) until `running(pattern)` is `want`.
#[cfg(target_os = "linux")]
fn wait_running(pattern: &str, want: bool) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while running(pattern) != want {
        assert!(
            std::time::Instant::now() < end,
            "{pattern:?} still {}",
            if want { "absent" } else { "running" }
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A command's children die with it: at its timeout, when it ends leaving a background job,
/// and when its worker is killed with SIGKILL.
#[cfg(target_os = "linux")]
#[test]
fn a_command_leaves_no_process_behind_whatever_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    let drover = binary("drover");
    // Unique durations name this test's processes.
    let g = common::graph_file(
        dir.path(),
        "timeout.json",
        &serde_json::json!({"tasks": [{"key": "o", "function": "command", "timeout": 1,
            "params": {"argv": ["sh", "-c", "sleep 30.123 & sleep 30.124; echo done"]}}]}),
    );
    let (code, lines) = Proc::start("timeout", &drover, &["run", &g, "--local", "1"]).finish();
    assert_eq!(code, Some(1), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("process killed")),
        "{lines:?}"
    );
    wait_running("sleep 30.12", false);
    // It ends, leaving a background job: the job goes with it.
    let g = common::graph_file(
        dir.path(),
        "leftover.json",
        &serde_json::json!({"tasks": [{"key": "o", "function": "command",
            "params": {"argv": ["sh", "-c", "sleep 31.125 & echo started"]}}]}),
    );
    let (code, lines) = Proc::start("leftover", &drover, &["run", &g, "--local", "1"]).finish();
    assert_eq!(code, Some(0), "{lines:?}");
    assert!(lines.iter().any(|l| l == "stdout: o: started"), "{lines:?}");
    wait_running("sleep 31.125", false);
    // Its worker killed with SIGKILL: the command and its children go.
    let mut cluster = Cluster::start();
    cluster.add_worker(&binary("worker"), &[], "w", "");
    let marker = dir.path().join("STARTED");
    let g = common::graph_file(
        dir.path(),
        "killed.json",
        &serde_json::json!({"tasks": [{"key": "o", "function": "command",
            "params": {"argv": ["sh", "-c", format!("sleep 32.126 & touch '{}'; sleep 32.127", marker.display())]}}]}),
    );
    let run = common::start_drover_run(&g, &cluster.access(), &[]);
    common::wait_for_file(&marker);
    assert!(running("sleep 32.126") && running("sleep 32.127"));
    cluster.workers[0].kill();
    wait_running("sleep 32.12", false);
    drop(run);
}

/// Timeouts free their threads: four 8-second sleeps timing out at 0.5 s on 2 workers x 1
/// thread, and one asking to sleep for ever (timeout 1 s), do not hold up the small tasks
/// queued behind them.
#[test]
fn timed_out_tasks_free_their_threads_for_the_tasks_behind_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut tasks = Vec::new();
    for i in 0..4 {
        tasks.push(
            serde_json::json!({"key": format!("slow{i}"), "function": "sleep",
            "params": {"ms": 8000}, "timeout": 0.5, "priority": 1}),
        );
    }
    tasks.push(serde_json::json!({"key": "forever", "function": "sleep",
        "params": {"ms": u64::MAX}, "timeout": 1, "priority": 1}));
    for i in 0..10 {
        tasks.push(serde_json::json!({"key": format!("small{i}"), "function": "bytes", "params": {"n": 1}}));
    }
    let g = common::graph_file(dir.path(), "g.json", &serde_json::json!({ "tasks": tasks }));
    let report = dir.path().join("r.json");
    let started = std::time::Instant::now();
    let (code, lines) = Proc::start(
        "drover run",
        &binary("drover"),
        &[
            "run",
            &g,
            "--local",
            "2",
            "--report",
            report.to_str().unwrap(),
        ],
    )
    .finish();
    let took = started.elapsed();
    assert_eq!(code, Some(1), "{lines:?}");
    let r = common::read_report(&report);
    for t in r["tasks"].as_array().unwrap() {
        let key = t["key"].as_str().unwrap();
        if key.starts_with("small") {
            assert_eq!(t["status"], "finished", "{t}");
        } else {
            assert_eq!(
                t["error"].as_str().unwrap().split(';').next().unwrap(),
                if key == "forever" {
                    "task timed out after 1 s"
                } else {
                    "task timed out after 0.5 s"
                },
                "{t}"
            );
        }
    }
    // With the sleeps holding their threads this took 16 s or never ended.
    assert!(took < std::time::Duration::from_secs(8), "{took:?}");
}

/// Random graph files through `drover check` (its table printer) and `drover export`: exit 0
/// or 1 with a message, never a panic (exit 101) or a hang.
#[test]
fn random_graph_files_get_exit_0_or_1_from_check_and_export() {
    let dir = tempfile::tempdir().unwrap();
    let drover = binary("drover");
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let texts = ["a", "b", "c", "ключ", "a b", "", "k\u{0}", "pool-A"];
    for case in 0..40 {
        let n = next(6) + 1;
        let mut tasks = Vec::new();
        for i in 0..n {
            let key = if next(10) == 0 {
                "x".repeat(70_000)
            } else {
                format!("{}{}", texts[next(8) as usize], i % 3)
            };
            let mut t = serde_json::json!({"key": key, "function": texts[next(8) as usize]});
            if next(2) == 0 {
                let inputs: Vec<String> = (0..next(3))
                    .map(|j| format!("{}{}", texts[next(8) as usize], j))
                    .collect();
                t["inputs"] = serde_json::json!(inputs);
            }
            match next(5) {
                0 => t["size_hint"] = serde_json::json!(u64::MAX),
                1 => t["size_hint"] = serde_json::json!(-3),
                2 => t["pool"] = serde_json::json!(texts[next(8) as usize]),
                3 => t["any_pool"] = serde_json::json!(true),
                _ => {
                    t["resources"] =
                        serde_json::json!({texts[next(8) as usize]: next(3) as f64 - 1.0})
                }
            }
            tasks.push(t);
        }
        let mut text = serde_json::json!({ "tasks": tasks }).to_string();
        if next(8) == 0 {
            text.truncate(next(text.len() as u64) as usize); // malformed
        }
        let path = dir.path().join(format!("g{case}.json"));
        std::fs::write(&path, &text).unwrap();
        for args in [
            vec!["check", path.to_str().unwrap()],
            vec![
                "export",
                path.to_str().unwrap(),
                "--format",
                "svg",
                "-o",
                "-",
            ],
        ] {
            let out = std::process::Command::new(&drover)
                .args(&args)
                .output()
                .unwrap();
            let code = out.status.code();
            assert!(
                matches!(code, Some(0 | 1)),
                "{args:?} on {text:.300}: {code:?} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            if code == Some(1) {
                assert!(
                    !out.stderr.is_empty(),
                    "exit 1 with no message: {text:.300}"
                );
            }
        }
    }
}

/// `worker --reconnect-secs 3` with its scheduler gone gives up after about 3 s (its
/// connection attempts are cut short), not after the attempts' own timeouts.
#[test]
fn a_worker_gives_up_when_its_patience_ends() {
    let mut cluster = Cluster::start();
    let access = cluster.access();
    cluster.scheduler.kill();
    let started = std::time::Instant::now();
    let worker = Proc::start(
        "worker",
        &binary("worker"),
        &["--access-file", &access, "--reconnect-secs", "3"],
    );
    let (code, lines) = worker.finish();
    let took = started.elapsed();
    assert_eq!(code, Some(1), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("gave up after 3 s")),
        "{lines:?}"
    );
    // The attempts' own timeouts would make it 10-20 s.
    assert!(took < std::time::Duration::from_secs(8), "{took:?}");
}

/// The README's main job ends cleanly: its results check out and no warning is printed (a
/// finished run's client does not warn when its local cluster shuts down).
#[test]
fn the_main_job_ends_without_a_warning() {
    let (stdout, stderr) = common::run_example("pools");
    assert!(
        stdout.contains("plan (propagate-pools):")
            && stdout.contains("results and placements check out"),
        "{stdout}"
    );
    assert!(!stderr.contains("WARN"), "{stderr}");
}
