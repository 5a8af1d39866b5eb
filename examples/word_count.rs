//! Word count over a directory of text files, crash-friendly (the at_once seed's use case):
//! one worker process per core on this machine, or a cluster with `--access-file`.
//!
//! ```sh
//! cargo run --release --example word_count -- DIR                    # every core, here
//! cargo run --release --example word_count -- DIR --slow-ms 200      # slow enough to kill
//! cargo run --release --example word_count -- DIR --access-file access.json
//! cargo run --release --example word_count -- worker --access-file access.json   # be a worker
//! ```
//!
//! Kill it halfway (Ctrl-C, `kill -9`), run the same command again: the files already counted
//! are not read again (the report says how many were done before), and the counts are the same
//! as a run that was never interrupted. A file that cannot be read is reported with its error
//! (and in `--log FILE`); fix it and rerun: only that file is read.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use drover::mapreduce::{MapReduce, MapReduceJob};
use drover::{Registry, TaskContext};

/// The job: a file's words counted, summed per word over every file.
struct WordCount {
    /// Extra time per file, to watch a run (and kill it) halfway.
    slow_ms: u64,
}

impl MapReduceJob for WordCount {
    const NAME: &'static str = "word_count";
    type Input = String;
    type Key = String;
    type Value = u64;
    type Reduced = u64;
    type Params = ();

    fn map(&self, _: &TaskContext, _: &(), path: String) -> Result<Vec<(String, u64)>, String> {
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
        std::thread::sleep(std::time::Duration::from_millis(self.slow_ms));
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for word in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            *counts.entry(word.to_lowercase()).or_default() += 1;
        }
        Ok(counts.into_iter().collect())
    }

    fn reduce(&self, _: &TaskContext, _: &(), _: &String, counts: Vec<u64>) -> Result<u64, String> {
        Ok(counts.into_iter().sum())
    }
}

struct Args {
    dir: PathBuf,
    access_file: Option<PathBuf>,
    log: Option<PathBuf>,
    store: PathBuf,
    slow_ms: u64,
    top: usize,
}

fn slow_ms() -> u64 {
    std::env::var("WORD_COUNT_SLOW_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn registry() -> Registry {
    let mut r = Registry::with_builtins();
    r.register_job(WordCount { slow_ms: slow_ms() });
    r
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        dir: PathBuf::new(),
        access_file: None,
        log: None,
        store: PathBuf::from(".drover"),
        slow_ms: 0,
        top: 10,
    };
    let mut dir = None;
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--access-file" => a.access_file = Some(value()?.into()),
            "--log" => a.log = Some(value()?.into()),
            "--store" => a.store = value()?.into(),
            "--slow-ms" => {
                let v = value()?;
                a.slow_ms = v
                    .parse()
                    .map_err(|_| format!("--slow-ms {v:?} is not a number"))?;
            }
            "--top" => {
                let v = value()?;
                a.top = v
                    .parse()
                    .map_err(|_| format!("--top {v:?} is not a number"))?;
            }
            other if other.starts_with("--") => return Err(format!("unknown argument {other:?}")),
            other => dir = Some(PathBuf::from(other)),
        }
    }
    a.dir = dir.ok_or("which directory?")?;
    Ok(a)
}

fn main() -> ExitCode {
    if let Some(code) = drover::run_as_worker_if_asked(registry) {
        return code;
    }
    drover::init_logging("warn");
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}\nusage: word_count DIR [--access-file F] [--log FILE] [--store DIR] [--slow-ms MS] [--top N] | word_count worker --access-file F");
            return ExitCode::from(2);
        }
    };
    // The workers read the slowness from the environment they inherit.
    std::env::set_var("WORD_COUNT_SLOW_MS", args.slow_ms.to_string());
    drover::program::run_main(run(args))
}

async fn run(args: Args) -> Result<(), String> {
    let mut files: Vec<String> = std::fs::read_dir(&args.dir)
        .map_err(|e| format!("cannot list {}: {e}", args.dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path().display().to_string())
        .collect();
    files.sort();
    let mut job = MapReduce::<WordCount>::new("word-count", files).reduce();
    if let Some(log) = &args.log {
        job = job.log(log);
    }
    let out = job
        .run_here_or_on(args.access_file.as_deref(), &args.store)
        .await
        .map_err(|e| e.to_string())?;
    let mut top: Vec<(&String, &u64)> = out.values.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (word, n) in top.iter().take(args.top) {
        println!("{n}\t{word}");
    }
    let r = &out.report;
    println!(
        "{} files: {} read now, {} done before, {} failed; {} distinct words, {} in all; {:.1} s",
        r.inputs,
        r.mapped,
        r.done_before,
        r.failed.len(),
        out.values.len(),
        out.values.values().sum::<u64>(),
        r.seconds
    );
    for f in &r.failed {
        eprintln!("failed: {}: {}", f.input, f.error);
    }
    if r.all_done() {
        Ok(())
    } else {
        Err(format!(
            "{} files failed; rerun to retry them",
            r.failed.len()
        ))
    }
}
