//! Unit tests of the core: events in, commands out, no sockets.

use super::*;

fn hello(name: &str, resources: &str, nthreads: u32) -> WorkerHello {
    let r: drover_annotations::Resources = resources.parse().unwrap();
    WorkerHello {
        name: name.to_owned(),
        resources: r.iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        nthreads,
        peer_addr: "127.0.0.1:1".parse().unwrap(),
        peer_cert: vec![],
        data_addr: None,
        functions: FUNCTIONS.iter().map(|f| f.to_string()).collect(),
    }
}

/// Every function the tests' graphs use: the test workers have them all.
const FUNCTIONS: &[&str] = &[
    "bytes", "len", "concat", "noop", "command", "f", "g", "load",
];

fn computes(cmds: &[Command]) -> Vec<(WorkerId, String)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Worker(w, ToWorker::Compute(t)) => Some((*w, t.key.clone())),
            _ => None,
        })
        .collect()
}

fn events(cmds: &[Command]) -> Vec<TaskEvent> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Client(_, ToClient::Events(e)) => Some(e.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

struct Sim {
    core: Core,
}

impl Sim {
    /// Handles an event and checks the core's invariants after it.
    fn handle(&mut self, e: Event) -> Vec<Command> {
        let what = format!("{e:?}");
        let cmds = self.core.handle(e);
        if let Err(broken) = self.core.check() {
            panic!("after {what}: {broken}");
        }
        cmds
    }

    /// A core that assigns tasks only once their inputs are done (most tests are about other
    /// rules; [`Sim::preassigning`] tests pre-assignment), with these workers and client 0.
    fn new(workers: &[(&str, &str, u32)]) -> Sim {
        Sim::with(workers, false)
    }

    /// [`Sim::new`] with pre-assignment on, as it is by default.
    fn preassigning(workers: &[(&str, &str, u32)]) -> Sim {
        Sim::with(workers, true)
    }

    fn with(workers: &[(&str, &str, u32)], preassign: bool) -> Sim {
        let core = Core::with_config(CoreConfig {
            preassign,
            ..CoreConfig::default()
        });
        let mut s = Sim { core };
        for (i, (name, res, n)) in workers.iter().enumerate() {
            s.handle(Event::WorkerJoined {
                id: i as u32,
                hello: hello(name, res, *n),
            });
        }
        s.handle(Event::ClientJoined { id: 0 });
        s
    }

    fn submit(&mut self, json: &str, wants: &[&str]) -> Vec<Command> {
        self.handle(Event::Client(
            0,
            FromClient::Submit {
                run: 1,
                graph_json: json.to_owned(),
                wants: wants.iter().map(|s| s.to_string()).collect(),
            },
        ))
    }

    fn id(&self, key: &str) -> TaskIdx {
        self.core.slot_of(key).expect("a known key")
    }

    fn finish(
        &mut self,
        w: WorkerId,
        key: &str,
        size: u64,
        fetched: Vec<(TaskIdx, WorkerId, u64)>,
    ) -> Vec<Command> {
        let id = self.id(key);
        let mut cmds = Vec::new();
        if !fetched.is_empty() {
            cmds = self.handle(Event::Worker(
                w,
                FromWorker::Fetched {
                    task: id,
                    inputs: fetched,
                    fetch_us: 0,
                },
            ));
        }
        cmds.extend(self.handle(Event::Worker(
            w,
            FromWorker::Finished {
                id,
                size,
                duration_us: 10,
                output: None,
            },
        )));
        cmds
    }

    fn fail(&mut self, w: WorkerId, key: &str, error: &str) -> Vec<Command> {
        let id = self.id(key);
        self.handle(Event::Worker(
            w,
            FromWorker::Failed {
                id,
                error: error.to_owned(),
                duration_us: 5,
            },
        ))
    }
}

const POOLS: &str = r#"{"tasks": [
  {"key": "a", "function": "bytes", "pool": "A", "size_hint": 800},
  {"key": "b", "function": "bytes", "pool": "B", "size_hint": 80},
  {"key": "mean", "function": "len", "inputs": ["a"], "size_hint": 8},
  {"key": "run_in_b", "function": "concat", "inputs": ["b", "mean"]}
]}"#;

#[test]
fn pinned_tasks_go_to_their_pools_and_results_flow() {
    let mut s = Sim::new(&[
        ("wa", "pool-A=1", 1),
        ("wb", "pool-B=1", 1),
        ("plain", "", 1),
    ]);
    let cmds = s.submit(POOLS, &["run_in_b"]);
    assert!(cmds.iter().any(|c| matches!(
        c,
        Command::Client(0, ToClient::Accepted { run: 1, tasks: 4 })
    )));
    let mut c = computes(&cmds);
    c.sort();
    assert_eq!(c, [(0, "a".to_owned()), (1, "b".to_owned())]);
    assert!(computes(&s.finish(0, "a", 800, vec![])) == [(0, "mean".to_owned())]);
    s.finish(1, "b", 80, vec![]);
    // mean: 8 bytes in A, b: 80 bytes in B -> B.
    let cmds = s.finish(0, "mean", 8, vec![]);
    assert_eq!(computes(&cmds), [(1, "run_in_b".to_owned())]);
    // a is no longer needed once mean ran: freed.
    let cmds = s.finish(1, "run_in_b", 88, vec![(s.id("mean"), 0, 8)]);
    let ev = events(&cmds);
    assert_eq!(ev[0].key, "run_in_b");
    assert_eq!((ev[0].moved_bytes, ev[0].cross_pool_bytes), (8, 8));
    assert_eq!(ev[0].pool.as_deref(), Some("B"));
    // b and mean are freed now; run_in_b is wanted by the client and kept.
    let frees: Vec<_> = cmds
        .iter()
        .filter(|c| matches!(c, Command::Worker(_, ToWorker::Free(_))))
        .collect();
    assert_eq!(frees.len(), 3, "{cmds:?}"); // b on wb, mean on wa and its replica on wb
    assert_eq!(s.core.tasks[s.id("run_in_b") as usize].state, State::Memory);
    assert_eq!(s.core.tasks[s.id("a") as usize].state, State::Released);
}

