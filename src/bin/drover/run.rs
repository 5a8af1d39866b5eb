//! `drover run GRAPH.json (--local SPEC | --access-file FILE) [--nthreads T] [--outputs DIR]
//! [--report FILE]`.

use std::io::IsTerminal;
use std::path::PathBuf;

use drover::{Client, ClientOptions, ClusterSpec, RunEvent, TaskStatus};

use crate::{load, Failure};

/// Arguments of `drover run`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("cluster").required(true).args(["local", "access_file"])))]
pub struct Args {
    /// The JSON graph file.
    graph: PathBuf,
    /// Run on a local cluster: `N` plain workers, or `A=2,B=1` workers per pool.
    #[arg(long)]
    local: Option<String>,
    /// Run on the scheduler named in this access.json.
    #[arg(long)]
    access_file: Option<PathBuf>,
    /// Threads per local worker.
    #[arg(long, default_value_t = 1)]
    nthreads: u32,
    /// Write each sink task's raw output to a file of DIR named for its key (bytes other than
    /// [A-Za-z0-9.-] become _ and two hex digits, so names never clash; long ones end with a
    /// hash) and DIR/index.json mapping each key to its file.
    #[arg(long)]
    outputs: Option<PathBuf>,
    /// Write the run's report as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// At the end, print where the time went (per worker: computing, fetching inputs,
    /// loading once-cells, waiting for work; the run's slowest tasks), and put it in the
    /// report as `insights`.
    #[arg(long)]
    insights: bool,
    /// After losing the scheduler (not after its shutdown), keep trying to reconnect for this
    /// many seconds, then resubmit the graph; 0 gives up at once.
    #[arg(long, default_value_t = 60)]
    reconnect_secs: u64,
    /// Count a silent scheduler as lost after this many seconds.
    #[arg(long, default_value_t = 10)]
    idle_timeout_secs: u64,
    /// With --local, keep the progress of the graph's durable tasks in this directory's
    /// embedded store (made only when the graph has durable tasks), so a rerun skips what
    /// was done; the same store `drover foreach` and `drover progress` use without
    /// --access-file.
    #[arg(long, default_value = drover::progress::DEFAULT_DIR)]
    store: PathBuf,
}

/// Longest output file name, in bytes.
const MAX_FILE_NAME: usize = 200;

/// The file name of a task key under `--outputs`, one to one: ASCII letters, digits, `.` and
/// `-` stay; every other byte of the key (and a leading `.`) becomes `_` and its two hex digits
/// (`a b` is `a_20b`, `a_b` is `a_5fb`, `a/b` is `a_2fb`); an empty key is `_`, and the key
/// `index.json` is `_69ndex.json` (the index has that name). A name longer
/// than 200 bytes keeps its first 160 and ends with `~` and a 128-bit hash of the key.
fn file_name(key: &str) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(key.len());
    for (i, b) in key.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'-' || (b == b'.' && i > 0) {
            s.push(b as char);
        } else {
            let _ = write!(s, "_{b:02x}");
        }
    }
    if s.is_empty() {
        s.push('_');
    }
    if s == "index.json" {
        // The index's own name (still one to one: a key's `_` is always escaped).
        s = "_69ndex.json".to_owned();
    }
    if s.len() > MAX_FILE_NAME {
        s.truncate(160);
        let _ = write!(s, "~{:032x}", xxhash_rust::xxh3::xxh3_128(key.as_bytes()));
    }
    s
}

/// The file names of `keys` under `--outputs`; a clash (two keys, one name) is refused.
pub(crate) fn output_names(keys: &[String]) -> Result<Vec<(String, String)>, Failure> {
    let mut by_name: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    let mut names = Vec::with_capacity(keys.len());
    for k in keys {
        let name = file_name(k);
        if let Some(other) = by_name.insert(name.clone(), k) {
            return Err(Failure::Usage(format!(
                "--outputs: keys {other:?} and {k:?} would both be written to {name:?}"
            )));
        }
        names.push((k.clone(), name));
    }
    Ok(names)
}

/// Output shown on the terminal: text as text, anything else by size.
fn show(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(t)
            if !t
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r')) =>
        {
            t.to_owned()
        }
        _ => format!("<{} bytes>", bytes.len()),
    }
}

