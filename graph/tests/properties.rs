//! Properties of the propagate-pools pass over random DAGs.

use std::collections::BTreeMap;

use drover_graph::cost::cross_pool_bytes;
use drover_graph::{
    propagate_pools, propagate_pools_with, Graph, GraphFile, Pass, Place, Reason, TaskSpec,
    DEFAULT_SIZE_HINT,
};
use proptest::prelude::*;

/// One random task: placement (0..=5 free, 6..=8 pinned to pool 0..=2, 9 any), size hint, and
/// inputs as indices of earlier tasks.
#[derive(Debug, Clone)]
struct RawTask {
    place: u8,
    size: Option<u64>,
    inputs: Vec<usize>,
}

fn raw_dag() -> impl Strategy<Value = Vec<RawTask>> {
    prop::collection::vec(
        (
            0u8..10,
            prop::option::of(0u64..3000),
            prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        ),
        1..50,
    )
    .prop_map(|tasks| {
        tasks
            .into_iter()
            .enumerate()
            .map(|(i, (place, size, idx))| RawTask {
                place,
                size,
                inputs: if i == 0 {
                    vec![]
                } else {
                    idx.iter().map(|x| x.index(i)).collect()
                },
            })
            .collect()
    })
}

fn specs(raw: &[RawTask]) -> Vec<TaskSpec> {
    raw.iter()
        .enumerate()
        .map(|(i, t)| TaskSpec {
            key: format!("t{i}"),
            function: format!("f{}", i % 3),
            params: serde_json::Value::Null,
            inputs: t.inputs.iter().map(|j| format!("t{j}")).collect(),
            pool: (6..=8)
                .contains(&t.place)
                .then(|| ["A", "B", "C"][(t.place - 6) as usize].to_owned()),
            any_pool: t.place == 9,
            resources: BTreeMap::new(),
            priority: 0,
            retries: 0,
            size_hint: t.size,
            timeout: None,
            once_cell: None,
            durable: None,
        })
        .collect()
}

type Outcome = (
    BTreeMap<String, (Option<String>, Reason)>,
    drover_graph::TransferEstimate,
);

