//! Durable progress with real processes: `drover foreach` copies racing over keys on a
//! scheduler, leases taken over after `kill -9` of a holder, a stale commit refused, versions on
//! the embedded store, `kill -9` of the scheduler while clients commit, and durable graph tasks
//! skipped on rerun.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::{
    binary, free_port, graph_file, read_report, signal, stdout_of, wait_for_file, Cluster, Proc,
};

/// Longest any of these tests' processes may take.
const LIMIT: Duration = Duration::from_secs(180);

/// Writes `n` keys (`key-0000` ...) to `dir/name`; returns its path and the keys.
fn keys_file(dir: &Path, name: &str, n: usize) -> (String, Vec<String>) {
    let keys: Vec<String> = (0..n).map(|i| format!("key-{i:04}")).collect();
    let path = dir.join(name);
    std::fs::write(&path, keys.join("\n") + "\n").unwrap();
    (path.to_str().unwrap().to_owned(), keys)
}

/// Starts `drover foreach KEYS ARGS -- CMD...`.
fn foreach(name: &str, keys: &str, args: &[&str], command: &[&str]) -> Proc {
    let mut all = vec!["foreach", keys];
    all.extend_from_slice(args);
    all.push("--");
    all.extend_from_slice(command);
    Proc::start(name, &binary("drover"), &all)
}

/// Waits for `p` to exit within [`LIMIT`]: its exit code and lines.
fn finish(p: Proc) -> (Option<i32>, Vec<String>) {
    let name = p.name.clone();
    p.finish_within(LIMIT)
        .unwrap_or_else(|seen| panic!("{name} did not end; saw:\n{}", seen.join("\n")))
}

/// The keys a foreach report says this process committed.
fn committed(report: &serde_json::Value) -> Vec<String> {
    report["committed"]
        .as_array()
        .expect("committed")
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect()
}

/// `drover progress list NS --state STATE --json` against `place`: the keys listed.
fn listed(place: &[&str], namespace: &str, state: &str) -> BTreeSet<String> {
    let mut args = vec!["progress", "list", namespace, "--state", state, "--json"];
    args.extend_from_slice(place);
    let (code, lines) = finish(Proc::start("progress list", &binary("drover"), &args));
    assert_eq!(code, Some(0), "{lines:?}");
    stdout_of(&lines)
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            v["key"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// The run-once tutorial: 20 copies of `drover foreach` at once over 1,000 keys whose command
/// fails 40% of the time, rerun until every key is done. Each key is committed by exactly one
/// process, once.
#[test]
fn twenty_racing_processes_commit_every_key_exactly_once_despite_failures() {
    let cluster = Cluster::start_with(&["--idle-timeout-secs", "30"]);
    let dir = tempfile::tempdir().unwrap();
    let (keys_path, keys) = keys_file(dir.path(), "keys.txt", 1000);
    let access = cluster.access();
    // Fails when a random byte is under 102 (40%); records each success's key.
    let work = dir.path().join("work.log");
    let script = format!(
        "b=$(od -An -N1 -tu1 /dev/urandom); [ $b -ge 102 ] || {{ echo unlucky >&2; exit 3; }}; echo \"$DROVER_KEY\" >> '{}'",
        work.display()
    );
    let mut commits: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = 0;
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds <= 30, "keys still not done after 30 rounds");
        let procs: Vec<(Proc, std::path::PathBuf)> = (0..20)
            .map(|i| {
                let report = dir.path().join(format!("r{rounds}-{i}.json"));
                let p = foreach(
                    &format!("foreach {i}"),
                    &keys_path,
                    &[
                        "--access-file",
                        &access,
                        "--namespace",
                        "tutorial",
                        "--jobs",
                        "2",
                        "--shuffle",
                        "--report",
                        report.to_str().unwrap(),
                    ],
                    &["sh", "-c", &script],
                );
                (p, report)
            })
            .collect();
        let mut all_done = true;
        for (p, report) in procs {
            let (code, lines) = finish(p);
            assert!(matches!(code, Some(0 | 1)), "{lines:?}");
            all_done &= code == Some(0);
            let r = read_report(&report);
            for k in committed(&r) {
                *commits.entry(k).or_default() += 1;
            }
            let failed = r["failed"].as_array().unwrap();
            for f in failed {
                assert!(
                    f["error"]
                        .as_str()
                        .unwrap()
                        .contains("exit code 3; stderr: unlucky"),
                    "{f}"
                );
            }
            failures += failed.len();
        }
        if all_done {
            break;
        }
    }
    assert!(failures > 100, "the command failed only {failures} times");
    assert_eq!(commits.len(), keys.len(), "every key committed");
    let twice: Vec<_> = commits.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "committed more than once: {twice:?}");
    // The work itself ran at least once per key (at-least-once), and the store agrees.
    let worked: BTreeSet<String> = std::fs::read_to_string(&work)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(worked.len(), keys.len());
    let done = listed(&["--access-file", &access], "tutorial", "done");
    assert_eq!(done, keys.iter().cloned().collect::<BTreeSet<_>>());
    assert!(listed(&["--access-file", &access], "tutorial", "failed").is_empty());
}

