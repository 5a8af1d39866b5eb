//! MPIRE's worker state, worker ID and worker init/exit, ported.
//!
//! ```sh
//! cargo run --example worker_state                    # 3 worker processes, locally
//! cargo run --example worker_state -- --access-file access.json
//! cargo run --example worker_state -- worker --access-file access.json --resources pool-A=1
//! ```
//!
//! Each worker process keeps a typed, mutable state for its life: the "big model" is loaded
//! into it on first use (MPIRE's `if 'model' not in worker_state`), and counters accumulate
//! there. Tasks see their worker's id, name, pools and resources. A start hook prints the
//! worker's identity; an exit hook prints what its state holds at the end.

use std::process::ExitCode;
use std::sync::Arc;

use drover::program::Session;
use drover::{ClusterSpec, Graph, Registry, TaskFn};

/// A model that takes a lot of memory (here: a few weights).
struct Model {
    weights: Vec<f64>,
}

impl Model {
    fn load() -> Model {
        println!("loading the big model on PID {}", std::process::id());
        Model {
            weights: vec![0.5, 2.0, -1.0],
        }
    }

    fn predict(&self, x: &[f64]) -> f64 {
        self.weights.iter().zip(x).map(|(w, v)| w * v).sum()
    }
}

/// Per worker process, for its life.
#[derive(Default)]
struct State {
    model: Option<Arc<Model>>,
    predictions: u64,
    sum_of_squares: f64,
}

/// MPIRE's `model_predict(worker_state, x)`.
struct Predict;
impl TaskFn for Predict {
    const NAME: &'static str = "model_predict";
    type Params = Vec<f64>;
    type Inputs = ();
    type Output = f64;
}

/// MPIRE's `square_sum(worker_id, shared_objects, x)`: squares, summed per worker.
struct SquareSum;
impl TaskFn for SquareSum {
    const NAME: &'static str = "square_sum";
    type Params = f64;
    type Inputs = ();
    /// (worker name, its pools, x squared)
    type Output = (String, Vec<String>, f64);
}

fn registry() -> Registry {
    let mut r = Registry::with_builtins();
    r.on_worker_start(|w| {
        println!(
            "worker {} starting on PID {}: pools {:?}, resources {}",
            w.name(),
            std::process::id(),
            w.pools(),
            w.resources()
        );
    });
    r.on_worker_exit(|w| {
        w.with_state(|s: &mut State| {
            println!(
                "worker {} (id {}) exiting: {} predictions, sum of squares {}",
                w.name(),
                w.id(),
                s.predictions,
                s.sum_of_squares
            );
        });
    });
    r.register::<Predict>(|ctx, x, ()| {
        let model = ctx.worker.with_state(|s: &mut State| {
            s.predictions += 1;
            s.model
                .get_or_insert_with(|| Arc::new(Model::load()))
                .clone()
        });
        Ok(model.predict(&x))
    });
    r.register::<SquareSum>(|ctx, x, ()| {
        let sq = x * x;
        ctx.worker
            .with_state(|s: &mut State| s.sum_of_squares += sq);
        Ok((ctx.worker.name().to_owned(), ctx.worker.pools(), sq))
    });
    r
}

fn main() -> ExitCode {
    drover::program::main_with_access_file(
        "worker_state [--access-file F] | worker_state worker --access-file F [--resources R]",
        registry,
        run,
    )
}

async fn run(access_file: Option<std::path::PathBuf>) -> Result<(), String> {
    let mut g = Graph::new();
    let inputs: Vec<Vec<f64>> = (0..60).map(|i| vec![i as f64, 1.0, 0.5]).collect();
    let predictions: Vec<_> = inputs
        .iter()
        .enumerate()
        .map(|(i, x)| {
            g.call::<Predict, _>(x, ())
                .key(format!("predict-{i}"))
                .add()
        })
        .collect();
    let squares: Vec<_> = (0..100)
        .map(|i| {
            // Half of them pinned to pool A, to show pools in the identity.
            let b = g
                .call::<SquareSum, _>(&(i as f64), ())
                .key(format!("square-{i}"));
            if i % 2 == 0 { b.pool("A") } else { b }.add()
        })
        .collect();

    let session = Session::connect_or_start(
        access_file.as_deref(),
        &ClusterSpec::parse("A=2,1", 2).expect("valid spec"),
    )
    .await?;
    let client = &session.client;
    let mut run = client.submit(&g).await.map_err(|e| e.to_string())?;
    run.wait().await.map_err(|e| e.to_string())?;
    let model = Model {
        weights: vec![0.5, 2.0, -1.0],
    };
    for (x, h) in inputs.iter().zip(&predictions) {
        let got = run.get(&g, *h).await.map_err(|e| e.to_string())?;
        if got != model.predict(x) {
            return Err(format!("prediction for {x:?} is {got}"));
        }
    }
    let mut total = 0.0;
    for (i, h) in squares.iter().enumerate() {
        let (worker, pools, sq) = run.get(&g, *h).await.map_err(|e| e.to_string())?;
        if i % 2 == 0 && !pools.iter().any(|p| p == "A") {
            return Err(format!("square-{i} ran on {worker}, not in pool A"));
        }
        total += sq;
    }
    let expected: f64 = (0..100).map(|i| (i * i) as f64).sum();
    println!("60 predictions ok; sum of squares {total} (expected {expected})");
    drop(run);
    session.finish().await;
    if total != expected {
        return Err("wrong sum of squares".into());
    }
    Ok(())
}
