//! `drover map INPUTS_FILE --map CMD [--reduce CMD] [...]`: map-reduce with shell commands in
//! the style of Hadoop Streaming, crash-friendly: each line of INPUTS_FILE is an input given to
//! the map command (on standard input, in `$DROVER_INPUT`, and as `{}` in the command), which
//! writes `key<TAB>value` lines; the reduce command gets one key's lines on standard input and
//! writes its result. Rerunning the same command maps only what is not done.

use std::collections::BTreeMap;
use std::path::PathBuf;

use drover::mapreduce::MapReduce;
use drover::progress::DEFAULT_DIR;
use drover::{Client, ClusterSpec};
use drover_worker::shell_job::{ShellCommands, ShellJob};

use crate::Failure;

/// The seed of `--shuffle` (fixed, so a rerun continues the same chunks).
const SHUFFLE_SEED: u64 = 0x05ee_d0fd_20e5;

/// Arguments of `drover map`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The inputs, one per line (`-` for standard input); empty lines are skipped.
    inputs_file: PathBuf,
    /// The map command (run with `sh -c`): one input on its standard input, in $DROVER_INPUT
    /// and as `{}`; writes `key<TAB>value` lines (a line without a tab is a key with an empty
    /// value).
    #[arg(long)]
    map: String,
    /// The reduce command (run with `sh -c`): one key's `key<TAB>value` lines on its standard
    /// input (the key also in $DROVER_INPUT); each line it writes is a value of the key's
    /// result. Without it, every pair the maps made is in the output.
    #[arg(long)]
    reduce: Option<String>,
    /// Reduce partitions (default: the parallelism).
    #[arg(long)]
    partitions: Option<usize>,
    /// The job's name: its progress namespace (default: the inputs file's name).
    #[arg(long)]
    name: Option<String>,
    /// Run on the scheduler named in this access.json (otherwise on this machine).
    #[arg(long, conflicts_with = "jobs")]
    access_file: Option<PathBuf>,
    /// Commands run at once on this machine (default: the cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// On this machine, keep the job's progress in this directory's embedded store.
    #[arg(long, default_value = DEFAULT_DIR)]
    store: PathBuf,
    /// Inputs per chunk (default: chosen from the inputs and the parallelism; keep it to
    /// continue a job).
    #[arg(long)]
    chunk_size: Option<usize>,
    /// Append each failure (input and error) and the job's start and end to this file.
    #[arg(long)]
    log: Option<PathBuf>,
    /// Take the inputs in a shuffled order (always the same one, so a rerun continues).
    #[arg(long)]
    shuffle: bool,
    /// The version: a new one starts the job from scratch.
    #[arg(long, default_value_t = 0)]
    version: u64,
    /// Write the output here (`key<TAB>value` lines; a JSON object of key to value, or to
    /// the list of values without --reduce, when the name ends in .json); default standard
    /// output.
    #[arg(long)]
    output: Option<PathBuf>,
}

/// The output text: lines, or JSON.
fn render(values: &BTreeMap<String, Vec<String>>, json: bool, reduced: bool) -> String {
    if json {
        let object: serde_json::Map<String, serde_json::Value> = values
            .iter()
            .map(|(k, v)| {
                let value = match (reduced, v.as_slice()) {
                    (true, [one]) => serde_json::Value::String(one.clone()),
                    _ => serde_json::json!(v),
                };
                (k.clone(), value)
            })
            .collect();
        return serde_json::to_string_pretty(&object).expect("JSON serialises") + "\n";
    }
    let mut out = String::new();
    for (k, vs) in values {
        for v in vs {
            out.push_str(k);
            out.push('\t');
            out.push_str(v);
            out.push('\n');
        }
    }
    out
}

/// Runs the command.
pub fn run(args: Args) -> Result<(), Failure> {
    if args.jobs == Some(0) {
        return Err(Failure::Usage("--jobs must be at least 1".into()));
    }
    if args.partitions == Some(0) {
        return Err(Failure::Usage("--partitions must be at least 1".into()));
    }
    if args.chunk_size == Some(0) {
        return Err(Failure::Usage("--chunk-size must be at least 1".into()));
    }
    let inputs: Vec<String> = crate::read_lines(&args.inputs_file, "an input")?
        .into_iter()
        .map(|(_, l)| l)
        .collect();
    let name = match &args.name {
        Some(n) => n.clone(),
        None => args
            .inputs_file
            .file_name()
            .map_or("stdin".to_owned(), |n| n.to_string_lossy().into_owned()),
    };
    if let Err(e) = drover_progress::check_names(&name, "") {
        return Err(Failure::Usage(format!("--name: {e}")));
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let parallelism = args.jobs.unwrap_or(cores);
    let rt = tokio::runtime::Runtime::new()
        .map_err(|e| Failure::Usage(format!("cannot start runtime: {e}")))?;
    rt.block_on(async move {
        let (cluster, client) = match &args.access_file {
            Some(path) => (
                None,
                Client::connect(path)
                    .await
                    .map_err(|e| Failure::Usage(e.to_string()))?,
            ),
            None => {
                let spec = ClusterSpec::plain(1, parallelism as u32).with_progress_dir(&args.store);
                let (cluster, client) = crate::start_local(&spec).await?;
                (Some(cluster), client)
            }
        };
        let mut job = MapReduce::<ShellJob>::new(&name, inputs)
            .params(ShellCommands {
                map: args.map.clone(),
                reduce: args.reduce.clone(),
            })
            .reduce()
            .parallelism(parallelism)
            .version(args.version);
        if let Some(p) = args.partitions {
            job = job.partitions(p);
        }
        if let Some(c) = args.chunk_size {
            job = job.chunk_size(c);
        }
        if let Some(l) = &args.log {
            job = job.log(l);
        }
        if args.shuffle {
            job = job.shuffle(SHUFFLE_SEED);
        }
        let out = job.run(&client).await;
        client.close();
        if let Some(c) = cluster {
            c.shutdown().await;
        }
        let out = out.map_err(|e| Failure::Lost(e.to_string()))?;
        let json = args
            .output
            .as_ref()
            .is_some_and(|p| p.extension().is_some_and(|e| e == "json"));
        let text = render(&out.values, json, args.reduce.is_some());
        let target = args.output.clone().unwrap_or_else(|| PathBuf::from("-"));
        crate::write_output(&target, &text)?;
        let r = &out.report;
        for f in &r.failed {
            eprintln!("failed: input #{} {}: {}", f.number, f.input, f.error);
        }
        for (k, e) in &r.failed_keys {
            eprintln!("failed: key {k}: {e}");
        }
        eprintln!(
            "{} inputs: {} mapped now, {} done before, {} failed; {} keys; {:.1} s",
            r.inputs,
            r.mapped,
            r.done_before,
            r.failed.len(),
            out.values.len(),
            r.seconds
        );
        if r.all_done() {
            Ok(())
        } else {
            Err(Failure::TasksFailed)
        }
    })
}
