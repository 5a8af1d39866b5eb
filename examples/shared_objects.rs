//! MPIRE's shared objects, ported: a large read-only object the client sends once, that each
//! worker process receives once (not once per task), decodes once, and shares between its tasks
//! as an `Arc`.
//!
//! ```sh
//! cargo run --example shared_objects                  # 3 worker processes, locally
//! cargo run --example shared_objects -- --access-file access.json
//! cargo run --example shared_objects -- worker --access-file access.json
//! ```
//!
//! (MPIRE's shared arrays are also written to by the workers; across processes and machines
//! Drover's tasks return their results instead, and the shared object stays read-only.)

use std::process::ExitCode;

use drover::program::Session;
use drover::{ClusterSpec, Graph, Registry, Shared, TaskFn};

/// An offset table too big to send with every task.
type Table = Vec<f32>;
const TABLE_LEN: usize = 250_000;
const TASKS: usize = 100;

/// MPIRE's `square_with_index(shared_objects, idx, x)`: x² plus the table's entry.
struct SquareWithIndex;
impl TaskFn for SquareWithIndex {
    const NAME: &'static str = "square_with_index";
    type Params = (usize, f32);
    type Inputs = (Shared<Table>,);
    type Output = f32;
}

fn registry() -> Registry {
    let mut r = Registry::with_builtins();
    r.register::<SquareWithIndex>(|_, (idx, x), (table,)| {
        let offset = table.get(idx).ok_or(format!("index {idx} out of range"))?;
        Ok(x * x + offset)
    });
    r
}

fn main() -> ExitCode {
    drover::program::main_with_access_file(
        "shared_objects [--access-file F] | shared_objects worker --access-file F",
        registry,
        run,
    )
}

async fn run(access_file: Option<std::path::PathBuf>) -> Result<(), String> {
    let table: Table = (0..TABLE_LEN).map(|i| (i % 7) as f32).collect();
    let mut g = Graph::new();
    let shared = g.share(&table).key("offsets").add();
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            g.call::<SquareWithIndex, _>(&(i * 997, i as f32), shared)
                .key(format!("square-{i}"))
                .add()
        })
        .collect();

    let session =
        Session::connect_or_start(access_file.as_deref(), &ClusterSpec::plain(3, 2)).await?;
    let client = &session.client;
    let mut run = client.submit(&g).await.map_err(|e| e.to_string())?;
    let report = run.wait().await.map_err(|e| e.to_string())?;
    for (i, h) in tasks.iter().enumerate() {
        let got = run.get(&g, *h).await.map_err(|e| e.to_string())?;
        let want = (i * i) as f32 + table[i * 997];
        if got != want {
            return Err(format!("square-{i} is {got}, expected {want}"));
        }
    }
    let loads: Vec<_> = report.loads_of("offsets").collect();
    let sent: u64 = loads.iter().map(|l| l.moved_bytes).sum();
    let per_copy = loads.first().map_or(0, |l| l.moved_bytes);
    let users: std::collections::BTreeSet<_> = report
        .tasks
        .iter()
        .filter(|t| t.kind == "task")
        .filter_map(|t| t.worker.clone())
        .collect();
    println!(
        "{TASKS} tasks ok on {} workers; the shared table ({per_copy} bytes on the wire) was sent {} times: {sent} bytes in all (once per task would be {})",
        users.len(),
        loads.len(),
        per_copy * TASKS as u64
    );
    drop(run);
    session.finish().await;
    if loads.len() > users.len().max(3) || per_copy == 0 {
        return Err("the shared object was not sent once per worker".into());
    }
    Ok(())
}
