//! Graph benchmarks.
//!
//! First, printed tables (no criterion): the **placement quality** of the pass, as the bytes
//! crossing pools (the objective, `drover_graph::cost::cross_pool_bytes`) relative to pins only
//! and to the LP lower bound, on random DAGs of 2,000 tasks (about 1.5 inputs each, sizes 1 B to
//! 1 MB, 12% pinned to one of 3 pools; and the same in 2 pools) and on lake-shaped graphs; then
//! the **time** of the linear and the optimised pass on random DAGs of 1,000 to 1,000,000 tasks,
//! as a ratio measured in this run.
//!
//! Then criterion timings on a random DAG of 1,000,000 tasks with about 2 inputs each, 10%
//! pinned to one of 4 pools, 2% any-pool: building through the Rust API, validating, and the
//! pass; with the graph's memory per task, counted by a global allocator wrapper.
//!
//! Run: `cargo bench --bench propagate` (`-- quality` for the tables only).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use drover::optimise::bound::lower_bound;
use drover::{propagate_pools, propagate_pools_with, Graph, Handle, Pass, Untyped};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{live_bytes, Counting};

#[global_allocator]
static ALLOC: Counting = Counting;

const N: usize = 1_000_000;
const POOLS: [&str; 4] = ["A", "B", "C", "D"];