/// Runs the command.
pub fn run(args: Args) -> Result<(), Failure> {
    let (graph, topology) = load(&args.graph)?;
    let spec = match &args.local {
        Some(s) => {
            let spec = ClusterSpec::parse(s, args.nthreads).map_err(Failure::Usage)?;
            let durable = graph.task_ids().any(|t| graph.durable(t).is_some());
            Some(if durable {
                spec.with_progress_dir(&args.store)
            } else {
                spec
            })
        }
        None => None,
    };
    let sinks = crate::sinks_in_file_order(&graph, &topology);
    // Each sink's file under --outputs, decided (and clashes refused) before anything runs.
    let names: std::collections::HashMap<String, String> = match &args.outputs {
        Some(_) => output_names(&sinks)?.into_iter().collect(),
        None => Default::default(),
    };
    let rt = tokio::runtime::Runtime::new()
        .map_err(|e| Failure::Usage(format!("cannot start runtime: {e}")))?;
    rt.block_on(async {
        let (cluster, client) = match (&spec, &args.access_file) {
            (Some(spec), _) => {
                let (cluster, client) = crate::start_local(spec).await?;
                (Some(cluster), client)
            }
            (None, Some(path)) => (None, {
                let access =
                    drover::AccessFile::load(path).map_err(|e| Failure::Usage(e.to_string()))?;
                let options = ClientOptions {
                    reconnect: std::time::Duration::from_secs(args.reconnect_secs),
                    idle_timeout: std::time::Duration::from_secs(args.idle_timeout_secs.max(1)),
                    ..ClientOptions::default()
                };
                Client::connect_with_options(&access, options)
                    .await
                    .map_err(|e| Failure::Usage(e.to_string()))?
            }),
            (None, None) => unreachable!("clap requires one of --local and --access-file"),
        };
        // The graph already read and checked here goes in the binary wire form: the
        // scheduler decodes it about twice as fast as it would parse the file's JSON again.
        let mut run = client
            .submit_with(&graph, &sinks)
            .await
            .map_err(|e| match e {
                drover::ClientError::Rejected(m) => Failure::BadGraph(m),
                other => Failure::Usage(other.to_string()),
            })?;
        let report = follow(
            &mut run,
            &sinks,
            &names,
            args.outputs.as_deref(),
            args.report.as_deref(),
            args.insights,
        )
        .await?;
        drop(run);
        client.close();
        if let Some(c) = cluster {
            c.shutdown().await;
        }
        if report.failed > 0 {
            return Err(Failure::TasksFailed);
        }
        Ok(())
    })
}

/// Follows `run` to its end (a progress bar on a terminal, failures as they happen), then
/// prints (and with `outputs` writes, under `names`) the outputs of `sinks` in order, writes
/// the report to `report_path`, and prints the summary line. Returns the report.
pub(crate) async fn follow(
    run: &mut drover::Run,
    sinks: &[String],
    names: &std::collections::HashMap<String, String>,
    outputs: Option<&std::path::Path>,
    report_path: Option<&std::path::Path>,
    insights: bool,
) -> Result<drover::Report, Failure> {
    let tty = std::io::stderr().is_terminal();
    let bar = if tty {
        indicatif::ProgressBar::new(u64::from(run.task_count()))
    } else {
        indicatif::ProgressBar::hidden()
    };
    // A hidden bar drops println: write straight to stderr then.
    let say = |line: String| {
        if tty {
            bar.println(line)
        } else {
            eprintln!("{line}")
        }
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} tasks {elapsed} {msg}")
            .expect("valid template"),
    );
    while let Some(ev) = run.next_event().await {
        match ev {
            RunEvent::Task(t) => {
                // A resubmission after an outage reports tasks again: count each once.
                bar.set_position(run.done_count() as u64);
                if t.status == TaskStatus::Failed {
                    say(format!(
                        "failed: {}: {}",
                        t.key,
                        t.error.unwrap_or_default()
                    ));
                }
            }
            // The client library logs warnings itself (they also arrive while fetching);
            // losing and regaining the scheduler is shown here too.
            RunEvent::Warning(w) if w.contains("the scheduler at") => say(w),
            RunEvent::Warning(_) => {}
            RunEvent::Ended(why) => say(why),
        }
    }
    bar.finish_and_clear();
    if !run.is_complete() {
        let why = match run.wait().await {
            Err(e) => e.to_string(),
            Ok(_) => "unknown".into(),
        };
        return Err(Failure::Lost(format!("the run did not complete: {why}")));
    }
    let mut report = run.report();
    if insights {
        let status = run
            .client()
            .status()
            .await
            .map_err(|e| Failure::Lost(format!("cannot ask for the insights: {e}")))?;
        report = report.with_insights(&status);
        if let Some(i) = &report.insights {
            eprint!("{}", insights_table(i));
        }
    }
    if let Some(dir) = outputs {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure::Usage(format!("cannot create {}: {e}", dir.display())))?;
    }
    // Outputs stream in batches (one request per worker per batch), printed and written
    // in the graph's order as they arrive.
    let mut write_error: Option<Failure> = None;
    let mut written: std::collections::BTreeMap<String, String> = Default::default();
    {
        use std::io::Write;
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        run.fetch_outputs(sinks, |key, result| match result {
            Ok(bytes) => {
                let _ = writeln!(out, "{key}: {}", show(&bytes));
                if let (Some(dir), None) = (outputs, &write_error) {
                    let name = names.get(key).cloned().unwrap_or_else(|| file_name(key));
                    let path = dir.join(&name);
                    match std::fs::write(&path, &bytes) {
                        Ok(()) => {
                            written.insert(key.to_owned(), name);
                        }
                        Err(e) => {
                            write_error = Some(Failure::Usage(format!(
                                "cannot write {}: {e}",
                                path.display()
                            )))
                        }
                    }
                }
            }
            Err(drover::ClientError::TaskFailed { .. }) => {}
            Err(e) => {
                let _ = out.flush();
                eprintln!("error: {e}");
            }
        })
        .await
        .map_err(|e| Failure::Lost(format!("the run did not complete: {e}")))?;
        let _ = out.flush();
    }
    if let Some(dir) = outputs {
        // Which file holds which key's output.
        let index = serde_json::to_string_pretty(&written).expect("an index serialises") + "\n";
        crate::write_output(&dir.join("index.json"), &index)?;
    }
    if let Some(e) = write_error {
        return Err(e);
    }
    if let Some(path) = report_path {
        let text = serde_json::to_string_pretty(&report).expect("report serialises") + "\n";
        crate::write_output(path, &text)?;
    }
    let mut settled = String::new();
    if report.done_before > 0 {
        settled += &format!(", {} done before", report.done_before);
    }
    if report.skipped > 0 {
        settled += &format!(
            ", {} skipped (they only feed tasks done before)",
            report.skipped
        );
    }
    eprintln!(
        "{} finished, {} failed{settled}; {} bytes moved between workers, {} between pools",
        report.finished, report.failed, report.bytes_between_workers, report.bytes_between_pools
    );
    Ok(report)
}

