//! Detached runs from the shell: `drover submit` (prints the run's id at once), `drover
//! runs`, `drover wait ID` (follows and fetches like `drover run`), `drover cancel ID`.

use std::path::PathBuf;

use drover::{Client, ClientError, ClientOptions, RunInfo};

use crate::{load, Failure};

/// Where the scheduler is.
#[derive(Debug, clap::Args)]
pub struct Access {
    /// The scheduler named in this access.json.
    #[arg(long, default_value = "access.json")]
    access_file: PathBuf,
}

/// Arguments of `drover submit`.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// The JSON graph file.
    graph: PathBuf,
    #[command(flatten)]
    access: Access,
    /// A name for `drover runs` to list it by (default: the graph file's name).
    #[arg(long)]
    name: Option<String>,
}

/// Arguments of `drover runs`.
#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    #[command(flatten)]
    access: Access,
    /// Print JSON: a list of {"id", "name", "state", "tasks", "done", "failed",
    /// "submitted_ms", "ended_ms", "by", "expires_ms"}.
    #[arg(long)]
    json: bool,
}

/// Arguments of `drover wait`.
#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    /// The run's id, as `drover submit` printed it.
    id: String,
    #[command(flatten)]
    access: Access,
    /// Write each sink's raw output to a file of DIR (named as `drover run --outputs` does)
    /// and DIR/index.json mapping each key to its file.
    #[arg(long)]
    outputs: Option<PathBuf>,
    /// Write the run's report as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// At the end, print where the time went and put it in the report (as `drover run
    /// --insights`).
    #[arg(long)]
    insights: bool,
    /// Keep the outputs on the cluster after fetching them (by default they are released,
    /// and the run is listed as `released`).
    #[arg(long)]
    keep: bool,
}

/// Arguments of `drover cancel`.
#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    /// The run's id.
    id: String,
    #[command(flatten)]
    access: Access,
}

/// Connects to the scheduler of the access file `access`, inside a fresh runtime, and runs
/// `f`; the client is closed after.
pub(crate) fn with_client<T>(
    access: &std::path::Path,
    f: impl AsyncFnOnce(Client) -> Result<T, Failure>,
) -> Result<T, Failure> {
    let rt = tokio::runtime::Runtime::new()
        .map_err(|e| Failure::Usage(format!("cannot start runtime: {e}")))?;
    rt.block_on(async {
        let file = drover::AccessFile::load(access).map_err(|e| Failure::Usage(e.to_string()))?;
        let client = Client::connect_with_options(&file, ClientOptions::default())
            .await
            .map_err(|e| Failure::Usage(e.to_string()))?;
        let out = f(client.clone()).await;
        client.close();
        out
    })
}

/// A refusal (unknown id, outputs gone) or a lost scheduler: exit 1 with its message.
fn failed(e: ClientError) -> Failure {
    Failure::Lost(e.to_string())
}

/// `drover submit`.
pub fn submit(args: SubmitArgs) -> Result<(), Failure> {
    let (graph, topology) = load(&args.graph)?;
    let sinks = crate::sinks_in_file_order(&graph, &topology);
    let name = args.name.clone().unwrap_or_else(|| {
        args.graph
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let id = with_client(&args.access.access_file, async |client| {
        client
            .submit_detached_with(&graph, &sinks, &name)
            .await
            .map_err(|e| match e {
                ClientError::Rejected(m) => Failure::BadGraph(m),
                other => Failure::Usage(other.to_string()),
            })
    })?;
    // The id alone on stdout, for `ID=$(drover submit ...)`.
    println!("{id}");
    eprintln!(
        "submitted run {id} ({} tasks); `drover wait {id}` follows it and fetches its outputs",
        graph.len()
    );
    Ok(())
}

/// `drover runs`.
pub fn runs(args: RunsArgs) -> Result<(), Failure> {
    let runs = with_client(&args.access.access_file, async |client| {
        client.runs().await.map_err(failed)
    })?;
    if args.json {
        let text = serde_json::to_string_pretty(&runs).expect("runs serialise") + "\n";
        return crate::write_output(std::path::Path::new("-"), &text);
    }
    print!("{}", table(&runs));
    Ok(())
}

/// The runs as a table, oldest first.
fn table(runs: &[RunInfo]) -> String {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let failed = if r.failed > 0 {
                format!(" ({} failed)", r.failed)
            } else {
                String::new()
            };
            vec![
                r.id.clone(),
                r.name.clone(),
                r.state.clone(),
                format!("{}/{}{failed}", r.done, r.tasks),
                utc(r.submitted_ms),
                r.by.clone(),
            ]
        })
        .collect();
    let mut out = crate::columns(
        &["ID", "NAME", "STATE", "PROGRESS", "SUBMITTED", "BY"],
        &rows,
    );
    if runs.is_empty() {
        out.push_str("(no detached runs)\n");
    }
    out
}

/// `ms` since the Unix epoch as `YYYY-MM-DD HH:MM:SSZ`.
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `drover wait`.
pub fn wait(args: WaitArgs) -> Result<(), Failure> {
    let failed_tasks = with_client(&args.access.access_file, async |client| {
        let mut run = client.attach(&args.id).await.map_err(failed)?;
        let sinks = run.kept_keys().to_vec();
        let names: std::collections::HashMap<String, String> = match &args.outputs {
            Some(_) => crate::run::output_names(&sinks)?.into_iter().collect(),
            None => Default::default(),
        };
        let report = crate::run::follow(
            &mut run,
            &sinks,
            &names,
            args.outputs.as_deref(),
            args.report.as_deref(),
            args.insights,
        )
        .await?;
        if !args.keep {
            run.release_detached().await.map_err(failed)?;
        }
        Ok(report.failed)
    })?;
    if failed_tasks > 0 {
        return Err(Failure::TasksFailed);
    }
    Ok(())
}

/// `drover cancel`.
pub fn cancel(args: CancelArgs) -> Result<(), Failure> {
    let info = with_client(&args.access.access_file, async |client| {
        client.cancel(&args.id).await.map_err(failed)
    })?;
    eprintln!(
        "run {} is {} ({}/{} tasks done)",
        info.id, info.state, info.done, info.tasks
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00Z");
        assert_eq!(utc(1_796_176_800_000), "2026-12-02 02:00:00Z");
    }

    #[test]
    fn runs_print_as_a_table() {
        let run = RunInfo {
            id: "1-00ab".into(),
            name: "nightly".into(),
            state: "running".into(),
            tasks: 10,
            done: 4,
            failed: 1,
            submitted_ms: 0,
            ended_ms: None,
            by: "ann@box".into(),
            expires_ms: None,
        };
        let text = table(&[run]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].starts_with("ID      NAME     STATE    PROGRESS"),
            "{text}"
        );
        assert!(
            lines[1].contains("4/10 (1 failed)") && lines[1].ends_with("ann@box"),
            "{text}"
        );
        assert!(table(&[]).contains("no detached runs"));
    }
}
