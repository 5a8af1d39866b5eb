//! The once_per_worker example, ported: a slow data loader runs once per worker process and
//! every partition on that process shares the loaded object.
//!
//! ```sh
//! cargo run --example once_per_worker                        # 4 worker processes, locally
//! cargo run --example once_per_worker -- --access-file access.json   # a real cluster
//! cargo run --example once_per_worker -- worker --access-file access.json   # be a worker
//! ```
//!
//! Unlike the seed: the load is its own task (in the events and the report, with its own
//! duration), it starts as soon as the graph is submitted (eager), and nothing depends on
//! touching an attribute. The program prints the process id at each load and each use, then
//! checks there was exactly one load per process that ran a partition.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use drover::program::Session;
use drover::{ClusterSpec, Graph, Loader, PerWorker, Registry, TaskFn};

/// Expensive to build and deliberately neither `Serialize` nor `Clone` (the seed's raises in
/// `__getstate__`): it never leaves its process. Shared by the tasks of one process as an `Arc`.
struct SlowDataLoader {
    x: u64,
}

impl SlowDataLoader {
    fn new(x: u64, millis: u64) -> SlowDataLoader {
        println!("Very slowly loading the data on PID {}", std::process::id());
        std::thread::sleep(Duration::from_millis(millis));
        SlowDataLoader { x }
    }

    fn value(self: &Arc<Self>) -> u64 {
        println!(
            "SlowDataLoader is {:p} on PID {}",
            Arc::as_ptr(self),
            std::process::id()
        );
        self.x
    }
}

/// The loader: params are (x, load time in ms).
struct LoadSlowData;
impl Loader for LoadSlowData {
    const NAME: &'static str = "slow_data_loader";
    type Params = (u64, u64);
    type Object = SlowDataLoader;
}

/// One partition: the seed's `df.assign(name=df.name + str(loader.value()))`.
struct MapPartition;
impl TaskFn for MapPartition {
    const NAME: &'static str = "map_partition";
    type Params = u32;
    type Inputs = (PerWorker<SlowDataLoader>,);
    type Output = Vec<String>;
}

const NAMES: [&str; 6] = ["Jerry", "Patricia", "Bob", "Edith", "Ray", "Ingrid"];

fn registry() -> Registry {
    let mut r = Registry::with_builtins();
    r.register_loader::<LoadSlowData>(|_, (x, millis)| Ok(SlowDataLoader::new(x, millis)));
    r.register::<MapPartition>(|_, partition, (loader,)| {
        let x = loader.value();
        Ok((0..3)
            .map(|row| format!("{}{x}", NAMES[(partition as usize + row) % NAMES.len()]))
            .collect())
    });
    r
}

struct Args {
    access_file: Option<String>,
    processes: usize,
    partitions: u32,
    load_ms: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        access_file: None,
        processes: 4,
        partitions: 30,
        load_ms: 3000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{v:?} is not a number"))
        };
        match flag.as_str() {
            "--access-file" => a.access_file = Some(value()?),
            "--processes" => a.processes = number(value()?)? as usize,
            "--partitions" => a.partitions = number(value()?)? as u32,
            "--load-ms" => a.load_ms = number(value()?)?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
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
            eprintln!("error: {e}\nusage: once_per_worker [--access-file F] [--processes N] [--partitions N] [--load-ms MS] | once_per_worker worker --access-file F");
            return ExitCode::from(2);
        }
    };
    drover::program::run_main(run(args))
}

async fn run(args: Args) -> Result<(), String> {
    let mut g = Graph::new();
    let loader = g
        .once::<LoadSlowData>(&(3, args.load_ms))
        .key("slow_data_loader")
        .add();
    let parts: Vec<_> = (0..args.partitions)
        .map(|i| {
            g.call::<MapPartition, _>(&i, loader)
                .key(format!("partition-{i}"))
                .add()
        })
        .collect();

    let session = Session::connect_or_start(
        args.access_file.as_deref().map(std::path::Path::new),
        &ClusterSpec::plain(args.processes, 4),
    )
    .await?;
    let mut run = session.client.submit(&g).await.map_err(|e| e.to_string())?;
    let report = run.wait().await.map_err(|e| e.to_string())?;
    let mut rows = 0;
    for p in &parts {
        let names = run.get(&g, *p).await.map_err(|e| e.to_string())?;
        rows += names.len();
    }
    println!("{rows} rows in {} partitions", parts.len());

    // The check: one load per process that ran a partition, none elsewhere.
    let mut loads: BTreeMap<String, (usize, f64)> = BTreeMap::new();
    for l in report.loads_of("slow_data_loader") {
        let e = loads
            .entry(l.worker.clone().unwrap_or_default())
            .or_default();
        e.0 += 1;
        e.1 += l.duration_ms;
    }
    let users: BTreeSet<String> = report
        .tasks
        .iter()
        .filter(|t| t.kind == "task")
        .filter_map(|t| t.worker.clone())
        .collect();
    for (worker, (n, ms)) in &loads {
        println!("load on {worker}: {n} time(s), {ms:.0} ms");
    }
    println!(
        "{} partitions on {} worker processes; {} load(s)",
        report.finished,
        users.len(),
        loads.values().map(|l| l.0).sum::<usize>()
    );
    drop(run);
    session.finish().await;
    if report.failed > 0 {
        return Err(format!("{} partitions failed", report.failed));
    }
    if loads.values().any(|l| l.0 != 1) || users.iter().any(|u| !loads.contains_key(u)) {
        return Err("expected exactly one load on each process that ran a partition".into());
    }
    println!("one load per worker process: ok");
    Ok(())
}
