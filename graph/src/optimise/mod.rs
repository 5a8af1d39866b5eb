//! The optimising step of the propagate-pools pass: after the linear pass, moves free tasks
//! between pools to lower the objective ([`crate::cost::cross_pool_bytes`]: each output counts
//! once per other pool that consumes it).
//!
//! # The method, and why
//! Placement with pinned terminals is a multiway cut on a hypergraph: each output is a
//! hyperedge joining its task and its consumers, costing its size once per pool other than its
//! own among them. That is NP-hard for three pools or more, and exact for two by one s-t
//! minimum cut. We use **alpha-expansion** (Boykov, Veksler and Zabih): for each pool alpha in
//! turn, the best move that lets any set of free tasks switch to alpha (everyone else keeping
//! their pool) is one minimum cut, because every hyperedge's cost under such a move is a sum of
//! terms "some consumer in a set is (or stays) somewhere, and the producer is not" — each one
//! arc, or one auxiliary node with infinite arcs. Moves are accepted only when they lower the
//! cost, and rounds repeat until none does. Why this method:
//!
//! * It is exact where exactness is cheap: with two candidate pools, one cut from "everything
//!   in the second" reaches every two-pool labelling, so it is the global optimum.
//! * Each move is the optimum of an exponential neighbourhood, so it escapes the local minima
//!   of one-task-at-a-time sweeps (the greedy rule's weakness on general DAGs).
//! * It scales: a cut is a max-flow on a network linear in the tasks it moves. Graphs of up to
//!   [`GLOBAL_MAX`] movable tasks (and two-pool graphs of any size) are first refined whole;
//!   otherwise, or when that runs out of its half of the budget, the refinement works on
//!   windows of [`WINDOW`] tasks in topological order (neighbours together), the rest held in
//!   place, alternate rounds shifting the windows by half so no boundary stays one.
//! * An LP relaxation with rounding ([`bound`]) is kept for what it is best at: a lower bound to
//!   judge the result by, on small graphs.
//!
//! # Guarantees
//! Deterministic: pools are tried in name order, and a cut is the *minimal* minimum cut (the
//! source side reachable in the residual network), which does not depend on the order arcs were
//! added. Never worse than the linear pass: it starts from it (or, with two pools, keeps the
//! better of the two) and accepts only improvements. Pinned, once-cell-bound and any-pool tasks
//! never move. A part of the graph (tasks joined through outputs) that no pinned task touches is
//! left alone: its tasks stay free for the scheduler. The work is budgeted in arc visits, proportional to the
//! graph's size: beyond the budget the best placement found so far is kept, and the cut-off is
//! the same on every run of the same graph.

pub mod bound;
mod flow;

use flow::{take, Network, INFINITE, MAX_WEIGHT, SINK, SOURCE};

use crate::prefetch::{prefetch, AHEAD};
use crate::{Graph, PoolId, TaskId, Topology};

/// Work units (arc visits) the refinement may spend per task plus edge of the graph.
/// Calibrated on random DAGs of 1,000,000 tasks so the whole pass takes a few times the linear
/// pass (a unit is an arc or node visit of a few nanoseconds; here the linear pass costs about
/// 70 ns per task and the whole pass about 4x that).
pub const WORK_PER_ELEMENT: u64 = 16;

/// Work units every graph may spend, however small.
pub const MIN_WORK: u64 = 1 << 25;

/// The refinement's work budget for `graph`: [`WORK_PER_ELEMENT`] per task plus edge, at
/// least [`MIN_WORK`].
pub fn budget(graph: &Graph) -> u64 {
    WORK_PER_ELEMENT
        .saturating_mul((graph.len() + graph.edge_count()) as u64)
        .max(MIN_WORK)
}

/// Rounds over every window, at most.
const MAX_ROUNDS: usize = 8;

/// Graphs with at most this many movable tasks are first refined as one window (graphs in two
/// pools always are).
pub const GLOBAL_MAX: usize = 50_000;

/// Movable tasks per window: each move is a cut over one window's tasks, the rest held where
/// they are. Windows follow the topological order, so a window holds neighbours. A cut's work
/// grows faster than its window: within one budget, windows of 512 covered 26% of a
/// 1,000,000-task graph and cut its bytes 11.5% below the linear pass's, where windows of
/// 2,048 covered 9% for 3.4% (and 100,000 tasks: 13% fewer bytes than with 2,048).
pub const WINDOW: usize = 512;

