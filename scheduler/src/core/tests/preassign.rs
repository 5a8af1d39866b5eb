//! Pre-assignment: tasks sent to the worker making all their inputs before those finish.

use super::*;

/// Each task computed, with the inputs it waits for on its worker.
fn afters(cmds: &[Command]) -> Vec<(WorkerId, String, Vec<String>)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Worker(w, ToWorker::Compute(t)) => Some((*w, t.key.clone(), t.after.clone())),
            _ => None,
        })
        .map(|(w, key, after)| (w, key, after.iter().map(|i| format!("#{i}")).collect()))
        .collect()
}

/// A graph of `n` tasks t0 <- t1 <- ... each reading the one before.
fn chain_of(n: u32) -> String {
    let tasks: Vec<String> = (0..n)
        .map(|i| match i {
            0 => r#"{"key": "t0", "function": "f"}"#.to_owned(),
            _ => format!(
                r#"{{"key": "t{i}", "function": "g", "inputs": ["t{}"]}}"#,
                i - 1
            ),
        })
        .collect();
    format!(r#"{{"tasks": [{}]}}"#, tasks.join(","))
}

const CHAIN: &str = r#"{"tasks": [
  {"key": "a", "function": "f"},
  {"key": "b", "function": "g", "inputs": ["a"]},
  {"key": "c", "function": "g", "inputs": ["b", "a"]}
]}"#;

#[test]
fn a_chain_goes_to_its_worker_at_once_and_runs_there_without_more_messages() {
    let mut s = Sim::preassigning(&[("w0", "", 1), ("w1", "", 1)]);
    let cmds = s.submit(CHAIN, &["c"]);
    let (a, b) = (s.id("a"), s.id("b"));
    assert_eq!(
        afters(&cmds),
        [
            (0, "a".into(), vec![]),
            (0, "b".into(), vec![format!("#{a}")]),
            (0, "c".into(), vec![format!("#{b}"), format!("#{a}")]),
        ]
    );
    assert_eq!(s.core.stats().assigned, 3);
    // Each result reported frees nothing and assigns nothing: the worker runs the rest.
    assert!(computes(&s.finish(0, "a", 1, vec![])).is_empty());
    assert!(computes(&s.finish(0, "b", 1, vec![])).is_empty());
    assert!(s.core.preassigned.is_empty());
    let cmds = s.finish(0, "c", 1, vec![]);
    assert!(cmds.iter().any(
        |c| matches!(c, Command::Client(0, ToClient::Events(e)) if e.iter().any(|e| e.key == "c"))
    ));
}

#[test]
fn only_one_consumer_of_a_fan_out_follows_its_input() {
    let mut s = Sim::preassigning(&[("w0", "", 1), ("w1", "", 1)]);
    let cmds = s.submit(
        r#"{"tasks": [
          {"key": "a", "function": "f"},
          {"key": "x", "function": "g", "inputs": ["a"]},
          {"key": "y", "function": "g", "inputs": ["a"]},
          {"key": "z", "function": "g", "inputs": ["a", "other"]},
          {"key": "other", "function": "f"}
        ]}"#,
        &[],
    );
    // `other` went to w1, so `z` (half on each) waits; of `x` and `y`, one follows `a`.
    let keys: Vec<(WorkerId, String)> = computes(&cmds);
    assert_eq!(
        keys,
        [(0, "a".into()), (0, "x".into()), (1, "other".into())]
    );
    // When `a` is done, the others are placed as usual.
    let cmds = s.finish(0, "a", 1, vec![]);
    assert_eq!(computes(&cmds).len(), 1, "{cmds:?}");
}

#[test]
fn a_pinned_consumer_follows_only_into_its_pool() {
    let mut s = Sim::preassigning(&[("a0", "pool-A=1", 1), ("b0", "pool-B=1", 1)]);
    let cmds = s.submit(
        r#"{"tasks": [
          {"key": "a", "function": "f", "pool": "A"},
          {"key": "b", "function": "g", "inputs": ["a"], "pool": "B"},
          {"key": "c", "function": "g", "inputs": ["a"]}
        ]}"#,
        &[],
    );
    assert_eq!(computes(&cmds), [(0, "a".into()), (0, "c".into())]);
    let cmds = s.finish(0, "a", 1, vec![]);
    assert_eq!(computes(&cmds), [(1, "b".into())]);
}

#[test]
fn a_failed_input_takes_its_followers_back_to_wait_for_its_retry() {
    let mut s = Sim::preassigning(&[("w0", "", 1)]);
    s.submit(
        r#"{"tasks": [
          {"key": "a", "function": "f", "retries": 1},
          {"key": "b", "function": "g", "inputs": ["a"]},
          {"key": "c", "function": "g", "inputs": ["b"]}
        ]}"#,
        &["c"],
    );
    assert_eq!(s.core.workers[&0].inflight, 3);
    // The worker drops b and c with a; the core takes them back and sends them again after
    // the retry of a.
    let cmds = s.fail(0, "a", "first try");
    assert_eq!(
        computes(&cmds),
        [(0, "a".into()), (0, "b".into()), (0, "c".into())]
    );
    assert!(events(&cmds).is_empty());
    // The second failure is final: both followers fail with it, naming it.
    let cmds = s.fail(0, "a", "second try");
    let ev = events(&cmds);
    assert_eq!(ev.len(), 3, "{ev:?}");
    let c = ev.iter().find(|e| e.key == "c").unwrap();
    assert!(
        c.error.as_deref().unwrap().contains("input \"b\" failed"),
        "{c:?}"
    );
    assert_eq!(s.core.workers[&0].inflight, 0);
    assert!(s.core.preassigned.is_empty());
}

