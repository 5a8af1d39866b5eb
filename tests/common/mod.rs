//! Helpers for tests that run real `scheduler` and `worker` processes on loopback: start them
//! with ephemeral ports, wait for their log lines (never sleep), and kill them on drop.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Generous deadline for anything to happen.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// `target/<profile>/`, where cargo puts the workspace's binaries.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_owned()
}

/// A workspace binary (`scheduler`, `worker`, `drover`) or example (`examples/pools`).
pub fn binary(name: &str) -> PathBuf {
    let p = target_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build the workspace first (cargo test --workspace does)",
        p.display()
    );
    p
}

/// Runs a workspace example (`pools`) to its end in a fresh directory; panics unless it
/// succeeds. Returns its stdout and stderr.
pub fn run_example(name: &str) -> (String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(binary(&format!("examples/{name}")))
        .current_dir(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("run examples/{name}: {e}"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "examples/{name} failed:\n{stdout}\n{stderr}"
    );
    (stdout, stderr)
}

/// A child process that is killed when dropped, with its stderr lines readable.
pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
    pub name: String,
}

impl Proc {
    /// Starts `program args` with `RUST_LOG=info`, capturing its output.
    pub fn start(name: &str, program: &Path, args: &[&str]) -> Proc {
        Proc::start_logging(name, program, args, "info")
    }

    /// Starts `program args` with `RUST_LOG=log`, capturing its output.
    pub fn start_logging(name: &str, program: &Path, args: &[&str], log: &str) -> Proc {
        let mut child = Command::new(program)
            .args(args)
            .env("RUST_LOG", log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped");
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stdout = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx2.send(format!("stdout: {line}")).is_err() {
                    return;
                }
            }
        });
        Proc {
            child,
            lines: rx,
            seen: Vec::new(),
            name: name.to_owned(),
        }
    }

    /// Waits for an output line containing `needle`; panics with what was seen at the deadline.
    pub fn wait_for(&mut self, needle: &str) -> String {
        self.wait_for_all(&[needle])
    }

    /// Waits for an output line containing every one of `needles`.
    pub fn wait_for_all(&mut self, needles: &[&str]) -> String {
        let needle = needles.join("\" and \"");
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if needles.iter().all(|n| line.contains(n)) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "{}: no line with {needle:?} within {DEADLINE:?}; saw:\n{}",
                    self.name,
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Kills the process at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// Waits for the process to exit; returns its code and all its output lines.
    pub fn finish(self) -> (Option<i32>, Vec<String>) {
        let name = self.name.clone();
        match self.finish_within(DEADLINE) {
            Ok(done) => done,
            Err(seen) => panic!(
                "{name} did not exit within {DEADLINE:?}; saw:\n{}",
                seen.join("\n")
            ),
        }
    }

    /// Waits up to `limit` for the process to exit: its code and output lines, or (killed at
    /// the limit) the lines it printed.
    pub fn finish_within(
        mut self,
        limit: Duration,
    ) -> Result<(Option<i32>, Vec<String>), Vec<String>> {
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Drain what the reader threads still have.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
                    self.seen.push(line);
                }
                return Ok((status.code(), std::mem::take(&mut self.seen)));
            }
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().expect("wait");
                    return Ok((status.code(), std::mem::take(&mut self.seen)));
                }
            }
            if Instant::now() >= end {
                let _ = self.child.kill();
                return Err(std::mem::take(&mut self.seen));
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `drover run GRAPH --access-file ACCESS [--report REPORT]` to completion; returns its
/// exit code and output lines (stdout lines prefixed `stdout: `).
pub fn drover_run(graph: &str, access: &str, report: Option<&str>) -> (Option<i32>, Vec<String>) {
    let extra = match report {
        Some(r) => vec!["--report", r],
        None => vec![],
    };
    start_drover_run(graph, access, &extra).finish()
}

/// Starts `drover run GRAPH --access-file ACCESS EXTRA...` and returns it running.
pub fn start_drover_run(graph: &str, access: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["run", graph, "--access-file", access];
    args.extend_from_slice(extra);
    Proc::start("drover run", &binary("drover"), &args)
}

/// Sends `signal` (`TERM`, `KILL`, ...) to process `pid`.
pub fn signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{signal} {pid} failed");
}

