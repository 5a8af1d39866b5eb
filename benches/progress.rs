//! Durable progress on a scheduler in this process, over real QUIC on loopback, its store a
//! redb file in a temporary state dir with every transaction synced to disk:
//!
//! 1. Claim and commit 100,000 keys with 1 client, commits queued and sent with the next
//!    batch of claims ([`Claim::done_later`], what `drover foreach` does): keys per second.
//! 2. The same with 20 clients at once over the same keys (they share one key list).
//! 3. Both again with the keys shuffled (each client its own seed; the list keeps the first
//!    one's order): random keys cost the store more pages per transaction.
//! 4. Commits waited for one by one ([`Claim::done`]: a round trip and a sync each, shared by
//!    whatever else the store's thread found queued), with 1 and 20 clients: keys per second
//!    and the commit latency's p50 and p99.
//! 5. The store's size per done key.
//!
//! Every key is committed exactly once per namespace; the bench checks it. Run: `cargo bench
//! --bench progress` (add `-- quick` for a tenth of the sizes).
//!
//! [`Claim::done_later`]: drover::progress::Claim::done_later
//! [`Claim::done`]: drover::progress::Claim::done

use std::sync::Arc;
use std::time::{Duration, Instant};

use drover::progress::{ClaimOptions, Progress};
use drover::{AccessFile, Client};
use drover_scheduler::server::{Scheduler, SchedulerConfig};

/// How the clients commit.
#[derive(Clone, Copy, PartialEq)]
enum Commit {
    /// Queued, sent with the next batch of claims.
    Batched,
    /// Waited for, one by one.
    Each,
}

/// What one client did: keys committed, and each waited-for commit's latency.
struct Done {
    committed: usize,
    latencies: Vec<Duration>,
}

async fn client_loop(
    access: AccessFile,
    namespace: String,
    keys: Arc<Vec<String>>,
    seed: Option<u64>,
    commit: Commit,
) -> Done {
    let client = Client::connect_with(&access).await.expect("connect");
    let progress = Progress::remote(&client);
    let options = ClaimOptions {
        batch: 256,
        shuffle: seed,
        ..ClaimOptions::default()
    };
    let mut claims = progress.claims(&namespace, keys.iter().cloned(), options);
    let mut latencies = Vec::new();
    while let Some(claim) = claims.next().await {
        let claim = claim.expect("claim");
        match commit {
            Commit::Batched => claim.done_later(None),
            Commit::Each => {
                let start = Instant::now();
                claim.done(None).await.expect("commit");
                latencies.push(start.elapsed());
            }
        }
    }
    let summary = claims.finish().await.expect("finish");
    let committed = match commit {
        Commit::Batched => summary.committed.len(),
        Commit::Each => latencies.len(),
    };
    client.close();
    Done {
        committed,
        latencies,
    }
}

/// Runs `clients` loops over `n` keys of a fresh namespace; prints and returns keys/s.
async fn scenario(
    access: &AccessFile,
    name: &str,
    n: usize,
    clients: usize,
    commit: Commit,
    shuffled: bool,
) -> f64 {
    let keys: Arc<Vec<String>> = Arc::new((0..n).map(|i| format!("key-{i:06}")).collect());
    let start = Instant::now();
    let loops: Vec<_> = (0..clients)
        .map(|c| {
            tokio::spawn(client_loop(
                access.clone(),
                name.to_owned(),
                keys.clone(),
                shuffled.then_some(c as u64 + 1),
                commit,
            ))
        })
        .collect();
    let mut committed = 0;
    let mut latencies = Vec::new();
    for l in loops {
        let d = l.await.expect("client loop");
        committed += d.committed;
        latencies.extend(d.latencies);
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(committed, n, "{name}: every key committed exactly once");
    let rate = n as f64 / secs;
    print!("{name:<28} {clients:>2} client(s) {n:>7} keys in {secs:>6.2} s: {rate:>9.0} keys/s");
    if !latencies.is_empty() {
        latencies.sort_unstable();
        let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
        print!(
            "; commit latency p50 {:.2} ms, p99 {:.2} ms",
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3
        );
    }
    println!();
    rate
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let scale = if quick { 10 } else { 1 };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let scheduler = Scheduler::start(SchedulerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            state_dir: dir.path().to_owned(),
            advertise: None,
            idle_timeout: Duration::from_secs(30),
            core: Default::default(),
            max_output: drover_progress::DEFAULT_MAX_OUTPUT,
            progress_store: None,
            strict_permissions: false,
            dashboard: None,
        })
        .await
        .expect("scheduler");
        let access = AccessFile::load(scheduler.access_path()).expect("access file");
        let n = 100_000 / scale;
        let one = scenario(&access, "batched", n, 1, Commit::Batched, false).await;
        let twenty = scenario(&access, "batched-20", n, 20, Commit::Batched, false).await;
        println!("20 clients / 1 client: {:.2}x", twenty / one);
        let one_s = scenario(&access, "batched-shuffled", n, 1, Commit::Batched, true).await;
        let twenty_s = scenario(&access, "batched-20-shuffled", n, 20, Commit::Batched, true).await;
        println!("20 clients / 1 client, shuffled: {:.2}x", twenty_s / one_s);
        let each = 10_000 / scale;
        scenario(&access, "each-waited", each, 1, Commit::Each, false).await;
        scenario(&access, "each-waited-20", each, 20, Commit::Each, false).await;
        let size = std::fs::metadata(dir.path().join("progress.redb"))
            .expect("store file")
            .len();
        let done = 4 * n + 2 * each;
        println!(
            "store: {size} bytes for {done} done keys: {:.0} bytes per key",
            size as f64 / done as f64
        );
        scheduler.shutdown().await;
    });
}