#[test]
fn run_time_placement_uses_actual_sizes() {
    // The pass says B (hints), but the real sizes say A.
    let json = r#"{"tasks": [
      {"key": "a", "function": "bytes", "pool": "A", "size_hint": 10},
      {"key": "b", "function": "bytes", "pool": "B", "size_hint": 1000},
      {"key": "c", "function": "concat", "inputs": ["a", "b"]}
    ]}"#;
    let mut s = Sim::new(&[("wa", "pool-A=1", 1), ("wb", "pool-B=1", 1)]);
    s.submit(json, &[]);
    s.finish(0, "a", 5000, vec![]);
    let cmds = s.finish(1, "b", 20, vec![]);
    assert_eq!(computes(&cmds), [(0, "c".to_owned())]);
}

#[test]
fn a_pool_without_workers_warns_then_runs_when_one_joins() {
    let mut s = Sim::new(&[("plain", "", 2)]);
    let cmds = s.submit(
        r#"{"tasks": [{"key": "x", "function": "noop", "pool": "Z"}]}"#,
        &[],
    );
    let warnings: Vec<_> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::Client(0, ToClient::Warning(w)) => Some(w.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains("pool \"Z\" has no workers"),
        "{}",
        warnings[0]
    );
    assert!(computes(&cmds).is_empty());
    let cmds = s.handle(Event::WorkerJoined {
        id: 9,
        hello: hello("wz", "pool-Z=1", 1),
    });
    assert_eq!(computes(&cmds), [(9, "x".to_owned())]);
}

#[test]
fn failures_name_the_upstream_key_and_spare_unrelated_tasks() {
    let json = r#"{"tasks": [
      {"key": "bad", "function": "command"},
      {"key": "child", "function": "concat", "inputs": ["bad"]},
      {"key": "grandchild", "function": "concat", "inputs": ["child", "child"]},
      {"key": "ok", "function": "noop"}
    ]}"#;
    let mut s = Sim::new(&[("w", "", 4)]);
    s.submit(json, &[]);
    let cmds = s.fail(0, "bad", "exit code 3: boom");
    let ev = events(&cmds);
    assert_eq!(ev.len(), 3, "{ev:?}");
    assert_eq!(ev[0].error.as_deref(), Some("exit code 3: boom"));
    let child = ev.iter().find(|e| e.key == "child").unwrap();
    assert!(
        child
            .error
            .as_ref()
            .unwrap()
            .starts_with("input \"bad\" failed"),
        "{child:?}"
    );
    let gc = ev.iter().find(|e| e.key == "grandchild").unwrap();
    assert!(gc
        .error
        .as_ref()
        .unwrap()
        .starts_with("input \"child\" failed"));
    let ev = events(&s.finish(0, "ok", 0, vec![]));
    assert_eq!(ev[0].status, TaskStatus::Finished);
}

#[test]
fn retries_rerun_a_failed_task() {
    let mut s = Sim::new(&[("w", "", 1)]);
    s.submit(
        r#"{"tasks": [{"key": "flaky", "function": "f", "retries": 1}]}"#,
        &[],
    );
    let cmds = s.fail(0, "flaky", "first try");
    assert_eq!(computes(&cmds), [(0, "flaky".to_owned())]);
    assert!(events(&cmds).is_empty());
    let cmds = s.fail(0, "flaky", "second try");
    assert_eq!(events(&cmds)[0].error.as_deref(), Some("second try"));
}

#[test]
fn invalid_graphs_are_rejected_without_changing_state() {
    let mut s = Sim::new(&[("w", "", 1)]);
    let cmds = s.submit(
        r#"{"tasks": [{"key": "a", "function": "f", "inputs": ["a"]}]}"#,
        &[],
    );
    let Command::Client(0, ToClient::Rejected { error, .. }) = &cmds[0] else {
        panic!("{cmds:?}")
    };
    assert!(error.contains("cycle: a -> a"), "{error}");
    assert_eq!(s.core.stats().tasks, 0);
}

#[test]
fn resources_restrict_eligibility() {
    let mut s = Sim::new(&[("cpu", "", 4), ("gpu", "gpu=1", 1)]);
    let cmds = s.submit(
        r#"{"tasks": [{"key": "t", "function": "f", "resources": {"gpu": 1}}]}"#,
        &[],
    );
    assert_eq!(computes(&cmds), [(1, "t".to_owned())]);
}

#[test]
fn earliest_start_spreads_work_and_prefers_local_data() {
    let mut s = Sim::new(&[("w0", "", 1), ("w1", "", 1)]);
    let json = r#"{"tasks": [
      {"key": "big", "function": "bytes"},
      {"key": "use1", "function": "len", "inputs": ["big"]},
      {"key": "use2", "function": "len", "inputs": ["big"]}
    ]}"#;
    s.submit(json, &[]);
    s.finish(0, "big", 1 << 30, vec![]);
    let c = computes(&s.core.out.clone());
    assert!(c.is_empty());
    // Both consumers went to w0, where the gigabyte is.
    let st = s.core.stats();
    assert_eq!(st.assigned, 2);
    assert!(s.core.workers[&0].assigned.len() == 2);
}

