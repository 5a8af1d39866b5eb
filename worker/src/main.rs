//! The stock `worker` binary: the built-in functions, nothing else. A program with its own
//! functions calls [`drover_worker::run_worker`] with its own registry instead.
//!
//! Exit codes: 0 the scheduler shut down, or the worker retired on SIGTERM; 1 the scheduler was
//! lost (after `--reconnect-secs` of retries) or refused us; 2 bad usage or access file;
//! 3 the worker retired at its `--lifespan-tasks` or `--memory-limit` (a supervisor replaces it).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use drover_annotations::Resources;
use drover_protocol::AccessFile;
use drover_worker::supervise::{supervise, ProcessSpec, EXIT_RECYCLE};
use drover_worker::{retire_on_sigterm, run_worker_reconnecting, Registry, Stopped, WorkerConfig};

/// A Drover worker: runs tasks for the scheduler named in the access file.
#[derive(Debug, Parser)]
#[command(name = "worker", version)]
struct Args {
    /// The scheduler's access.json.
    #[arg(long)]
    access_file: PathBuf,
    /// Resources, e.g. pool-A=1,gpu=2: `pool-X` puts the worker in pool X; others are consumed
    /// by tasks while they run.
    #[arg(long, default_value = "", value_parser = parse_resources)]
    resources: Resources,
    /// Tasks run at once (per process).
    #[arg(long, default_value_t = 1)]
    nthreads: u32,
    /// Name in logs and reports (default: host name and process id). With --nprocs, process i
    /// is NAME-i.
    #[arg(long)]
    name: Option<String>,
    /// Seconds of silence after which the scheduler counts as gone.
    #[arg(long, default_value_t = 10)]
    idle_timeout_secs: u64,
    /// Seconds to keep retrying (with backoff) when the scheduler cannot be reached or the
    /// connection is lost, before exiting with an error. 0: exit at once.
    #[arg(long, default_value_t = 60)]
    reconnect_secs: u64,
    /// Run this many worker processes under a supervisor that restarts any that dies (each is
    /// its own worker, with its own id and once-cells). SIGTERM retires them all.
    #[arg(long, default_value_t = 1)]
    nprocs: u32,
    /// Retire a worker process after this many tasks and start a fresh one (implies a
    /// supervisor). Its results are handed over first: nothing is recomputed.
    #[arg(long)]
    lifespan_tasks: Option<u64>,
    /// Retire a worker process whose resident memory grows past this (e.g. 2GiB, 500MB,
    /// 1000000) and start a fresh one (implies a supervisor).
    #[arg(long, value_parser = parse_bytes)]
    memory_limit: Option<u64>,
    /// Internal: this process is run by a supervisor.
    #[arg(long, hide = true)]
    supervised: bool,
}

fn parse_resources(s: &str) -> Result<Resources, String> {
    s.parse()
        .map_err(|e: drover_annotations::AnnotationError| e.to_string())
}

/// Parses a byte count with an optional unit: B, KB, MB, GB, TB (powers of 1000) or KiB, MiB,
/// GiB, TiB (powers of 1024), case-insensitive.
fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 2GiB or 500MB"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "tb" | "t" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (use B, KB, MB, GB, KiB, MiB, GiB)"
            ))
        }
    };
    Ok((value * scale as f64) as u64)
}

fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

/// The arguments of a supervised child (everything but --name, which the supervisor adds).
fn child_args(args: &Args) -> Vec<String> {
    let mut v = vec![
        "--supervised".to_owned(),
        "--access-file".to_owned(),
        args.access_file.display().to_string(),
        "--resources".to_owned(),
        args.resources.to_string(),
        "--nthreads".to_owned(),
        args.nthreads.to_string(),
        "--idle-timeout-secs".to_owned(),
        args.idle_timeout_secs.to_string(),
        "--reconnect-secs".to_owned(),
        args.reconnect_secs.to_string(),
    ];
    if let Some(n) = args.lifespan_tasks {
        v.extend(["--lifespan-tasks".to_owned(), n.to_string()]);
    }
    if let Some(m) = args.memory_limit {
        v.extend(["--memory-limit".to_owned(), m.to_string()]);
    }
    v
}

fn main() -> ExitCode {
    drover_protocol::memory::tune_for_long_life();
    drover_protocol::logging::init("info");
    let args = Args::parse();
    let access = match AccessFile::load(&args.access_file) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let name = args.name.clone().unwrap_or_else(default_name);
    let wants_supervisor =
        args.nprocs > 1 || args.lifespan_tasks.is_some() || args.memory_limit.is_some();
    if wants_supervisor && !args.supervised {
        let program = match std::env::current_exe() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: cannot find this program to start worker processes: {e}");
                return ExitCode::from(2);
            }
        };
        let spec = ProcessSpec {
            program,
            args: child_args(&args),
            name,
        };
        let code = rt.block_on(supervise(spec, args.nprocs.max(1)));
        return ExitCode::from(code as u8);
    }
    let config = WorkerConfig {
        access,
        resources: args.resources,
        nthreads: args.nthreads.max(1),
        name,
        idle_timeout: Duration::from_secs(args.idle_timeout_secs.max(1)),
        // SIGTERM retires the worker: it finishes its tasks, hands over its results, exits 0.
        retire: Some(rt.block_on(async { retire_on_sigterm() })),
        lifespan_tasks: args.lifespan_tasks,
        memory_limit: args.memory_limit,
    };
    let patience = Duration::from_secs(args.reconnect_secs);
    match rt.block_on(run_worker_reconnecting(
        config,
        Registry::with_builtins(),
        patience,
    )) {
        Ok(Stopped::Recycled) => ExitCode::from(EXIT_RECYCLE as u8),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("500 MB"), Ok(500_000_000));
        assert_eq!(parse_bytes("1.5kib"), Ok(1536));
        assert!(parse_bytes("lots").unwrap_err().contains("\"lots\""));
        assert!(parse_bytes("5 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
    }
}