/// A holder killed with SIGKILL stops renewing: its keys become claimable after the lease,
/// and a `--wait` copy takes them over.
#[test]
fn keys_of_a_holder_killed_with_sigkill_are_taken_over_after_the_lease() {
    let cluster = Cluster::start_with(&["--idle-timeout-secs", "30"]);
    let dir = tempfile::tempdir().unwrap();
    let (keys_path, keys) = keys_file(dir.path(), "keys.txt", 3);
    let access = cluster.access();
    let started = dir.path().join("STARTED");
    let hang = format!(
        "touch '{}'; while :; do sleep 0.05; done",
        started.display()
    );
    let first = foreach(
        "holder",
        &keys_path,
        &["--access-file", &access, "--lease", "2", "--jobs", "3"],
        &["sh", "-c", &hang],
    );
    wait_for_file(&started);
    let pid = first.child.id();
    signal(pid, "KILL");
    let report = dir.path().join("taker.json");
    let taker = foreach(
        "taker",
        &keys_path,
        &[
            "--access-file",
            &access,
            "--wait",
            "--report",
            report.to_str().unwrap(),
        ],
        &["true"],
    );
    let (code, lines) = finish(taker);
    drop(first);
    assert_eq!(code, Some(0), "{lines:?}");
    let mut got = committed(&read_report(&report));
    got.sort();
    assert_eq!(got, keys);
    // The orphaned commands of the killed holder were its own; stop them.
    let _ = std::process::Command::new("pkill")
        .args(["-f", &started.display().to_string()])
        .status();
}

/// A holder that stalls past its lease (SIGSTOP: no renewals) loses its key to another; when
/// it resumes, its commit is refused and reported, and the key stays committed once.
#[test]
fn a_commit_after_the_lease_was_taken_over_is_refused_and_reported() {
    let cluster = Cluster::start_with(&["--idle-timeout-secs", "60"]);
    let dir = tempfile::tempdir().unwrap();
    let (keys_path, _) = keys_file(dir.path(), "keys.txt", 1);
    let access = cluster.access();
    let (started, go) = (dir.path().join("STARTED"), dir.path().join("GO"));
    let gated = format!(
        "touch '{}'; while [ ! -e '{}' ]; do sleep 0.02; done",
        started.display(),
        go.display()
    );
    let slow_report = dir.path().join("slow.json");
    let slow = foreach(
        "stalled",
        &keys_path,
        &[
            "--access-file",
            &access,
            "--lease",
            "1",
            "--report",
            slow_report.to_str().unwrap(),
        ],
        &["sh", "-c", &gated],
    );
    wait_for_file(&started);
    signal(slow.child.id(), "STOP");
    let fast_report = dir.path().join("fast.json");
    let fast = foreach(
        "taker",
        &keys_path,
        &[
            "--access-file",
            &access,
            "--wait",
            "--report",
            fast_report.to_str().unwrap(),
        ],
        &["true"],
    );
    let (code, lines) = finish(fast);
    assert_eq!(code, Some(0), "{lines:?}");
    assert_eq!(committed(&read_report(&fast_report)), ["key-0000"]);
    std::fs::write(&go, "").unwrap();
    signal(slow.child.id(), "CONT");
    let (code, lines) = finish(slow);
    // Its key is done (by the other), so it exits 0; its own commit was refused.
    assert_eq!(code, Some(0), "{lines:?}");
    let r = read_report(&slow_report);
    assert!(committed(&r).is_empty(), "{r}");
    let lost = r["lost"].as_array().unwrap();
    assert_eq!(lost.len(), 1, "{r}");
    assert_eq!(lost[0]["key"], "key-0000");
    assert!(
        lines.iter().any(|l| l.contains("1 lost to another holder")),
        "{lines:?}"
    );
}

