//! The cost model: estimated output sizes, and the estimated bytes that cross pool boundaries.

use serde::Serialize;

use crate::{Graph, PoolId, TaskId, Topology};

/// The size assumed for a task with no size hint: 1 KiB, as Dask's `default-data-size`.
///
/// The default is per task: in a decision where some inputs have hints and others don't, the
/// others count as this many bytes. It never switches the rule for the whole decision.
pub const DEFAULT_SIZE_HINT: u64 = 1024;

/// The estimated output bytes of task `id`: its size hint, or [`DEFAULT_SIZE_HINT`]; 0 for a
/// once-cell, which never moves.
#[inline]
pub fn estimated_size(graph: &Graph, id: TaskId) -> u64 {
    if graph.is_once_cell(id) {
        // Never moved: each worker loads its own.
        return 0;
    }
    graph.size_hint(id).unwrap_or(DEFAULT_SIZE_HINT)
}

/// The objective ([`cross_pool_bytes`]) at each step of the pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TransferEstimate {
    /// With only the user's pins (no pass).
    pub without: u64,
    /// After the forward step of the linear pass.
    pub forward: u64,
    /// After the linear pass (forward and backward).
    pub linear: u64,
    /// After the whole pass: the placement the scheduler gets (the optimised one unless the
    /// linear pass was asked for).
    pub full: u64,
    /// A lower bound on the best placement's bytes, when one was computed (small graphs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lower_bound: Option<u64>,
}

/// Calls `f(input)` once per distinct input of `task`: an input listed twice by one task moves
/// once. Short input lists (the common case) are deduplicated by scanning the list itself;
/// long ones use `mark`, scratch of the graph's length holding `u32::MAX` or earlier task ids.
/// Linear time overall.
#[inline]
pub(crate) fn for_each_distinct_input(
    graph: &Graph,
    task: TaskId,
    mark: &mut [u32],
    mut f: impl FnMut(TaskId),
) {
    const SCAN: usize = 8;
    let inputs = graph.inputs(task);
    if inputs.len() <= SCAN {
        for (i, &input) in inputs.iter().enumerate() {
            if !inputs[..i].contains(&input) {
                f(input);
            }
        }
        return;
    }
    for &input in inputs {
        let m = &mut mark[input.index()];
        if *m != task.0 {
            *m = task.0;
            f(input);
        }
    }
}

/// The objective every part of Drover uses: the estimated bytes that cross pools if each task
/// ran in `pools[task]`. A task's output moves once into each *other* pool where one of its
/// consumers runs, however many consumers run there; a task with no pool shares a pool with
/// nothing, so each consumer without a pool counts once, and every consumer of an output made
/// without a pool counts once per distinct pool (or once each if it has none). Sums saturate
/// at `u64::MAX` (size hints may be huge). Linear in tasks plus edges.
pub fn cross_pool_bytes(graph: &Graph, topo: &Topology, pools: &[Option<PoolId>]) -> u64 {
    let mut seen = vec![u32::MAX; graph.pool_count()];
    let mut total = 0u64;
    for u in graph.task_ids() {
        let size = estimated_size(graph, u);
        if size == 0 {
            continue;
        }
        let moves = other_pools_consuming(topo, |t| pools[t.index()], u, &mut seen);
        total = total.saturating_add(size.saturating_mul(moves));
    }
    total
}

/// How many times `u`'s output moves when task `t` runs in `pool_of(t)`: the distinct pools other than its own
/// among its consumers, plus one per distinct consumer without a pool. `seen` is scratch of
/// the pool count, holding `u32::MAX` or earlier task ids.
#[inline]
pub(crate) fn other_pools_consuming(
    topo: &Topology,
    pool_of: impl Fn(TaskId) -> Option<PoolId>,
    u: TaskId,
    seen: &mut [u32],
) -> u64 {
    let own = pool_of(u);
    let mut moves = 0u64;
    let mut last: Option<TaskId> = None;
    // Consumers come once per mention, in id order: a repeat is the previous one.
    for &c in topo.consumers(u) {
        if last == Some(c) {
            continue;
        }
        last = Some(c);
        match pool_of(c) {
            None => moves += 1,
            Some(p) if Some(p) == own => {}
            Some(p) => {
                if seen[p.index()] != u.0 {
                    seen[p.index()] = u.0;
                    moves += 1;
                }
            }
        }
    }
    moves
}