#[test]
fn lost_inputs_of_the_head_take_its_followers_back_too() {
    let mut s = Sim::preassigning(&[("w0", "", 1), ("w1", "", 1)]);
    s.submit(
        r#"{"tasks": [
          {"key": "src", "function": "f"},
          {"key": "a", "function": "g", "inputs": ["src"]},
          {"key": "b", "function": "g", "inputs": ["a"]}
        ]}"#,
        &["b"],
    );
    // The chain went to w0; src finished there; say a could not get it (a wrong belief).
    s.finish(0, "src", 1, vec![]);
    let (src, a) = (s.id("src"), s.id("a"));
    let cmds = s.handle(Event::Worker(
        0,
        FromWorker::InputsLost {
            id: a,
            lost: vec![(src, 0)],
            error: "not here".into(),
        },
    ));
    // src is made again, and the chain follows it again.
    let sent = afters(&cmds);
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(sent[0].1, "src");
    assert_eq!(sent[2], (sent[0].0, "b".into(), vec![format!("#{a}")]));
}

#[test]
fn a_lost_worker_s_followers_go_back_to_the_queues() {
    let mut s = Sim::preassigning(&[("w0", "", 1), ("w1", "", 1)]);
    s.submit(CHAIN, &["c"]);
    let cmds = s.handle(Event::WorkerLeft { id: 0 });
    assert_eq!(
        computes(&cmds),
        [(1, "a".into()), (1, "b".into()), (1, "c".into())]
    );
}

#[test]
fn followers_stop_at_the_worker_s_capacity() {
    let mut s = Sim::preassigning(&[("w0", "", 1)]);
    let n = 5000;
    let cmds = s.submit(&chain_of(n), &[]);
    let sent = computes(&cmds).len() as u32;
    let cap = s.core.capacity(&s.core.workers[&0]);
    assert_eq!(sent, cap);
    assert!(sent < n);
    // A finish makes room at the end of the chain (the capacity may grow with the short
    // duration measured): the chain goes on from where it stopped, up to the capacity again.
    let cmds = s.finish(0, "t0", 1, vec![]);
    let cap2 = s.core.capacity(&s.core.workers[&0]);
    let expected: Vec<(WorkerId, String)> = (cap..cap2 + 1).map(|i| (0, format!("t{i}"))).collect();
    assert_eq!(computes(&cmds), expected);
    assert_eq!(s.core.workers[&0].inflight, cap2);
}

#[test]
fn tasks_a_recycling_worker_gives_back_run_elsewhere() {
    let mut s = Sim::preassigning(&[("w0", "", 1), ("w1", "", 1)]);
    s.submit(CHAIN, &["c"]);
    let (b, c) = (s.id("b"), s.id("c"));
    s.handle(Event::Worker(0, FromWorker::Retiring { successor: true }));
    // a still runs on w0; its followers come back and wait for it.
    let cmds = s.handle(Event::Worker(0, FromWorker::Returned(vec![b, c])));
    assert!(computes(&cmds).is_empty(), "{cmds:?}");
    assert!(s.core.preassigned.is_empty());
    assert_eq!(s.core.workers[&0].inflight, 1);
    // A stale or repeated give-back changes nothing.
    assert!(s
        .handle(Event::Worker(0, FromWorker::Returned(vec![b])))
        .is_empty());
    // (c also reads a, held on w0 only: it is placed when b is done.)
    let cmds = s.finish(0, "a", 1, vec![]);
    assert_eq!(computes(&cmds), [(1, "b".into())]);
    let cmds = s.finish(1, "b", 1, vec![]);
    assert_eq!(computes(&cmds), [(1, "c".into())]);
}

#[test]
fn waiting_followers_leave_room_for_ready_tasks() {
    let mut s = Sim::preassigning(&[("w0", "", 1), ("w1", "", 1)]);
    s.submit(&chain_of(50), &[]);
    let cap = s.core.capacity(&s.core.workers[&0]);
    assert_eq!(s.core.workers[&0].inflight, cap);
    assert_eq!(s.core.workers[&0].waiting, cap - 1);
    // Independent work still goes to both workers: the followers take no thread yet.
    let free: Vec<String> = (0..20)
        .map(|i| format!(r#"{{"key": "x{i}", "function": "f"}}"#))
        .collect();
    let cmds = s.submit(&format!(r#"{{"tasks": [{}]}}"#, free.join(",")), &[]);
    let sent = computes(&cmds);
    let on = |w: WorkerId| sent.iter().filter(|(x, _)| *x == w).count() as u32;
    assert_eq!(sent.len(), 20, "{sent:?}");
    assert!(on(0) >= 9 && on(1) >= 9, "{sent:?}");
}