#[test]
fn a_task_that_keeps_killing_workers_is_failed_as_suspicious() {
    let mut s = Sim::new(&[("w0", "", 1), ("w1", "", 1), ("w2", "", 1), ("w3", "", 1)]);
    s.submit(r#"{"tasks": [{"key": "killer", "function": "f"}, {"key": "after", "function": "g", "inputs": ["killer"]}]}"#, &[]);
    let t = s.id("killer");
    for round in 0..3 {
        let State::Assigned(w) = s.core.tasks[t as usize].state else {
            panic!("round {round}: {:?}", s.core.tasks[t as usize].state)
        };
        // Reported started or not: it was the only task there, so it was the one running.
        if round == 1 {
            s.handle(Event::Worker(w, FromWorker::Started(t)));
        }
        let cmds = s.handle(Event::WorkerLeft { id: w });
        if round < 2 {
            assert!(events(&cmds).is_empty());
            assert_eq!(s.core.deaths[&t].len(), round + 1);
        } else {
            let ev = events(&cmds);
            let e = ev[0].error.as_deref().unwrap();
            assert!(
                e.starts_with("suspicious task: it was running on 3 workers that died"),
                "{e}"
            );
            assert!(ev[1]
                .error
                .as_deref()
                .unwrap()
                .starts_with("input \"killer\" failed"));
        }
    }
}

#[test]
fn only_the_tasks_a_dead_worker_was_running_count_its_death() {
    let mut s = Sim::new(&[("w0", "", 1)]);
    s.submit(
        r#"{"tasks": [{"key": "low", "function": "f", "priority": -5}, {"key": "high", "function": "f", "priority": 5}]}"#,
        &[],
    );
    let (low, high) = (s.id("low"), s.id("high"));
    s.handle(Event::WorkerJoined {
        id: 1,
        hello: hello("w1", "", 1),
    });
    // Both were queued on w0; with one thread it runs "high" first.
    s.handle(Event::WorkerLeft { id: 0 });
    assert_eq!(s.core.deaths.get(&high).map(Vec::len), Some(1));
    assert!(!s.core.deaths.contains_key(&low));
    // A reported start wins over the run-order guess.
    let mut s = Sim::new(&[("w0", "", 1)]);
    s.submit(
        r#"{"tasks": [{"key": "low", "function": "f", "priority": -5}, {"key": "high", "function": "f", "priority": 5}]}"#,
        &[],
    );
    let (low, high) = (s.id("low"), s.id("high"));
    s.handle(Event::Worker(0, FromWorker::Started(low)));
    s.handle(Event::WorkerLeft { id: 0 });
    assert!(s.core.deaths.contains_key(&low) && !s.core.deaths.contains_key(&high));
}

#[test]
fn a_lost_worker_s_tasks_and_results_are_recomputed() {
    let mut s = Sim::new(&[("w0", "", 1), ("w1", "", 1)]);
    let json = r#"{"tasks": [
      {"key": "x", "function": "bytes"},
      {"key": "y", "function": "len", "inputs": ["x"]}
    ]}"#;
    s.submit(json, &["y"]);
    let holder = s
        .core
        .workers
        .iter()
        .find(|(_, w)| !w.assigned.is_empty())
        .map(|(id, _)| *id)
        .unwrap();
    s.finish(holder, "x", 10, vec![]);
    let running_y = match s.core.tasks[s.id("y") as usize].state {
        State::Assigned(w) => w,
        ref other => panic!("{other:?}"),
    };
    let cmds = s.handle(Event::WorkerLeft { id: holder });
    let other = 1 - holder;
    // x was only on the lost worker: recomputed on the survivor (y, if it was there, waits).
    assert!(
        computes(&cmds).contains(&(other, "x".to_owned())),
        "{cmds:?} y was on {running_y}"
    );
}

