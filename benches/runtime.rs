//! End-to-end runtime benchmarks on a local cluster of 2 workers with 1 thread each, over real
//! QUIC on loopback (scheduler, workers and client in this process):
//!
//! 1. 100,000 independent `noop` tasks: tasks per second; and the scheduler core's memory per
//!    task, measured by feeding the same graph to a bare `Core` under a counting allocator.
//!    1b. The same, with all 100,000 kept as sinks and their outputs fetched by the client (in
//!    batches, one request per worker per batch): tasks per second end to end, and the ratio
//!    to 1.
//!    1c. 20 clients at once, half their keys shared.
//! 2. A chain of 10,000 dependent `noop` tasks: microseconds per hop.
//! 3. A 256 MiB result made on one worker and consumed on the other: MB/s.
//! 4. A DAG of 1,000,000 tasks: from submit to its first task's end.
//!
//! Run: `cargo bench --bench runtime` (add `-- quick` for a tenth of the sizes, `-- hops` for 1
//! and 2 alone, `-- chain` for 2, `-- transfer` for 3 alone, `-- graph` for 4 alone). Each figure
//! is printed with a baseline measured in the same run (a plain loop for per-task overhead, a
//! loopback TCP round trip for a hop, a loopback TCP copy for a transfer), since the machines
//! are shared and noisy.

use std::time::Instant;

use drover::{ClusterSpec, Graph, LocalCluster, Registry};
use drover_protocol::FromClient;
use drover_scheduler::core::{Core, Event};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{live_bytes, Counting};

#[global_allocator]
static ALLOC: Counting = Counting;

fn independent(n: usize) -> Graph {
    let mut g = Graph::with_capacity(n, 0);
    for i in 0..n {
        g.task("noop", &()).key(format!("n{i}")).add();
    }
    g
}

fn chain(n: usize) -> Graph {
    let mut g = Graph::with_capacity(n, n);
    let mut prev = g.task("noop", &()).key("c0").add();
    for i in 1..n {
        prev = g.task("concat", &()).key(format!("c{i}")).input(prev).add();
    }
    g
}

/// A DAG of `n` tasks, each (but the first two) reading the one before it and one about half
/// way back.
fn wide_dag(n: usize) -> Graph {
    let mut g = Graph::with_capacity(n, 2 * n);
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let mut b = g.task("concat", &()).key(format!("g{i}"));
        if i >= 2 {
            b = b.input(handles[i - 1]).input(handles[i / 2]);
        }
        handles.push(b.add());
    }
    g
}

/// Bytes the scheduler core holds per task for a graph of `n` independent tasks.
fn core_bytes_per_task(n: usize) -> f64 {
    let json = serde_json::to_string(&independent(n).to_file()).unwrap();
    let before = live_bytes();
    let mut core = Core::new();
    core.handle(Event::ClientJoined { id: 0 });
    let out = core.handle(Event::Client(
        0,
        FromClient::Submit {
            run: 1,
            graph_json: json,
            wants: vec![],
        },
    ));
    drop(out);
    let after = live_bytes();
    assert_eq!(core.stats().tasks, n);
    (after - before) as f64 / n as f64
}

/// The scheduler core's heap before, with 20 clients' graphs of `n` tasks each (half the keys
/// shared), and after they all left: (before, loaded, after) in bytes.
fn core_memory_with_clients(n: usize) -> (usize, usize, usize) {
    let before = live_bytes();
    let mut core = Core::new();
    for c in 0..20u32 {
        core.handle(Event::ClientJoined { id: c });
        let mut g = Graph::with_capacity(n, 0);
        for i in 0..n / 2 {
            g.task("noop", &()).key(format!("shared-{i}")).add();
            g.task("noop", &()).key(format!("c{c}-{i}")).add();
        }
        let json = serde_json::to_string(&g.to_file()).unwrap();
        drop(core.handle(Event::Client(
            c,
            FromClient::Submit {
                run: 1,
                graph_json: json,
                wants: vec![],
            },
        )));
    }
    let loaded = live_bytes();
    for c in 0..20u32 {
        drop(core.handle(Event::ClientLeft { id: c }));
    }
    assert_eq!(core.stats().tasks, 0);
    let after = live_bytes();
    drop(core);
    (before, loaded, after)
}

