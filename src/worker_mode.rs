//! One program, two roles: a user's program that defines task functions can also be the worker
//! that runs them. Started as `PROGRAM worker --access-file F [--resources R] [--nthreads N]
//! [--name NAME]`, [`run_as_worker_if_asked`] runs it as a worker with the program's registry;
//! [`LocalCluster::start_processes`](crate::LocalCluster::start_processes) starts workers that way.

use std::process::ExitCode;

use drover_worker::{retire_on_sigterm, run_worker_notify, Registry, WorkerConfig};

/// The line a worker started this way prints on stdout once the scheduler accepted it.
pub const JOINED_LINE: &str = "drover-worker: joined as";

/// Worker-mode arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerArgs {
    /// `--access-file`.
    pub access_file: std::path::PathBuf,
    /// `--resources`, e.g. `pool-A=1`.
    pub resources: String,
    /// `--nthreads` (default 1).
    pub nthreads: u32,
    /// `--name` (default `worker-PID`).
    pub name: Option<String>,
}

/// Parses `worker --access-file F [...]` from `args` (without the program name). `Ok(None)`
/// when the first argument is not `worker`.
pub fn parse_worker_args(args: &[String]) -> Result<Option<WorkerArgs>, String> {
    if args.first().map(String::as_str) != Some("worker") {
        return Ok(None);
    }
    let mut out = WorkerArgs {
        access_file: Default::default(),
        resources: String::new(),
        nthreads: 1,
        name: None,
    };
    let mut have_access = false;
    let mut it = args[1..].iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--access-file" => {
                out.access_file = value()?.into();
                have_access = true;
            }
            "--resources" => out.resources = value()?,
            "--nthreads" => {
                let v = value()?;
                out.nthreads = v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("--nthreads {v:?} is not a positive number"))?;
            }
            "--name" => out.name = Some(value()?),
            other => return Err(format!("unknown worker argument {other:?}")),
        }
    }
    if !have_access {
        return Err("worker needs --access-file".into());
    }
    Ok(Some(out))
}

/// When this program was started as `PROGRAM worker ...`, runs it as a worker with the registry
/// `registry()` makes until the scheduler shuts down (or SIGTERM retires it) and returns the
/// exit code (0 done, 1 lost the scheduler, 2 bad arguments); otherwise `None`. Call it first
/// in `main`, plain or `#[tokio::main]` (the worker then runs on a runtime of its own).
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     if let Some(code) = drover::run_as_worker_if_asked(drover::Registry::with_builtins) {
///         return code; // started as `PROGRAM worker --access-file F ...`
///     }
///     // ... the program's own work: build a graph, start a cluster, submit ...
///     std::process::ExitCode::SUCCESS
/// }
/// ```
pub fn run_as_worker_if_asked(registry: impl FnOnce() -> Registry) -> Option<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match parse_worker_args(&args) {
        Ok(None) => return None,
        Ok(Some(a)) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return Some(ExitCode::from(2));
        }
    };
    drover_protocol::memory::tune_for_long_life();
    let access = match drover_protocol::AccessFile::load(&parsed.access_file) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return Some(ExitCode::from(2));
        }
    };
    let resources = match parsed.resources.parse() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: --resources: {e}");
            return Some(ExitCode::from(2));
        }
    };
    let registry = registry();
    let work = move || -> Result<(), String> {
        let rt =
            tokio::runtime::Runtime::new().map_err(|e| format!("cannot start the runtime: {e}"))?;
        rt.block_on(async {
            let config = WorkerConfig {
                access,
                resources,
                nthreads: parsed.nthreads,
                name: parsed
                    .name
                    .unwrap_or_else(|| format!("worker-{}", std::process::id())),
                idle_timeout: std::time::Duration::from_secs(10),
                retire: Some(retire_on_sigterm()),
                lifespan_tasks: None,
                memory_limit: None,
            };
            let (tx, rx) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                if let Ok(id) = rx.await {
                    println!("{JOINED_LINE} {id}");
                }
            });
            run_worker_notify(config, registry, Some(tx))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    };
    // Called from inside an async runtime (`#[tokio::main]`): that runtime cannot be blocked
    // on, so the worker gets its own on a thread of its own, and this thread waits for it.
    let result = if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::Builder::new()
            .name("drover-worker".into())
            .spawn(work)
            .map_err(|e| format!("cannot start the worker thread: {e}"))
            .and_then(|t| {
                t.join()
                    .unwrap_or_else(|_| Err("the worker thread panicked".into()))
            })
    } else {
        work()
    };
    Some(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn worker_arguments_parse_strictly() {
        assert_eq!(parse_worker_args(&args("--svg x")).unwrap(), None);
        let a = parse_worker_args(&args(
            "worker --access-file a.json --resources pool-A=1 --nthreads 2 --name w",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            (a.nthreads, a.name.as_deref(), a.resources.as_str()),
            (2, Some("w"), "pool-A=1")
        );
        assert!(parse_worker_args(&args("worker"))
            .unwrap_err()
            .contains("--access-file"));
        assert!(
            parse_worker_args(&args("worker --access-file a --nthreads 0"))
                .unwrap_err()
                .contains("--nthreads")
        );
        assert!(parse_worker_args(&args("worker --access-file a --bogus"))
            .unwrap_err()
            .contains("--bogus"));
        assert!(parse_worker_args(&args("worker --access-file"))
            .unwrap_err()
            .contains("needs a value"));
    }
}