#[test]
fn tasks_no_worker_can_run_are_warned_about_once() {
    let mut s = Sim::new(&[("cpu", "", 1)]);
    let cmds = s.submit(r#"{"tasks": [{"key": "t", "function": "f", "resources": {"gpu": 1}}, {"key": "u", "function": "f", "resources": {"gpu": 1}}]}"#, &[]);
    let warnings: Vec<String> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::Client(0, ToClient::Warning(w)) => Some(w.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("no connected worker can run 2 task(s) (e.g. \"t\" needing gpu=1)"),
        "{}",
        warnings[0]
    );
    let cmds = s.handle(Event::WorkerJoined {
        id: 5,
        hello: hello("gpu", "gpu=1", 1),
    });
    // Both go to the one worker with a GPU, which runs them one at a time.
    assert_eq!(computes(&cmds), [(5, "t".to_owned()), (5, "u".to_owned())]);
}

#[test]
fn a_departed_client_s_chain_of_a_hundred_thousand_tasks_is_cancelled_without_recursion() {
    // Cancelling a chain walks it input by input: by recursion this overflowed the stack
    // (the scheduler aborted when a client with a deep graph left).
    let n = 100_000;
    let mut tasks = vec![r#"{"key": "c0", "function": "f"}"#.to_owned()];
    for i in 1..n {
        tasks.push(format!(
            r#"{{"key": "c{i}", "function": "f", "inputs": ["c{}"]}}"#,
            i - 1
        ));
    }
    let json = format!(r#"{{"tasks": [{}]}}"#, tasks.join(","));
    let mut s = Sim::new(&[("w", "", 1)]);
    let last = format!("c{}", n - 1);
    s.submit(&json, &[&last]);
    assert!(matches!(
        s.core.tasks[s.id("c0") as usize].state,
        State::Assigned(_)
    ));
    s.handle(Event::ClientLeft { id: 0 });
    // Everything but the running first task is cancelled and forgotten.
    assert!(s.core.slot_of(&last).is_none());
    assert!(s.core.slot_of("c1").is_none());
    assert!(s.core.keys.len() <= 1, "{} keys left", s.core.keys.len());
}

#[test]
fn a_departed_client_s_waiting_tasks_are_cancelled_unless_shared() {
    let mut s = Sim::new(&[("w", "", 1)]);
    s.handle(Event::ClientJoined { id: 1 });
    // Client 0: a -> b -> c. Client 1 shares "a" and "b" but not "c".
    s.submit(r#"{"tasks": [{"key": "a", "function": "f"}, {"key": "b", "function": "f", "inputs": ["a"]}, {"key": "c", "function": "f", "inputs": ["b"]}]}"#, &["c"]);
    s.handle(Event::Client(
        1,
        FromClient::Submit {
            run: 7,
            graph_json: r#"{"tasks": [{"key": "a", "function": "f"}, {"key": "b", "function": "f", "inputs": ["a"]}]}"#.into(),
            wants: vec!["b".into()],
        },
    ));
    s.handle(Event::ClientLeft { id: 0 });
    let state = |s: &Sim, k: &str| s.core.tasks[s.id(k) as usize].state.clone();
    // Only client 0 waited for c: cancelled, and forgotten with its client.
    assert!(s.core.slot_of("c").is_none());
    assert_eq!(state(&s, "b"), State::Waiting, "client 1 still needs b");
    assert!(matches!(state(&s, "a"), State::Assigned(_)));
    // a finishes, b runs for client 1, and nothing is left waiting on c.
    let cmds = s.finish(0, "a", 1, vec![]);
    assert_eq!(computes(&cmds), [(0, "b".to_owned())]);
    let cmds = s.finish(0, "b", 1, vec![]);
    assert!(computes(&cmds).is_empty());
    assert_eq!(state(&s, "b"), State::Memory, "wanted by client 1");
    // Client 1 leaves too: its wanted result is freed (and then forgotten).
    let b = s.id("b");
    let cmds = s.handle(Event::ClientLeft { id: 1 });
    assert!(cmds
        .iter()
        .any(|c| matches!(c, Command::Worker(0, ToWorker::Free(ids)) if ids.contains(&b))));
    assert_eq!(s.core.stats().tasks, 0);
}

#[test]
fn tasks_of_departed_clients_are_forgotten_and_their_slots_reused() {
    let mut s = Sim::new(&[("w", "", 1)]);
    s.handle(Event::ClientJoined { id: 1 });
    let chain = r#"{"tasks": [{"key": "a", "function": "f"}, {"key": "b", "function": "f", "inputs": ["a"]}]}"#;
    s.submit(chain, &["b"]);
    // Client 1 shares "a" only.
    s.handle(Event::Client(
        1,
        FromClient::Submit {
            run: 1,
            graph_json: r#"{"tasks": [{"key": "a", "function": "f"}]}"#.into(),
            wants: vec!["a".into()],
        },
    ));
    s.finish(0, "a", 3, vec![]);
    s.finish(0, "b", 3, vec![]);
    assert_eq!(s.core.stats().tasks, 2);
    s.handle(Event::ClientLeft { id: 0 });
    // "b" belonged to client 0 alone: forgotten. "a" is still wanted by client 1.
    assert!(s.core.slot_of("b").is_none());
    assert_eq!(s.core.stats().tasks, 1);
    assert_eq!(s.core.tasks[s.id("a") as usize].state, State::Memory);
    s.handle(Event::ClientLeft { id: 1 });
    assert_eq!(s.core.stats().tasks, 0);
    assert!(s.core.tasks.is_empty() && s.core.keys.len() == 0);
    // The same keys can be submitted again and run from scratch.
    s.handle(Event::ClientJoined { id: 2 });
    let cmds = s.handle(Event::Client(
        2,
        FromClient::Submit {
            run: 1,
            graph_json: chain.into(),
            wants: vec!["b".into()],
        },
    ));
    assert_eq!(computes(&cmds), [(0, "a".to_owned())]);
    s.finish(0, "a", 3, vec![]);
    let cmds = s.finish(0, "b", 3, vec![]);
    assert_eq!(events(&cmds).iter().filter(|e| e.key == "b").count(), 1);
}

#[test]
fn a_reused_slot_is_never_scheduled_by_a_stale_queue_entry() {
    // No worker for pool P: the task waits in P's queue; its client leaves (cancelled,
    // forgotten). A new task pinned to Q reuses the slot and must go to Q's worker only.
    let mut s = Sim::new(&[("q", "pool-Q=1", 1)]);
    s.submit(
        r#"{"tasks": [{"key": "p", "function": "f", "pool": "P"}]}"#,
        &[],
    );
    s.handle(Event::ClientLeft { id: 0 });
    assert_eq!(s.core.stats().tasks, 0);
    assert!(s.core.ready.is_empty(), "no stale entries left");
    s.handle(Event::ClientJoined { id: 1 });
    let cmds = s.handle(Event::Client(
        1,
        FromClient::Submit {
            run: 1,
            graph_json: r#"{"tasks": [{"key": "x", "function": "f", "pool": "Q"}]}"#.into(),
            wants: vec![],
        },
    ));
    assert_eq!(computes(&cmds), [(0, "x".to_owned())]);
    // A worker of P joining later gets nothing.
    let cmds = s.handle(Event::WorkerJoined {
        id: 5,
        hello: hello("p", "pool-P=1", 1),
    });
    assert!(computes(&cmds).is_empty(), "{cmds:?}");
}

#[test]
fn a_task_shared_by_several_clients_goes_when_the_last_of_them_leaves() {
    let mut s = Sim::new(&[]);
    for c in 1..=2 {
        s.handle(Event::ClientJoined { id: c });
    }
    for c in 0..=2 {
        s.handle(Event::Client(
            c,
            FromClient::Submit {
                run: 1,
                graph_json: r#"{"tasks": [{"key": "shared", "function": "f"}]}"#.into(),
                wants: vec![],
            },
        ));
    }
    s.handle(Event::ClientLeft { id: 0 });
    s.handle(Event::ClientLeft { id: 1 });
    assert_eq!(s.core.stats().tasks, 1, "client 2 still waits for it");
    s.handle(Event::ClientLeft { id: 2 });
    assert_eq!(s.core.stats().tasks, 0);
}

fn cell_specs(cmds: &[Command]) -> Vec<(WorkerId, String, bool)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Worker(w, ToWorker::Cell(s)) => Some((*w, s.key.clone(), s.load_now)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_eager_pooled_cell_loads_at_submission_only_in_its_pool_and_users_follow_it() {
    let mut s = Sim::new(&[
        ("a0", "pool-A=1", 1),
        ("a1", "pool-A=1", 1),
        ("b0", "pool-B=1", 1),
    ]);
    let cmds = s.submit(
        r#"{"tasks": [
            {"key": "m", "function": "load", "pool": "A", "once_cell": {}},
            {"key": "up", "function": "noop", "pool": "B"},
            {"key": "t1", "function": "f", "inputs": ["m", "up"]},
            {"key": "t2", "function": "f", "inputs": ["m", "up"]}
        ]}"#,
        &[],
    );
    // Loads start at once on both pool-A workers (two users), in parallel with `up`.
    let mut loads = cell_specs(&cmds);
    loads.sort();
    assert_eq!(loads, vec![(0, "m".into(), true), (1, "m".into(), true)]);
    assert_eq!(computes(&cmds), vec![(2, "up".into())]);
    // Accepted counts tasks only.
    assert!(cmds
        .iter()
        .any(|c| matches!(c, Command::Client(_, ToClient::Accepted { tasks: 3, .. }))));
    // The users are pinned to A by the cell, whatever their input's pool says.
    let cmds = s.finish(2, "up", 1 << 20, vec![]);
    let mut placed: Vec<WorkerId> = computes(&cmds).iter().map(|(w, _)| *w).collect();
    placed.sort();
    assert_eq!(placed, vec![0, 1]);
    // Nothing more to announce: the workers know the cell.
    assert!(cell_specs(&cmds).is_empty());
    // A load is reported as an event of its own.
    let m = s.id("m");
    let cmds = s.handle(Event::Worker(
        0,
        FromWorker::Loaded {
            id: m,
            duration_us: 5000,
            bytes: 0,
            error: None,
        },
    ));
    let ev = events(&cmds);
    assert_eq!(ev.len(), 1);
    assert!(ev[0].load && ev[0].key == "m" && ev[0].worker.as_deref() == Some("a0"));
    assert_eq!(ev[0].pool.as_deref(), Some("A"));
}

#[test]
fn a_lazy_cell_is_announced_before_its_first_user_and_holders_are_preferred() {
    let mut s = Sim::new(&[("w0", "", 4), ("w1", "", 4)]);
    let cmds = s.submit(
        r#"{"tasks": [
            {"key": "m", "function": "load", "once_cell": {"lazy": true}},
            {"key": "t1", "function": "f", "inputs": ["m"]},
            {"key": "t2", "function": "f", "inputs": ["m"]},
            {"key": "t3", "function": "f", "inputs": ["m"]}
        ]}"#,
        &[],
    );
    // Not loaded ahead; announced (not loaded) to the worker of the first user, before it.
    let order: Vec<String> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::Worker(0, ToWorker::Cell(s)) => Some(format!("cell {} {}", s.key, s.load_now)),
            Command::Worker(w, ToWorker::Compute(t)) => Some(format!("{w} {}", t.key)),
            _ => None,
        })
        .collect();
    assert_eq!(
        order,
        vec!["cell m false", "0 t1", "0 t2", "0 t3"],
        "one load's worth of work waits for it"
    );
    let t1 = s.id("t1");
    let m = s.id("m");
    let cmd = s.core.compute_message(t1, 0);
    let ToWorker::Compute(c) = cmd else { panic!() };
    assert_eq!(c.inputs, vec![m]);
    assert!(
        c.sources.is_empty(),
        "a cell is never fetched: loaded where the task runs"
    );
}

