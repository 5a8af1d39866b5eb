//! `worker --nprocs K`: a supervisor running K worker processes (each its own worker, with its
//! own id and once-cells), in the manner of Dask's nanny and MPIRE's restarts.
//!
//! * A process that crashes or is killed is restarted (backoff 0.5 s doubling to 10 s, reset
//!   after a minute of life).
//! * A process that exits with [`EXIT_RECYCLE`] (its `--lifespan-tasks` or `--memory-limit` was
//!   reached; it retired and handed over its results first) is replaced at once.
//! * A process that exits 0 (the scheduler shut down) is not restarted; when all have, the
//!   supervisor exits 0. Exit code 2 (bad usage or access file) stops everything with 2.
//! * SIGTERM to the supervisor retires every process (SIGTERM to each) and exits 0 when all
//!   have finished.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{info, warn};

/// Exit code of a worker process that retired to be replaced by a fresh one.
pub const EXIT_RECYCLE: i32 = 3;

/// How to start one worker process.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// The program (normally this same executable).
    pub program: PathBuf,
    /// Its arguments, except `--name`.
    pub args: Vec<String>,
    /// Base name; process `i` is `NAME-i`.
    pub name: String,
}

fn send_sigterm(pid: u32) {
    #[cfg(unix)]
    // SAFETY: kill(2) with a pid of a child we started; no memory is touched.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    #[cfg(not(unix))]
    let _ = pid;
}

/// What the supervisor hears about its processes.
enum Heard {
    /// Process (slot, generation) said it is recycling: start its successor now.
    Recycling(usize, u32),
    /// Process (slot, generation) exited with this code, after living since `born`.
    Exited(usize, u32, Option<i32>, Instant),
}

/// Runs `n` worker processes until they are all done; returns the exit code for the supervisor.
pub async fn supervise(spec: ProcessSpec, n: u32) -> i32 {
    let (tx, mut rx) = mpsc::unbounded_channel::<Heard>();
    let n = n as usize;
    // Per slot: the current generation and its pid (none while down); a successor started
    // early (recycling) takes the next generation, and the old one's exit is then ignored.
    let mut generation: Vec<u32> = vec![0; n];
    let mut pids: std::collections::HashMap<(usize, u32), u32> = Default::default();
    let mut backoff: Vec<Duration> = vec![Duration::from_millis(500); n];
    let start = |i: usize, g: u32, pids: &mut std::collections::HashMap<(usize, u32), u32>| {
        let name = if g == 0 {
            format!("{}-{i}", spec.name)
        } else {
            format!("{}-{i}.{g}", spec.name)
        };
        let mut cmd = tokio::process::Command::new(&spec.program);
        cmd.args(&spec.args)
            .arg("--name")
            .arg(&name)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        match cmd.spawn() {
            Ok(mut child) => {
                let pid = child.id();
                info!(process = %name, pid, "started worker process");
                if let Some(pid) = pid {
                    pids.insert((i, g), pid);
                }
                let born = Instant::now();
                if let Some(out) = child.stdout.take() {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        use tokio::io::AsyncBufReadExt;
                        let mut lines = tokio::io::BufReader::new(out).lines();
                        while let Ok(Some(line)) = lines.next_line().await {
                            if line.trim() == crate::runtime::RECYCLING_LINE {
                                let _ = tx.send(Heard::Recycling(i, g));
                            }
                        }
                    });
                }
                let tx = tx.clone();
                tokio::spawn(async move {
                    let code = child.wait().await.ok().and_then(|s| s.code());
                    let _ = tx.send(Heard::Exited(i, g, code, born));
                });
            }
            Err(e) => {
                warn!(process = %name, error = %e, "cannot start worker process");
                let _ = tx.send(Heard::Exited(i, g, Some(1), Instant::now()));
            }
        }
    };
    for i in 0..n {
        start(i, 0, &mut pids);
    }
    let term = crate::runtime::retire_on_sigterm();
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = term.notified(), if !stopping => {
                info!("SIGTERM: retiring every worker process");
                stopping = true;
                for pid in pids.values() {
                    send_sigterm(*pid);
                }
            }
            Some(heard) = rx.recv() => match heard {
                Heard::Recycling(i, g) => {
                    if !stopping && generation[i] == g {
                        generation[i] = g + 1;
                        info!(slot = i, "worker process recycling; starting its successor");
                        start(i, g + 1, &mut pids);
                    }
                }
                Heard::Exited(i, g, code, born) => {
                    pids.remove(&(i, g));
                    let superseded = generation[i] != g;
                    match code {
                        _ if stopping || superseded => info!(slot = i, generation = g, ?code, "worker process exited"),
                        Some(0) => info!(slot = i, "worker process finished (scheduler shut down)"),
                        Some(2) => {
                            warn!(slot = i, "worker process refused its configuration; stopping");
                            for pid in pids.values() {
                                send_sigterm(*pid);
                            }
                            return 2;
                        }
                        Some(EXIT_RECYCLE) => {
                            generation[i] = g + 1;
                            info!(slot = i, "worker process recycled; starting a fresh one");
                            start(i, g + 1, &mut pids);
                        }
                        other => {
                            if born.elapsed() > Duration::from_secs(60) {
                                backoff[i] = Duration::from_millis(500);
                            }
                            warn!(slot = i, code = ?other, restart_in = ?backoff[i], "worker process died; restarting");
                            tokio::time::sleep(backoff[i]).await;
                            backoff[i] = (backoff[i] * 2).min(Duration::from_secs(10));
                            if !stopping {
                                generation[i] = g + 1;
                                start(i, g + 1, &mut pids);
                            }
                        }
                    }
                    if pids.is_empty() {
                        return 0;
                    }
                }
            }
        }
    }
}
