//! The dask-worker-pools README example, run for real.
//!
//! `a` is a 10x10 array only pool-A workers can load, `b` a 10-vector only pool-B workers can
//! load. `run_in_a = (a - 1).sum()` should stay in A; `run_in_b = b - a.mean()` should run in B,
//! because moving `a.mean()` (8 bytes) to B is cheaper than moving `b` (80 bytes) to A.
//!
//! ```sh
//! cargo run --release --example pools                        # local cluster: 2 workers in A, 1 in B
//! cargo run --release --example pools -- --access-file F     # against a running scheduler
//! cargo run --release --example pools -- worker --access-file F --resources pool-A=1
//! ```
//!
//! It prints the pass's plan, where each task ran, the results (checked against a local
//! computation: exit code 1 if they differ) and writes `pools.svg`.

use std::path::PathBuf;
use std::process::ExitCode;

use drover::{ClusterSpec, Graph, LocalCluster, Planned, Registry, TaskContext, TaskFn};
use serde::{Deserialize, Serialize};

/// Parameters of the random-array loader.
#[derive(Serialize, Deserialize)]
struct Shape {
    rows: usize,
    cols: usize,
    seed: u64,
}

/// Loads a random array of the given shape (stands in for data only its pool can read).
struct RandomArray;
impl TaskFn for RandomArray {
    const NAME: &'static str = "random_array";
    type Params = Shape;
    type Inputs = ();
    type Output = Vec<f64>;
}

/// Subtracts a constant from every element.
struct SubScalar;
impl TaskFn for SubScalar {
    const NAME: &'static str = "sub_scalar";
    type Params = f64;
    type Inputs = (Vec<f64>,);
    type Output = Vec<f64>;
}

/// Sums an array.
struct Sum;
impl TaskFn for Sum {
    const NAME: &'static str = "sum";
    type Params = ();
    type Inputs = (Vec<f64>,);
    type Output = f64;
}

/// The mean of an array.
struct Mean;
impl TaskFn for Mean {
    const NAME: &'static str = "mean";
    type Params = ();
    type Inputs = (Vec<f64>,);
    type Output = f64;
}

/// Subtracts a scalar (second input) from every element of an array (first input).
struct SubArrayScalar;
impl TaskFn for SubArrayScalar {
    const NAME: &'static str = "sub_array_scalar";
    type Params = ();
    type Inputs = (Vec<f64>, f64);
    type Output = Vec<f64>;
}

/// Deterministic numbers in [0, 1) (splitmix64), so every run and the check agree.
fn random(shape: &Shape) -> Vec<f64> {
    let mut x = shape.seed;
    (0..shape.rows * shape.cols)
        .map(|_| {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as f64 / u64::MAX as f64
        })
        .collect()
}

/// This program's task functions.
fn registry() -> Registry {
    let mut r = Registry::with_builtins();
    r.register::<RandomArray>(|_: &TaskContext, shape, ()| Ok(random(&shape)));
    r.register::<SubScalar>(|_, k, (a,)| Ok(a.iter().map(|x| x - k).collect()));
    r.register::<Sum>(|_, (), (a,)| Ok(a.iter().sum()));
    r.register::<Mean>(|_, (), (a,)| {
        if a.is_empty() {
            return Err("mean of an empty array".into());
        }
        Ok(a.iter().sum::<f64>() / a.len() as f64)
    });
    r.register::<SubArrayScalar>(|_, (), (a, m)| Ok(a.iter().map(|x| x - m).collect()));
    r
}

const F64: u64 = std::mem::size_of::<f64>() as u64;
const A_SHAPE: Shape = Shape {
    rows: 10,
    cols: 10,
    seed: 1,
};
const B_SHAPE: Shape = Shape {
    rows: 10,
    cols: 1,
    seed: 2,
};

