//! The cost model: estimated output sizes, and the estimated bytes that cross pool boundaries.

use serde::Serialize;

use crate::{Graph, PoolId, TaskId};

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

/// Estimated bytes on edges whose two ends are not in the same pool, for three assignments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TransferEstimate {
    /// With only the user's pins (no pass).
    pub without: u64,
    /// After the forward step of the pass.
    pub forward: u64,
    /// After the whole pass.
    pub full: u64,
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

/// Estimated bytes moved between pools if each task ran in `pools[task]`: the sum over distinct
/// edges of the input's size where the ends' pools differ or either has none (a task with no
/// pool shares a pool with nothing). Sums saturate at `u64::MAX` (size hints may be huge).
pub fn cross_pool_bytes(graph: &Graph, pools: &[Option<PoolId>]) -> u64 {
    let mut mark = vec![u32::MAX; graph.len()];
    let mut total = 0u64;
    for t in graph.task_ids() {
        let here = pools[t.index()];
        for_each_distinct_input(graph, t, &mut mark, |input| {
            let there = pools[input.index()];
            if here.is_none() || here != there {
                total = total.saturating_add(estimated_size(graph, input));
            }
        });
    }
    total
}