#[test]
fn a_run_scoped_cell_is_dropped_when_its_run_ends_and_cells_are_released_by_name() {
    let mut s = Sim::new(&[("w0", "", 1)]);
    s.submit(
        r#"{"tasks": [
            {"key": "m", "function": "load", "once_cell": {"lifetime": "run"}},
            {"key": "k", "function": "load", "once_cell": {}},
            {"key": "t", "function": "f", "inputs": ["m", "k"]}
        ]}"#,
        &[],
    );
    let dropped = |cmds: &[Command]| -> Vec<(WorkerId, Vec<TaskIdx>)> {
        cmds.iter()
            .filter_map(|c| match c {
                Command::Worker(w, ToWorker::DropCells(ids)) => Some((*w, ids.clone())),
                _ => None,
            })
            .collect()
    };
    // The run ends while "t", which uses it, is still assigned: it stays until "t" is done.
    let cmds = s.handle(Event::Client(0, FromClient::EndRun { run: 1 }));
    assert!(dropped(&cmds).is_empty(), "a task still uses it");
    let m = s.id("m");
    let cmds = s.finish(0, "t", 1, vec![]);
    assert_eq!(
        dropped(&cmds),
        vec![(0, vec![m])],
        "only the run-scoped one"
    );
    let k = s.id("k");
    let cmds = s.handle(Event::Client(
        0,
        FromClient::ReleaseCells {
            keys: vec!["k".into()],
        },
    ));
    assert!(cmds
        .iter()
        .any(|c| matches!(c, Command::Worker(0, ToWorker::DropCells(ids)) if *ids == vec![k])));
    // A failed load is an event, and the worker no longer counts as holding it.
    let cmds = s.handle(Event::Worker(
        0,
        FromWorker::Loaded {
            id: k,
            duration_us: 10,
            bytes: 0,
            error: Some("boom".into()),
        },
    ));
    assert!(
        events(&cmds).is_empty(),
        "the run has ended: nobody to tell"
    );
    assert!(!s.core.workers[&0].cells.contains(&k));
}

/// Plays every worker's part at once: each Compute among `cmds` is answered as run (its
/// fetches reported, then finished with `size` bytes), repeatedly, until nothing is assigned.
/// Returns every command seen.
fn run_everything(s: &mut Sim, cmds: Vec<Command>, size: u64) -> Vec<Command> {
    play(s, cmds, size, None)
}

/// [`run_everything`], and with `kill` = (k, w), worker `w` is lost after `k` results came
/// back; a task whose input's holder is gone says it could not fetch it.
fn play(
    s: &mut Sim,
    mut cmds: Vec<Command>,
    size: u64,
    kill: Option<(usize, WorkerId)>,
) -> Vec<Command> {
    let mut seen = Vec::new();
    let mut done = 0;
    let mut killed = false;
    loop {
        let work: Vec<(WorkerId, drover_protocol::ComputeTask)> = cmds
            .iter()
            .filter_map(|c| match c {
                Command::Worker(w, ToWorker::Compute(t)) => Some((*w, t.clone())),
                _ => None,
            })
            .collect();
        seen.append(&mut cmds);
        if work.is_empty() {
            return seen;
        }
        for (w, t) in work {
            if let Some((k, victim)) = kill {
                if !killed && done == k {
                    killed = true;
                    cmds.extend(s.handle(Event::WorkerLeft { id: victim }));
                }
            }
            if !s.core.workers.contains_key(&w) {
                continue;
            }
            if let Some(&(i, h)) = t
                .sources
                .iter()
                .find(|(_, h)| !s.core.workers.contains_key(h))
            {
                cmds.extend(s.handle(Event::Worker(
                    w,
                    FromWorker::InputsLost {
                        id: t.id,
                        lost: vec![(i, h)],
                        error: "the worker left".into(),
                    },
                )));
                continue;
            }
            let mut fetched: Vec<(TaskIdx, WorkerId, u64)> = Vec::new();
            for &(i, h) in &t.sources {
                if !fetched.iter().any(|f| f.0 == i) {
                    fetched.push((i, h, size));
                }
            }
            if !fetched.is_empty() {
                cmds.extend(s.handle(Event::Worker(
                    w,
                    FromWorker::Fetched {
                        task: t.id,
                        inputs: fetched,
                        fetch_us: 0,
                    },
                )));
            }
            cmds.extend(s.handle(Event::Worker(
                w,
                FromWorker::Finished {
                    id: t.id,
                    size,
                    duration_us: 1,
                    output: None,
                },
            )));
            done += 1;
        }
    }
}

fn submit_as(s: &mut Sim, client: ClientId, run: u32, json: &str, wants: &[&str]) -> Vec<Command> {
    s.handle(Event::Client(
        client,
        FromClient::Submit {
            run,
            graph_json: json.to_owned(),
            wants: wants.iter().map(|k| k.to_string()).collect(),
        },
    ))
}

const ABC: &str = r#"{"tasks": [
  {"key": "a", "function": "bytes"},
  {"key": "b", "function": "len", "inputs": ["a"]},
  {"key": "c", "function": "concat", "inputs": ["b", "a"]}
]}"#;

