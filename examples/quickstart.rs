//! The smallest whole program: typed task functions, a graph, and a local cluster whose
//! workers are processes of this same program, under `#[tokio::main]`.
//!
//! ```sh
//! cargo run --example quickstart                # 2 worker processes of itself, here
//! cargo run --example quickstart -- worker --access-file access.json   # be a cluster's worker
//! ```

use std::process::ExitCode;

use drover::{Graph, LocalCluster, Registry, TaskFn};

/// `n * n`.
struct Square;
impl TaskFn for Square {
    const NAME: &'static str = "square";
    type Params = u64;
    type Inputs = ();
    type Output = u64;
}

/// The sum of its inputs.
struct Total;
impl TaskFn for Total {
    const NAME: &'static str = "total";
    type Params = ();
    type Inputs = Vec<u64>;
    type Output = u64;
}

/// What this program's workers run.
fn registry() -> Registry {
    let mut registry = Registry::with_builtins();
    registry.register::<Square>(|_ctx, n, ()| Ok(n * n));
    registry.register::<Total>(|_ctx, (), squares| {
        squares
            .iter()
            .try_fold(0u64, |sum, x| sum.checked_add(*x))
            .ok_or_else(|| "the total overflows u64".into())
    });
    registry
}

#[tokio::main]
async fn main() -> ExitCode {
    // Started as `quickstart worker --access-file F ...`: be a worker, and nothing else.
    if let Some(code) = drover::run_as_worker_if_asked(registry) {
        return code;
    }
    match run().await {
        Ok(total) => {
            println!("sum of squares 1..=10 = {total}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<u64, Box<dyn std::error::Error>> {
    let mut g = Graph::new();
    let squares: Vec<_> = (1..=10u64)
        .map(|n| g.call::<Square, _>(&n, ()).add())
        .collect();
    let total = g.call::<Total, _>(&(), squares).key("total").add();

    let cluster = LocalCluster::start_processes(2, &std::env::current_exe()?).await?;
    let client = cluster.client().await?;
    let mut run = client.submit(&g).await?;
    let value = run.get(&g, total).await?;
    client.close();
    cluster.shutdown().await;
    Ok(value)
}
