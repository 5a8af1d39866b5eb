//! The propagate-pools pass (DESIGN.md section 4): decides a pool for every free task, per
//! task, in linear time, and records why.
//!
//! 1. **Forward**, in topological order: a free task goes to the pool holding the most estimated
//!    input bytes. Inputs without a pool (free, any-pool, tie) don't vote: their bytes move
//!    whatever the choice. Each input counts once, however often it is listed.
//! 2. **Backward**, in reverse topological order: a free task that forward left without a pool
//!    goes to the pool of its consumers when all its consumers that have a pool share one, so it
//!    doesn't run elsewhere and then get shipped in; consumers in several pools make it a tie.
//! 3. **Ties stay free**: where two pools would save the same bytes, pinning gains nothing; the
//!    scheduler places the task at run time on real sizes.
//!
//! Pinned and any-pool tasks never change. No decision depends on the order tasks were added
//! or on hash order: the same graph always gets the same answer.

use crate::prefetch::{prefetch, AHEAD};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cost::{
    self, estimated_size, for_each_distinct_input, other_pools_consuming, TransferEstimate,
};
use crate::model::Place;
use crate::{optimise, Graph, PoolId, TaskId, Topology};

/// Why a task has the pool it has (or none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The user pinned it.
    Pinned,
    /// Forward: its pooled inputs' bytes were most in this pool.
    Forward,
    /// Backward: all its pooled consumers are in this pool.
    Backward,
    /// A once-cell it uses loads only in this pool: a hard restriction, like a pin.
    OnceCell,
    /// The user marked it any-pool.
    Any,
    /// Two or more pools were equally good: left free for the scheduler.
    Tie,
    /// Nothing pulled it anywhere.
    None,
    /// The optimising step moved it here: fewer bytes cross pools overall.
    Optimised,
}

/// Which rule places free tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pass {
    /// The linear forward and backward sweeps only (the rule before the optimiser).
    Linear,
    /// The linear sweeps, then the optimising refinement (the default).
    #[default]
    Optimised,
}

impl Pass {
    /// The lower-case name used on the command line and in graph files.
    pub fn as_str(self) -> &'static str {
        match self {
            Pass::Linear => "linear",
            Pass::Optimised => "optimised",
        }
    }
}

impl std::str::FromStr for Pass {
    type Err = String;

    fn from_str(s: &str) -> Result<Pass, String> {
        match s {
            "linear" => Ok(Pass::Linear),
            "optimised" | "optimized" => Ok(Pass::Optimised),
            other => Err(format!(
                "unknown pass {other:?}: expected \"linear\" or \"optimised\""
            )),
        }
    }
}

impl Reason {
    /// The lower-case name used in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Pinned => "pinned",
            Reason::Forward => "forward",
            Reason::Backward => "backward",
            Reason::OnceCell => "once_cell",
            Reason::Any => "any",
            Reason::Tie => "tie",
            Reason::None => "none",
            Reason::Optimised => "optimised",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The pass's result: per task, a pool (or none) and the reason; and the transfer estimate.
#[derive(Debug, Clone, PartialEq)]
pub struct Propagation {
    pools: Vec<Option<PoolId>>,
    reasons: Vec<Reason>,
    /// Estimated cross-pool bytes without the pass, after forward, after the whole pass.
    pub estimate: TransferEstimate,
}

impl Propagation {
    /// The pool of task `id` after the pass.
    #[inline]
    pub fn pool(&self, id: TaskId) -> Option<PoolId> {
        self.pools[id.index()]
    }

    /// The pool name of task `id` after the pass.
    pub fn pool_name<'g>(&self, graph: &'g Graph, id: TaskId) -> Option<&'g str> {
        self.pool(id).map(|p| graph.pool_name(p))
    }

    /// Why task `id` has its pool.
    #[inline]
    pub fn reason(&self, id: TaskId) -> Reason {
        self.reasons[id.index()]
    }

    /// Every task's pool, indexed by task id.
    pub fn pools(&self) -> &[Option<PoolId>] {
        &self.pools
    }
}