/// The placement problem as the refinement sees it.
pub(crate) struct Problem<'a> {
    topo: &'a Topology,
    /// Per task: its output's weight (estimated size, clamped).
    weight: Vec<u64>,
    /// Per task: its current label, a pool index below `pools`, or `pools + task` (a task with
    /// no pool shares a pool with nothing).
    label: Vec<u32>,
    /// Per task: whether the refinement may move it.
    movable: Vec<bool>,
    /// Pool count.
    pools: u32,
    /// Pool indices sorted by name: the order moves are tried.
    by_name: Vec<u32>,
    /// Whether some weight was clamped to [`MAX_WEIGHT`]: then the refinement's costs are not
    /// the objective's.
    clamped: bool,
    /// How much the accepted moves lowered the (clamped) objective in all.
    saved: u64,
}

/// What the refinement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Whether the work budget ran out before the placement stopped improving.
    pub out_of_budget: bool,
    /// Expansion moves that lowered the cost.
    pub moves: u64,
}

impl<'a> Problem<'a> {
    /// The problem for `graph` with the linear pass's `pools`; `sizes[t]` is task t's
    /// [`crate::cost::estimated_size`] and `movable[t]` says whether it may move.
    pub(crate) fn new(
        graph: &Graph,
        topo: &'a Topology,
        pools: &[Option<PoolId>],
        sizes: Vec<u64>,
        movable: Vec<bool>,
    ) -> Problem<'a> {
        let k = graph.pool_count() as u32;
        let mut clamped = false;
        let weight = sizes
            .into_iter()
            .map(|s| {
                clamped |= s > MAX_WEIGHT;
                s.min(MAX_WEIGHT)
            })
            .collect();
        let label = graph
            .task_ids()
            .map(|t| pools[t.index()].map_or(k + t.0, |p| p.0))
            .collect();
        let mut by_name: Vec<u32> = (0..k).collect();
        by_name.sort_by(|a, b| graph.pool_name(PoolId(*a)).cmp(graph.pool_name(PoolId(*b))));
        let mut problem = Problem {
            topo,
            weight,
            label,
            movable,
            pools: k,
            by_name,
            clamped,
            saved: 0,
        };
        problem.hold_unanchored();
        problem
    }

    /// Whether `u`'s output counts: it has a size and consumers.
    fn relevant(&self, u: TaskId) -> bool {
        self.weight[u.index()] > 0 && !self.topo.consumers(u).is_empty()
    }

    /// Holds in place (unmovable) the tasks of every part of the graph, joined through
    /// outputs, that no pinned task touches: nothing pulls them anywhere, and left free the
    /// scheduler places them on real sizes. Union-find, near-linear.
    fn hold_unanchored(&mut self) {
        let n = self.label.len();
        if n > ROOT as usize {
            // Too many tasks (2^31) to mark roots in their parent entries: nothing is held,
            // so parts no pin touches may be given pools too. Still never worse than the
            // linear pass, but the one place this rule is not kept.
            return;
        }
        // Union-find over the movable tasks: `parent[x]` is x's parent, or x itself at a
        // root, which carries the ANCHORED bit when its set touches a pinned task (one read
        // finds a set and whether it is anchored).
        let mut parent: Vec<u32> = (0..n as u32).collect();
        let mut roots: Vec<u32> = Vec::new();
        for u in 0..n {
            if u + AHEAD < n {
                for &c in self.topo.consumers(TaskId((u + AHEAD) as u32)) {
                    prefetch(&self.movable[c.index()]);
                    prefetch(&self.label[c.index()]);
                    prefetch(&parent[c.index()]);
                }
            }
            let ut = TaskId(u as u32);
            if !self.relevant(ut) {
                continue;
            }
            // The roots of this hyperedge's movable members. Anchoring is all that is asked
            // of a set, so sets are only merged while unanchored: a hyperedge that reaches an
            // anchored set (or a pinned task) anchors the others' sets instead, which gives
            // the same answer and keeps the trees small.
            roots.clear();
            let mut pinned = false;
            for m in std::iter::once(ut).chain(self.topo.consumers(ut).iter().copied()) {
                if !self.movable[m.index()] {
                    pinned |= self.label[m.index()] < self.pools;
                    continue;
                }
                let r = find(&mut parent, m.0);
                pinned |= parent[r as usize] & ANCHORED != 0;
                roots.push(r);
            }
            let Some((&first, rest)) = roots.split_first() else {
                continue;
            };
            if pinned {
                for &r in &roots {
                    parent[r as usize] |= ANCHORED;
                }
            } else {
                for &r in rest {
                    // Earlier unions in this loop may have merged r already.
                    let (a, b) = (find(&mut parent, first), find(&mut parent, r));
                    if a != b {
                        parent[b as usize] = a;
                    }
                }
            }
        }
        for t in 0..n {
            if self.movable[t] {
                let r = find(&mut parent, t as u32);
                self.movable[t] = parent[r as usize] & ANCHORED != 0;
            }
        }
    }

    /// The objective ([`crate::cost::cross_pool_bytes`]) after refinement, given `before`,
    /// its value for the placement the problem started from: exact when no weight was clamped
    /// and `before` did not saturate; `None` otherwise (then compute it anew).
    pub(crate) fn objective_after(&self, before: u64) -> Option<u64> {
        (!self.clamped && before < u64::MAX).then(|| before - self.saved)
    }

    /// The tasks' pools after refinement.
    pub(crate) fn pools(&self) -> impl Iterator<Item = Option<PoolId>> + '_ {
        self.label
            .iter()
            .map(|&l| (l < self.pools).then_some(PoolId(l)))
    }

    /// Refines the placement within `budget` work units, visiting movable tasks in `order`
    /// (topological: a window then holds tasks near each other).
    pub(crate) fn refine(&mut self, graph: &Graph, order: &[TaskId], mut budget: u64) -> Outcome {
        let tasks: Vec<u32> = order
            .iter()
            .filter(|t| self.movable[t.index()])
            .map(|t| t.0)
            .collect();
        let mut solver = Solver::new(self.label.len(), self.pools as usize);
        let mut outcome = Outcome::default();
        let mut window_id = 0u32;
        if tasks.len() > WINDOW && (tasks.len() <= GLOBAL_MAX || self.pools == 2) {
            // The whole graph as one window first: exact with two pools, and better than
            // windows with more. Half the budget; out of it, the windows go on from where the
            // linear pass left things.
            let mut half = budget / 2;
            window_id += 1;
            if let Some(hedges) = self.window(graph, &tasks, window_id, &mut solver, &mut half) {
                let terminals = self.terminals(&hedges, &mut solver.seen);
                let done = self.refine_window(
                    &tasks,
                    &hedges,
                    &terminals,
                    MAX_ROUNDS,
                    &mut solver,
                    &mut half,
                );
                if let Some(moves) = done {
                    outcome.moves += moves;
                    return outcome;
                }
            }
            budget -= budget / 2;
        }
        let mut idle_rounds = 0;
        for round in 0..MAX_ROUNDS {
            // Odd rounds shift the windows by half, so no boundary stays a boundary.
            let offset = if round % 2 == 1 { WINDOW / 2 } else { 0 };
            let mut moved = false;
            let mut start = 0;
            while start < tasks.len() {
                let end = if start == 0 && offset > 0 {
                    offset
                } else {
                    start + WINDOW
                }
                .min(tasks.len());
                let window = &tasks[start..end];
                start = end;
                window_id += 1;
                let Some(hedges) = self.window(graph, window, window_id, &mut solver, &mut budget)
                else {
                    outcome.out_of_budget = true;
                    return outcome;
                };
                let terminals = self.terminals(&hedges, &mut solver.seen);
                if terminals.is_empty() {
                    continue;
                }
                match self.refine_window(window, &hedges, &terminals, 1, &mut solver, &mut budget) {
                    Some(moves) => {
                        outcome.moves += moves;
                        moved |= moves > 0;
                    }
                    None => {
                        outcome.out_of_budget = true;
                        return outcome;
                    }
                }
            }
            // Stop when neither partition into windows improves any more.
            idle_rounds = if moved { 0 } else { idle_rounds + 1 };
            if idle_rounds == 2 || (tasks.len() <= WINDOW && idle_rounds == 1) {
                break;
            }
        }
        outcome
    }

    /// Marks `window`'s tasks as the move's candidates and returns the hyperedges (by producing
    /// task) with a member in it: its tasks' outputs and inputs. `None` out of budget.
    fn window(
        &self,
        graph: &Graph,
        window: &[u32],
        id: u32,
        solver: &mut Solver,
        budget: &mut u64,
    ) -> Option<Vec<u32>> {
        let mut hedges = Vec::new();
        for &t in window {
            solver.window[t as usize] = id;
        }
        for &t in window {
            let t = TaskId(t);
            let inputs = graph.inputs(t);
            take(budget, inputs.len() as u64 + 1)?;
            for u in std::iter::once(t).chain(inputs.iter().copied()) {
                if self.relevant(u) && solver.hedge_seen[u.index()] != id {
                    solver.hedge_seen[u.index()] = id;
                    hedges.push(u.0);
                }
            }
        }
        solver.current = id;
        Some(hedges)
    }

    /// The pools present among the members of `hedges`, in name order: the pools a move may
    /// send tasks to.
    fn terminals(&self, hedges: &[u32], seen: &mut [u32]) -> Vec<u32> {
        let mut found = Vec::new();
        let mut note = |t: TaskId| {
            let l = self.label[t.index()];
            if l < self.pools && seen[l as usize] != u32::MAX - 1 {
                seen[l as usize] = u32::MAX - 1;
                found.push(l);
            }
        };
        for &u in hedges {
            note(TaskId(u));
            for &c in self.topo.consumers(TaskId(u)) {
                note(c);
            }
        }
        for &l in &found {
            seen[l as usize] = u32::MAX;
        }
        self.by_name
            .iter()
            .copied()
            .filter(|l| found.contains(l))
            .collect()
    }

    /// Refines one window with up to `rounds` expansions per pool (stopping at a round that
    /// improves nothing): the number of improving moves, or `None` out of budget (the window
    /// keeps its best labelling so far). Windows take one round each time round: the next
    /// round of windows, shifted, goes on where it left off.
    fn refine_window(
        &mut self,
        tasks: &[u32],
        hedges: &[u32],
        terminals: &[u32],
        rounds: usize,
        solver: &mut Solver,
        budget: &mut u64,
    ) -> Option<u64> {
        let start: Vec<u32> = tasks.iter().map(|&t| self.label[t as usize]).collect();
        let start_cost = self.cost(hedges, solver);
        let mut moves = 0;
        if let [a, b] = *terminals {
            // Exact within the window: from everything in b, one expansion to a reaches every
            // a/b labelling.
            for &t in tasks {
                self.label[t as usize] = b;
            }
            let from_b = self.cost(hedges, solver);
            let done = self.expand(a, tasks, hedges, from_b, solver, budget);
            let end = match done {
                Some(_) => self.cost(hedges, solver),
                None => start_cost,
            };
            if end < start_cost {
                self.saved += start_cost - end;
            } else {
                for (&t, &l) in tasks.iter().zip(&start) {
                    self.label[t as usize] = l;
                }
            }
            return done.map(|_| u64::from(end < start_cost));
        }
        // `cost` is always the cost of the current labels: a move is applied only with the
        // lower cost it returns.
        let mut cost = start_cost;
        for _ in 0..rounds {
            let before = cost;
            for &alpha in terminals {
                let Some(c) = self.expand(alpha, tasks, hedges, cost, solver, budget) else {
                    self.saved += start_cost - cost;
                    return None;
                };
                if c < cost {
                    cost = c;
                    moves += 1;
                }
            }
            if cost == before {
                break;
            }
        }
        self.saved += start_cost - cost;
        Some(moves)
    }

    /// The best expansion move to `alpha`, applied if it lowers the component's cost from
    /// `cost`; the cost after. `None` (nothing changed) when out of budget.
    fn expand(
        &mut self,
        alpha: u32,
        tasks: &[u32],
        hedges: &[u32],
        cost: u64,
        solver: &mut Solver,
        budget: &mut u64,
    ) -> Option<u64> {
        let net = &mut solver.net;
        net.reset(2);
        let mut vars: Vec<u32> = Vec::new();
        for &t in tasks {
            if self.label[t as usize] != alpha {
                solver.node[t as usize] = net.node();
                vars.push(t);
            }
        }
        if vars.is_empty() {
            return Some(cost);
        }
        let window = solver.current;
        let in_window = |t: TaskId| solver.window[t.index()] == window;
        let is_var = |t: TaskId| in_window(t) && self.label[t.index()] != alpha;
        for &u in hedges {
            let u = TaskId(u);
            let w = self.weight[u.index()];
            let lu = self.label[u.index()];
            let nu = is_var(u).then(|| solver.node[u.index()]);
            // Consumers grouped by current label.
            let groups = &mut solver.groups;
            groups.clear();
            let mut last = None;
            for &c in self.topo.consumers(u) {
                if last == Some(c) {
                    continue;
                }
                last = Some(c);
                groups.push((self.label[c.index()], c.0));
            }
            groups.sort_unstable();
            take(budget, groups.len() as u64 + 1)?;
            // The alpha term: alpha among the consumers after the move, u not in alpha.
            if lu != alpha {
                let fixed = groups.iter().any(|&(l, _)| l == alpha);
                if fixed {
                    if let Some(nu) = nu {
                        net.arc(SOURCE, nu, w);
                    }
                } else {
                    let xs = &mut solver.members;
                    xs.clear();
                    xs.extend(
                        groups
                            .iter()
                            .filter(|&&(_, c)| is_var(TaskId(c)))
                            .map(|&(_, c)| solver.node[c as usize]),
                    );
                    let target = nu.unwrap_or(SINK);
                    if xs.is_empty() {
                    } else if let [x] = xs[..] {
                        net.arc(x, target, w);
                    } else {
                        let a = net.node();
                        for &x in xs.iter() {
                            net.arc(x, a, INFINITE);
                        }
                        net.arc(a, target, w);
                    }
                }
            }
            // One term per other label among the consumers: it stays, and u is not in it.
            let mut i = 0;
            while i < groups.len() {
                let l = groups[i].0;
                let mut j = i;
                while j < groups.len() && groups[j].0 == l {
                    j += 1;
                }
                let group = &groups[i..j];
                i = j;
                if l == alpha {
                    continue;
                }
                let fixed = group.iter().any(|&(_, c)| !in_window(TaskId(c)));
                let xs = &mut solver.members;
                xs.clear();
                xs.extend(group.iter().map(|&(_, c)| solver.node[c as usize]));
                if l == lu {
                    // u pays when it leaves for alpha while someone stays in l.
                    let Some(nu) = nu else { continue };
                    if fixed {
                        net.arc(nu, SINK, w);
                    } else if let [x] = xs[..] {
                        net.arc(nu, x, w);
                    } else {
                        let b = net.node();
                        net.arc(nu, b, w);
                        for &x in xs.iter() {
                            net.arc(b, x, INFINITE);
                        }
                    }
                } else if !fixed {
                    // u is never in l: paid when anyone stays in l.
                    if let [x] = xs[..] {
                        net.arc(SOURCE, x, w);
                    } else {
                        let b = net.node();
                        net.arc(SOURCE, b, w);
                        for &x in xs.iter() {
                            net.arc(b, x, INFINITE);
                        }
                    }
                }
            }
        }
        let side = net.min_cut(budget)?;
        let old: Vec<u32> = vars.iter().map(|&t| self.label[t as usize]).collect();
        let mut changed = false;
        for &t in &vars {
            if side[solver.node[t as usize] as usize] {
                self.label[t as usize] = alpha;
                changed = true;
            }
        }
        if !changed {
            return Some(cost);
        }
        let after = self.cost(hedges, solver);
        if after < cost {
            return Some(after);
        }
        for (&t, &l) in vars.iter().zip(&old) {
            self.label[t as usize] = l;
        }
        Some(cost)
    }

    /// The objective over hyperedges `hedges` under the current labels.
    fn cost(&self, hedges: &[u32], solver: &mut Solver) -> u64 {
        let mut total = 0u64;
        for &u in hedges {
            let u = TaskId(u);
            let own = self.label[u.index()];
            let mut moves = 0u64;
            let mut last = None;
            for &c in self.topo.consumers(u) {
                if last == Some(c) {
                    continue;
                }
                last = Some(c);
                let l = self.label[c.index()];
                if l == own {
                    continue;
                }
                if l >= self.pools {
                    moves += 1;
                } else if solver.seen[l as usize] != u.0 {
                    solver.seen[l as usize] = u.0;
                    moves += 1;
                }
            }
            total = total.saturating_add(self.weight[u.index()].saturating_mul(moves));
        }
        solver.seen.fill(u32::MAX);
        total
    }
}

