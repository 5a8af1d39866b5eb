//! Once-cell overhead: 100,000 tiny typed tasks that each take a once-cell against the same
//! tasks without one, on a local cluster of 2 workers with 1 thread each, over real QUIC on
//! loopback. Runs plain and cell graphs alternately, four of each (fresh keys each time), and reports
//! the best of each,
//! and the ratio (target: cell tasks at least 0.8x as fast).
//!
//! Run: `cargo bench --bench once_cells` (add `-- quick` for a tenth of the size).

use std::time::Instant;

use drover::{ClusterSpec, Graph, Loader, LocalCluster, PerWorker, Registry, TaskFn};

struct Model {
    bias: u64,
}

struct LoadModel;
impl Loader for LoadModel {
    const NAME: &'static str = "load_model";
    type Params = u64;
    type Object = Model;
}

struct WithModel;
impl TaskFn for WithModel {
    const NAME: &'static str = "with_model";
    type Params = u64;
    type Inputs = (PerWorker<Model>,);
    type Output = u64;
}

struct Plain;
impl TaskFn for Plain {
    const NAME: &'static str = "plain";
    type Params = u64;
    type Inputs = ();
    type Output = u64;
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register_loader::<LoadModel>(|_, bias| Ok(Model { bias }));
    r.register::<WithModel>(|_, x, (m,)| Ok(x + m.bias));
    r.register::<Plain>(|_, x, ()| Ok(x + 1));
    r
}

fn graph(n: usize, round: usize, cell: bool) -> Graph {
    let mut g = Graph::with_capacity(n + 1, n);
    if cell {
        let m = g.once::<LoadModel>(&1).key(format!("model-{round}")).add();
        for i in 0..n {
            g.call::<WithModel, _>(&(i as u64), m)
                .key(format!("c{round}-{i}"))
                .add();
        }
    } else {
        for i in 0..n {
            g.call::<Plain, _>(&(i as u64), ())
                .key(format!("p{round}-{i}"))
                .add();
        }
    }
    g
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let n = if quick { 10_000 } else { 100_000 };
    let cluster = LocalCluster::start(&ClusterSpec::plain(2, 1), registry())
        .await
        .unwrap();
    let client = cluster.client().await.unwrap();
    let (mut best_plain, mut best_cell) = (f64::MAX, f64::MAX);
    // `only-plain` / `only-cell` run one kind (for profiling).
    let only = |k: &str| std::env::args().any(|a| a == format!("only-{k}"));
    for round in 0..8 {
        let cell = round % 2 == 1;
        if (cell && only("plain")) || (!cell && only("cell")) {
            continue;
        }
        let g = graph(n, round, cell);
        let start = Instant::now();
        let mut run = client.submit_with(&g, &[]).await.unwrap();
        let accepted = start.elapsed().as_secs_f64();
        let report = run.wait().await.unwrap();
        let secs = start.elapsed().as_secs_f64();
        assert_eq!((report.finished, report.failed), (n, 0));
        if cell {
            assert!(report.loads <= 2, "{} loads", report.loads);
            best_cell = best_cell.min(secs);
        } else {
            best_plain = best_plain.min(secs);
        }
        println!(
            "{n} tasks {}: {secs:.2} s ({accepted:.2} s to accepted), {:.0} tasks/s",
            if cell { "with a once-cell" } else { "plain" },
            n as f64 / secs
        );
    }
    if only("plain") || only("cell") {
        return;
    }
    println!(
        "best: plain {:.0} tasks/s, with a once-cell {:.0} tasks/s: ratio {:.2} (target >= 0.8)",
        n as f64 / best_plain,
        n as f64 / best_cell,
        best_plain / best_cell
    );
    client.close();
    cluster.shutdown().await;
}