/// Runs the pass the graph asks for ([`Graph::pass`], by default the optimised one) over a
/// validated graph.
pub fn propagate_pools(graph: &Graph, topo: &Topology) -> Propagation {
    propagate_pools_with(graph, topo, graph.pass())
}

/// Runs the pass over a validated graph with rule `pass`. The linear sweeps are linear in
/// tasks plus edges; the refinement's work is budgeted to a multiple of that
/// ([`crate::optimise::WORK_PER_ELEMENT`]).
pub fn propagate_pools_with(graph: &Graph, topo: &Topology, pass: Pass) -> Propagation {
    propagate_within(graph, topo, pass, optimise::budget(graph))
}

/// [`propagate_pools_with`], the refinement spending at most `budget` work units.
fn propagate_within(graph: &Graph, topo: &Topology, pass: Pass, budget: u64) -> Propagation {
    let n = graph.len();
    let mut pools: Vec<Option<PoolId>> = Vec::with_capacity(n);
    let mut reasons: Vec<Reason> = Vec::with_capacity(n);
    let mut free: Vec<bool> = Vec::with_capacity(n);
    for id in graph.task_ids() {
        let (pool, reason) = match graph.place(id) {
            Place::Pinned(p) => (Some(p), Reason::Pinned),
            Place::Any => (None, Reason::Any),
            Place::Free => (None, Reason::None),
        };
        pools.push(pool);
        reasons.push(reason);
        // A once-cell without a pool loads wherever it is needed: nothing moves it.
        free.push(reason == Reason::None && !graph.is_once_cell(id));
    }
    // Users of a pooled once-cell run where it loads (validation refused conflicts). Most
    // graphs have none: then no task's inputs are looked at here.
    let pooled_cells = graph
        .task_ids()
        .any(|i| graph.is_once_cell(i) && matches!(graph.place(i), Place::Pinned(_)));
    for id in graph.task_ids().filter(|_| pooled_cells) {
        if !free[id.index()] {
            continue;
        }
        let cell_pool = graph.inputs(id).iter().find_map(|&i| match graph.place(i) {
            Place::Pinned(p) if graph.is_once_cell(i) => Some(p),
            _ => None,
        });
        if let Some(p) = cell_pool {
            pools[id.index()] = Some(p);
            reasons[id.index()] = Reason::OnceCell;
            free[id.index()] = false;
        }
    }
    // Dense per-task sizes: the passes below read them once per edge.
    let sizes = Sizes::of(graph);
    let mut scratch = Scratch::new(graph);
    forward(
        graph,
        topo,
        &sizes,
        &free,
        &mut scratch,
        &mut pools,
        &mut reasons,
    );
    backward(topo, &free, &mut pools, &mut reasons);
    let mut estimate = scratch.estimate(graph, topo, &sizes, &pools, &reasons);
    if pass == Pass::Optimised {
        drop(scratch);
        let mut problem = optimise::Problem::new(graph, topo, &pools, sizes.0, free);
        problem.refine(graph, topo.order(), budget);
        for (t, p) in problem.pools().enumerate() {
            if p != pools[t] {
                pools[t] = p;
                reasons[t] = Reason::Optimised;
            }
        }
        estimate.full = problem
            .objective_after(estimate.linear)
            .unwrap_or_else(|| cost::cross_pool_bytes(graph, topo, &pools));
    }
    Propagation {
        pools,
        reasons,
        estimate,
    }
}

/// Estimated output size per task, indexed by task id.
struct Sizes(Vec<u64>);

impl Sizes {
    fn of(graph: &Graph) -> Sizes {
        Sizes(graph.task_ids().map(|t| estimated_size(graph, t)).collect())
    }
}

/// Scratch reused by every step: the distinct-input marks.
struct Scratch {
    mark: Vec<u32>,
}

