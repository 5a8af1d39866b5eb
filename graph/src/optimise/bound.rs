//! A lower bound on the best placement's bytes, from the linear-programming relaxation of the
//! placement, solved by an interior-point method (Clarabel). Used to judge the refinement on
//! small graphs: `drover check` prints it, the propagate bench reports ratios against it.
//!
//! The relaxation: every task the pass placed gets a fraction `x[t][p]` of itself in each pool
//! (summing to 1); every output `u` gets `y[u][p] >= x[c][p] - x[u][p]` for each consumer `c`
//! (it moves into pool `p` as far as a consumer is there and it is not), and the objective is
//! the sum of size times `y` — exactly the objective on whole placements, so its minimum is at
//! most the best placement's. Tasks the pass left without a pool (nothing pinned near them,
//! any-pool) and pinned tasks keep their place: the bound is over the placements the pass
//! chooses among.

use clarabel::algebra::CscMatrix;
use clarabel::solver::{
    DefaultSettingsBuilder, DefaultSolver, IPSolver, NonnegativeConeT, SolverStatus, ZeroConeT,
};

use crate::cost::estimated_size;
use crate::{Graph, Place, Propagation, Reason, TaskId, Topology};

/// Graphs with more placed free tasks than this get no bound: the interior-point solve grows
/// much faster than linearly (here: 2,000 tasks 2 s, 5,000 tasks 44 s).
pub const MAX_TASKS: usize = 2_500;

/// A lower bound on the bytes crossing pools of every placement that differs from `prop` only
/// in the pools of the free tasks it placed; `None` when the graph is too big or the solver
/// did not converge.
pub fn lower_bound(graph: &Graph, topo: &Topology, prop: &Propagation) -> Option<u64> {
    let k = graph.pool_count();
    let n = graph.len();
    let movable: Vec<bool> = graph
        .task_ids()
        .map(|t| {
            graph.place(t) == Place::Free
                && !graph.is_once_cell(t)
                && prop.reason(t) != Reason::OnceCell
                && prop.pool(t).is_some()
        })
        .collect();
    let placed = movable.iter().filter(|&&m| m).count();
    if placed > MAX_TASKS || k == 0 {
        return None;
    }
    // Variables: x for each movable task and pool, then y per (output, pool) when needed.
    let mut xvar = vec![u32::MAX; n];
    let mut vars = 0usize;
    for t in 0..n {
        if movable[t] {
            xvar[t] = vars as u32;
            vars += k;
        }
    }
    // x[t][p] as a variable index or a constant.
    enum X {
        Var(usize),
        Const(f64),
    }
    let x = |t: TaskId, p: usize| -> X {
        if movable[t.index()] {
            X::Var(xvar[t.index()] as usize + p)
        } else {
            X::Const(f64::from(u8::from(
                prop.pool(t).map(|q| q.index()) == Some(p),
            )))
        }
    };
    let scale = graph
        .task_ids()
        .map(|t| estimated_size(graph, t))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let (mut rows, mut cols, mut vals, mut b) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut q: Vec<f64> = vec![0.0; vars];
    let mut constant = 0.0f64;
    // Equalities first (a zero cone), then inequalities (non-negative).
    for t in 0..n {
        if movable[t] {
            for p in 0..k {
                rows.push(b.len());
                cols.push(xvar[t] as usize + p);
                vals.push(1.0);
            }
            b.push(1.0);
        }
    }
    let equalities = b.len();
    let mut last_consumer;
    for u in graph.task_ids() {
        let size = estimated_size(graph, u);
        if size == 0 {
            continue;
        }
        let w = size as f64 / scale;
        last_consumer = None;
        let mut consumers: Vec<TaskId> = Vec::new();
        for &c in topo.consumers(u) {
            if last_consumer != Some(c) {
                consumers.push(c);
            }
            last_consumer = Some(c);
        }
        // Consumers with no pool (and not placed) share a pool with nothing.
        for &c in &consumers {
            if !movable[c.index()] && prop.pool(c).is_none() {
                constant += w;
            }
        }
        for p in 0..k {
            let mut y: Option<usize> = None;
            for &c in &consumers {
                if !movable[c.index()] && prop.pool(c).is_none() {
                    continue;
                }
                // x[c][p] - x[u][p] - y <= 0, constants on the right.
                let (mut rhs, mut terms) = (0.0, Vec::new());
                for (t, sign) in [(c, 1.0), (u, -1.0)] {
                    match x(t, p) {
                        X::Var(v) => terms.push((v, sign)),
                        X::Const(v) => rhs -= sign * v,
                    }
                }
                if terms.is_empty() && rhs >= 0.0 {
                    continue; // 0 <= y holds anyway
                }
                let yv = *y.get_or_insert_with(|| {
                    q.push(w);
                    q.len() - 1
                });
                let row = b.len();
                for (v, sign) in terms {
                    rows.push(row);
                    cols.push(v);
                    vals.push(sign);
                }
                rows.push(row);
                cols.push(yv);
                vals.push(-1.0);
                b.push(rhs);
            }
        }
    }
    let nvars = q.len();
    // Every variable is non-negative.
    for v in 0..nvars {
        rows.push(b.len());
        cols.push(v);
        vals.push(-1.0);
        b.push(0.0);
    }
    let inequalities = b.len() - equalities;
    let a = CscMatrix::new_from_triplets(b.len(), nvars, rows, cols, vals);
    let p = CscMatrix::zeros((nvars, nvars));
    let cones = [ZeroConeT(equalities), NonnegativeConeT(inequalities)];
    let settings = DefaultSettingsBuilder::default()
        .verbose(false)
        .max_iter(200)
        .build()
        .ok()?;
    let mut solver = DefaultSolver::new(&p, &q, &a, &b, &cones, settings).ok()?;
    solver.solve();
    if !matches!(
        solver.solution.status,
        SolverStatus::Solved | SolverStatus::AlmostSolved
    ) {
        return None;
    }
    // The smaller of the primal and dual values, less the solver's tolerance; every placement
    // costs whole bytes, so the bound rounds up.
    let value = solver.solution.obj_val.min(solver.solution.obj_val_dual);
    let bytes = (value + constant) * scale * (1.0 - 1e-6) - 1e-3;
    Some(bytes.max(0.0).ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::propagate_pools;

    #[test]
    fn the_bound_is_at_most_the_optimum_and_tight_on_an_integral_case() {
        let mut g = Graph::new();
        let a = g.task("load", &()).key("a").pool("A").size_hint(10).add();
        let b = g.task("load", &()).key("b").pool("B").size_hint(15).add();
        let a1 = g.task("f", &()).key("a1").input(a).size_hint(100).add();
        g.task("g", &()).key("c").input(a1).input(b).add();
        let topo = g.validate().unwrap();
        let p = propagate_pools(&g, &topo);
        assert_eq!(p.estimate.full, 10);
        let lb = lower_bound(&g, &topo, &p).expect("small graphs get a bound");
        assert_eq!(lb, 10);
    }
}
