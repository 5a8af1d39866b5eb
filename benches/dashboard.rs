//! What watching costs: no-op throughput on a local cluster (2 workers x 1 thread, the
//! dashboard served) with nobody watching, and with a "browser" connected: a client reading
//! the dashboard's event stream (a status and the new task-stream bars every second) and
//! scraping `/metrics` every second. Rounds alternate, so the machine's noise hits both alike;
//! the medians and their ratio are printed.
//!
//! Run: `cargo bench --bench dashboard` (add `-- quick` for a tenth of the tasks).

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use drover::{ClusterSpec, Graph, LocalCluster, Registry};

fn independent(n: usize, round: usize) -> Graph {
    let mut g = Graph::with_capacity(n, 0);
    for i in 0..n {
        g.task("noop", &()).key(format!("r{round}-{i}")).add();
    }
    g
}

/// A watcher: follows `/api/events` and scrapes `/metrics` every second until `stop`;
/// counts the bytes it read.
fn watch(addr: String, stop: Arc<AtomicBool>, read: Arc<AtomicU64>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut events = std::net::TcpStream::connect(&addr).expect("dashboard");
        events
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        write!(events, "GET /api/events HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut last_scrape = Instant::now() - Duration::from_secs(2);
        while !stop.load(Ordering::Relaxed) {
            if let Ok(n) = events.read(&mut buf) {
                read.fetch_add(n as u64, Ordering::Relaxed);
            }
            if last_scrape.elapsed() >= Duration::from_secs(1) {
                last_scrape = Instant::now();
                let mut m = std::net::TcpStream::connect(&addr).unwrap();
                write!(
                    m,
                    "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
                )
                .unwrap();
                let mut body = Vec::new();
                let _ = m.read_to_end(&mut body);
                read.fetch_add(body.len() as u64, Ordering::Relaxed);
            }
        }
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The time the scheduler's event loop spends making the status the pages show, for a graph
/// of `n` tasks (a chain of layers of 100) with 100 workers: (ms per status, ms per monitor
/// status with JSON).
fn status_cost(n: usize) -> (f64, f64) {
    use drover_protocol::{FromClient, WorkerHello};
    use drover_scheduler::core::{Core, Event};
    let mut core = Core::new();
    let monitor = drover_scheduler::monitor::Monitor::new(0);
    for w in 0..100u32 {
        core.handle(Event::WorkerJoined {
            id: w,
            hello: WorkerHello {
                name: format!("w{w}"),
                resources: vec![(format!("pool-P{}", w % 4), 1.0)],
                nthreads: 4,
                peer_addr: "127.0.0.1:1".parse().unwrap(),
                peer_cert: vec![],
                data_addr: None,
                functions: vec!["noop".into()],
            },
        });
    }
    core.handle(Event::ClientJoined { id: 0 });
    let mut g = Graph::with_capacity(n, n);
    let mut prev: Vec<drover::Handle<drover::Untyped>> = Vec::new();
    for layer in 0..n / 100 {
        let mut this = Vec::with_capacity(100);
        for i in 0..100 {
            let mut t = g.task("noop", &()).key(format!("t{layer}-{i}"));
            if let Some(&p) = prev.get(i) {
                t = t.input(p);
            }
            this.push(t.add());
        }
        prev = this;
    }
    let json = serde_json::to_string(&g.to_file()).unwrap();
    core.handle(Event::Client(
        0,
        FromClient::Submit {
            run: 1,
            graph_json: json,
            wants: vec![],
        },
    ));
    let rounds = 5;
    let start = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(core.status());
    }
    let plain = start.elapsed().as_secs_f64() * 1000.0 / rounds as f64;
    let start = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(serde_json::to_string(&monitor.status(&core, 1)).unwrap());
    }
    let full = start.elapsed().as_secs_f64() * 1000.0 / rounds as f64;
    (plain, full)
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let big = if quick { 100_000 } else { 1_000_000 };
    let (plain, full) = status_cost(big);
    println!(
        "status of {big} tasks, 100 workers: {plain:.1} ms in the core, {full:.1} ms with the monitor's part as JSON (made at most every 500 ms, shared by every page)"
    );
    let n = if quick { 10_000 } else { 100_000 };
    let rounds = if quick { 3 } else { 5 };
    let cluster = LocalCluster::start(
        ClusterSpec::plain(2, 1).with_dashboard(),
        Registry::with_builtins(),
    )
    .await
    .unwrap();
    let addr = cluster
        .access()
        .dashboard
        .clone()
        .expect("the dashboard is served")
        .trim_start_matches("http://")
        .to_owned();
    let client = cluster.client().await.unwrap();
    // Warm up.
    let mut run = client
        .submit_with(&independent(n / 10, 999), &[])
        .await
        .unwrap();
    run.wait().await.unwrap();
    let (mut alone, mut watched) = (Vec::new(), Vec::new());
    let read = Arc::new(AtomicU64::new(0));
    for round in 0..rounds * 2 {
        let watching = round % 2 == 1;
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = watching.then(|| watch(addr.clone(), stop.clone(), read.clone()));
        if watching {
            // The stream is open before the work starts.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let g = independent(n, round);
        let start = Instant::now();
        let mut run = client.submit_with(&g, &[]).await.unwrap();
        let report = run.wait().await.unwrap();
        let rate = n as f64 / start.elapsed().as_secs_f64();
        assert_eq!(report.finished, n);
        stop.store(true, Ordering::Relaxed);
        if let Some(w) = watcher {
            w.join().unwrap();
            watched.push(rate);
        } else {
            alone.push(rate);
        }
    }
    let (a, w) = (median(&mut alone), median(&mut watched));
    println!(
        "{n} no-op tasks, median of {rounds} rounds each: {a:.0} tasks/s with nobody watching, {w:.0} tasks/s with a browser connected ({:.3}x; {:.1} KiB read by the browser)",
        w / a,
        read.load(Ordering::Relaxed) as f64 / 1024.0
    );
    client.close();
    cluster.shutdown().await;
}