/// A random DAG of `n` tasks: each has 1 to `max_inputs` inputs, mostly among the `recent`
/// tasks before it (like real pipelines), sometimes anything earlier; `annotate` places each
/// task and gives it a size.
fn dag(
    n: usize,
    seed: u64,
    max_inputs: usize,
    recent: usize,
    mut annotate: impl FnMut(&mut StdRng, drover::TaskBuilder<'_, Untyped>) -> Handle,
) -> Graph {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut g = Graph::with_capacity(n, 2 * n);
    let mut handles: Vec<Handle> = Vec::with_capacity(n);
    for i in 0..n {
        let mut b = g.task("work", &()).key(format!("t{i}"));
        if i > 0 {
            for _ in 0..rng.gen_range(1..=max_inputs) {
                let j = if rng.gen_bool(0.8) {
                    i - 1 - rng.gen_range(0..i.min(recent))
                } else {
                    rng.gen_range(0..i)
                };
                b = b.input(handles[j]);
            }
        }
        handles.push(annotate(&mut rng, b));
    }
    g
}

/// The criterion graph: about 2 inputs each, 10% pinned to one of 4 pools, 2% any-pool, half
/// with a size hint.
fn build(n: usize, seed: u64) -> Graph {
    dag(n, seed, 3, 64, |rng, b| {
        let r: f64 = rng.gen();
        let b = if r < 0.10 {
            b.pool(POOLS[rng.gen_range(0..POOLS.len())])
        } else if r < 0.12 {
            b.any_pool()
        } else {
            b
        };
        if rng.gen_bool(0.5) {
            b.size_hint(rng.gen_range(0..1_000_000)).add()
        } else {
            b.add()
        }
    })
}

/// The quality family: `n` tasks, 1 or 2 inputs each (mostly recent ones), log-uniform sizes
/// from 1 B to 1 MB, `pinned` of them pinned to one of `pools` pools.
fn random_dag(n: usize, pools: usize, pinned: f64, seed: u64) -> Graph {
    dag(n, seed, 2, 32, |rng, b| {
        let b = if rng.gen_bool(pinned) {
            b.pool(POOLS[rng.gen_range(0..pools)])
        } else {
            b
        };
        let size = 10f64.powf(rng.gen_range(0.0..6.0)) as u64;
        b.size_hint(size.max(1)).add()
    })
}

/// A data lake: per pool, pinned sources, a cleaning chain and a summary; a join of a few
/// pools' summaries; a report.
fn lake(pools: usize, sources: usize, seed: u64) -> Graph {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut g = Graph::new();
    let mut summaries = Vec::new();
    for (p, pool) in POOLS.iter().take(pools).enumerate() {
        let mut cleaned = Vec::new();
        for s in 0..sources {
            let src = g
                .task("load", &())
                .key(format!("{pool}/src{s}"))
                .pool(pool)
                .size_hint(rng.gen_range(1_000_000..100_000_000))
                .add();
            let clean = g
                .task("clean", &())
                .key(format!("{pool}/clean{s}"))
                .input(src)
                .size_hint(rng.gen_range(100_000..10_000_000))
                .add();
            cleaned.push(clean);
        }
        let summary = g
            .task("summarise", &())
            .key(format!("{pool}/summary"))
            .inputs(cleaned)
            .size_hint(1_000 * (p as u64 + 1))
            .add();
        summaries.push(summary);
    }
    let join = g
        .task("join", &())
        .key("join")
        .inputs(summaries)
        .size_hint(100)
        .add();
    g.task("report", &())
        .key("report")
        .input(join)
        .size_hint(10)
        .add();
    g
}

/// One row of the quality table: pins only, linear, optimised and the lower bound.
fn quality_row(name: &str, graphs: impl Iterator<Item = Graph>) {
    let (mut pins, mut lin, mut opt, mut lb, mut worst) = (0u64, 0u64, 0u64, 0u64, 1f64);
    let mut count = 0;
    for g in graphs {
        let topo = g.validate().expect("valid");
        let p = propagate_pools(&g, &topo);
        let bound = lower_bound(&g, &topo, &p).expect("small graphs get a bound");
        pins += p.estimate.without;
        lin += p.estimate.linear;
        opt += p.estimate.full;
        lb += bound;
        worst = worst.max(p.estimate.full as f64 / bound.max(1) as f64);
        count += 1;
    }
    let r = |x: u64| x as f64 / pins.max(1) as f64;
    let h = drover::export::human_bytes;
    println!(
        "{name:<34} {count:>3} graphs  pins only 1.00 ({})  linear {:.4} ({})  optimised {:.4} ({})  lower bound {:.4} ({})  optimised/bound {:.3} (worst graph {:.3})  linear/optimised {:.2}",
        h(pins),
        r(lin),
        h(lin),
        r(opt),
        h(opt),
        r(lb),
        h(lb),
        opt as f64 / lb.max(1) as f64,
        worst,
        lin as f64 / opt.max(1) as f64,
    );
}

/// The quality tables and the pass's times; printed.
fn quality() {
    println!("placement quality (bytes crossing pools, summed over the graphs):");
    quality_row(
        "random DAGs, 2,000 tasks, 3 pools",
        (0..10).map(|s| random_dag(2_000, 3, 0.12, s)),
    );
    quality_row(
        "random DAGs, 2,000 tasks, 2 pools",
        (0..10).map(|s| random_dag(2_000, 2, 0.12, 100 + s)),
    );
    quality_row(
        "lakes, 3 pools x 20 sources",
        (0..10).map(|s| lake(3, 20, s)),
    );
    println!("time of the pass (min of 3), random DAGs, 3 pools, 12% pinned:");
    for n in [1_000usize, 10_000, 100_000, 1_000_000] {
        let g = random_dag(n, 3, 0.12, 7);
        let topo = g.validate().expect("valid");
        let time = |pass: Pass| {
            (0..3)
                .map(|_| {
                    let t = Instant::now();
                    let p = propagate_pools_with(&g, &topo, pass);
                    (t.elapsed().as_secs_f64(), p.estimate)
                })
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .expect("three runs")
        };
        let (linear, _) = time(Pass::Linear);
        let (optimised, est) = time(Pass::Optimised);
        println!(
            "{n:>9} tasks: linear {:>8.1} ms, optimised {:>8.1} ms ({:.2}x); bytes: linear {:.3} of pins only, optimised {:.3}",
            linear * 1e3,
            optimised * 1e3,
            optimised / linear,
            est.linear as f64 / est.without.max(1) as f64,
            est.full as f64 / est.without.max(1) as f64,
        );
    }
}

fn benches(c: &mut Criterion) {
    quality();
    if std::env::args().any(|a| a == "quality") {
        return;
    }
    let before = live_bytes();
    let g = build(N, 7);
    let graph_bytes = live_bytes() - before;
    let topo = g.validate().expect("valid");
    let topo_bytes = live_bytes() - before - graph_bytes;
    let p = propagate_pools(&g, &topo);
    let total = live_bytes() - before;
    println!(
        "{} tasks, {} edges: graph {:.0} B/task, topology {:.0} B/task, with propagation {:.0} B/task",
        g.len(),
        g.edge_count(),
        graph_bytes as f64 / N as f64,
        topo_bytes as f64 / N as f64,
        total as f64 / N as f64
    );
    println!("transfer estimate: {:?}", p.estimate);
    // Submission forms, min of 3: what the client writes plus what the scheduler reads.
    let min3 = |f: &dyn Fn() -> usize| {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                let n = f();
                (t.elapsed().as_secs_f64(), n)
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .expect("three runs")
    };
    let (json_s, json_len) = min3(&|| {
        let text = serde_json::to_string(&g.to_file()).unwrap();
        Graph::from_json_str(&text).unwrap().len() + text.len()
    });
    let (wire_s, wire_len) = min3(&|| {
        let bytes = g.to_wire();
        Graph::from_wire(&bytes).unwrap().len() + bytes.len()
    });
    println!(
        "submission form, encode + decode of {} tasks: JSON text {:.0} ms ({} MB), binary wire {:.0} ms ({} MB): {:.2}x faster",
        g.len(),
        json_s * 1e3,
        (json_len - g.len()) / 1_000_000,
        wire_s * 1e3,
        (wire_len - g.len()) / 1_000_000,
        json_s / wire_s
    );

    let mut group = c.benchmark_group("1M tasks");
    group.sample_size(10);
    group.bench_function("build (Rust API)", |b| b.iter(|| build(N, 7)));
    group.bench_function("validate", |b| b.iter(|| g.validate().unwrap()));
    group.bench_function("propagate_pools", |b| b.iter(|| propagate_pools(&g, &topo)));
    group.bench_function("validate + propagate_pools", |b| {
        b.iter(|| {
            let t = g.validate().unwrap();
            propagate_pools(&g, &t)
        })
    });
    group.bench_function("from JSON text + validate + propagate", |b| {
        b.iter_batched(
            || serde_json::to_string(&g.to_file()).unwrap(),
            |text| {
                let g = Graph::from_json_str(&text).unwrap();
                let t = g.validate().unwrap();
                propagate_pools(&g, &t)
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(propagate, benches);
criterion_main!(propagate);