impl Scratch {
    fn new(graph: &Graph) -> Scratch {
        Scratch {
            mark: vec![u32::MAX; graph.len()],
        }
    }

    /// The objective before the pass, after forward and after the linear pass, in one pass
    /// over the edges. A task's pool before the pass is its pool if pinned; after forward, its
    /// pool if pinned or forward (backward only assigns tasks forward left without a pool).
    fn estimate(
        &mut self,
        graph: &Graph,
        topo: &Topology,
        sizes: &Sizes,
        pools: &[Option<PoolId>],
        reasons: &[Reason],
    ) -> TransferEstimate {
        let hard = |t: TaskId| matches!(reasons[t.index()], Reason::Pinned | Reason::OnceCell);
        let before = |t: TaskId| pools[t.index()].filter(|_| hard(t));
        let after_forward = |t: TaskId| {
            pools[t.index()].filter(|_| hard(t) || reasons[t.index()] == Reason::Forward)
        };
        let linear = |t: TaskId| pools[t.index()];
        let mut seen = [
            vec![u32::MAX; graph.pool_count()],
            vec![u32::MAX; graph.pool_count()],
            vec![u32::MAX; graph.pool_count()],
        ];
        let mut est = TransferEstimate {
            without: 0,
            forward: 0,
            linear: 0,
            full: 0,
            lower_bound: None,
        };
        for u in graph.task_ids() {
            if u.index() + AHEAD < graph.len() {
                for &c in topo.consumers(TaskId(u.0 + AHEAD as u32)) {
                    prefetch(&pools[c.index()]);
                    prefetch(&reasons[c.index()]);
                }
            }
            let size = sizes.0[u.index()];
            if size == 0 {
                continue;
            }
            let [s0, s1, s2] = &mut seen;
            let add = |total: &mut u64, moves: u64| {
                *total = total.saturating_add(size.saturating_mul(moves));
            };
            add(&mut est.without, other_pools_consuming(topo, before, u, s0));
            add(
                &mut est.forward,
                other_pools_consuming(topo, after_forward, u, s1),
            );
            add(&mut est.linear, other_pools_consuming(topo, linear, u, s2));
        }
        est.full = est.linear;
        est
    }
}

fn forward(
    graph: &Graph,
    topo: &Topology,
    sizes: &Sizes,
    free: &[bool],
    scratch: &mut Scratch,
    pools: &mut [Option<PoolId>],
    reasons: &mut [Reason],
) {
    let mut votes = vec![0u64; graph.pool_count()];
    let mut voted: Vec<PoolId> = Vec::new();
    scratch.mark.fill(u32::MAX);
    let order = topo.order();
    for (k, &t) in order.iter().enumerate() {
        // Tasks are visited out of id order and their inputs are anywhere: ask for the
        // records a few tasks ahead, and for the inputs' pools and sizes of the next few.
        if let Some(&far) = order.get(k + 2 * AHEAD) {
            graph.prefetch_record(far);
        }
        if let Some(&near) = order.get(k + AHEAD) {
            if free[near.index()] {
                for &i in graph.inputs(near) {
                    prefetch(&pools[i.index()]);
                    prefetch(&sizes.0[i.index()]);
                }
            }
        }
        if !free[t.index()] {
            continue;
        }
        for_each_distinct_input(graph, t, &mut scratch.mark, |input| {
            if let Some(p) = pools[input.index()] {
                if votes[p.index()] == 0 && !voted.contains(&p) {
                    voted.push(p);
                }
                votes[p.index()] = votes[p.index()].saturating_add(sizes.0[input.index()]);
            }
        });
        if voted.is_empty() {
            continue;
        }
        let best = voted.iter().map(|p| votes[p.index()]).max().unwrap_or(0);
        let mut winners = voted.iter().filter(|p| votes[p.index()] == best);
        let first = winners.next().copied();
        if winners.next().is_some() {
            reasons[t.index()] = Reason::Tie;
        } else {
            pools[t.index()] = first;
            reasons[t.index()] = Reason::Forward;
        }
        for p in voted.drain(..) {
            votes[p.index()] = 0;
        }
    }
}