/// Versions on the embedded store (no scheduler): done keys are skipped at their version,
/// done again at a newer one, and an older one is refused.
#[test]
fn versions_on_the_embedded_store_redo_keys_and_refuse_older_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let store = store.to_str().unwrap();
    // Keys in any UTF-8, spaces and all.
    let path = dir.path().join("keys.txt");
    std::fs::write(&path, "α one\nβ/two\n\"three\"\n").unwrap();
    let keys_path = path.to_str().unwrap();
    let pass = |version: &str, name: &str| {
        let report = dir.path().join(format!("{name}.json"));
        let p = foreach(
            name,
            keys_path,
            &[
                "--store",
                store,
                "--version",
                version,
                "--report",
                report.to_str().unwrap(),
            ],
            &[
                "sh",
                "-c",
                "test -n \"$DROVER_KEY\" && test \"$DROVER_KEY\" = \"$0\"",
                "{}",
            ],
        );
        let (code, lines) = finish(p);
        (code, lines, read_report(&report))
    };
    let (code, lines, r) = pass("1", "first");
    assert_eq!(code, Some(0), "{lines:?}");
    assert_eq!(committed(&r).len(), 3, "{r}");
    let (code, _, r) = pass("1", "again");
    assert_eq!(code, Some(0));
    assert!(committed(&r).is_empty());
    assert_eq!(r["skipped_done"], 3);
    let (code, _, r) = pass("2", "newer");
    assert_eq!(code, Some(0));
    assert_eq!(committed(&r).len(), 3, "version 2 does them again: {r}");
    let (code, lines, r) = pass("1", "older");
    assert_eq!(code, Some(1), "{lines:?}");
    assert!(committed(&r).is_empty());
    assert!(
        lines.iter().any(|l| l.contains("newer version")),
        "{lines:?}"
    );
    let done = listed(&["--store", store], "default", "done");
    let want: BTreeSet<String> = ["α one", "β/two", "\"three\""].map(String::from).into();
    assert_eq!(done, want);
    // Reset frees them.
    let (code, lines) = finish(Proc::start(
        "reset",
        &binary("drover"),
        &["progress", "reset", "default", "--store", store],
    ));
    assert_eq!(code, Some(0), "{lines:?}");
    assert!(listed(&["--store", store], "default", "done").is_empty());
}

/// A scheduler on a fixed port and state dir, so a restarted one is where clients look.
struct Fixed {
    dir: tempfile::TempDir,
    port: u16,
}

impl Fixed {
    fn new() -> Fixed {
        Fixed {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
        }
    }

