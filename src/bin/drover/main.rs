//! The `drover` command: check, export and run graphs; run commands once per key and look at
//! the progress store; map-reduce with shell commands.
//!
//! Exit codes: 0 success; 1 the graph is invalid (bad JSON or a bad graph) or a task failed;
//! 2 bad usage, including a graph file that cannot be read, an output that cannot be written,
//! or a scheduler that cannot be reached.

mod check;
mod detached;
mod export;
mod foreach;
mod map;
mod progress;
mod run;
mod status;

use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use drover::{Graph, Planned, Topology};

/// Drover: a distributed task-graph scheduler with worker pools.
#[derive(Debug, Parser)]
#[command(name = "drover", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a JSON graph, propagate pools, and print each task's pool and reason with the
    /// estimated bytes crossing pools.
    Check(check::Args),
    /// Write a picture or data of a JSON graph with its pools (DOT, JSON or SVG).
    Export(export::Args),
    /// Run a JSON graph on a local cluster or a scheduler; print each sink's output.
    Run(run::Args),
    /// Run a command once per key of a file, each key committed once however many copies
    /// run on however many machines, progress kept across crashes and reruns.
    Foreach(foreach::Args),
    /// Show or reset what the progress store holds: counts per state, keys, resets.
    Progress(progress::Args),
    /// Map-reduce with shell commands over the lines of a file, crash-friendly: a rerun maps
    /// only the inputs not done.
    Map(map::Args),
    /// Submit a JSON graph as a detached run, which outlives this command: prints its id.
    Submit(detached::SubmitArgs),
    /// List the scheduler's detached runs: id, name, state, progress, submitted, by whom.
    Runs(detached::RunsArgs),
    /// Follow a detached run to its end, then print and fetch its outputs like `drover run`.
    Wait(detached::WaitArgs),
    /// Cancel a detached run: its tasks not started are dropped, its outputs released.
    Cancel(detached::CancelArgs),
    /// The cluster at a glance: workers, pools, runs, bytes moved (`--json`, `--watch`).
    Status(status::Args),
}

/// A failure, with the exit code it maps to.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The graph is bad: exit 1.
    BadGraph(String),
    /// Bad usage or unusable files: exit 2.
    Usage(String),
    /// The run completed but tasks failed: exit 1 (already reported).
    TasksFailed,
    /// The scheduler was lost (shut down, or away past `--reconnect-secs`): exit 1.
    Lost(String),
}

/// Reads and validates a graph file (its tasks in the file's order are
/// `graph.definition_order()`): what `drover run` and `drover submit` need, the pools being
/// the scheduler's to propagate.
pub(crate) fn load(path: &Path) -> Result<(Graph, Topology), Failure> {
    let graph = read_graph(path, None)?;
    let topology = graph.validate().map_err(|e| invalid(path, e))?;
    Ok((graph, topology))
}

/// Reads, validates and propagates a graph file, with the pass of `pass` instead of the one
/// the file names (if any).
pub(crate) fn load_with(path: &Path, pass: Option<drover::Pass>) -> Result<Planned, Failure> {
    let graph = read_graph(path, pass)?;
    Planned::new(graph).map_err(|e| invalid(path, e))
}