fn backward(topo: &Topology, free: &[bool], pools: &mut [Option<PoolId>], reasons: &mut [Reason]) {
    let order = topo.order();
    for (k, &t) in order.iter().enumerate().rev() {
        if let Some(&near) = k.checked_sub(AHEAD).map(|a| &order[a]) {
            for &c in topo.consumers(near) {
                prefetch(&pools[c.index()]);
            }
        }
        if !free[t.index()] || pools[t.index()].is_some() {
            continue;
        }
        let mut only: Option<PoolId> = None;
        let mut several = false;
        for &c in topo.consumers(t) {
            match (pools[c.index()], only) {
                (None, _) => {}
                (Some(p), None) => only = Some(p),
                (Some(p), Some(q)) if p != q => {
                    several = true;
                    break;
                }
                _ => {}
            }
        }
        if several {
            reasons[t.index()] = Reason::Tie;
        } else if let Some(p) = only {
            pools[t.index()] = Some(p);
            reasons[t.index()] = Reason::Backward;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Handle, DEFAULT_SIZE_HINT};

    /// The linear pass: most tests here pin down its rule.
    fn run(g: &Graph) -> Propagation {
        propagate_pools_with(g, &g.validate().expect("valid graph"), Pass::Linear)
    }

    /// The default pass: linear, then optimised.
    fn optimised(g: &Graph) -> Propagation {
        propagate_pools(g, &g.validate().expect("valid graph"))
    }

    fn at(g: &Graph, p: &Propagation, h: Handle) -> (Option<String>, Reason) {
        (p.pool_name(g, h.id()).map(str::to_owned), p.reason(h.id()))
    }

    fn pinned(g: &mut Graph, key: &str, pool: &str, size: Option<u64>) -> Handle {
        let b = g.task("load", &()).key(key).pool(pool);
        match size {
            Some(s) => b.size_hint(s).add(),
            None => b.add(),
        }
    }

    fn some(p: &str, r: Reason) -> (Option<String>, Reason) {
        (Some(p.to_owned()), r)
    }

    #[test]
    fn seed_800_bytes_in_a_beat_80_in_b() {
        let mut g = Graph::new();
        let a = pinned(&mut g, "a", "A", Some(800));
        let b = pinned(&mut g, "b", "B", Some(80));
        let c = g.task("add", &()).input(a).input(b).add();
        let p = run(&g);
        assert_eq!(at(&g, &p, c), some("A", Reason::Forward));
        assert_eq!(at(&g, &p, a), some("A", Reason::Pinned));
    }

    #[test]
    fn seed_b_minus_1_stays_in_b() {
        let mut g = Graph::new();
        let b = pinned(&mut g, "b", "B", Some(80));
        let c = g.task("sub_scalar", &1).input(b).add();
        let p = run(&g);
        assert_eq!(at(&g, &p, c), some("B", Reason::Forward));
    }

    #[test]
    fn unpooled_inputs_do_not_vote_however_big() {
        let mut g = Graph::new();
        let a = pinned(&mut g, "a", "A", Some(10));
        let big = g.task("load", &()).key("big").size_hint(1 << 30).add();
        let c = g.task("join", &()).input(big).input(a).add();
        let p = run(&g);
        assert_eq!(at(&g, &p, c), some("A", Reason::Forward));
        // `big` feeds only a task in A: back-propagated there.
        assert_eq!(at(&g, &p, big), some("A", Reason::Backward));
    }

    #[test]
    fn seed_readme_example() {
        let mut g = Graph::new();
        let a = pinned(&mut g, "a", "A", Some(800));
        let b = pinned(&mut g, "b", "B", Some(80));
        let a1 = g
            .task("sub_scalar", &1)
            .key("a-1")
            .input(a)
            .size_hint(800)
            .add();
        let run_in_a = g
            .task("sum", &())
            .key("run_in_a")
            .input(a1)
            .size_hint(8)
            .add();
        let mean = g
            .task("mean", &())
            .key("a.mean")
            .input(a)
            .size_hint(8)
            .add();
        let run_in_b = g
            .task("sub", &())
            .key("run_in_b")
            .input(b)
            .input(mean)
            .size_hint(80)
            .add();
        let p = run(&g);
        assert_eq!(at(&g, &p, run_in_a), some("A", Reason::Forward));
        assert_eq!(at(&g, &p, mean), some("A", Reason::Forward));
        assert_eq!(at(&g, &p, run_in_b), some("B", Reason::Forward));
        // With the pass only a.mean's 8 bytes cross; without it every edge touches a free task.
        assert_eq!(p.estimate.full, 8);
        assert_eq!(p.estimate.without, 800 + 800 + 800 + 80 + 8);
    }

    #[test]
    fn backward_to_unpooled_source() {
        // The seed's flaw: `a + any_pool` should pull `any_pool` into A.
        let mut g = Graph::new();
        let a = pinned(&mut g, "a", "A", Some(100));
        let x = g.task("load", &()).key("x").size_hint(50).add();
        let c = g.task("add", &()).input(a).input(x).add();
        let p = run(&g);
        assert_eq!(at(&g, &p, c), some("A", Reason::Forward));
        assert_eq!(at(&g, &p, x), some("A", Reason::Backward));
        assert_eq!(p.estimate.forward, 50);
        assert_eq!(p.estimate.full, 0);
    }

    #[test]
    fn backward_chains_through_free_tasks() {
        let mut g = Graph::new();
        let x = g.task("load", &()).key("x").add();
        let y = g.task("parse", &()).key("y").input(x).add();
        let z = g.task("use", &()).key("z").input(y).pool("B").add();
        let p = run(&g);
        assert_eq!(at(&g, &p, z), some("B", Reason::Pinned));
        assert_eq!(at(&g, &p, y), some("B", Reason::Backward));
        assert_eq!(at(&g, &p, x), some("B", Reason::Backward));
    }

    #[test]
    fn consumers_in_several_pools_make_a_tie() {
        let mut g = Graph::new();
        let x = g.task("load", &()).key("x").add();
        g.task("use", &()).key("ua").input(x).pool("A").add();
        g.task("use", &()).key("ub").input(x).pool("B").add();
        let p = run(&g);
        assert_eq!(at(&g, &p, x), (None, Reason::Tie));
    }

    #[test]
    fn equal_bytes_are_a_tie_left_free() {
        let mut g = Graph::new();
        let a = pinned(&mut g, "a", "A", Some(100));
        let b = pinned(&mut g, "b", "B", Some(100));
        let c = g.task("add", &()).key("c").input(a).input(b).add();
        let d = g.task("after", &()).key("d").input(c).add();
        let p = run(&g);
        assert_eq!(at(&g, &p, c), (None, Reason::Tie));
        // A tie votes for nothing downstream.
        assert_eq!(at(&g, &p, d), (None, Reason::None));
    }

    #[test]
    fn a_tie_with_all_consumers_in_one_pool_goes_backward() {
        let mut g = Graph::new();
        let a = pinned(&mut g, "a", "A", Some(100));
        let b = pinned(&mut g, "b", "B", Some(100));
        let c = g.task("add", &()).key("c").input(a).input(b).add();
        g.task("use", &()).key("d").input(c).pool("B").add();
        let p = run(&g);
        assert_eq!(at(&g, &p, c), some("B", Reason::Backward));
    }

    #[test]
    fn any_pool_is_never_touched_and_never_votes() {
        let mut g = Graph::new();
        let a = pinned(&mut g, "a", "A", Some(10));
        let b = pinned(&mut g, "b", "B", Some(20));
        let anyb = g.any_pool(|g| {
            g.task("map", &())
                .key("anyb")
                .input(b)
                .size_hint(1 << 20)
                .add()
        });
        let c = g.task("join", &()).key("c").input(anyb).input(a).add();
        let src = g.any_pool(|g| g.task("load", &()).key("src").add());
        g.task("use", &()).key("u").input(src).pool("A").add();
        let p = run(&g);
        assert_eq!(at(&g, &p, anyb), (None, Reason::Any));
        assert_eq!(at(&g, &p, src), (None, Reason::Any));
        assert_eq!(at(&g, &p, c), some("A", Reason::Forward));
    }

    #[test]
    fn unknown_sizes_count_as_the_default_per_task() {
        let mut g = Graph::new();
        let a = pinned(&mut g, "a", "A", Some(DEFAULT_SIZE_HINT - 1));
        let b = pinned(&mut g, "b", "B", None);
        let c = g.task("add", &()).input(a).input(b).add();
        let a2 = pinned(&mut g, "a2", "A", Some(DEFAULT_SIZE_HINT + 1));
        let d = g.task("add", &()).input(a2).input(b).add();
        let p = run(&g);
        assert_eq!(at(&g, &p, c), some("B", Reason::Forward));
        assert_eq!(at(&g, &p, d), some("A", Reason::Forward));
    }

    #[test]
    fn several_inputs_in_one_pool_add_up() {
        let mut g = Graph::new();
        let a1 = pinned(&mut g, "a1", "A", Some(60));
        let a2 = pinned(&mut g, "a2", "A", Some(60));
        let b = pinned(&mut g, "b", "B", Some(100));
        let c = g.task("f", &()).inputs([a1, a2, b]).add();
        let p = run(&g);
        assert_eq!(at(&g, &p, c), some("A", Reason::Forward));
    }

    #[test]
    fn an_input_listed_twice_moves_once() {
        let mut g = Graph::new();
        let a = pinned(&mut g, "a", "A", Some(100));
        let b = pinned(&mut g, "b", "B", Some(150));
        let c = g.task("f", &()).input(a).input(a).input(b).add();
        let p = run(&g);
        assert_eq!(at(&g, &p, c), some("B", Reason::Forward));
        assert_eq!(p.estimate.full, 100);
    }

    #[test]
    fn nothing_pooled_means_none() {
        let mut g = Graph::new();
        let x = g.task("a", &()).add();
        let y = g.task("b", &()).input(x).add();
        let p = run(&g);
        assert_eq!(at(&g, &p, y), (None, Reason::None));
        assert_eq!(p.estimate.without, DEFAULT_SIZE_HINT);
        assert_eq!(p.estimate.full, DEFAULT_SIZE_HINT);
    }

    #[test]
    fn forward_results_feed_later_forward_decisions() {
        let mut g = Graph::new();
        let a = pinned(&mut g, "a", "A", Some(10));
        let b = pinned(&mut g, "b", "B", Some(15));
        let a1 = g.task("f", &()).input(a).size_hint(100).add(); // forward A, 100 bytes
        let c = g.task("g", &()).input(a1).input(b).add();
        let p = run(&g);
        assert_eq!(at(&g, &p, c), some("A", Reason::Forward));
    }

    #[test]
    fn scoped_free_task_inside_a_pool_scope() {
        let mut g = Graph::new();
        let (a, f) = g.pool("A", |g| {
            let a = g.task("load", &()).add();
            let f = g.task("free_one", &()).free().input(a).add();
            (a, f)
        });
        let p = run(&g);
        assert_eq!(at(&g, &p, a), some("A", Reason::Pinned));
        assert_eq!(at(&g, &p, f), some("A", Reason::Forward));
    }

    #[test]
    fn the_optimiser_moves_a_chain_to_the_smaller_crossing() {
        // Linear: a1 follows a (A) and c follows a1's 100 bytes: 15 bytes of b cross. Better:
        // a1 and c in B, and only a's 10 bytes cross.
        let mut g = Graph::new();
        let a = pinned(&mut g, "a", "A", Some(10));
        let b = pinned(&mut g, "b", "B", Some(15));
        let a1 = g.task("f", &()).key("a1").input(a).size_hint(100).add();
        let c = g.task("g", &()).key("c").input(a1).input(b).add();
        let lin = run(&g);
        assert_eq!(lin.estimate.full, 15);
        let p = optimised(&g);
        assert_eq!(at(&g, &p, a1), some("B", Reason::Optimised));
        assert_eq!(at(&g, &p, c), some("B", Reason::Optimised));
        assert_eq!(p.estimate.linear, 15);
        assert_eq!(p.estimate.full, 10);
    }

    #[test]
    fn an_output_moves_once_into_a_pool_however_many_consume_it_there() {
        // b's 1024 bytes feed c and d. Linear splits them (c in B, d in A: 1023 + 1024 cross);
        // the optimiser puts both with a's side and moves b once.
        let mut g = Graph::new();
        let a = pinned(&mut g, "a", "A", Some(DEFAULT_SIZE_HINT - 1));
        let b = pinned(&mut g, "b", "B", None);
        let c = g.task("add", &()).key("c").input(a).input(b).add();
        let a2 = pinned(&mut g, "a2", "A", Some(DEFAULT_SIZE_HINT + 1));
        let d = g.task("add", &()).key("d").input(a2).input(b).add();
        let p = optimised(&g);
        assert_eq!(p.estimate.linear, 2 * DEFAULT_SIZE_HINT - 1);
        assert_eq!(p.estimate.full, DEFAULT_SIZE_HINT);
        assert_eq!(at(&g, &p, c), some("A", Reason::Optimised));
        assert_eq!(at(&g, &p, d), some("A", Reason::Forward));
    }

    #[test]
    fn the_optimiser_keeps_what_the_linear_pass_got_right() {
        let mut g = Graph::new();
        let a = pinned(&mut g, "a", "A", Some(800));
        let b = pinned(&mut g, "b", "B", Some(80));
        let mean = g.task("mean", &()).key("m").input(a).size_hint(8).add();
        let x = g
            .task("sub", &())
            .key("x")
            .input(b)
            .input(mean)
            .size_hint(80)
            .add();
        let p = optimised(&g);
        assert_eq!(at(&g, &p, mean), some("A", Reason::Forward));
        assert_eq!(at(&g, &p, x), some("B", Reason::Forward));
        assert_eq!(p.estimate.full, 8);
    }

    #[test]
    fn a_tie_gets_a_pool_when_that_saves_its_own_output() {
        let mut g = Graph::new();
        let a = pinned(&mut g, "a", "A", Some(100));
        let b = pinned(&mut g, "b", "B", Some(100));
        let c = g.task("add", &()).key("c").input(a).input(b).add();
        let d = g.task("after", &()).key("d").input(c).add();
        let p = optimised(&g);
        // Either pool moves 100 bytes; left free, c's output would move too.
        assert_eq!(p.estimate.full, 100);
        assert_eq!(p.reason(c.id()), Reason::Optimised);
        assert_eq!(p.pool(c.id()), p.pool(d.id()));
    }

    #[test]
    fn tasks_far_from_any_pin_stay_free_and_any_pool_stays_any() {
        let mut g = Graph::new();
        let x = g.task("a", &()).key("x").add();
        let y = g.task("b", &()).key("y").input(x).add();
        let a = pinned(&mut g, "a", "A", Some(10));
        let z = g.any_pool(|g| g.task("z", &()).key("z").input(a).add());
        // A task near the pin shares the refinement's window with x and y.
        let w = g.task("w", &()).key("w").input(a).add();
        let p = optimised(&g);
        assert_eq!(at(&g, &p, w), some("A", Reason::Forward));
        assert_eq!(at(&g, &p, x), (None, Reason::None));
        assert_eq!(at(&g, &p, y), (None, Reason::None));
        assert_eq!(at(&g, &p, z), (None, Reason::Any));
    }

    #[test]
    fn three_pools_reach_the_optimum_on_a_small_case() {
        // A hub h reads 50 bytes from each of three pools and feeds one consumer per pool: h
        // goes wherever, and exactly two of the three inputs' bytes plus h's output to two
        // other pools cross. The best: h in any pool, 2 x 50 + 2 x 10 = 120.
        let mut g = Graph::new();
        let mut ins = Vec::new();
        for p in ["A", "B", "C"] {
            ins.push(pinned(&mut g, &format!("in{p}"), p, Some(50)));
        }
        let h = g.task("hub", &()).key("h").inputs(ins).size_hint(10).add();
        for p in ["A", "B", "C"] {
            g.task("use", &())
                .key(format!("u{p}"))
                .input(h)
                .pool(p)
                .add();
        }
        let p = optimised(&g);
        assert_eq!(p.estimate.full, 120);
        assert!(p.pool(h.id()).is_some());
    }

    #[test]
    fn the_graph_chooses_its_pass() {
        let mut g = Graph::new();
        let a = pinned(&mut g, "a", "A", Some(10));
        let b = pinned(&mut g, "b", "B", Some(15));
        let a1 = g.task("f", &()).key("a1").input(a).size_hint(100).add();
        g.task("g", &()).key("c").input(a1).input(b).add();
        g.set_pass(Pass::Linear);
        let p = propagate_pools(&g, &g.validate().unwrap());
        assert_eq!(p.estimate.full, 15);
        assert_eq!("linear".parse::<Pass>(), Ok(Pass::Linear));
        assert!("fast".parse::<Pass>().unwrap_err().contains("\"fast\""));
    }

    /// A seeded random DAG of `n` tasks in `pools` pools (a tenth pinned): 1 to 3 inputs,
    /// mostly among the 32 tasks before, sizes from 1 B to 1 MB, and with `huge` every 50th
    /// output above the optimiser's largest weight.
    fn random_graph(n: usize, pools: usize, seed: u64, huge: bool) -> Graph {
        let mut x = seed | 1;
        let mut next = move |below: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % below
        };
        let names = ["A", "B", "C", "D"];
        let mut g = Graph::new();
        let mut handles: Vec<Handle> = Vec::with_capacity(n);
        for i in 0..n {
            let size = if huge && i % 50 == 0 {
                1 << 41
            } else {
                10u64.pow(next(7) as u32)
            };
            let mut b = g.task("f", &()).key(format!("t{i}")).size_hint(size);
            if i > 0 {
                for _ in 0..1 + next(3) {
                    let j = if next(10) < 8 {
                        i - 1 - next(i.min(32) as u64) as usize
                    } else {
                        next(i as u64) as usize
                    };
                    b = b.input(handles[j]);
                }
            }
            if next(10) == 0 {
                b = b.pool(names[next(pools as u64) as usize]);
            }
            handles.push(b.add());
        }
        g
    }

    #[test]
    fn the_refined_objective_is_exact_whatever_the_budget() {
        // The pass counts the refinement's savings instead of measuring the result anew: they
        // must agree on every path (two pools whole, more pools whole then in windows, out of
        // budget anywhere, a clamped weight).
        for (pools, seed, huge) in [(2, 1, false), (3, 2, false), (4, 3, false), (3, 4, true)] {
            let g = random_graph(3_000, pools, seed, huge);
            let topo = g.validate().unwrap();
            let mut improved = false;
            for budget in [0, 1_000, 100_000, 2_000_000, 20_000_000] {
                let p = propagate_within(&g, &topo, Pass::Optimised, budget);
                let measured = cost::cross_pool_bytes(&g, &topo, &p.pools);
                assert_eq!(p.estimate.full, measured, "{pools} pools, budget {budget}");
                assert!(p.estimate.full <= p.estimate.linear);
                improved |= p.estimate.full < p.estimate.linear;
            }
            assert!(
                improved,
                "{pools} pools: the refinement never moved anything"
            );
        }
    }
}