/// The bit of a union-find root's entry that says its set is anchored.
const ANCHORED: u32 = 1 << 31;
/// The largest task index whose entry leaves room for [`ANCHORED`].
const ROOT: u32 = ANCHORED - 1;

/// The root of `x`'s set in `parent` (see [`Problem::hold_unanchored`]), halving the path.
fn find(parent: &mut [u32], mut x: u32) -> u32 {
    loop {
        let up = parent[x as usize] & ROOT;
        if up == x {
            return x;
        }
        let above = parent[up as usize] & ROOT;
        parent[x as usize] = above;
        x = above;
    }
}

/// Scratch shared by every move.
struct Solver {
    net: Network,
    /// Per task: its node in the current network (meaningful for the move's variables).
    node: Vec<u32>,
    /// Per pool: the last hyperedge that counted it.
    seen: Vec<u32>,
    groups: Vec<(u32, u32)>,
    members: Vec<u32>,
    /// Per task: the window it was last a candidate of.
    window: Vec<u32>,
    /// Per task: the window whose hyperedges last included its output.
    hedge_seen: Vec<u32>,
    /// The window being refined.
    current: u32,
}

impl Solver {
    fn new(tasks: usize, pools: usize) -> Solver {
        Solver {
            net: Network::default(),
            node: vec![0; tasks],
            seen: vec![u32::MAX; pools],
            groups: Vec::new(),
            members: Vec::new(),
            window: vec![0; tasks],
            hedge_seen: vec![0; tasks],
            current: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Handle;

    /// The parts that `hold_unanchored` keeps movable, found the plain way: a search over
    /// the movable tasks joined through relevant outputs, a part kept if one of its outputs
    /// (as producer or consumer) reaches a task with a fixed pool.
    fn anchored_by_search(p: &Problem<'_>) -> Vec<bool> {
        let n = p.label.len();
        let mut neighbours: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut touches_pin = vec![false; n];
        for u in 0..n {
            let ut = TaskId(u as u32);
            if !p.relevant(ut) {
                continue;
            }
            let members: Vec<usize> = std::iter::once(ut)
                .chain(p.topo.consumers(ut).iter().copied())
                .map(TaskId::index)
                .collect();
            let pinned = members
                .iter()
                .any(|&m| !p.movable[m] && p.label[m] < p.pools);
            let free: Vec<usize> = members.into_iter().filter(|&m| p.movable[m]).collect();
            for &a in &free {
                touches_pin[a] |= pinned;
                neighbours[a].extend(free.iter().copied());
            }
        }
        let mut part = vec![usize::MAX; n];
        let mut anchored = vec![false; n];
        for start in (0..n).filter(|&t| p.movable[t]) {
            if part[start] != usize::MAX {
                continue;
            }
            let (mut stack, mut members) = (vec![start], Vec::new());
            part[start] = start;
            while let Some(t) = stack.pop() {
                members.push(t);
                for &m in &neighbours[t] {
                    if part[m] == usize::MAX {
                        part[m] = start;
                        stack.push(m);
                    }
                }
            }
            let keep = members.iter().any(|&m| touches_pin[m]);
            for m in members {
                anchored[m] = keep;
            }
        }
        anchored
    }

    #[test]
    fn held_parts_match_a_plain_search() {
        // Sparse pins, short chains and outputs of no size: many small parts, some anchored.
        for seed in 1..=20u64 {
            let mut x = seed;
            let mut next = move |below: u64| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % below
            };
            let mut g = Graph::new();
            let mut handles: Vec<Handle> = Vec::new();
            for i in 0..400 {
                let size = if next(3) == 0 { 0 } else { 1 + next(100) };
                let mut b = g.task("f", &()).key(format!("t{i}")).size_hint(size);
                for _ in 0..next(3) {
                    if i > 0 {
                        b = b.input(handles[i - 1 - next(i.min(8) as u64) as usize]);
                    }
                }
                if next(30) == 0 {
                    b = b.pool(["A", "B"][next(2) as usize]);
                } else if next(30) == 0 {
                    b = b.any_pool();
                }
                handles.push(b.add());
            }
            let topo = g.validate().unwrap();
            let pools: Vec<Option<PoolId>> = g
                .task_ids()
                .map(|t| match g.place(t) {
                    crate::Place::Pinned(p) => Some(p),
                    _ => None,
                })
                .collect();
            let free: Vec<bool> = g
                .task_ids()
                .map(|t| g.place(t) == crate::Place::Free)
                .collect();
            let sizes = g
                .task_ids()
                .map(|t| crate::cost::estimated_size(&g, t))
                .collect();
            let mut unheld = Problem::new(&g, &topo, &pools, sizes, free.clone());
            unheld.movable = free.clone();
            let expected = anchored_by_search(&unheld);
            unheld.hold_unanchored();
            assert_eq!(unheld.movable, expected, "seed {seed}");
            let kept = expected.iter().filter(|&&k| k).count();
            let free_count = free.iter().filter(|&&f| f).count();
            assert!(
                kept > 0 && kept < free_count,
                "seed {seed}: {kept} of {free_count}"
            );
        }
    }
}
