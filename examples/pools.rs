//! The dask-worker-pools README example as a Drover graph.
//!
//! `a` is a 10x10 array that only pool-A workers can load, `b` a 10-vector only pool-B workers
//! can load. `run_in_a = (a - 1).sum()` should stay in A; `run_in_b = b - a.mean()` should run in
//! B, because moving `a.mean()` (8 bytes) to B is cheaper than moving `b` (80 bytes) to A.
//!
//! Run with `cargo run --release --example pools`. Prints where each task goes and why, the
//! estimated bytes crossing pools, and writes `pools.svg`.

use drover::{Graph, Planned, TaskFn};
use serde::Serialize;

/// Parameters of the random-array loader.
#[derive(Serialize)]
struct Shape {
    rows: usize,
    cols: usize,
    seed: u64,
}

/// Loads a random array of the given shape (only where its pool's data lives).
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

const F64: u64 = std::mem::size_of::<f64>() as u64;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut g = Graph::new();

    // Only pool-A workers can access this proprietary random data!
    let a = g.pool("A", |g| {
        let shape = Shape {
            rows: 10,
            cols: 10,
            seed: 1,
        };
        g.call::<RandomArray, _>(&shape, ())
            .key("a")
            .size_hint(100 * F64)
            .add()
    });
    // Only pool-B workers can access this proprietary random data!
    let b = g.pool("B", |g| {
        let shape = Shape {
            rows: 10,
            cols: 1,
            seed: 2,
        };
        g.call::<RandomArray, _>(&shape, ())
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

    let plan = Planned::new(g)?;
    println!("{:10}  {:5}  reason", "task", "pool");
    for (name, task) in [
        ("a", a.untyped()),
        ("b", b.untyped()),
        ("a - 1", a_minus_1.untyped()),
        ("run_in_a", run_in_a.untyped()),
        ("a.mean()", a_mean.untyped()),
        ("run_in_b", run_in_b.untyped()),
    ] {
        println!(
            "{name:10}  {:5}  {}",
            plan.pool_of(task).unwrap_or("-"),
            plan.reason_of(task)
        );
    }
    let e = plan.propagation.estimate;
    println!(
        "\nestimated bytes crossing pools: without the pass {}, forward only {}, full pass {}",
        e.without, e.forward, e.full
    );
    assert_eq!(plan.pool_of(run_in_a), Some("A"));
    assert_eq!(plan.pool_of(a_mean), Some("A"));
    assert_eq!(plan.pool_of(run_in_b), Some("B"));

    plan.export_svg("pools.svg")?;
    println!("wrote pools.svg");
    Ok(())
}
