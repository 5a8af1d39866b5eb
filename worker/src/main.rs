//! The stock `worker` binary: the built-in functions, nothing else. A program with its own
//! functions calls [`drover_worker::run_worker`] with its own registry instead.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use drover_annotations::Resources;
use drover_protocol::AccessFile;
use drover_worker::{run_worker_reconnecting, Registry, WorkerConfig};

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
    /// Tasks run at once.
    #[arg(long, default_value_t = 1)]
    nthreads: u32,
    /// Name in logs and reports (default: host name and process id).
    #[arg(long)]
    name: Option<String>,
    /// Seconds of silence after which the scheduler counts as gone.
    #[arg(long, default_value_t = 10)]
    idle_timeout_secs: u64,
    /// Seconds to keep retrying (with backoff) when the scheduler cannot be reached or the
    /// connection is lost, before exiting with an error. 0: exit at once.
    #[arg(long, default_value_t = 60)]
    reconnect_secs: u64,
}

fn parse_resources(s: &str) -> Result<Resources, String> {
    s.parse()
        .map_err(|e: drover_annotations::AnnotationError| e.to_string())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let access = match AccessFile::load(&args.access_file) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let name = args.name.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let config = WorkerConfig {
        access,
        resources: args.resources,
        nthreads: args.nthreads.max(1),
        name,
        idle_timeout: Duration::from_secs(args.idle_timeout_secs.max(1)),
        retire: None,
    };
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    // SIGTERM retires the worker: it finishes its tasks, hands over its results, exits 0.
    let config = WorkerConfig {
        retire: Some(rt.block_on(async { drover_worker::retire_on_sigterm() })),
        ..config
    };
    let patience = Duration::from_secs(args.reconnect_secs);
    match rt.block_on(run_worker_reconnecting(
        config,
        Registry::with_builtins(),
        patience,
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
