//! Helpers for programs that are both a client and their own workers (as the examples are):
//! run the graph on worker processes started from this program, or on a real cluster named by
//! an access file; and run an async `main` with the usual exit codes.

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;

use crate::{Client, ClusterSpec, LocalCluster};

/// A client, and the local cluster it runs on when no access file was given.
#[derive(Debug)]
pub struct Session {
    /// The client.
    pub client: Client,
    /// The local cluster of worker processes, if this program started one.
    pub cluster: Option<LocalCluster>,
}

impl Session {
    /// Connects to the scheduler of `access_file`; without one, starts a local scheduler and the
    /// workers of `spec` as processes of this program (which must call
    /// [`run_as_worker_if_asked`](crate::run_as_worker_if_asked) first in `main`).
    pub async fn connect_or_start(
        access_file: Option<&Path>,
        spec: &ClusterSpec,
    ) -> Result<Session, String> {
        let cluster = match access_file {
            Some(_) => None,
            None => {
                let exe = std::env::current_exe().map_err(|e| e.to_string())?;
                Some(
                    LocalCluster::start_processes(spec, &exe)
                        .await
                        .map_err(|e| e.to_string())?,
                )
            }
        };
        let client = match (&cluster, access_file) {
            (Some(c), _) => c.client().await,
            (None, Some(f)) => Client::connect(f).await,
            (None, None) => unreachable!("a cluster was started"),
        }
        .map_err(|e| e.to_string())?;
        Ok(Session { client, cluster })
    }

    /// Closes the client and stops the local cluster, if any (its workers' exit hooks run).
    pub async fn finish(self) {
        self.client.close();
        if let Some(c) = self.cluster {
            c.shutdown().await;
        }
    }
}

/// Runs `main` on a fresh runtime: `Ok` exits 0; an error is printed and exits 1.
pub fn run_main(main: impl Future<Output = Result<(), String>>) -> ExitCode {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start a runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Reads `--access-file F` as the only argument, the examples' common case. `Err` with the usage
/// line otherwise.
pub fn access_file_arg(usage: &str) -> Result<Option<std::path::PathBuf>, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(None),
        [flag, file] if flag == "--access-file" => Ok(Some(file.into())),
        _ => Err(format!("usage: {usage}")),
    }
}

/// The whole `main` of a program that takes only `[--access-file F]`: a worker when started as
/// one (with `registry()`), else warnings-only logging and `run(access_file)` via
/// [`run_main`]; bad arguments print `usage` and exit 2.
pub fn main_with_access_file<Fut>(
    usage: &str,
    registry: impl FnOnce() -> crate::Registry,
    run: impl FnOnce(Option<std::path::PathBuf>) -> Fut,
) -> ExitCode
where
    Fut: Future<Output = Result<(), String>>,
{
    if let Some(code) = crate::run_as_worker_if_asked(registry) {
        return code;
    }
    drover_protocol::logging::init("warn");
    match access_file_arg(usage) {
        Ok(f) => run_main(run(f)),
        Err(usage) => {
            eprintln!("{usage}");
            ExitCode::from(2)
        }
    }
}