    fn start(&self) -> Proc {
        let listen = format!("127.0.0.1:{}", self.port);
        let state = self.dir.path().to_str().unwrap();
        let mut s = Proc::start(
            "scheduler",
            &binary("scheduler"),
            &[
                "--listen",
                &listen,
                "--state-dir",
                state,
                "--idle-timeout-secs",
                "30",
            ],
        );
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
}

/// `kill -9` of the scheduler while 5 clients commit, then a restart on the same state dir:
/// every commit a client heard back about is still there, and the run completes with each key
/// committed once.
#[test]
fn nothing_acknowledged_is_lost_when_the_scheduler_is_killed_mid_run() {
    let fixed = Fixed::new();
    let mut scheduler = fixed.start();
    let dir = tempfile::tempdir().unwrap();
    let (keys_path, keys) = keys_file(dir.path(), "keys.txt", 3000);
    let work = dir.path().join("work.log");
    let script = format!("echo \"$DROVER_KEY\" >> '{}'", work.display());
    let access = fixed.access();
    let procs: Vec<(Proc, std::path::PathBuf)> = (0..5)
        .map(|i| {
            let report = dir.path().join(format!("c{i}.json"));
            let p = foreach(
                &format!("client {i}"),
                &keys_path,
                &[
                    "--access-file",
                    &access,
                    "--jobs",
                    "4",
                    "--lease",
                    "5",
                    "--wait",
                    "--report",
                    report.to_str().unwrap(),
                ],
                &["sh", "-c", &script],
            );
            (p, report)
        })
        .collect();
    // Mid-run: a few hundred keys worked on.
    let end = std::time::Instant::now() + LIMIT;
    while std::fs::read_to_string(&work).map_or(0, |t| t.lines().count()) < 300 {
        assert!(
            std::time::Instant::now() < end,
            "the clients never got going"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    scheduler.kill();
    let worked_before = std::fs::read_to_string(&work).unwrap().lines().count();
    assert!(worked_before < keys.len(), "the run ended before the kill");
    let _scheduler = fixed.start();
    let mut commits: BTreeMap<String, usize> = BTreeMap::new();
    for (p, report) in procs {
        let (code, lines) = finish(p);
        assert_eq!(code, Some(0), "{lines:?}");
        for k in committed(&read_report(&report)) {
            *commits.entry(k).or_default() += 1;
        }
    }
    let twice: Vec<_> = commits.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "committed more than once: {twice:?}");
    assert_eq!(commits.len(), keys.len());
    // Everything acknowledged is in the store.
    let done = listed(&["--access-file", &access], "default", "done");
    assert_eq!(done, commits.keys().cloned().collect::<BTreeSet<_>>());
}

/// A graph with durable tasks: `load` (durable) feeds `mid`, which feeds `save` (durable at
/// version 2); `side` is a plain sink.
fn durable_graph(dir: &Path, gate: Option<(&Path, &Path)>) -> String {
    let mid = match gate {
        Some((started, go)) => format!(
            "touch '{}'; while [ ! -e '{}' ]; do sleep 0.02; done; printf mid",
            started.display(),
            go.display()
        ),
        None => "printf mid".to_owned(),
    };
    graph_file(
        dir,
        "durable.json",
        &serde_json::json!({"tasks": [
            {"key": "load", "function": "bytes", "params": {"n": 4, "fill": "L"}, "durable": true},
            {"key": "mid", "function": "command", "inputs": ["load"],
             "params": {"argv": ["sh", "-c", mid]}},
            {"key": "save", "function": "concat", "inputs": ["load", "mid"],
             "durable": {"version": 2}},
            {"key": "side", "function": "len", "inputs": ["load"]}
        ]}),
    )
}

/// Per task key, its report status.
fn statuses(report: &Path) -> BTreeMap<String, String> {
    read_report(report)["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["key"].as_str().unwrap().to_owned(),
                t["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A client killed mid-run, then a rerun after a scheduler restart: durable tasks done before
/// are not run again, their stored outputs feed what needs them, and what only feeds them is
/// skipped.
#[test]
fn durable_graph_tasks_done_before_are_skipped_on_rerun() {
    let fixed = Fixed::new();
    let mut scheduler = fixed.start();
    let mut cluster_workers = Vec::new();
    let access = fixed.access();
    let mut w = Proc::start(
        "worker",
        &binary("worker"),
        &["--access-file", &access, "--name", "w0"],
    );
    w.wait_for("worker connected");
    cluster_workers.push(w);
    let dir = tempfile::tempdir().unwrap();
    let (started, go) = (dir.path().join("STARTED"), dir.path().join("GO"));
    let graph = durable_graph(dir.path(), Some((&started, &go)));
    // Run 1: load is done and committed, then the client dies while mid runs.
    let first = common::start_drover_run(&graph, &access, &[]);
    wait_for_file(&started);
    drop(first); // SIGKILL
    std::fs::write(&go, "").unwrap();
    // Run 2 (after a restart of the scheduler): load is done before; the rest runs.
    scheduler.kill();
    let _scheduler = fixed.start();
    cluster_workers[0].wait_for("worker connected");
    let r2 = dir.path().join("r2.json");
    let (code, lines) = common::drover_run(&graph, &access, Some(r2.to_str().unwrap()));
    assert_eq!(code, Some(0), "{lines:?}");
    let s = statuses(&r2);
    assert_eq!(s["load"], "done before", "{s:?}");
    assert_eq!(s["mid"], "finished");
    assert_eq!(s["save"], "finished");
    assert_eq!(s["side"], "finished");
    let out = stdout_of(&lines);
    assert!(out.contains(&"save: LLLLmid"), "{out:?}");
    assert!(out.contains(&"side: 4"), "{out:?}");
    // Run 3: load and save are done before; mid only fed them and is skipped; side runs on
    // load's stored output.
    let r3 = dir.path().join("r3.json");
    let (code, lines) = common::drover_run(&graph, &access, Some(r3.to_str().unwrap()));
    assert_eq!(code, Some(0), "{lines:?}");
    let s = statuses(&r3);
    assert_eq!(s["load"], "done before", "{s:?}");
    assert_eq!(s["save"], "done before", "{s:?}");
    // mid is skipped, or, if the scheduler still held it for the client before (it had not
    // yet noticed that one leave), reused: it never runs again.
    let mid = &read_report(&r3)["tasks"].as_array().unwrap().clone();
    let mid = mid.iter().find(|t| t["key"] == "mid").unwrap();
    assert!(
        mid["status"] == "skipped" || (mid["status"] == "finished" && mid["reused"] == true),
        "{mid}"
    );
    assert_eq!(s["side"], "finished");
    let out = stdout_of(&lines);
    assert!(out.contains(&"save: LLLLmid"), "{out:?}");
    assert!(out.contains(&"side: 4"), "{out:?}");
    assert!(
        lines.iter().any(|l| l.contains("2 done before")),
        "{lines:?}"
    );
}

/// `drover run --local` keeps durable tasks' progress in the embedded store of `--store`: a
/// second run skips them, and `drover progress` sees them.
#[test]
fn a_local_run_keeps_durable_progress_in_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let graph = durable_graph(dir.path(), None);
    let store = dir.path().join("store");
    let store = store.to_str().unwrap();
    let run = |report: &str| {
        let report = dir.path().join(report);
        let p = Proc::start(
            "drover run",
            &binary("drover"),
            &[
                "run",
                &graph,
                "--local",
                "2",
                "--store",
                store,
                "--report",
                report.to_str().unwrap(),
            ],
        );
        let (code, lines) = finish(p);
        assert_eq!(code, Some(0), "{lines:?}");
        statuses(&report)
    };
    let s = run("r1.json");
    assert!(s.values().all(|v| v == "finished"), "{s:?}");
    let s = run("r2.json");
    assert_eq!(s["load"], "done before", "{s:?}");
    assert_eq!(s["save"], "done before");
    assert_eq!(s["mid"], "skipped");
    let done = listed(&["--store", store], "graph", "done");
    assert_eq!(done, ["load", "save"].map(String::from).into());
}

/// Sets the soft limit on the size of files process `pid` writes (its hard limit unchanged).
fn limit_file_size(pid: u32, bytes: Option<u64>) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit with a null new limit only reads the process's limit into `old`.
    let got = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            std::ptr::null(),
            &mut old,
        )
    };
    assert_eq!(got, 0, "read the file size limit");
    let new = libc::rlimit {
        rlim_cur: bytes.unwrap_or(libc::RLIM_INFINITY),
        rlim_max: old.rlim_max,
    };
    // SAFETY: `new` is a valid limit; the old one is not asked for.
    let set = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &new,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(set, 0, "set the file size limit");
}

/// A store that cannot be written (its file may not grow: as on a full disk) fails the
/// commits with an error naming the file; the scheduler keeps serving, loses nothing it had,
/// and commits again once the file may grow.
#[test]
fn a_store_that_cannot_grow_fails_commits_clearly_and_works_again_after() {
    let cluster = Cluster::start_with(&["--idle-timeout-secs", "30"]);
    let dir = tempfile::tempdir().unwrap();
    let access = cluster.access();
    let (small, small_keys) = keys_file(dir.path(), "small.txt", 200);
    let run = |name: &str, keys: &str, namespace: &str| {
        finish(foreach(
            name,
            keys,
            &[
                "--access-file",
                &access,
                "--namespace",
                namespace,
                "--jobs",
                "4",
            ],
            &["true"],
        ))
    };
    let (code, lines) = run("first", &small, "kept");
    assert_eq!(code, Some(0), "{lines:?}");
    let store = cluster.dir.path().join("progress.redb");
    let size = std::fs::metadata(&store).unwrap().len();
    let pid = cluster.scheduler.child.id();
    limit_file_size(pid, Some(size));
    let (big, _) = keys_file(dir.path(), "big.txt", 20_000);
    let (code, lines) = run("full", &big, "full");
    assert_eq!(code, Some(1), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("progress.redb") && l.contains("File too large")),
        "{lines:?}"
    );
    // Still serving, nothing lost.
    let kept = listed(&["--access-file", &access], "kept", "done");
    assert_eq!(kept, small_keys.iter().cloned().collect::<BTreeSet<_>>());
    // Room again: commits work.
    limit_file_size(pid, None);
    let (more, more_keys) = keys_file(dir.path(), "more.txt", 2_000);
    let (code, lines) = run("after", &more, "after");
    assert_eq!(code, Some(0), "{lines:?}");
    let after = listed(&["--access-file", &access], "after", "done");
    assert_eq!(after.len(), more_keys.len());
}
