//! `drover foreach KEYS_FILE [...] -- CMD ARGS...`: runs CMD once per key, N at a time,
//! committing each key when CMD exits 0 and failing it (exit code, stderr tail) otherwise. Any
//! number of copies may run on any machines at once: each key is committed once.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use drover::progress::{ClaimOptions, Progress, DEFAULT_DIR};

use crate::Failure;

/// Arguments of `drover foreach`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The keys, one per line (`-` for standard input); a trailing carriage return is not part
    /// of a key; empty lines are skipped; a key given twice is one key.
    keys_file: PathBuf,
    /// Keep progress on the scheduler named in this access.json (otherwise in the embedded
    /// store of `--store`).
    #[arg(long)]
    access_file: Option<PathBuf>,
    /// The embedded store's directory, used without `--access-file`.
    #[arg(long, default_value = DEFAULT_DIR)]
    store: PathBuf,
    /// The namespace of the keys' progress.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Seconds a claim lasts unless renewed (renewed every third of it while this runs).
    #[arg(long, default_value_t = 60)]
    lease: u64,
    /// The version: keys done at older versions are done again.
    #[arg(long, default_value_t = 0)]
    version: u64,
    /// Commands run at once.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Take the keys in a random order (copies of this command then spread over the keys).
    #[arg(long)]
    shuffle: bool,
    /// Once no key is left to claim, wait for keys others hold (taking over those whose lease
    /// lapses) instead of ending.
    #[arg(long)]
    wait: bool,
    /// Write what this process did as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// The command and its arguments (after `--`): `{}` in an argument is replaced by the key;
    /// the key is also in the environment as DROVER_KEY.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// How much of a failed command's stderr is kept.
const STDERR_TAIL: usize = 2048;

/// Reads the keys: one per line, in order, each once.
fn read_keys(path: &std::path::Path) -> Result<Vec<String>, Failure> {
    let mut seen = std::collections::HashSet::new();
    let mut keys = Vec::new();
    for (n, key) in crate::read_lines(path, "a key")? {
        if let Err(e) = drover_progress::check_names("x", &key) {
            return Err(Failure::Usage(format!("{} line {n}: {e}", path.display())));
        }
        if seen.insert(key.clone()) {
            keys.push(key);
        }
    }
    Ok(keys)
}

/// What one command run ended as: `Ok` for exit 0, else the failure's text.
async fn run_command(command: &[String], key: &str) -> Result<(), String> {
    let args: Vec<String> = command.iter().map(|a| a.replace("{}", key)).collect();
    let (program, rest) = args.split_first().expect("clap requires a command");
    let out = tokio::process::Command::new(program)
        .args(rest)
        .env("DROVER_KEY", key)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot start {program:?}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let tail_start = out.stderr.len().saturating_sub(STDERR_TAIL);
    let tail = String::from_utf8_lossy(&out.stderr[tail_start..]);
    let how = match out.status.code() {
        Some(c) => format!("exit code {c}"),
        None => "killed by a signal".to_owned(),
    };
    Err(format!("{how}; stderr: {}", tail.trim_end()))
}

/// Runs the command.
pub fn run(args: Args) -> Result<(), Failure> {
    if args.jobs == 0 {
        return Err(Failure::Usage("--jobs must be at least 1".into()));
    }
    if args.lease == 0 {
        return Err(Failure::Usage("--lease must be at least 1 second".into()));
    }
    let keys = read_keys(&args.keys_file)?;
    let rt = tokio::runtime::Runtime::new()
        .map_err(|e| Failure::Usage(format!("cannot start runtime: {e}")))?;
    rt.block_on(async move {
        let progress = Progress::open(args.access_file.as_deref(), &args.store)
            .await
            .map_err(|e| Failure::Usage(e.to_string()))?;
        let total = keys.len();
        let options = ClaimOptions {
            version: args.version,
            lease: Duration::from_secs(args.lease),
            batch: (args.jobs * 2).clamp(8, 256),
            shuffle: args.shuffle.then(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
                    ^ u64::from(std::process::id())
            }),
            wait: args.wait,
        };
        let mut claims = progress.claims(&args.namespace, keys.clone(), options);
        let bar = if std::io::stderr().is_terminal() {
            indicatif::ProgressBar::new(total as u64)
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} keys here {elapsed} {msg}")
                .expect("valid template"),
        );
        let mut running = tokio::task::JoinSet::new();
        let mut exhausted = false;
        loop {
            let take_more = running.len() < args.jobs && !exhausted;
            if take_more && (claims.has_more_now() || running.is_empty()) {
                // Wait for keys others hold only with nothing of ours at work: others may be
                // waiting for ours.
                let next = if running.is_empty() {
                    claims.next().await
                } else {
                    claims.next_without_waiting().await
                };
                match next {
                    Some(Ok(claim)) => {
                        let command = args.command.clone();
                        running.spawn(async move {
                            let r = run_command(&command, claim.key()).await;
                            (claim, r)
                        });
                    }
                    Some(Err(e)) => return Err(Failure::Lost(e.to_string())),
                    None if running.is_empty() => exhausted = true,
                    // Only keys others hold are left: see to ours first.
                    None => {}
                }
                continue;
            }
            let Some(done) = running.join_next().await else {
                break;
            };
            let (claim, result) = done.map_err(|e| Failure::Lost(format!("a command runner failed: {e}")))?;
            bar.inc(1);
            match result {
                Ok(()) => claim.done_later(None),
                Err(e) => {
                    bar.println(format!("failed: {}: {e}", claim.key()));
                    claim.fail_later(&e);
                }
            }
        }
        let summary = claims.finish().await.map_err(|e| Failure::Lost(e.to_string()))?;
        bar.finish_and_clear();
        // Every key done by anyone?
        let not_done = summary.not_done;
        eprintln!(
            "{} committed here, {} failed here, {} done before, {} held elsewhere{}",
            summary.committed.len(),
            summary.failed.len(),
            summary.skipped_done,
            summary.held_elsewhere.len(),
            if summary.lost.is_empty() {
                String::new()
            } else {
                format!(", {} lost to another holder", summary.lost.len())
            }
        );
        for (key, why) in &summary.refused {
            eprintln!("refused: {key}: {why}");
        }
        for key in &summary.newer_version {
            eprintln!("refused: {key}: its record is of a newer version than {}", args.version);
        }
        if let Some(path) = &args.report {
            let report = serde_json::json!({
                "namespace": args.namespace,
                "version": args.version,
                "keys": total,
                "committed": summary.committed,
                "failed": summary.failed.iter().map(|(k, e)| serde_json::json!({"key": k, "error": e})).collect::<Vec<_>>(),
                "lost": summary.lost.iter().map(|(k, e)| serde_json::json!({"key": k, "reason": e})).collect::<Vec<_>>(),
                "skipped_done": summary.skipped_done,
                "held_elsewhere": summary.held_elsewhere.len(),
            });
            let text = serde_json::to_string_pretty(&report).expect("report serialises") + "\n";
            crate::write_output(path, &text)?;
        }
        if not_done > 0 {
            return Err(Failure::TasksFailed);
        }
        Ok(())
    })
}
