//! The `scheduler` binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use drover_scheduler::server::{Scheduler, SchedulerConfig};

/// The Drover scheduler: accepts workers and clients over QUIC and runs their task graphs.
///
/// On first start it makes a self-signed certificate and a secret token in --state-dir and
/// writes DIR/access.json (mode 0600): hand that file to workers and clients.
#[derive(Debug, Parser)]
#[command(name = "scheduler", version)]
struct Args {
    /// Address to listen on (UDP), HOST:PORT; port 0 picks a free port.
    #[arg(long, default_value = "0.0.0.0:7878")]
    listen: SocketAddr,
    /// Directory for the certificate, key, token and access.json.
    #[arg(long)]
    state_dir: PathBuf,
    /// Host name or address written into access.json for others to connect to (default: the
    /// listen address, or this machine's host name when listening on all interfaces).
    #[arg(long)]
    advertise: Option<String>,
    /// Seconds of silence after which a connection counts as dead (keep-alives go every
    /// quarter of it, so a killed or cut-off worker is noticed within this time).
    #[arg(long, default_value_t = 10)]
    idle_timeout_secs: u64,
    /// A task that was running on this many workers that each died is failed as suspicious
    /// instead of being tried on another.
    #[arg(long, default_value_t = 3)]
    max_worker_deaths: u32,
    /// The largest output a done key of the progress store keeps (bytes); a durable graph
    /// task with a larger output is kept as done without it.
    #[arg(long, default_value_t = drover_progress::DEFAULT_MAX_OUTPUT)]
    max_output_bytes: usize,
    /// Serve the web dashboard and Prometheus `/metrics` at this address (HTTP), or `off`.
    /// On loopback (the default) it is open to this machine's users; on any other address it
    /// needs the cluster token. A taken default port falls back to a free one (logged, and
    /// written to access.json as `dashboard`).
    #[arg(long, default_value = drover_scheduler::dashboard::DEFAULT_ADDR)]
    dashboard: String,
    /// How long a detached run's outputs are kept after it ended when nobody fetches and
    /// releases them (`drover wait` does), in seconds; its record is listed as long again.
    #[arg(long, default_value_t = 24 * 3600)]
    retention_secs: u64,
    /// Refuse to start when a secret file of the state dir (`scheduler.key`, `token`) is
    /// readable by other users (without it: a warning, and the file is made private).
    #[arg(long)]
    strict_permissions: bool,
}

/// Exit codes: 0 stopped by a signal; 1 a failure while serving; 2 bad usage or a state dir
/// (or progress store) that cannot be used.
fn main() -> std::process::ExitCode {
    drover_protocol::memory::tune_for_long_life();
    drover_protocol::logging::init("info");
    let args = Args::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let dashboard = match drover_scheduler::dashboard::parse_addr(&args.dashboard) {
        Ok(a) => a.map(|a| {
            (
                a,
                args.dashboard != drover_scheduler::dashboard::DEFAULT_ADDR,
            )
        }),
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    rt.block_on(async {
        let started = Scheduler::start(SchedulerConfig {
            listen: args.listen,
            state_dir: args.state_dir,
            advertise: args.advertise,
            idle_timeout: Duration::from_secs(args.idle_timeout_secs.max(1)),
            core: drover_scheduler::core::CoreConfig {
                max_worker_deaths: args.max_worker_deaths.max(1),
                retention_ms: args.retention_secs.saturating_mul(1000),
                ..Default::default()
            },
            max_output: args.max_output_bytes,
            progress_store: None,
            strict_permissions: args.strict_permissions,
            dashboard,
        })
        .await;
        let scheduler = match started {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return std::process::ExitCode::from(2);
            }
        };
        wait_for_signal().await;
        tracing::info!("shutting down");
        scheduler.shutdown().await;
        std::process::ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        // A write over the file size limit (ulimit -f) is a failed write, reported to whoever
        // asked for it, not the end of the scheduler.
        let mut too_big =
            signal(SignalKind::from_raw(libc::SIGXFSZ)).expect("install SIGXFSZ handler");
        loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = tokio::signal::ctrl_c() => return,
                _ = too_big.recv() => {
                    tracing::warn!("a write went over this process's file size limit (ulimit -f)");
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
