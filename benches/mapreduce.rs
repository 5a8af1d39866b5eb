//! Map-reduce of 1,000,000 tiny inputs (three words each: a word count's map, a sum reduce)
//! on a local cluster of 2 workers x 1 thread over QUIC, with automatic chunking, its
//! progress in a fresh store: inputs per second end to end, against the same map and sum in a
//! plain Rust loop on one core in this process (the overhead); then the same job again with
//! everything done before (how long a finished job takes to rerun).
//!
//! Run: `cargo bench --bench mapreduce` (add `-- quick` for a tenth of the inputs).

use std::collections::BTreeMap;
use std::time::Instant;

use drover::mapreduce::{MapReduce, MapReduceJob};
use drover::{ClusterSpec, LocalCluster, Registry, TaskContext};

/// A word count's map (each word of a line, with 1) and sum.
struct Count;

fn words(line: &str) -> Vec<(String, u64)> {
    line.split_whitespace().map(|w| (w.to_owned(), 1)).collect()
}

impl MapReduceJob for Count {
    const NAME: &'static str = "bench.count";
    type Input = String;
    type Key = String;
    type Value = u64;
    type Reduced = u64;
    type Params = ();

    fn map(&self, _: &TaskContext, _: &(), line: String) -> Result<Vec<(String, u64)>, String> {
        Ok(words(&line))
    }

    fn reduce(&self, _: &TaskContext, _: &(), _: &String, ones: Vec<u64>) -> Result<u64, String> {
        Ok(ones.into_iter().sum())
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let n: usize = if quick { 100_000 } else { 1_000_000 };
    let inputs: Vec<String> = (0..n)
        .map(|i| format!("w{} w{} v{}", i % 1000, (i * 7) % 1013, i % 17))
        .collect();

    // The baseline: one plain loop on one core.
    let start = Instant::now();
    let mut plain: BTreeMap<String, u64> = BTreeMap::new();
    for line in &inputs {
        for (w, one) in words(line) {
            *plain.entry(w).or_default() += one;
        }
    }
    let plain_secs = start.elapsed().as_secs_f64();
    println!(
        "plain loop, 1 core:  {n} inputs in {plain_secs:.3} s: {:.0} inputs/s",
        n as f64 / plain_secs
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut registry = Registry::with_builtins();
        registry.register_job(Count);
        let spec = ClusterSpec::plain(2, 1).with_progress_dir(dir.path());
        let cluster = LocalCluster::start(&spec, registry).await.expect("cluster");
        let client = cluster.client().await.expect("client");
        let job = || {
            MapReduce::<Count>::new("bench", inputs.clone())
                .reduce()
                .parallelism(2)
                .progress_bar(false)
        };
        let start = Instant::now();
        let out = job().run(&client).await.expect("job");
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(out.values, plain, "the same counts as the plain loop");
        let r = &out.report;
        println!(
            "drover, 2 workers:   {n} inputs in {secs:.3} s: {:.0} inputs/s ({} chunks of {}, {} partitions); {:.2}x the plain loop's time",
            n as f64 / secs,
            r.chunks,
            r.chunk_size,
            r.partitions,
            secs / plain_secs
        );
        let start = Instant::now();
        let again = job().run(&client).await.expect("rerun");
        let rerun = start.elapsed().as_secs_f64();
        assert_eq!(again.values, plain);
        assert_eq!(again.report.mapped, 0, "nothing mapped again");
        println!(
            "rerun, all done:     {rerun:.3} s ({} inputs done before); {:.2}x the first run's time",
            again.report.done_before,
            rerun / secs
        );
        client.close();
        cluster.shutdown().await;
    });
}