/// Baseline for the transfer: `bytes` copied over a plain loopback TCP connection in this
/// process (one writer thread, one reader), in MB/s.
fn tcp_copy_mb_s(bytes: usize) -> f64 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let writer = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let chunk = vec![7u8; 1 << 20];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            s.write_all(&chunk[..n]).unwrap();
            left -= n;
        }
    });
    let (mut r, _) = listener.accept().unwrap();
    let start = Instant::now();
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0;
    while got < bytes {
        let n = r.read(&mut buf).unwrap();
        assert!(n > 0);
        got += n;
    }
    let secs = start.elapsed().as_secs_f64();
    writer.join().unwrap();
    bytes as f64 / secs / 1e6
}

/// Baseline for a dependent hop: the round trip of a small message over loopback TCP, in
/// microseconds (the median of many).
fn tcp_round_trip_us() -> f64 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut b = [0u8; 64];
        while s.read_exact(&mut b).is_ok() {
            if s.write_all(&b).is_err() {
                break;
            }
        }
    });
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut times = Vec::with_capacity(2000);
    let mut b = [1u8; 64];
    for _ in 0..2000 {
        let t = Instant::now();
        s.write_all(&b).unwrap();
        s.read_exact(&mut b).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    drop(s);
    echo.join().unwrap();
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

/// Baseline for per-task overhead: the stock `noop` body called `n` times in a plain loop
/// (what a task costs with no scheduler), in calls per second.
fn plain_loop_per_s(n: usize) -> f64 {
    let registry = Registry::with_builtins();
    let noop = registry.get("noop").expect("the noop built-in");
    let ctx = drover::TaskContext::standalone("noop");
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(noop(&ctx, None, &[]).unwrap());
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// 4: a DAG of `n` tasks (2 inputs each), from submit to the first task's event; baseline,
/// validating it and running the pools pass here (what the scheduler does too before anything
/// can start). The run is dropped after its first task (its client then leaves it).
async fn first_task_of_big_graph(client: &drover::Client, n: usize) {
    let g = wide_dag(n);
    let start = Instant::now();
    let planned = drover::Planned::new(g.clone()).unwrap();
    let local = start.elapsed().as_secs_f64();
    drop(planned);
    let start = Instant::now();
    let mut run = client.submit_with(&g, &[]).await.unwrap();
    let accepted = start.elapsed().as_secs_f64();
    loop {
        match run.next_event().await {
            Some(drover::RunEvent::Task(_)) => break,
            Some(_) => {}
            None => panic!("the big graph ended before any task"),
        }
    }
    let first = start.elapsed().as_secs_f64();
    println!(
        "{n}-task graph: submit returned after {accepted:.2} s, the first task ended {first:.2} s after submit; baseline, validate + pools pass in this process: {local:.2} s ({:.2}x of it)",
        first / local
    );
}

/// Section 1, `n` independent `noop` tasks: prints tasks/s against the noop body in a plain
/// loop; returns the seconds taken.
async fn independent_tasks(client: &drover::Client, n_indep: usize) -> f64 {
    let g = independent(n_indep);
    let heap_before = live_bytes();
    let start = Instant::now();
    let mut run = client.submit_with(&g, &[]).await.unwrap();
    let heap_submitted = live_bytes();
    let report = run.wait().await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(report.finished, n_indep);
    let plain = plain_loop_per_s(n_indep);
    println!(
        "{n_indep} independent noop tasks: {:.2} s, {:.0} tasks/s (process heap +{:.1} MiB at submit); baseline, the noop body in a plain loop: {:.0} calls/s, so a task costs {:.0}x a call",
        secs,
        n_indep as f64 / secs,
        (heap_submitted as f64 - heap_before as f64) / (1 << 20) as f64,
        plain,
        plain / (n_indep as f64 / secs)
    );
    secs
}

/// Section 2, a chain of `n` dependent tasks: prints microseconds per hop against a loopback
/// TCP round trip.
async fn chain_of_tasks(client: &drover::Client, n_chain: usize) {
    let g = chain(n_chain);
    let start = Instant::now();
    let mut run = client.submit_with(&g, &[]).await.unwrap();
    let report = run.wait().await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(report.finished, n_chain);
    let rtt = tcp_round_trip_us();
    println!(
        "chain of {n_chain} dependent tasks: {:.2} s, {:.1} us per hop; baseline, a loopback TCP round trip: {:.1} us, so a hop is {:.1} round trips",
        secs,
        secs * 1e6 / n_chain as f64,
        rtt,
        secs * 1e6 / n_chain as f64 / rtt
    );
}

/// The bench's local cluster (2 workers x 1 thread, the built-ins) and a client of it.
async fn plain_cluster() -> (LocalCluster, drover::Client) {
    let cluster = LocalCluster::start(&ClusterSpec::plain(2, 1), Registry::with_builtins())
        .await
        .unwrap();
    let client = cluster.client().await.unwrap();
    (cluster, client)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    // `transfer`: only the fill and the transfer (e.g. to profile them).
    let transfer_only = std::env::args().any(|a| a == "transfer");
    let scale = if quick { 10 } else { 1 };
    let (n_indep, n_chain, big) = (100_000 / scale, 10_000 / scale, (256usize << 20) / scale);
    let n_graph = 1_000_000 / scale;

    // `hops`: only the independent tasks (1) and the chain (2); `chain`: only the chain. E.g. to
    // profile them.
    let chain_only = std::env::args().any(|a| a == "chain");
    if chain_only || std::env::args().any(|a| a == "hops") {
        let (cluster, client) = plain_cluster().await;
        if !chain_only {
            independent_tasks(&client, n_indep).await;
        }
        chain_of_tasks(&client, n_chain).await;
        drop(client);
        cluster.shutdown().await;
        return;
    }
    // `graph`: only the big graph's submission (4), e.g. to profile it.
    if std::env::args().any(|a| a == "graph") {
        let (cluster, client) = plain_cluster().await;
        first_task_of_big_graph(&client, n_graph).await;
        drop(client);
        cluster.shutdown().await;
        return;
    }
    if !transfer_only {
        println!(
            "scheduler core memory: {:.0} bytes per task ({} independent tasks)",
            core_bytes_per_task(n_indep),
            n_indep
        );
        let (before, loaded, after) = core_memory_with_clients(n_indep / 10);
        println!(
            "scheduler core with 20 clients x {} tasks (half shared): heap +{:.1} MiB loaded, +{:.2} MiB after all left",
            n_indep / 10,
            (loaded - before) as f64 / (1 << 20) as f64,
            (after as f64 - before as f64) / (1 << 20) as f64
        );

        let (cluster, client) = plain_cluster().await;

        // 1. Independent tasks.
        let secs = independent_tasks(&client, n_indep).await;

        // 1b. The same number of sinks, each output fetched by the client.
        let g = independent(n_indep);
        let keys: Vec<String> = (0..n_indep).map(|i| format!("n{i}")).collect();
        let start = Instant::now();
        let mut run = client.submit_with(&g, &keys).await.unwrap();
        let mut fetched = 0usize;
        run.fetch_outputs(&keys, |_, r| {
            r.expect("output");
            fetched += 1;
        })
        .await
        .unwrap();
        let sink_secs = start.elapsed().as_secs_f64();
        assert_eq!(fetched, n_indep);
        drop(run);
        println!(
            "{n_indep} sinks with their outputs fetched: {:.2} s, {:.0} tasks/s end to end ({:.2}x the time without fetching)",
            sink_secs,
            n_indep as f64 / sink_secs,
            sink_secs / secs
        );
        client.release(keys).unwrap();

        // 1c. Load: 20 clients at once, 10,000 tasks each (half the keys shared by all), then all
        //     leave. Heap is measured before, at the end, and after they left.
        let heap_start = live_bytes();
        let n_per_client = n_indep / 10;
        let start = Instant::now();
        let mut clients = tokio::task::JoinSet::new();
        for c in 0..20 {
            let client = cluster.client().await.unwrap();
            clients.spawn(async move {
                let mut g = Graph::with_capacity(n_per_client, 0);
                for i in 0..n_per_client / 2 {
                    g.task("noop", &()).key(format!("shared-{i}")).add();
                    g.task("noop", &()).key(format!("c{c}-{i}")).add();
                }
                let mut run = client.submit_with(&g, &[]).await.unwrap();
                let report = run.wait().await.unwrap();
                assert_eq!(report.finished, n_per_client);
                client.close();
            });
        }
        while let Some(r) = clients.join_next().await {
            r.unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        // Departures are noticed (and their tables forgotten) within moments: measured after.
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        let heap_end = live_bytes();
        println!(
            "20 clients x {n_per_client} tasks (half shared): {:.2} s; process heap {:.1} MiB before, {:.1} MiB after all left (+{:.0} bytes per distinct task kept)",
            secs,
            heap_start as f64 / (1 << 20) as f64,
            heap_end as f64 / (1 << 20) as f64,
            (heap_end as f64 - heap_start as f64) / (n_per_client as f64 / 2.0 * 21.0)
        );

        // 2. A chain.
        chain_of_tasks(&client, n_chain).await;

        // 4. The first task of a big graph.
        first_task_of_big_graph(&client, n_graph).await;
        drop(client);
        cluster.shutdown().await;
    }

    // 3. A big result moved between two workers. The same graph runs twice on a cluster with
    //    one worker in pool P and one in Q: once with the consumer in P (no move), once in Q
    //    (the result crosses); the difference in wall time is the transfer.
    let cluster = LocalCluster::start(
        &ClusterSpec::parse("P=1,Q=1", 1).unwrap(),
        Registry::with_builtins(),
    )
    .await
    .unwrap();
    let client = cluster.client().await.unwrap();
    let timed = |fill: &'static str, consumer_pool: &'static str| {
        let client = client.clone();
        async move {
            let mut g = Graph::new();
            let make = g
                .task("bytes", &serde_json::json!({"n": big, "fill": fill}))
                .key(format!("big-{fill}"))
                .pool("P")
                .add();
            g.task("len", &())
                .key(format!("len-{fill}"))
                .input(make)
                .pool(consumer_pool)
                .add();
            let start = Instant::now();
            let mut run = client.submit_with(&g, &[]).await.unwrap();
            let report = run.wait().await.unwrap();
            (start.elapsed().as_secs_f64(), report.bytes_between_workers)
        }
    };
    // The `bytes` built-in alone, as the worker timed it: the first fill touches fresh memory;
    // later ones reuse the buffers of results dropped since (the recycling pool).
    let mut fills = Vec::new();
    for i in 0..4 {
        let mut g = Graph::new();
        g.task("bytes", &serde_json::json!({"n": big, "fill": "f"}))
            .key(format!("fill-{i}"))
            .pool("P")
            .add();
        let mut run = client.submit_with(&g, &[]).await.unwrap();
        let report = run.wait().await.unwrap();
        fills.push(report.tasks[0].duration_ms);
    }
    let recycled = fills[1..].iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "`bytes` filling {} MiB: {:.1} ms on fresh memory, {:.1} ms on a recycled buffer (best of 3; {:.2}x)",
        big >> 20,
        fills[0],
        recycled,
        fills[0] / recycled
    );
    timed("w", "Q").await; // warm-up: connections, allocator
    let (local, moved_local) = timed("l", "P").await;
    let (remote, moved_remote) = timed("r", "Q").await;
    assert_eq!((moved_local, moved_remote), (0, big as u64));
    let transfer = (remote - local).max(1e-6);
    let tcp = tcp_copy_mb_s(big);
    println!(
        "{} MiB result: consumer on the same worker {:.3} s, on the other worker {:.3} s -> transfer {:.3} s, {:.0} MB/s; baseline, a plain loopback TCP copy: {:.0} MB/s ({:.2}x of it)",
        big >> 20,
        local,
        remote,
        transfer,
        big as f64 / transfer / 1e6,
        tcp,
        big as f64 / transfer / 1e6 / tcp
    );
    cluster.shutdown().await;
}
