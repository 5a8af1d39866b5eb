//! `drover progress`: what the progress store holds. `drover progress [NS]` counts keys per
//! state per namespace; `drover progress list NS` lists keys (by state, by prefix); `drover
//! progress reset NS [KEY...]` makes keys (or the whole namespace) free again.

use std::path::PathBuf;

use drover::progress::{Kind, Progress, Record, State, DEFAULT_DIR};

use crate::Failure;

/// Where the store is: the scheduler's, or the embedded one.
#[derive(Debug, clap::Args)]
pub struct Place {
    /// The scheduler named in this access.json (otherwise the embedded store of `--store`).
    #[arg(long)]
    access_file: Option<PathBuf>,
    /// The embedded store's directory, used without `--access-file`.
    #[arg(long, default_value = DEFAULT_DIR)]
    store: PathBuf,
}

/// Arguments of `drover progress`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
    /// The namespace to count (default: every namespace).
    namespace: Option<String>,
    #[command(flatten)]
    place: Place,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// List keys of a namespace with their state.
    List {
        /// The namespace.
        namespace: String,
        /// Only keys in this state: done, claimed, failed or free (a lapsed claim).
        #[arg(long)]
        state: Option<String>,
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        #[command(flatten)]
        place: Place,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Make keys of a namespace free again (all of its keys when none is given).
    Reset {
        /// The namespace.
        namespace: String,
        /// The keys.
        keys: Vec<String>,
        #[command(flatten)]
        place: Place,
    },
}

fn describe(r: &Record, now: u64) -> (String, String) {
    let kind = r.kind(now).name().to_owned();
    let detail = match &r.state {
        State::Claimed {
            holder, expires, ..
        } => format!(
            "by {holder} (lease {}, fence {})",
            if *expires > now {
                format!("{} s left", (expires - now).div_ceil(1000))
            } else {
                "lapsed".to_owned()
            },
            r.fence
        ),
        State::Done { by, output, .. } => match output {
            Some(o) => format!("by {by}, {} bytes of output", o.len()),
            None => format!("by {by}"),
        },
        State::Failed { by, error, .. } => format!("by {by}: {error}"),
    };
    (
        kind,
        format!("{detail}; version {}, attempts {}", r.version, r.attempts),
    )
}

/// A record as JSON: `version`, `fence`, `attempts`, then by state `holder`, `lease_ms`,
/// `expires_ms` (claimed); `at_ms`, `by`, `output_bytes`, `output` (UTF-8 text) or
/// `output_hex`, `definition` (hex, for a durable graph task) (done); `at_ms`, `by`, `error`
/// (failed).
fn record_json(r: &Record) -> serde_json::Value {
    let mut v = serde_json::json!({"version": r.version, "fence": r.fence, "attempts": r.attempts});
    let extra = match &r.state {
        State::Claimed {
            holder,
            lease,
            expires,
        } => serde_json::json!({"holder": holder, "lease_ms": lease, "expires_ms": expires}),
        State::Done {
            at,
            by,
            output,
            definition,
        } => {
            let mut d = serde_json::json!({"at_ms": at, "by": by});
            if let Some(o) = output {
                d["output_bytes"] = o.len().into();
                match std::str::from_utf8(o) {
                    Ok(text) => d["output"] = text.into(),
                    Err(_) => {
                        let hex: String = o.iter().map(|b| format!("{b:02x}")).collect();
                        d["output_hex"] = hex.into();
                    }
                }
            }
            if let Some(f) = definition {
                d["definition"] = format!("{f:032x}").into();
            }
            d
        }
        State::Failed { at, by, error } => {
            serde_json::json!({"at_ms": at, "by": by, "error": error})
        }
    };
    if let (Some(v), serde_json::Value::Object(extra)) = (v.as_object_mut(), extra) {
        v.extend(extra);
    }
    v
}

/// Prints a line on stdout; `false` once stdout is closed (a reader like `head` went away),
/// so listing stops quietly instead of failing.
fn say(line: std::fmt::Arguments<'_>) -> bool {
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{line}").is_ok()
}

/// Runs the command.
pub fn run(args: Args) -> Result<(), Failure> {
    let rt = tokio::runtime::Runtime::new()
        .map_err(|e| Failure::Usage(format!("cannot start runtime: {e}")))?;
    rt.block_on(async move {
        let open = |place: &Place| {
            let (a, s) = (place.access_file.clone(), place.store.clone());
            async move {
                Progress::open(a.as_deref(), &s)
                    .await
                    .map_err(|e| Failure::Usage(e.to_string()))
            }
        };
        let lost = |e: drover::progress::ProgressError| Failure::Lost(e.to_string());
        match args.action {
            None => {
                let progress = open(&args.place).await?;
                let counts = progress.counts(args.namespace.as_deref()).await.map_err(lost)?;
                if args.json {
                    let rows: Vec<serde_json::Value> = counts
                        .iter()
                        .map(|(ns, c)| {
                            serde_json::json!({"namespace": ns, "free": c.free, "claimed": c.claimed, "done": c.done, "failed": c.failed})
                        })
                        .collect();
                    say(format_args!("{}", serde_json::json!({ "namespaces": rows })));
                } else {
                    say(format_args!("{:<24} {:>10} {:>10} {:>10} {:>10}", "namespace", "done", "claimed", "failed", "free"));
                    for (ns, c) in counts {
                        if !say(format_args!("{ns:<24} {:>10} {:>10} {:>10} {:>10}", c.done, c.claimed, c.failed, c.free)) {
                            break;
                        }
                    }
                }
            }
            Some(Action::List {
                namespace,
                state,
                prefix,
                place,
                json,
            }) => {
                let kind = match state.as_deref() {
                    None => None,
                    Some(s) => Some(Kind::parse(s).ok_or_else(|| {
                        Failure::Usage(format!(
                            "--state {s:?} is not one of done, claimed, failed, free"
                        ))
                    })?),
                };
                let progress = open(&place).await?;
                let now = drover_progress::now_ms();
                let mut after: Option<String> = None;
                loop {
                    let page = progress
                        .list(&namespace, &prefix, kind, after.as_deref(), 1000)
                        .await
                        .map_err(lost)?;
                    for (key, r) in &page {
                        let (kind, detail) = describe(r, now);
                        let printed = if json {
                            say(format_args!("{}", serde_json::json!({"key": key, "state": kind, "record": record_json(r)})))
                        } else {
                            say(format_args!("{key}\t{kind}\t{detail}"))
                        };
                        if !printed {
                            return Ok(());
                        }
                    }
                    match page.last() {
                        Some((k, _)) if page.len() == 1000 => after = Some(k.clone()),
                        _ => break,
                    }
                }
            }
            Some(Action::Reset {
                namespace,
                keys,
                place,
            }) => {
                let progress = open(&place).await?;
                let which = (!keys.is_empty()).then_some(keys);
                let n = progress.reset(&namespace, which).await.map_err(lost)?;
                eprintln!("reset {n} key(s) of {namespace:?}");
            }
        }
        Ok(())
    })
}