/// Reads a graph file, with the pass of `pass` if given.
fn read_graph(path: &Path, pass: Option<drover::Pass>) -> Result<Graph, Failure> {
    let bytes = std::fs::read(path)
        .map_err(|e| Failure::Usage(format!("cannot read graph file {}: {e}", path.display())))?;
    // Not text is a malformed graph, like any other.
    let text = String::from_utf8(bytes).map_err(|e| {
        Failure::BadGraph(format!(
            "{}: not UTF-8 text (at byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })?;
    let mut graph = Graph::from_json_str(&text)
        .map_err(|e| Failure::BadGraph(format!("{}: {e}", path.display())))?;
    if let Some(pass) = pass {
        graph.set_pass(pass);
    }
    Ok(graph)
}

/// The failure of the graph file `path` that does not validate.
fn invalid(path: &Path, e: drover::InvalidGraph) -> Failure {
    let n = e.errors.len();
    let noun = if n == 1 { "error" } else { "errors" };
    Failure::BadGraph(format!(
        "{}: invalid graph ({n} {noun}):\n{e}",
        path.display()
    ))
}

/// The graph's sinks (tasks nothing consumes, once-cells aside) in the file's order: the
/// outputs `drover run` prints and keeps.
pub(crate) fn sinks_in_file_order(g: &Graph, topology: &Topology) -> Vec<String> {
    let mut is_sink = vec![false; g.len()];
    for t in topology.sinks().filter(|&t| !g.is_once_cell(t)) {
        is_sink[t.index()] = true;
    }
    g.definition_order()
        .iter()
        .filter(|t| is_sink[t.index()])
        .map(|&t| g.key(t).to_owned())
        .collect()
}

/// Rows as aligned columns under `head`, two spaces apart, no trailing spaces.
pub(crate) fn columns(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (cell, w) in cells.iter().zip(&widths) {
            l.push_str(&format!("{cell:<w$}  "));
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(head.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// The non-empty lines of `path` (`-` for standard input) with their line numbers (from 1),
/// a trailing carriage return not part of a line; each must be UTF-8 text (`what` names a line
/// in the error: "a key", "an input").
pub(crate) fn read_lines(path: &Path, what: &str) -> Result<Vec<(usize, String)>, Failure> {
    use std::io::BufRead;
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(path)
            .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut lines = Vec::new();
    for (n, line) in reader.split(b'\n').enumerate() {
        let line =
            line.map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?;
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        if line.is_empty() {
            continue;
        }
        let text = std::str::from_utf8(line).map_err(|e| {
            Failure::Usage(format!(
                "{} line {}: {what} must be UTF-8 text: {e}",
                path.display(),
                n + 1
            ))
        })?;
        lines.push((n + 1, text.to_owned()));
    }
    Ok(lines)
}

/// Starts a local cluster of the stock workers and a client of it.
pub(crate) async fn start_local(
    spec: &drover::ClusterSpec,
) -> Result<(drover::LocalCluster, drover::Client), Failure> {
    let cluster = drover::LocalCluster::start(spec, drover::Registry::with_builtins())
        .await
        .map_err(|e| Failure::Usage(format!("cannot start the local cluster: {e}")))?;
    let client = cluster
        .client()
        .await
        .map_err(|e| Failure::Usage(e.to_string()))?;
    Ok((cluster, client))
}

/// Writes `text` to `path`, or to stdout when `path` is `-`.
pub(crate) fn write_output(path: &Path, text: &str) -> Result<(), Failure> {
    if path.as_os_str() == "-" {
        use std::io::Write;
        return std::io::stdout()
            .write_all(text.as_bytes())
            .map_err(|e| Failure::Usage(format!("cannot write to stdout: {e}")));
    }
    std::fs::write(path, text)
        .map_err(|e| Failure::Usage(format!("cannot write {}: {e}", path.display())))
}

fn main() -> ExitCode {
    drover_protocol::memory::tune_for_long_life();
    // Warnings from the client library (e.g. scheduler warnings while fetching) go to stderr;
    // RUST_LOG adjusts.
    drover_protocol::logging::init("warn");
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(args) => check::run(args),
        Command::Export(args) => export::run(args),
        Command::Run(args) => run::run(args),
        Command::Foreach(args) => foreach::run(args),
        Command::Progress(args) => progress::run(args),
        Command::Map(args) => map::run(args),
        Command::Submit(args) => detached::submit(args),
        Command::Runs(args) => detached::runs(args),
        Command::Wait(args) => detached::wait(args),
        Command::Cancel(args) => detached::cancel(args),
        Command::Status(args) => status::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::BadGraph(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
        Err(Failure::TasksFailed) => ExitCode::from(1),
        Err(Failure::Lost(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    }
}