#[test]
fn a_second_run_of_a_done_graph_reuses_everything_and_runs_nothing() {
    let mut s = Sim::new(&[("w0", "", 1), ("w1", "", 1)]);
    let cmds = s.submit(ABC, &["c"]);
    run_everything(&mut s, cmds, 5);
    // a and b were freed (c no longer needs them); c is kept for the client.
    assert_eq!(s.core.tasks[s.id("a") as usize].state, State::Released);
    let cmds = submit_as(&mut s, 0, 2, ABC, &["c"]);
    assert!(computes(&cmds).is_empty(), "{cmds:?}");
    let ev = events(&cmds);
    let mut keys: Vec<&str> = ev.iter().map(|e| e.key.as_str()).collect();
    keys.sort();
    assert_eq!(keys, vec!["a", "b", "c"]);
    assert!(ev.iter().all(|e| e.reused && e.run == 2 && e.attempts == 1));
}

#[test]
fn a_freed_result_is_made_again_only_when_a_new_run_needs_it() {
    let mut s = Sim::new(&[("w0", "", 1)]);
    let cmds = s.submit(ABC, &["c"]);
    run_everything(&mut s, cmds, 5);
    // A new task on the kept result: only it runs.
    let more = r#"{"tasks": [
      {"key": "a", "function": "bytes"},
      {"key": "b", "function": "len", "inputs": ["a"]},
      {"key": "c", "function": "concat", "inputs": ["b", "a"]},
      {"key": "d", "function": "len", "inputs": ["c"]}
    ]}"#;
    let cmds = submit_as(&mut s, 0, 2, more, &["d"]);
    assert_eq!(computes(&cmds), [(0, "d".to_owned())]);
    run_everything(&mut s, cmds, 5);
    // A new task on the freed "a": a runs again, as a new computation (attempts from zero).
    let on_a = r#"{"tasks": [
      {"key": "a", "function": "bytes"},
      {"key": "e", "function": "len", "inputs": ["a"]}
    ]}"#;
    let cmds = submit_as(&mut s, 0, 3, on_a, &["e"]);
    assert_eq!(computes(&cmds), [(0, "a".to_owned())]);
    let seen = run_everything(&mut s, cmds, 5);
    let a: Vec<_> = events(&seen).into_iter().filter(|e| e.key == "a").collect();
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!((a[0].attempts, a[0].reused, a[0].run), (1, false, 3));
    // Run 2 (still live) was told at its submission that a was done: the new computation
    // is no news to it (a second event would read as a rerun in its report).
}

#[test]
fn a_redefined_key_is_refused_while_a_live_run_uses_it_and_computed_anew_after() {
    let mut s = Sim::new(&[("w0", "", 1)]);
    s.handle(Event::ClientJoined { id: 1 });
    let old = r#"{"tasks": [
      {"key": "a", "function": "bytes", "params": {"n": 5, "fill": "p"}},
      {"key": "c", "function": "concat", "inputs": ["a"]}
    ]}"#;
    let new = r#"{"tasks": [
      {"key": "a", "function": "bytes", "params": {"n": 3, "fill": "s"}},
      {"key": "c", "function": "concat", "inputs": ["a"]}
    ]}"#;
    let running = s.submit(old, &["c"]);
    let cmds = submit_as(&mut s, 1, 1, new, &["c"]);
    let Some(Command::Client(1, ToClient::Rejected { error, .. })) = cmds.first() else {
        panic!("{cmds:?}")
    };
    assert!(
        error.contains("key \"a\"")
            && error.contains(r#"function "bytes" with params {"fill":"p","n":5} there"#)
            && error.contains(r#"function "bytes" with params {"fill":"s","n":3} here"#),
        "{error}"
    );
    // c's own fields are the same, but its input changed: it differs too.
    assert!(
        error.contains("key \"c\" (the same function and params, but other inputs"),
        "{error}"
    );
    assert_eq!(s.core.stats().tasks, 2, "nothing changed");
    // The old run completes and its client leaves: the new definition is computed anew.
    run_everything(&mut s, running, 5);
    s.handle(Event::ClientLeft { id: 0 });
    let cmds = submit_as(&mut s, 1, 2, new, &["c"]);
    assert_eq!(computes(&cmds), [(0, "a".to_owned())]);
    let ToWorker::Compute(t) = s.core.compute_message(s.id("a"), 0) else {
        panic!()
    };
    assert_eq!(t.params.as_deref(), Some(r#"{"fill":"s","n":3}"#));
}

#[test]
fn a_redefined_key_nobody_uses_is_detached_and_its_old_lineage_kept() {
    let mut s = Sim::new(&[("w0", "", 1)]);
    let old = r#"{"tasks": [
      {"key": "a", "function": "bytes", "params": {"n": 5}},
      {"key": "c", "function": "concat", "inputs": ["a"]}
    ]}"#;
    let cmds = s.submit(old, &["c"]);
    run_everything(&mut s, cmds, 5);
    let old_a = s.id("a");
    // The same client still wants c (made of the old a), ends the run, and redefines a alone:
    // the old a is not used by a live run nor wanted, so it is detached, not refused.
    s.handle(Event::Client(0, FromClient::EndRun { run: 1 }));
    let cmds = submit_as(
        &mut s,
        0,
        2,
        r#"{"tasks": [{"key": "a", "function": "bytes", "params": {"n": 3}}]}"#,
        &["a"],
    );
    assert_eq!(computes(&cmds), [(0, "a".to_owned())]);
    assert_ne!(s.id("a"), old_a, "a new slot");
    // c keeps its lineage: the old a.
    assert_eq!(s.core.tasks[s.id("c") as usize].inputs[..], [old_a]);
}

#[test]
fn tasks_go_only_to_workers_with_their_function_and_wait_with_a_warning_naming_it() {
    let mut s = Sim::new(&[("stock", "pool-A=1", 4)]);
    let cmds = s.submit(
        r#"{"tasks": [
          {"key": "r", "function": "random_array", "pool": "A"},
          {"key": "x", "function": "bytes", "pool": "A"}
        ]}"#,
        &[],
    );
    assert_eq!(
        computes(&cmds),
        [(0, "x".to_owned())],
        "the custom task is not sent"
    );
    let warnings: Vec<&String> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::Client(0, ToClient::Warning(w)) => Some(w),
            _ => None,
        })
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with(
            "no connected worker in pool \"A\" has function \"random_array\": 1 task(s) wait"
        ),
        "{}",
        warnings[0]
    );
    let mut custom = hello("custom", "pool-A=1", 1);
    custom.functions.push("random_array".into());
    let cmds = s.handle(Event::WorkerJoined {
        id: 7,
        hello: custom,
    });
    assert_eq!(computes(&cmds), [(7, "r".to_owned())]);
}

