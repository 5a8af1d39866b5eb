//! Runs the deterministic cluster simulation over many seeds, or replays one.
//!
//! ```text
//! cargo bench --bench simulate -- --seeds 100000 [--first N]
//! cargo bench --bench simulate -- --seed N --trace
//! ```

#[path = "../tests/sim/mod.rs"]
mod sim;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let trace = args.iter().any(|a| a == "--trace");
    if let Some(seed) = value("--seed") {
        match sim::simulate(seed, trace) {
            Ok(o) => println!("seed {seed}: ok: {o:?}"),
            Err(f) => {
                for line in &f.trace {
                    println!("{line}");
                }
                println!("{f}");
                std::process::exit(1);
            }
        }
        return;
    }
    let seeds = value("--seeds").unwrap_or(10_000);
    let first = value("--first").unwrap_or(0);
    let started = std::time::Instant::now();
    let (totals, failures) = sim::simulate_many(first, seeds);
    for f in &failures {
        println!("{f}");
    }
    let failed: Vec<u64> = failures.iter().map(|f| f.seed).collect();
    println!(
        "{seeds} seeds in {:.1} s: {} failed {:?}; {} steps, {} runs checked, {} abandoned, {} refused, {} jobs; faults {:?}; paths {:?}",
        started.elapsed().as_secs_f64(),
        failed.len(),
        &failed[..failed.len().min(20)],
        totals.steps,
        totals.runs_checked,
        totals.runs_abandoned,
        totals.rejected,
        totals.jobs,
        totals.faults,
        totals.paths
    );
    if !failed.is_empty() {
        std::process::exit(1);
    }
}
