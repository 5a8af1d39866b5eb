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

use drover::{ClusterSpec, Graph, LocalCluster, Registry, Shared, TaskFn};

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
    r.register::<SquareWithIndex, String>(|_, (idx, x), (table,)| {
        let offset = table.get(idx).ok_or(format!("index {idx} out of range"))?;
        Ok(x * x + offset)
    });
    r
}

fn main() -> ExitCode {
    if let Some(code) = drover::run_as_worker_if_asked(registry) {
        return code;
    }
    drover_protocol::logging::init("warn");
    let mut access_file = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("--access-file", Some(f)) => access_file = Some(f),
            _ => {
                eprintln!("usage: shared_objects [--access-file F] | shared_objects worker --access-file F");
                return ExitCode::from(2);
            }
        }
    }
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    match rt.block_on(run(access_file)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(access_file: Option<String>) -> Result<(), String> {
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

    let cluster = match &access_file {
        Some(_) => None,
        None => {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            Some(
                LocalCluster::start_processes(&ClusterSpec::plain(3, 2), &exe)
                    .await
                    .map_err(|e| e.to_string())?,
            )
        }
    };
    let client = match (&cluster, &access_file) {
        (Some(c), _) => c.client().await,
        (None, Some(f)) => drover::Client::connect(f).await,
        (None, None) => unreachable!(),
    }
    .map_err(|e| e.to_string())?;
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
    client.close();
    if let Some(c) = cluster {
        c.shutdown().await;
    }
    if loads.len() > users.len().max(3) || per_copy == 0 {
        return Err("the shared object was not sent once per worker".into());
    }
    Ok(())
}
