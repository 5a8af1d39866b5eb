//! Properties of the propagate-pools pass over random DAGs.

use std::collections::BTreeMap;

use drover_graph::{propagate_pools, Graph, GraphFile, Place, Reason, TaskSpec, DEFAULT_SIZE_HINT};
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
        let g = Graph::from_file(&GraphFile { namespace: None, tasks: specs(&raw) });
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
                    let pooled = matches!(p.reason(t), Reason::Forward | Reason::Backward);
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
        let a = outcome(&Graph::from_file(&GraphFile { namespace: None, tasks: in_order }));
        let b = outcome(&Graph::from_file(&GraphFile { namespace: None, tasks: shuffled }));
        prop_assert_eq!(a, b);
    }

    #[test]
    fn the_pass_never_increases_cross_pool_bytes(raw in raw_dag()) {
        let g = Graph::from_file(&GraphFile { namespace: None, tasks: specs(&raw) });
        let (_, est) = outcome(&g);
        prop_assert!(est.full <= est.forward, "{:?}", est);
        prop_assert!(est.forward <= est.without, "{:?}", est);
    }

    #[test]
    fn forward_picks_the_pool_with_strictly_most_input_bytes(raw in raw_dag()) {
        let g = Graph::from_file(&GraphFile { namespace: None, tasks: specs(&raw) });
        let topo = g.validate().unwrap();
        let p = propagate_pools(&g, &topo);
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
}