/// Microseconds for people.
fn micros(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} us"),
        1_000..1_000_000 => format!("{:.1} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

/// The insights as a table, with each part's share of the workers' thread time.
fn insights_table(i: &drover::RunInsights) -> String {
    let share = |part: u64, all: u64| {
        if all == 0 {
            String::new()
        } else {
            format!(" ({:.0}%)", part as f64 * 100.0 / all as f64)
        }
    };
    let mut out = format!(
        "insights: this run computed {} and loaded once-cells for {}\n",
        micros(i.compute_us),
        micros(i.load_us)
    );
    out.push_str(&format!(
        "{:<20} {:>18} {:>18} {:>18} {:>18}\n",
        "WORKER", "COMPUTING", "FETCHING", "LOADING", "WAITING"
    ));
    let rows = i
        .workers
        .iter()
        .map(|(n, w)| (n.as_str(), w))
        .chain(std::iter::once(("all workers", &i.total)));
    for (name, w) in rows {
        let all = w.compute_us + w.fetch_us + w.load_us + w.idle_us;
        out.push_str(&format!(
            "{:<20} {:>18} {:>18} {:>18} {:>18}\n",
            name,
            micros(w.compute_us) + &share(w.compute_us, all),
            micros(w.fetch_us) + &share(w.fetch_us, all),
            micros(w.load_us) + &share(w.load_us, all),
            micros(w.idle_us) + &share(w.idle_us, all),
        ));
    }
    out.push_str(&format!(
        "scheduler: {} in its event loop\n",
        micros(i.total.scheduler_us)
    ));
    if !i.slowest.is_empty() {
        out.push_str("slowest tasks:\n");
        for (key, worker, ms) in &i.slowest {
            out.push_str(&format!("  {key}  {:.1} ms on {worker}\n", ms));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_safe_file_names() {
        assert_eq!(file_name("a.mean()"), "a.mean_28_29");
        assert_eq!(file_name("../x"), "_2e._2fx");
        assert_eq!(file_name(".."), "_2e.");
        assert_eq!(file_name(""), "_");
        assert_eq!(file_name("é"), "_c3_a9");
        let names: Vec<String> = ["a b", "a_b", "a/b", "a_20b"]
            .iter()
            .map(|k| file_name(k))
            .collect();
        assert_eq!(names, ["a_20b", "a_5fb", "a_2fb", "a_5f20b"]);
        let long = "k".repeat(65_535);
        let name = file_name(&long);
        assert!(name.len() <= MAX_FILE_NAME && name.contains('~'), "{name}");
        assert_ne!(file_name(&"k".repeat(65_534)), name);
        assert_eq!(file_name("index.json"), "_69ndex.json");
        assert!(output_names(&["a".into(), "b".into()]).is_ok());
        assert_eq!(show(b"hello\n"), "hello\n");
        assert_eq!(show(&[0, 159, 146]), "<3 bytes>");
    }
}