#[test]
fn lost_inputs_correct_the_belief_at_once_and_what_nobody_holds_is_made_again() {
    let mut s = Sim::new(&[("w0", "", 1), ("w1", "", 1)]);
    s.submit(
        r#"{"tasks": [
          {"key": "x", "function": "bytes"},
          {"key": "y", "function": "len", "inputs": ["x"]}
        ]}"#,
        &["y"],
    );
    let (x, y) = (s.id("x"), s.id("y"));
    let holder = s
        .core
        .workers
        .iter()
        .find(|(_, w)| w.assigned.contains(&x))
        .map(|(id, _)| *id)
        .unwrap();
    s.finish(holder, "x", 1 << 20, vec![]);
    let State::Assigned(runner) = s.core.tasks[y as usize].state else {
        panic!("y is assigned")
    };
    // Wherever y runs, its worker says x could not be had from its holder (or, if it is the
    // holder, that x is not there): the copy stops counting, the holder is told to drop it,
    // and x is made again.
    let cmds = s.handle(Event::Worker(
        runner,
        FromWorker::InputsLost {
            id: y,
            lost: vec![(x, holder)],
            error: "does not hold result".into(),
        },
    ));
    if runner != holder {
        assert!(cmds.iter().any(|c| matches!(c, Command::Worker(w, ToWorker::Free(ids)) if *w == holder && ids == &vec![x])));
    }
    assert!(computes(&cmds).iter().any(|(_, k)| k == "x"), "{cmds:?}");
    assert_eq!(s.core.tasks[y as usize].state, State::Waiting);
}

#[test]
fn repeated_fetch_failures_from_connected_holders_fail_the_task_naming_why() {
    let mut s = Sim::new(&[("w0", "pool-P=1", 1), ("w1", "pool-Q=1", 1)]);
    s.submit(
        r#"{"tasks": [
          {"key": "x", "function": "bytes", "pool": "P"},
          {"key": "y", "function": "len", "inputs": ["x"], "pool": "Q"}
        ]}"#,
        &["y"],
    );
    let (x, y) = (s.id("x"), s.id("y"));
    s.finish(0, "x", 10, vec![]);
    for round in 1..=5 {
        // y on w1 cannot reach w0 (both still connected); x is made again on w0 each time.
        assert_eq!(
            s.core.tasks[y as usize].state,
            State::Assigned(1),
            "round {round}"
        );
        let cmds = s.handle(Event::Worker(
            1,
            FromWorker::InputsLost {
                id: y,
                lost: vec![(x, 0)],
                error: "cannot reach worker 0: timed out".into(),
            },
        ));
        if round < 5 {
            assert!(events(&cmds).is_empty());
            s.finish(0, "x", 10, vec![]);
        } else {
            let e = events(&cmds);
            let err = e[0].error.as_deref().unwrap();
            assert!(
                err.starts_with("could not fetch its inputs 5 times in a row from workers that are still connected; last: cannot reach worker 0"),
                "{err}"
            );
        }
    }
}

#[test]
fn the_shared_input_graph_survives_losing_a_worker_at_any_moment() {
    // The graph that hung: each source feeds a slow task and a task reading both.
    let mut tasks = Vec::new();
    for i in 0..12 {
        tasks.push(format!(r#"{{"key": "b{i}", "function": "bytes"}}"#));
        tasks.push(format!(
            r#"{{"key": "s{i}", "function": "noop", "inputs": ["b{i}"]}}"#
        ));
        tasks.push(format!(
            r#"{{"key": "l{i}", "function": "len", "inputs": ["b{i}", "s{i}"]}}"#
        ));
    }
    let lens: Vec<String> = (0..12).map(|i| format!("\"l{i}\"")).collect();
    tasks.push(format!(
        r#"{{"key": "all", "function": "concat", "inputs": [{}]}}"#,
        lens.join(", ")
    ));
    let json = format!(r#"{{"tasks": [{}]}}"#, tasks.join(", "));
    // Lose worker 1 after k results came back, for every k.
    for k in 0..37 {
        let mut s = Sim::new(&[("w0", "", 2), ("w1", "", 2), ("w2", "", 2)]);
        let cmds = s.submit(&json, &["all"]);
        play(&mut s, cmds, 4, Some((k, 1)));
        assert_eq!(
            s.core.tasks[s.id("all") as usize].state,
            State::Memory,
            "killed after {k}: {}",
            s.core.describe_key("all").unwrap()
        );
    }
}

#[test]
fn memory_returns_once_every_client_left() {
    let mut s = Sim::new(&[("w0", "", 2), ("w1", "", 2)]);
    s.handle(Event::ClientJoined { id: 1 });
    let cmds = s.submit(ABC, &["c"]);
    let mut seen = run_everything(&mut s, cmds, 7);
    let cmds = submit_as(&mut s, 1, 1, POOLS, &["run_in_b"]);
    seen.extend(run_everything(&mut s, cmds, 7));
    assert!(s.core.stats().held > 0);
    seen.extend(s.handle(Event::ClientLeft { id: 0 }));
    seen.extend(s.handle(Event::ClientLeft { id: 1 }));
    assert_eq!(s.core.stats().held, 0);
    assert!(s.core.leftover_tasks().is_empty());
    assert!(s.core.believed_holdings().values().all(Vec::is_empty));
}

#[test]
fn a_copy_under_way_keeps_its_result_needed_until_it_is_answered() {
    let mut s = Sim::new(&[("old", "", 1), ("new", "", 1)]);
    s.submit(r#"{"tasks": [{"key": "x", "function": "bytes"}]}"#, &["x"]);
    let x = s.id("x");
    let w = s
        .core
        .workers
        .iter()
        .find(|(_, w)| w.assigned.contains(&x))
        .map(|(id, _)| *id)
        .unwrap();
    s.finish(w, "x", 3, vec![]);
    let other = 1 - w;
    let cmds = s.handle(Event::Worker(w, FromWorker::Retiring { successor: false }));
    assert!(cmds.iter().any(|c| matches!(c, Command::Worker(t, ToWorker::Replicate { from, ids }) if *t == other && *from == w && ids == &vec![x])));
    // The client lets go of x while the copy is under way: x is not freed (nor its id reused).
    let cmds = s.handle(Event::Client(
        0,
        FromClient::Release {
            keys: vec!["x".into()],
        },
    ));
    assert!(!cmds
        .iter()
        .any(|c| matches!(c, Command::Worker(_, ToWorker::Free(_)))));
    // The copy is answered: x is freed on both, and the retiring worker may go.
    let cmds = s.handle(Event::Worker(
        other,
        FromWorker::Replicated {
            from: w,
            ids: vec![x],
            failed: false,
        },
    ));
    let frees = cmds
        .iter()
        .filter(|c| matches!(c, Command::Worker(_, ToWorker::Free(ids)) if ids == &vec![x]))
        .count();
    assert_eq!(frees, 2, "{cmds:?}");
    assert!(cmds
        .iter()
        .any(|c| matches!(c, Command::Worker(t, ToWorker::Retired) if *t == w)));
}

mod detached;
mod durable;
mod preassign;

/// A freed result computed again for a newer run is news to the newer run only: the run that
/// saw it finish does not hear of it again (its report would count a rerun).
#[test]
fn a_result_computed_again_for_a_new_run_is_not_reported_to_older_runs() {
    const G: &str = r#"{"tasks": [
      {"key": "x", "function": "bytes"},
      {"key": "y", "function": "len", "inputs": ["x"]}
    ]}"#;
    let mut s = Sim::new(&[("w0", "", 1)]);
    let cmds = s.submit(G, &["y"]);
    let seen = run_everything(&mut s, cmds, 3);
    let first: Vec<String> = events(&seen).into_iter().map(|e| e.key).collect();
    assert!(first.contains(&"x".to_owned()), "{first:?}");
    // x was freed once y had it; a second client needs x again through another consumer.
    s.handle(Event::ClientJoined { id: 1 });
    let cmds = s.handle(Event::Client(
        1,
        FromClient::Submit {
            run: 1,
            graph_json: r#"{"tasks": [
              {"key": "x", "function": "bytes"},
              {"key": "z", "function": "concat", "inputs": ["x"]}
            ]}"#
            .to_owned(),
            wants: vec!["z".to_owned()],
        },
    ));
    let seen = run_everything(&mut s, cmds, 3);
    let to = |client: u32| -> Vec<String> {
        seen.iter()
            .filter_map(|c| match c {
                Command::Client(c, ToClient::Events(e)) if *c == client => Some(e.clone()),
                _ => None,
            })
            .flatten()
            .map(|e| e.key)
            .collect()
    };
    let recomputed = computes(&seen).iter().any(|(_, k)| k == "x");
    if recomputed {
        assert!(
            to(1).contains(&"x".to_owned()),
            "the new run hears of x: {:?}",
            to(1)
        );
    }
    assert!(
        !to(0).contains(&"x".to_owned()),
        "the first run does not: {:?}",
        to(0)
    );
}

