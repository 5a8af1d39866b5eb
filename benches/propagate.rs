//! Graph benchmarks on a random DAG of 1,000,000 tasks with about 2 inputs each, 10% pinned to
//! one of 4 pools, 2% any-pool: building through the Rust API, validating, and the
//! propagate-pools pass (forward, backward and the three transfer estimates).
//!
//! Run: `cargo bench --bench propagate`. Before the timings it prints the graph's memory per
//! task, counted by a global allocator wrapper.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use drover::{propagate_pools, Graph, Handle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{live_bytes, Counting};

#[global_allocator]
static ALLOC: Counting = Counting;

const N: usize = 1_000_000;
const POOLS: [&str; 4] = ["A", "B", "C", "D"];

fn build(n: usize, seed: u64) -> Graph {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut g = Graph::with_capacity(n, 2 * n);
    let mut handles: Vec<Handle> = Vec::with_capacity(n);
    for i in 0..n {
        let mut b = g.task("work", &()).key(format!("t{i}"));
        if i > 0 {
            for _ in 0..rng.gen_range(1..=3) {
                // Mostly recent tasks, like real pipelines; sometimes anything earlier.
                let j = if rng.gen_bool(0.8) {
                    i - 1 - rng.gen_range(0..i.min(64))
                } else {
                    rng.gen_range(0..i)
                };
                b = b.input(handles[j]);
            }
        }
        let r: f64 = rng.gen();
        b = if r < 0.10 {
            b.pool(POOLS[rng.gen_range(0..POOLS.len())])
        } else if r < 0.12 {
            b.any_pool()
        } else {
            b
        };
        if rng.gen_bool(0.5) {
            b = b.size_hint(rng.gen_range(0..1_000_000));
        }
        handles.push(b.add());
    }
    g
}

fn benches(c: &mut Criterion) {
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
