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

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cost::{estimated_size, for_each_distinct_input, TransferEstimate};
use crate::model::Place;
use crate::{Graph, PoolId, TaskId, Topology};

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

/// Runs the pass over a validated graph. Linear in tasks plus edges.
pub fn propagate_pools(graph: &Graph, topo: &Topology) -> Propagation {
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
    let estimate = scratch.estimate(graph, &sizes, &pools, &reasons);
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

    /// The three transfer estimates in one pass over the edges. A task's pool before the pass
    /// is its pool if pinned; after forward, its pool if pinned or forward (backward only
    /// assigns tasks forward left without a pool).
    fn estimate(
        &mut self,
        graph: &Graph,
        sizes: &Sizes,
        pools: &[Option<PoolId>],
        reasons: &[Reason],
    ) -> TransferEstimate {
        let at = |t: TaskId| {
            let (p, r) = (pools[t.index()], reasons[t.index()]);
            let hard = matches!(r, Reason::Pinned | Reason::OnceCell);
            let before = if hard { p } else { None };
            let after_forward = if hard || r == Reason::Forward {
                p
            } else {
                None
            };
            (before, after_forward, p)
        };
        let crosses = |a: Option<PoolId>, b: Option<PoolId>| b.is_none() || a != b;
        self.mark.fill(u32::MAX);
        let mut est = TransferEstimate {
            without: 0,
            forward: 0,
            full: 0,
        };
        for t in graph.task_ids() {
            let here = at(t);
            for_each_distinct_input(graph, t, &mut self.mark, |input| {
                let there = at(input);
                let size = sizes.0[input.index()];
                est.without = est
                    .without
                    .saturating_add(size * u64::from(crosses(there.0, here.0)));
                est.forward = est
                    .forward
                    .saturating_add(size * u64::from(crosses(there.1, here.1)));
                est.full = est
                    .full
                    .saturating_add(size * u64::from(crosses(there.2, here.2)));
            });
        }
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
    for &t in topo.order() {
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
    for &t in topo.order().iter().rev() {
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

    fn run(g: &Graph) -> Propagation {
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
}
