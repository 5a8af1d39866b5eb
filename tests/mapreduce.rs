//! Crash-friendly map-reduce with real processes: `drover map` with shell commands against a
//! plain computation, reruns that map nothing done, failing inputs recorded and retried alone,
//! versions, a `kill -9` of the job's process and of a worker mid-way; and the Rust API's
//! check-based skipping on a local cluster.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{binary, Cluster, Proc};
use drover::mapreduce::{MapReduce, MapReduceJob};
use drover::{ClusterSpec, LocalCluster, Registry, TaskContext};

/// Longest any of these tests' processes may take.
const LIMIT: Duration = Duration::from_secs(180);

/// The map of the word-count tests: records the call, then one `word<TAB>1` line per word.
fn word_map(calls: &Path) -> String {
    format!(
        "echo \"$DROVER_INPUT\" >> '{}'; awk '{{for (i = 1; i <= NF; i++) print $i \"\\t1\"}}'",
        calls.display()
    )
}

const SUM: &str = "awk -F '\\t' '{s += $2} END {print s}'";

/// `n` lines of words, each line unique.
fn text_lines(n: usize) -> Vec<String> {
    const WORDS: [&str; 7] = ["alpha", "beta", "gamma", "delta", "é", "zeta", "eta"];
    (0..n)
        .map(|i| {
            let words: Vec<&str> = (0..(i % 5 + 1))
                .map(|j| WORDS[(i * 3 + j * 5) % 7])
                .collect();
            format!("line{i} {}", words.join(" "))
        })
        .collect()
}

fn plain_counts(lines: &[String]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for l in lines {
        for w in l.split_whitespace() {
            *counts.entry(w.to_owned()).or_default() += 1;
        }
    }
    counts
}

fn write_lines(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn drover_map(name: &str, args: &[&str]) -> Proc {
    let mut all = vec!["map"];
    all.extend_from_slice(args);
    Proc::start_logging(name, &binary("drover"), &all, "warn")
}

fn finish(p: Proc) -> (Option<i32>, Vec<String>) {
    let name = p.name.clone();
    p.finish_within(LIMIT)
        .unwrap_or_else(|seen| panic!("{name} did not end; saw:\n{}", seen.join("\n")))
}

/// (mapped now, done before) from the summary line.
fn summary(lines: &[String]) -> (u64, u64) {
    let line = lines
        .iter()
        .find(|l| l.contains("mapped now"))
        .unwrap_or_else(|| panic!("no summary: {lines:?}"));
    let number = |before: &str| -> u64 {
        let at = line.find(before).unwrap_or_else(|| panic!("{line}"));
        let head = line[..at].trim_end();
        head.rsplit(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (number(" mapped now"), number(" done before"))
}

fn read_counts(path: &Path) -> BTreeMap<String, u64> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().parse().unwrap()))
        .collect()
}