#[derive(Debug, Default)]
struct Args {
    worker: bool,
    access_file: Option<PathBuf>,
    resources: String,
    nthreads: u32,
    name: Option<String>,
    svg: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        nthreads: 1,
        svg: "pools.svg".into(),
        ..Default::default()
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |flag: &str| it.next().ok_or(format!("{flag} needs a value"));
        match a.as_str() {
            "worker" => args.worker = true,
            "--access-file" => args.access_file = Some(value(&a)?.into()),
            "--resources" => args.resources = value(&a)?,
            "--nthreads" => {
                args.nthreads = value(&a)?.parse().map_err(|e| format!("--nthreads: {e}"))?
            }
            "--name" => args.name = Some(value(&a)?),
            "--svg" => args.svg = value(&a)?.into(),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    drover::init_logging("warn");
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}\nusage: pools [--access-file F] [--svg FILE] | pools worker --access-file F [--resources R] [--nthreads N] [--name NAME]");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = if args.worker {
        rt.block_on(worker(args))
    } else {
        rt.block_on(client(args))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn worker(args: Args) -> Result<(), String> {
    let access_file = args.access_file.ok_or("worker needs --access-file")?;
    let access = drover::AccessFile::load(&access_file).map_err(|e| e.to_string())?;
    let config = drover::WorkerConfig {
        access,
        resources: args
            .resources
            .parse()
            .map_err(|e| format!("--resources: {e}"))?,
        nthreads: args.nthreads,
        name: args
            .name
            .unwrap_or_else(|| format!("pools-worker-{}", std::process::id())),
        idle_timeout: std::time::Duration::from_secs(10),
        retire: Some(drover::retire_on_sigterm()),
        lifespan_tasks: None,
        memory_limit: None,
    };
    drover::run_worker(config, registry())
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn client(args: Args) -> Result<(), String> {
    let mut g = Graph::new();
    // Only pool-A workers can access this proprietary random data!
    let a = g.pool("A", |g| {
        g.call::<RandomArray, _>(&A_SHAPE, ())
            .key("a")
            .size_hint(100 * F64)
            .add()
    });
    // Only pool-B workers can access this proprietary random data!
    let b = g.pool("B", |g| {
        g.call::<RandomArray, _>(&B_SHAPE, ())
            .key("b")
            .size_hint(10 * F64)
            .add()
    });
    let a_minus_1 = g
        .call::<SubScalar, _>(&1.0, a)
        .key("a - 1")
        .size_hint(100 * F64)
        .add();
    let run_in_a = g
        .call::<Sum, _>(&(), a_minus_1)
        .key("run_in_a")
        .size_hint(F64)
        .add();
    let a_mean = g
        .call::<Mean, _>(&(), a)
        .key("a.mean()")
        .size_hint(F64)
        .add();
    let run_in_b = g
        .call::<SubArrayScalar, _>(&(), (b, a_mean))
        .key("run_in_b")
        .size_hint(10 * F64)
        .add();

    let plan = Planned::new(g).map_err(|e| e.to_string())?;
    let e = plan.propagation.estimate;
    println!("plan (propagate-pools):");
    for t in plan.topology.order() {
        let pool = plan.propagation.pool_name(&plan.graph, *t).unwrap_or("-");
        println!(
            "  {:10} pool {pool:2} ({})",
            plan.graph.key(*t),
            plan.propagation.reason(*t)
        );
    }
    println!(
        "  estimated bytes crossing pools: without the pass {}, linear {}, optimised {}",
        e.without, e.linear, e.full
    );
    plan.export_svg(&args.svg)
        .map_err(|e| format!("cannot write {}: {e}", args.svg.display()))?;
    println!("wrote {}", args.svg.display());

    let cluster = match &args.access_file {
        Some(_) => None,
        None => Some(
            LocalCluster::start(
                &ClusterSpec::parse("A=2,B=1", 1).expect("valid spec"),
                registry(),
            )
            .await
            .map_err(|e| e.to_string())?,
        ),
    };
    let client = match (&cluster, &args.access_file) {
        (Some(c), _) => c.client().await,
        (None, Some(f)) => drover::Client::connect(f).await,
        (None, None) => unreachable!(),
    }
    .map_err(|e| e.to_string())?;
    let mut run = client
        .submit(&plan.graph)
        .await
        .map_err(|e| e.to_string())?;
    let report = run.wait().await.map_err(|e| e.to_string())?;
    println!("ran:");
    for t in &report.tasks {
        println!(
            "  {:10} pool {:2} worker {:14} {} {} bytes",
            t.key,
            t.pool.as_deref().unwrap_or("-"),
            t.worker.as_deref().unwrap_or("-"),
            t.status,
            t.output_bytes
        );
    }
    println!(
        "bytes moved between workers {}, between pools {}",
        report.bytes_between_workers, report.bytes_between_pools
    );
    let got_a = run
        .get(&plan.graph, run_in_a)
        .await
        .map_err(|e| e.to_string())?;
    let got_b = run
        .get(&plan.graph, run_in_b)
        .await
        .map_err(|e| e.to_string())?;
    println!("run_in_a = {got_a:.6}");
    println!("run_in_b = {got_b:.6?}");

    // Check against the same computation done here.
    let (av, bv) = (random(&A_SHAPE), random(&B_SHAPE));
    let want_a: f64 = av.iter().map(|x| x - 1.0).sum();
    let mean = av.iter().sum::<f64>() / av.len() as f64;
    let want_b: Vec<f64> = bv.iter().map(|x| x - mean).collect();
    let close = |x: f64, y: f64| (x - y).abs() < 1e-9;
    if !close(got_a, want_a)
        || got_b.len() != want_b.len()
        || !got_b.iter().zip(&want_b).all(|(x, y)| close(*x, *y))
    {
        return Err(format!(
            "wrong results: run_in_a {got_a} (want {want_a}), run_in_b {got_b:?} (want {want_b:?})"
        ));
    }
    for (key, pool) in [
        ("a", "A"),
        ("b", "B"),
        ("a - 1", "A"),
        ("run_in_a", "A"),
        ("a.mean()", "A"),
        ("run_in_b", "B"),
    ] {
        let ran = report.task(key).and_then(|t| t.pool.as_deref());
        if ran != Some(pool) {
            return Err(format!("task {key:?} ran in pool {ran:?}, expected {pool}"));
        }
    }
    println!("results and placements check out");
    if let Some(c) = cluster {
        c.shutdown().await;
    }
    Ok(())
}