/// Waits until `path` exists (something a task does on its own schedule).
pub fn wait_for_file(path: &Path) {
    let end = Instant::now() + DEADLINE;
    while !path.exists() {
        assert!(
            Instant::now() < end,
            "{} did not appear within {DEADLINE:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A fresh ephemeral UDP port on 127.0.0.1, for a scheduler that must come back where its
/// access file says.
pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("local addr")
        .port()
}

/// The report `drover run --report` wrote.
pub fn read_report(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("report written"))
        .expect("report is JSON")
}

/// The sum of `reruns` over a report's tasks.
pub fn total_reruns(report: &serde_json::Value) -> u64 {
    report["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| t["reruns"].as_u64().expect("reruns"))
        .sum()
}

/// A scheduler on 127.0.0.1 with an ephemeral port and its own state dir.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub scheduler: Proc,
    pub workers: Vec<Proc>,
}

impl Cluster {
    /// Starts the scheduler and waits until it listens.
    pub fn start() -> Cluster {
        Cluster::start_with(&["--idle-timeout-secs", "5"])
    }

    /// Starts the scheduler with extra flags and waits until it listens.
    pub fn start_with(flags: &[&str]) -> Cluster {
        Cluster::start_logging(flags, "info")
    }

    /// Starts the scheduler with extra flags and `RUST_LOG=log`, and waits until it listens.
    pub fn start_logging(flags: &[&str], log: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().to_str().expect("utf-8 path").to_owned();
        let mut args = vec!["--state-dir", state.as_str()];
        if !flags.contains(&"--listen") {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        args.extend_from_slice(flags);
        let mut scheduler = Proc::start_logging("scheduler", &binary("scheduler"), &args, log);
        scheduler.wait_for("scheduler listening");
        Cluster {
            dir,
            scheduler,
            workers: Vec::new(),
        }
    }

    /// The access file's path.
    pub fn access(&self) -> String {
        self.dir
            .path()
            .join("access.json")
            .to_str()
            .expect("utf-8")
            .to_owned()
    }

    /// Starts a worker (`program` is `worker` or an example acting as one) and waits until the
    /// scheduler accepted it.
    pub fn add_worker(&mut self, program: &Path, prefix: &[&str], name: &str, resources: &str) {
        let access = self.access();
        let mut args: Vec<&str> = prefix.to_vec();
        args.extend([
            "--access-file",
            &access,
            "--name",
            name,
            "--resources",
            resources,
        ]);
        let mut w = Proc::start(name, program, &args);
        w.wait_for("worker connected");
        self.workers.push(w);
    }
}

/// Writes `graph` as a graph file named `name` in `dir`; returns its path.
pub fn graph_file(dir: &Path, name: &str, graph: &serde_json::Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, graph.to_string()).expect("write graph file");
    path.to_str().expect("utf-8 path").to_owned()
}

/// The lines a process printed on stdout, in order.
pub fn stdout_of(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("stdout: "))
        .collect()
}

/// `n` x (bytes -> sleep `ms` -> len of both) -> one concat of the lens: each `len` reads a
/// source directly and through the slow task (the graph whose recovery used to hang). Its
/// output is `all: ` and `1000` n times.
pub fn shared_input_graph(n: usize, ms: u64) -> serde_json::Value {
    let mut tasks = Vec::new();
    for i in 0..n {
        tasks.push(
            serde_json::json!({"key": format!("b{i}"), "function": "bytes", "params": {"n": 1000}}),
        );
        tasks.push(serde_json::json!({"key": format!("s{i}"), "function": "sleep", "params": {"ms": ms}, "inputs": [format!("b{i}")]}));
        tasks.push(serde_json::json!({"key": format!("l{i}"), "function": "len", "inputs": [format!("b{i}"), format!("s{i}")]}));
    }
    let lens: Vec<String> = (0..n).map(|i| format!("l{i}")).collect();
    tasks.push(serde_json::json!({"key": "all", "function": "concat", "inputs": lens}));
    serde_json::json!({ "tasks": tasks })
}

/// A chain: `c0` = 10 bytes; `c_i` = concat(`c_{i-1}`, sleep `ms` after `c_{i-1}`). Its output is
/// `c{links}: xxxxxxxxxx`.
pub fn chain_graph(links: usize, ms: u64) -> serde_json::Value {
    let mut tasks =
        vec![serde_json::json!({"key": "c0", "function": "bytes", "params": {"n": 10}})];
    for i in 1..=links {
        tasks.push(serde_json::json!({"key": format!("s{i}"), "function": "sleep", "params": {"ms": ms}, "inputs": [format!("c{}", i - 1)]}));
        tasks.push(serde_json::json!({"key": format!("c{i}"), "function": "concat", "inputs": [format!("c{}", i - 1), format!("s{i}")]}));
    }
    serde_json::json!({ "tasks": tasks })
}