fn calls(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits until `path` has at least `n` lines.
fn wait_for_lines(path: &Path, n: usize) {
    let end = Instant::now() + LIMIT;
    while calls(path).len() < n {
        assert!(
            Instant::now() < end,
            "{} never reached {n} lines",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn drover_map_counts_like_a_plain_loop_and_a_rerun_maps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lines = text_lines(200);
    let inputs = write_lines(dir.path(), "text.txt", &lines);
    let calls_log = dir.path().join("calls.log");
    let out = dir.path().join("out.json");
    let store = dir.path().join("store");
    let map = word_map(&calls_log);
    let args = [
        inputs.to_str().unwrap(),
        "--map",
        &map,
        "--reduce",
        SUM,
        "--jobs",
        "2",
        "--store",
        store.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    let (code, seen) = finish(drover_map("first", &args));
    assert_eq!(code, Some(0), "{seen:?}");
    assert_eq!(read_counts(&out), plain_counts(&lines));
    let mut called = calls(&calls_log);
    called.sort();
    let mut want = lines.clone();
    want.sort();
    assert_eq!(called, want, "each input mapped once");
    assert_eq!(summary(&seen), (200, 0));
    // The same command again: nothing is mapped, the answer is the same.
    std::fs::remove_file(&out).unwrap();
    let (code, seen) = finish(drover_map("again", &args));
    assert_eq!(code, Some(0), "{seen:?}");
    assert_eq!(read_counts(&out), plain_counts(&lines));
    assert_eq!(calls(&calls_log).len(), 200);
    assert_eq!(summary(&seen), (0, 200));
}

#[test]
fn failing_inputs_are_logged_and_only_they_are_retried_and_versions_start_over() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..50).map(|i| format!("item-{i}")).collect();
    let inputs = write_lines(dir.path(), "items.txt", &lines);
    let calls_log = dir.path().join("calls.log");
    let fixed = dir.path().join("FIXED");
    let store = dir.path().join("store");
    let log = dir.path().join("job.log");
    let map = format!(
        "case \"$DROVER_INPUT\" in *7) [ -e '{}' ] || {{ echo broken >&2; exit 5; }};; esac; echo \"$DROVER_INPUT\" >> '{}'; printf '%s\\t1\\n' {{}}",
        fixed.display(),
        calls_log.display()
    );
    let run = |name: &str, version: &str| {
        finish(drover_map(
            name,
            &[
                inputs.to_str().unwrap(),
                "--map",
                &map,
                "--jobs",
                "2",
                "--store",
                store.to_str().unwrap(),
                "--log",
                log.to_str().unwrap(),
                "--version",
                version,
            ],
        ))
    };
    let (code, seen) = run("first", "0");
    assert_eq!(code, Some(1), "{seen:?}");
    let failed: Vec<&String> = seen
        .iter()
        .filter(|l| l.starts_with("failed: input"))
        .collect();
    assert_eq!(failed.len(), 5, "{seen:?}");
    assert!(failed
        .iter()
        .all(|l| l.contains("exit code 5; stderr: broken")));
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(logged.matches("failed input #").count(), 5, "{logged}");
    assert!(logged.contains("\"item-17\"") && logged.contains("job items.txt start"));
    assert!(logged.contains("job items.txt end"));
    assert_eq!(calls(&calls_log).len(), 45);
    // The bug fixed: the rerun maps the five alone, and everything is in the output.
    std::fs::write(&fixed, "").unwrap();
    let (code, seen) = run("fixed", "0");
    assert_eq!(code, Some(0), "{seen:?}");
    assert_eq!(summary(&seen), (5, 45));
    let mut called = calls(&calls_log);
    called.sort();
    let mut want = lines.clone();
    want.sort();
    assert_eq!(called, want);
    let pairs: Vec<&String> = seen
        .iter()
        .filter(|l| l.starts_with("stdout: item-"))
        .collect();
    assert_eq!(pairs.len(), 50, "map-only: every pair: {seen:?}");
    // A new version maps everything again.
    let (code, seen) = run("version 1", "1");
    assert_eq!(code, Some(0), "{seen:?}");
    assert_eq!(summary(&seen), (50, 0));
    assert_eq!(calls(&calls_log).len(), 100);
}

#[test]
fn a_job_killed_mid_way_continues_without_mapping_done_inputs_again() {
    let dir = tempfile::tempdir().unwrap();
    let lines = text_lines(60);
    let inputs = write_lines(dir.path(), "text.txt", &lines);
    let calls_log = dir.path().join("calls.log");
    let out = dir.path().join("out.json");
    let store = dir.path().join("store");
    let map = format!("sleep 0.05; {}", word_map(&calls_log));
    let args = [
        inputs.to_str().unwrap(),
        "--map",
        &map,
        "--reduce",
        SUM,
        "--jobs",
        "2",
        "--chunk-size",
        "1",
        "--store",
        store.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    let mut first = drover_map("killed", &args);
    wait_for_lines(&calls_log, 20);
    first.kill(); // SIGKILL: the client, its scheduler and its workers at once
    let before_kill = calls(&calls_log).len();
    let (code, seen) = finish(drover_map("rerun", &args));
    assert_eq!(code, Some(0), "{seen:?}");
    assert_eq!(read_counts(&out), plain_counts(&lines));
    let (mapped, done_before) = summary(&seen);
    assert_eq!(mapped + done_before, 60);
    // What was committed before the kill is not mapped again: at most the chunks at work
    // (two commands at once, and those finished but not yet on disk) are.
    assert!(
        done_before + 6 >= before_kill as u64,
        "{done_before} done before, {before_kill} mapped before the kill"
    );
    let called = calls(&calls_log);
    let mut per_input: BTreeMap<&String, usize> = BTreeMap::new();
    for c in &called {
        *per_input.entry(c).or_default() += 1;
    }
    assert_eq!(per_input.len(), 60);
    let twice = per_input.values().filter(|&&n| n > 1).count();
    assert!(twice <= 6, "{twice} inputs mapped more than once");
}

#[test]
fn a_worker_killed_mid_job_on_a_cluster_changes_nothing_in_the_answer() {
    let mut cluster = Cluster::start();
    for w in ["w1", "w2"] {
        cluster.add_worker(&binary("worker"), &["--nthreads", "2"], w, "");
    }
    let dir = tempfile::tempdir().unwrap();
    let lines = text_lines(80);
    let inputs = write_lines(dir.path(), "text.txt", &lines);
    let calls_log = dir.path().join("calls.log");
    let out = dir.path().join("out.json");
    let map = format!("sleep 0.05; {}", word_map(&calls_log));
    let access = cluster.access();
    let job = drover_map(
        "on a cluster",
        &[
            inputs.to_str().unwrap(),
            "--map",
            &map,
            "--reduce",
            SUM,
            "--access-file",
            &access,
            "--chunk-size",
            "4",
            "--output",
            out.to_str().unwrap(),
        ],
    );
    wait_for_lines(&calls_log, 16);
    cluster.workers[0].kill();
    let (code, seen) = finish(job);
    assert_eq!(code, Some(0), "{seen:?}");
    assert_eq!(read_counts(&out), plain_counts(&lines));
}

/// Numbers; a multiple of 10 was "done outside Drover" (the check says so, with its pair).
struct Squares;

impl MapReduceJob for Squares {
    const NAME: &'static str = "test.squares";
    type Input = u64;
    type Key = u64;
    type Value = u64;
    type Reduced = u64;
    type Params = u64;

    fn map(&self, _: &TaskContext, modulus: &u64, n: u64) -> Result<Vec<(u64, u64)>, String> {
        if n == 13 {
            panic!("thirteen");
        }
        Ok(vec![(n % modulus, n * n)])
    }

    fn check(
        &self,
        _: &TaskContext,
        modulus: &u64,
        n: &u64,
    ) -> Result<Option<Vec<(u64, u64)>>, String> {
        Ok((n % 10 == 0).then(|| vec![(n % modulus, n * n)]))
    }

    fn reduce(&self, _: &TaskContext, _: &u64, _: &u64, squares: Vec<u64>) -> Result<u64, String> {
        Ok(squares.into_iter().sum())
    }
}

#[test]
fn the_rust_api_checks_reduces_reports_and_resumes_on_a_local_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut registry = Registry::with_builtins();
        registry.register_job(Squares);
        let spec = ClusterSpec::plain(2, 2).with_progress_dir(dir.path());
        let cluster = LocalCluster::start(&spec, registry).await.unwrap();
        let client = cluster.client().await.unwrap();
        let inputs: Vec<u64> = (0..100).collect();
        let job = || {
            MapReduce::<Squares>::new("squares", inputs.clone())
                .params(3)
                .check()
                .reduce()
                .chunk_size(7)
                .partitions(3)
                .shuffle(42)
                .log(dir.path().join("squares.log"))
        };
        let out = job().run(&client).await.unwrap();
        let mut want: BTreeMap<u64, u64> = BTreeMap::new();
        for n in inputs.iter().filter(|&&n| n != 13) {
            *want.entry(n % 3).or_default() += n * n;
        }
        assert_eq!(out.values, want);
        let r = &out.report;
        assert_eq!(
            (r.inputs, r.checked, r.mapped, r.done_before),
            (100, 10, 90, 0)
        );
        assert_eq!(r.failed.len(), 1);
        assert_eq!(r.failed[0].number, 13);
        assert!(
            r.failed[0].error.contains("panicked: thirteen"),
            "{:?}",
            r.failed
        );
        assert_eq!(r.partitions, 3);
        // Again: everything but the failed input is done before; it fails again, alone.
        let again = job().run(&client).await.unwrap();
        assert_eq!(again.values, want);
        let r = &again.report;
        assert_eq!((r.mapped, r.done_before, r.failed.len()), (1, 99, 1));
        let log = std::fs::read_to_string(dir.path().join("squares.log")).unwrap();
        assert_eq!(
            log.matches("failed input #13: 13: panicked: thirteen")
                .count(),
            2,
            "{log}"
        );
        // Other params are another job's chunks.
        let other = MapReduce::<Squares>::new("squares", inputs.clone())
            .params(5)
            .reduce()
            .run(&client)
            .await
            .unwrap();
        assert_eq!(
            (other.report.mapped, other.report.checked),
            (100, 0),
            "no check asked"
        );
        assert_eq!(other.values.len(), 5);
        client.close();
        cluster.shutdown().await;
    });
}

