//! The deterministic simulation of the whole cluster (see `sim/mod.rs`), over a fixed budget of
//! seeds: the scheduler core and worker cores under delays, reordering across connections,
//! lost connections, kills, partitions, retirements, recycling, departing clients and failing
//! tasks, with every invariant checked after every step. A failing seed prints the command
//! that replays it.

mod sim;

/// Seeds per CI run (a bench binary runs as many as you like).
const SEEDS: u64 = 2_000;

#[test]
fn the_cluster_survives_every_seed_of_the_budget() {
    let first = std::env::var("DROVER_SIM_FIRST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0u64);
    let (totals, failed) = sim::simulate_many(first, SEEDS);
    if let Some(f) = failed.first() {
        panic!("{} of {SEEDS} seeds failed; the first: {f}", failed.len());
    }
    eprintln!(
        "{SEEDS} seeds: {} steps, {} runs checked, {} abandoned, {} refused, {} jobs, faults {:?}, paths {:?}",
        totals.steps,
        totals.runs_checked,
        totals.runs_abandoned,
        totals.rejected,
        totals.jobs,
        totals.faults,
        totals.paths
    );
    assert!(
        u64::from(totals.runs_checked) > SEEDS,
        "the runs must mostly end and be checked"
    );
    for (path, what) in [
        (
            "pre-assigned",
            "tasks must be pre-assigned to the worker making their inputs",
        ),
        (
            "tasks given back",
            "recycled workers must give back tasks they did not start",
        ),
    ] {
        assert!(totals.paths.get(path).copied().unwrap_or(0) > 0, "{what}");
    }
}

#[test]
fn a_seed_replays_exactly() {
    // Step for step: the same trace twice (hash maps inside get other seeds each time, so an
    // outcome that depended on their order would show here).
    for seed in [3, 17, 101, 1234] {
        let a = sim::trace(seed);
        let b = sim::trace(seed);
        assert!(a.len() > 100, "seed {seed} traced {} steps", a.len());
        assert_eq!(a, b, "seed {seed} ran differently twice");
    }
}

#[test]
fn seeds_that_found_bugs_beyond_the_budget_pass() {
    // 14691: a task reported skipped whose consumer was later made again after a loss and
    // failed then as a founded suspicion (the check wrongly wanted the skipped task's value).
    for seed in [14_691] {
        if let Err(f) = sim::simulate(seed, false) {
            panic!("{f}");
        }
    }
}