/// Per key: (pool, reason), plus the estimate.
fn outcome(g: &Graph) -> Outcome {
    let topo = g.validate().expect("generated DAGs are valid");
    let p = propagate_pools(g, &topo);
    let per_key = g
        .task_ids()
        .map(|t| {
            (
                g.key(t).to_owned(),
                (p.pool_name(g, t).map(str::to_owned), p.reason(t)),
            )
        })
        .collect();
    (per_key, p.estimate)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn pinned_and_any_never_change(raw in raw_dag()) {
        let g = Graph::from_file(&GraphFile { namespace: None, pass: None, tasks: specs(&raw) });
        let topo = g.validate().unwrap();
        let p = propagate_pools(&g, &topo);
        for t in g.task_ids() {
            match g.place(t) {
                Place::Pinned(pool) => {
                    prop_assert_eq!(p.pool(t), Some(pool));
                    prop_assert_eq!(p.reason(t), Reason::Pinned);
                }
                Place::Any => {
                    prop_assert_eq!(p.pool(t), None);
                    prop_assert_eq!(p.reason(t), Reason::Any);
                }
                Place::Free => {
                    prop_assert!(!matches!(p.reason(t), Reason::Pinned | Reason::Any));
                    let pooled = matches!(p.reason(t), Reason::Forward | Reason::Backward | Reason::Optimised);
                    prop_assert_eq!(p.pool(t).is_some(), pooled);
                }
            }
        }
    }

    #[test]
    fn same_graph_in_any_order_gets_the_same_answer(
        (raw, order) in raw_dag().prop_flat_map(|raw| {
            let n = raw.len();
            (Just(raw), Just((0..n).collect::<Vec<_>>()).prop_shuffle())
        })
    ) {
        let in_order = specs(&raw);
        let shuffled: Vec<TaskSpec> = order.iter().map(|&i| in_order[i].clone()).collect();
        let a = outcome(&Graph::from_file(&GraphFile { namespace: None, pass: None, tasks: in_order }));
        let b = outcome(&Graph::from_file(&GraphFile { namespace: None, pass: None, tasks: shuffled }));
        prop_assert_eq!(a, b);
    }

    #[test]
    fn the_pass_never_increases_cross_pool_bytes(raw in raw_dag()) {
        let g = Graph::from_file(&GraphFile { namespace: None, pass: None, tasks: specs(&raw) });
        let (_, est) = outcome(&g);
        prop_assert!(est.full <= est.forward, "{:?}", est);
        prop_assert!(est.forward <= est.without, "{:?}", est);
    }

    #[test]
    fn forward_picks_the_pool_with_strictly_most_input_bytes(raw in raw_dag()) {
        let g = Graph::from_file(&GraphFile { namespace: None, pass: None, tasks: specs(&raw) });
        let topo = g.validate().unwrap();
        let p = propagate_pools_with(&g, &topo, Pass::Linear);
        for t in g.task_ids() {
            if p.reason(t) != Reason::Forward {
                continue;
            }
            let mut inputs: Vec<_> = g.inputs(t).to_vec();
            inputs.sort();
            inputs.dedup();
            let mut bytes: BTreeMap<u32, u64> = BTreeMap::new();
            for i in inputs {
                // Only inputs that had a pool when forward reached t vote: pinned or forward.
                if matches!(p.reason(i), Reason::Pinned | Reason::Forward) {
                    *bytes.entry(p.pool(i).unwrap().0).or_default() += g.size_hint(i).unwrap_or(DEFAULT_SIZE_HINT);
                }
            }
            let chosen = bytes[&p.pool(t).unwrap().0];
            for (pool, b) in &bytes {
                if *pool != p.pool(t).unwrap().0 {
                    prop_assert!(*b < chosen, "task {} chose {} over {}", g.key(t), chosen, b);
                }
            }
        }
    }

    #[test]
    fn the_optimiser_is_never_worse_than_the_linear_pass(raw in raw_dag()) {
        let g = Graph::from_file(&GraphFile { namespace: None, pass: None, tasks: specs(&raw) });
        let topo = g.validate().unwrap();
        let lin = propagate_pools_with(&g, &topo, Pass::Linear);
        let opt = propagate_pools(&g, &topo);
        prop_assert_eq!(opt.estimate.linear, lin.estimate.full);
        prop_assert!(opt.estimate.full <= lin.estimate.full, "{:?}", opt.estimate);
        prop_assert_eq!(opt.estimate.full, cross_pool_bytes(&g, &topo, opt.pools()));
        for t in g.task_ids() {
            if opt.reason(t) == Reason::Optimised {
                prop_assert!(opt.pool(t).is_some() && opt.pool(t) != lin.pool(t));
            } else {
                prop_assert_eq!((opt.pool(t), opt.reason(t)), (lin.pool(t), lin.reason(t)));
            }
        }
    }
}

/// Small graphs in two pools (placements 0..=5 free, 6 in A, 7 in B, 8 any).
fn two_pool_dag() -> impl Strategy<Value = Vec<RawTask>> {
    raw_dag().prop_map(|raw| {
        raw.into_iter()
            .take(14)
            .map(|mut t| {
                t.place = match t.place {
                    8 => 7,
                    9 => 9,
                    p => p,
                };
                t
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Two pools: the placement equals the best of every placement of the tasks the pass placed
    /// (tasks it left free have nothing pinned near them and stay free).
    #[test]
    fn two_pools_are_placed_optimally(raw in two_pool_dag()) {
        let g = Graph::from_file(&GraphFile { namespace: None, pass: None, tasks: specs(&raw) });
        let topo = g.validate().unwrap();
        let opt = propagate_pools(&g, &topo);
        let free: Vec<_> = g
            .task_ids()
            .filter(|&t| g.place(t) == Place::Free && opt.pool(t).is_some())
            .collect();
        prop_assume!(free.len() <= 12);
        let pools: Vec<_> = g.pools().map(|(id, _)| id).collect();
        prop_assume!(!pools.is_empty());
        let mut best = u64::MAX;
        let mut placement: Vec<_> = opt.pools().to_vec();
        for mask in 0u32..(1 << free.len()) {
            for (i, &t) in free.iter().enumerate() {
                let side = (mask >> i & 1) as usize;
                placement[t.index()] = Some(pools[side.min(pools.len() - 1)]);
            }
            best = best.min(cross_pool_bytes(&g, &topo, &placement));
        }
        prop_assert_eq!(opt.estimate.full, best.min(opt.estimate.full));
        prop_assert!(opt.estimate.full <= best, "pass {} > brute force {}", opt.estimate.full, best);
    }
}