/// A "model" loaded once per worker: the factor the map multiplies by.
struct Model {
    factor: u64,
}

struct LoadModel;
impl drover::Loader for LoadModel {
    const NAME: &'static str = "test.load_model";
    type Params = u64;
    type Object = Model;
}

static LOADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Multiplies each input by the model's factor.
struct Scaled;

impl MapReduceJob for Scaled {
    const NAME: &'static str = "test.scaled";
    type Input = u64;
    type Key = u64;
    type Value = u64;
    type Reduced = u64;
    type Params = ();

    fn map(&self, ctx: &TaskContext, _: &(), n: u64) -> Result<Vec<(u64, u64)>, String> {
        let model = ctx.object_as::<Model>(0).ok_or("no model")?;
        Ok(vec![(n % 2, n * model.factor)])
    }

    fn reduce(&self, _: &TaskContext, _: &(), _: &u64, v: Vec<u64>) -> Result<u64, String> {
        Ok(v.into_iter().sum())
    }
}

#[test]
fn a_map_that_needs_a_model_loads_it_once_per_worker() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut registry = Registry::with_builtins();
        registry.register_job(Scaled);
        registry.register_loader::<LoadModel>(|_, factor| {
            LOADS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(Model { factor })
        });
        let spec = ClusterSpec::plain(2, 1).with_progress_dir(dir.path());
        let cluster = LocalCluster::start(&spec, registry).await.unwrap();
        let client = cluster.client().await.unwrap();
        let out = MapReduce::<Scaled>::new("scaled", (0..200).collect())
            .once_cell::<LoadModel>(&3)
            .reduce()
            .chunk_size(10)
            .run(&client)
            .await
            .unwrap();
        let even: u64 = (0..200).filter(|n| n % 2 == 0).map(|n| n * 3).sum();
        let odd: u64 = (0..200).filter(|n| n % 2 == 1).map(|n| n * 3).sum();
        assert_eq!(out.values, BTreeMap::from([(0, even), (1, odd)]));
        assert_eq!(out.report.chunks, 20);
        let loads = LOADS.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            (1..=2).contains(&loads),
            "{loads} loads for 20 chunks on 2 workers"
        );
        client.close();
        cluster.shutdown().await;
    });
}