/// The optimiser's chain: a1 and c go to B (only a's 10 bytes cross), where the local vote
/// would put a1 with a in A.
const OPTIMISED: &str = r#"{"tasks": [
  {"key": "a", "function": "bytes", "pool": "A", "size_hint": 10},
  {"key": "b", "function": "bytes", "pool": "B", "size_hint": 15},
  {"key": "a1", "function": "f", "inputs": ["a"], "size_hint": 100},
  {"key": "c", "function": "g", "inputs": ["a1", "b"]}
]}"#;

#[test]
fn an_optimised_placement_is_kept_while_sizes_are_as_hinted() {
    let mut s = Sim::new(&[("wa", "pool-A=1", 1), ("wb", "pool-B=1", 1)]);
    s.submit(OPTIMISED, &["c"]);
    assert!(matches!(
        s.core.tasks[s.id("a1") as usize].place,
        StaticPlace::Optimised(_)
    ));
    // a came out 12 bytes (hint 10): a1 stays where the optimiser put it, in B.
    assert_eq!(
        computes(&s.finish(0, "a", 12, vec![])),
        [(1, "a1".to_owned())]
    );
}

#[test]
fn an_optimised_placement_is_re_decided_when_sizes_differ_from_the_hints() {
    let mut s = Sim::new(&[("wa", "pool-A=1", 1), ("wb", "pool-B=1", 1)]);
    s.submit(OPTIMISED, &["c"]);
    // a came out 100 bytes, 10x its hint: the vote on real sizes sends a1 to A.
    assert_eq!(
        computes(&s.finish(0, "a", 100, vec![])),
        [(0, "a1".to_owned())]
    );
}

/// The core keeps one `Task` per known task: a million-task graph writes (and page-faults in)
/// a million of them before its first task starts.
#[test]
fn a_task_record_stays_within_256_bytes() {
    let size = std::mem::size_of::<super::Task>();
    assert!(size <= 256, "Task is {size} bytes");
}

#[test]
fn a_large_submission_merges_over_its_prepared_room() {
    // 200,000 tasks, then 100,000 new ones: above the size whose record memory a helper
    // thread touches first.
    let pairs = 100_000;
    let graph = |prefix: &str| {
        let mut json = String::from(r#"{"tasks": ["#);
        for i in 0..pairs {
            if i > 0 {
                json.push(',');
            }
            json.push_str(&format!(
                r#"{{"key": "s{i}", "function": "bytes"}},{{"key": "{prefix}{i}", "function": "len", "inputs": ["s{i}"]}}"#
            ));
        }
        json + "]}"
    };
    let mut s = Sim::new(&[("w", "", 1)]);
    let accepted = |cmds: &[Command], run: u32| {
        cmds.iter().any(|c| {
            matches!(c, Command::Client(0, ToClient::Accepted { run: r, tasks }) if *r == run && *tasks == 2 * pairs)
        })
    };
    assert!(accepted(&submit_as(&mut s, 0, 1, &graph("u"), &[]), 1));
    assert_eq!(s.core.tasks.len(), 2 * pairs as usize);
    let (src, user) = (s.id("s99999"), s.id("u99999"));
    assert_eq!(&*s.core.tasks[user as usize].inputs, [src]);
    assert_eq!(s.core.tasks[src as usize].consumers, [user]);
    // Half its keys known: the new half is counted and prepared the same way.
    assert!(accepted(&submit_as(&mut s, 0, 2, &graph("v"), &[]), 2));
    assert_eq!(s.core.tasks.len(), 3 * pairs as usize);
    let v = s.id("v0");
    assert_eq!(&*s.core.tasks[v as usize].inputs, [s.id("s0")]);
}
