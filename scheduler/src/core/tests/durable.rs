//! Durable graph tasks: looked up in the progress store at submission, committed when they
//! finish.

use super::*;

/// `a` (durable) feeds `b`, which feeds `c` (durable at version 3).
const DURABLE: &str = r#"{"tasks": [
  {"key": "a", "function": "bytes", "durable": true},
  {"key": "b", "function": "len", "inputs": ["a"]},
  {"key": "c", "function": "concat", "inputs": ["b", "a"], "durable": {"version": 3}}
]}"#;

fn lookups(cmds: &[Command]) -> Vec<(u64, String, Vec<drover_progress::DurableTask>)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Lookup {
                id,
                namespace,
                keys,
            } => Some((*id, namespace.clone(), keys.clone())),
            _ => None,
        })
        .collect()
}

fn commits(cmds: &[Command]) -> Vec<(String, u64, u128, Option<Vec<u8>>)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Commit {
                key,
                version,
                definition,
                output,
                ..
            } => Some((key.clone(), *version, *definition, output.clone())),
            _ => None,
        })
        .collect()
}

fn rejected(cmds: &[Command]) -> Option<String> {
    cmds.iter().find_map(|c| match c {
        Command::Client(_, ToClient::Rejected { error, .. }) => Some(error.clone()),
        _ => None,
    })
}

#[test]
fn a_submission_with_durable_tasks_waits_for_the_store_and_asks_for_each_once() {
    let mut s = Sim::new(&[("w0", "", 1)]);
    let cmds = s.submit(DURABLE, &["c"]);
    assert!(
        computes(&cmds).is_empty(),
        "nothing runs before the store answers"
    );
    let asked = lookups(&cmds);
    assert_eq!(asked.len(), 1);
    let (_, namespace, keys) = &asked[0];
    assert_eq!(namespace, "graph");
    let keys: Vec<(&str, u64)> = keys.iter().map(|(k, v, _)| (k.as_str(), *v)).collect();
    assert_eq!(keys, [("a", 0), ("c", 3)]);
}

#[test]
fn durable_tasks_found_done_do_not_run_and_their_stored_outputs_feed_dependents() {
    let mut s = Sim::new(&[("w0", "", 1)]);
    let cmds = s.submit(DURABLE, &["c"]);
    let (id, _, _) = lookups(&cmds)[0].clone();
    // a is done with its output; c is not done.
    let cmds = s.handle(Event::Looked {
        id,
        found: Ok(vec![Some(Some(b"xyz".to_vec())), None]),
    });
    let ev = events(&cmds);
    let a = ev.iter().find(|e| e.key == "a").expect("a reported");
    assert!(a.done_before && a.status == TaskStatus::Finished, "{a:?}");
    // b runs on the stored output, handed to its worker before it.
    let data = cmds.iter().position(|c| {
        matches!(c, Command::Worker(0, ToWorker::Data(d)) if d == &[(s.id("a"), b"xyz".to_vec())])
    });
    let compute = cmds
        .iter()
        .position(|c| matches!(c, Command::Worker(0, ToWorker::Compute(t)) if t.key == "b"));
    assert!(data.is_some() && data < compute, "{cmds:?}");
    assert_eq!(computes(&cmds), [(0, "b".to_owned())]);
    let seen = run_everything(&mut s, cmds, 5);
    // a never ran; c ran and was committed at its version with its definition.
    let ran: Vec<String> = computes(&seen).into_iter().map(|(_, k)| k).collect();
    assert_eq!(ran, ["b", "c"]);
    let fp = s.core.tasks[s.id("c") as usize].fingerprint.get();
    let c: Vec<_> = commits(&seen);
    assert_eq!(c, [("c".to_owned(), 3, fp, None)]);
}

#[test]
fn a_finished_durable_task_is_committed_with_the_output_its_worker_sent() {
    let mut s = Sim::new(&[("w0", "", 1)]);
    let cmds = s.submit(DURABLE, &["c"]);
    let (id, _, _) = lookups(&cmds)[0].clone();
    let cmds = s.handle(Event::Looked {
        id,
        found: Ok(vec![None, None]),
    });
    let a = cmds
        .iter()
        .find_map(|c| match c {
            Command::Worker(_, ToWorker::Compute(t)) if t.key == "a" => Some(t.clone()),
            _ => None,
        })
        .expect("a runs");
    assert_eq!(a.report_output, Some(CoreConfig::default().max_output));
    let cmds = s.handle(Event::Worker(
        0,
        FromWorker::Finished {
            id: a.id,
            size: 3,
            duration_us: 1,
            output: Some(b"out".to_vec()),
        },
    ));
    let fp = s.core.tasks[s.id("a") as usize].fingerprint.get();
    assert_eq!(
        commits(&cmds),
        [("a".to_owned(), 0, fp, Some(b"out".to_vec()))]
    );
    // A task that is not durable is not asked to send its output, nor committed.
    let b = computes(&cmds);
    assert_eq!(b, [(0, "b".to_owned())]);
    let b = cmds
        .iter()
        .find_map(|c| match c {
            Command::Worker(_, ToWorker::Compute(t)) => Some(t.report_output),
            _ => None,
        })
        .unwrap();
    assert_eq!(b, None);
}

#[test]
fn what_only_feeds_done_tasks_is_skipped_and_runs_again_only_if_something_needs_it() {
    let mut s = Sim::new(&[("w0", "", 1)]);
    // Both done: a without an output (it was too big to keep), c with one. Nothing runs.
    let cmds = s.submit(DURABLE, &["c"]);
    let (id, _, _) = lookups(&cmds)[0].clone();
    let cmds = s.handle(Event::Looked {
        id,
        found: Ok(vec![Some(None), Some(Some(b"c!".to_vec()))]),
    });
    assert!(computes(&cmds).is_empty(), "{cmds:?}");
    let ev = events(&cmds);
    let mut done: Vec<&str> = ev
        .iter()
        .filter(|e| e.done_before)
        .map(|e| e.key.as_str())
        .collect();
    done.sort();
    assert_eq!(done, ["a", "c"]);
    // b only fed c: not run, reported skipped.
    let b = ev.iter().find(|e| e.key == "b").expect("b reported");
    assert_eq!(b.status, TaskStatus::Skipped);
    assert_eq!(s.core.tasks[s.id("a") as usize].state, State::Released);
    // The client gets c's stored output from the scheduler itself.
    let cmds = s.handle(Event::Client(
        0,
        FromClient::Locate {
            req: 1,
            keys: vec!["c".into()],
        },
    ));
    let inline = cmds.iter().find_map(|c| match c {
        Command::Client(_, ToClient::Located { inline, .. }) => Some(inline.clone()),
        _ => None,
    });
    assert_eq!(inline, Some(vec![("c".to_owned(), b"c!".to_vec())]));
    // A new task on a: a is computed again for it.
    let on_a = r#"{"tasks": [
      {"key": "a", "function": "bytes", "durable": true},
      {"key": "d", "function": "len", "inputs": ["a"]}
    ]}"#;
    let cmds = submit_as(&mut s, 0, 2, on_a, &["d"]);
    let (id, _, keys) = lookups(&cmds)[0].clone();
    assert_eq!(keys.len(), 1);
    let cmds = s.handle(Event::Looked {
        id,
        found: Ok(vec![Some(None)]),
    });
    assert_eq!(computes(&cmds), [(0, "a".to_owned())]);
}

#[test]
fn a_store_that_cannot_be_read_refuses_the_submission_naming_why() {
    let mut s = Sim::new(&[("w0", "", 1)]);
    let cmds = s.submit(DURABLE, &["c"]);
    let (id, _, _) = lookups(&cmds)[0].clone();
    let cmds = s.handle(Event::Looked {
        id,
        found: Err("disk on fire".into()),
    });
    let error = rejected(&cmds).expect("refused");
    assert!(
        error.contains("progress store") && error.contains("disk on fire"),
        "{error}"
    );
    assert!(computes(&cmds).is_empty());
    // Nothing of it stayed: the same graph goes through when the store answers.
    let cmds = submit_as(&mut s, 0, 2, DURABLE, &["c"]);
    let (id, _, _) = lookups(&cmds)[0].clone();
    let cmds = s.handle(Event::Looked {
        id,
        found: Ok(vec![None, None]),
    });
    assert_eq!(computes(&cmds), [(0, "a".to_owned())]);
}

#[test]
fn bad_durable_keys_are_refused_at_submission() {
    let mut s = Sim::new(&[("w0", "", 1)]);
    let long = "k".repeat(drover_progress::MAX_KEY + 1);
    let json =
        format!(r#"{{"tasks": [{{"key": "{long}", "function": "bytes", "durable": true}}]}}"#);
    let cmds = s.submit(&json, &[]);
    let error = rejected(&cmds).expect("refused");
    assert!(error.contains("durable task"), "{error}");
    assert!(lookups(&cmds).is_empty());
}

#[test]
fn a_lookup_answered_after_its_client_left_changes_nothing() {
    let mut s = Sim::new(&[("w0", "", 1)]);
    let cmds = s.submit(DURABLE, &["c"]);
    let (id, _, _) = lookups(&cmds)[0].clone();
    s.handle(Event::ClientLeft { id: 0 });
    let cmds = s.handle(Event::Looked {
        id,
        found: Ok(vec![None, None]),
    });
    assert!(cmds.is_empty(), "{cmds:?}");
    assert!(s.core.tasks.iter().all(|t| t.state != State::Waiting));
}

#[test]
fn a_graph_run_again_by_a_new_client_finds_its_durable_tasks_done() {
    let mut s = Sim::new(&[("w0", "", 1)]);
    let cmds = s.submit(DURABLE, &["c"]);
    let (id, _, _) = lookups(&cmds)[0].clone();
    let cmds = s.handle(Event::Looked {
        id,
        found: Ok(vec![None, None]),
    });
    let seen = run_everything(&mut s, cmds, 5);
    let stored: Vec<_> = commits(&seen);
    assert_eq!(stored.len(), 2);
    s.handle(Event::ClientLeft { id: 0 });
    s.handle(Event::ClientJoined { id: 1 });
    let cmds = submit_as(&mut s, 1, 1, DURABLE, &["c"]);
    let asked = lookups(&cmds);
    assert_eq!(asked.len(), 1, "{cmds:?}");
    let (id, _, keys) = asked[0].clone();
    // The store answers as it would: both done, with the definitions committed (and
    // outputs).
    let found = keys
        .iter()
        .map(|(k, v, d)| {
            let (_, version, definition, output) =
                stored.iter().find(|(key, ..)| key == k).expect("committed");
            assert_eq!(output, &None, "the test's workers send no outputs");
            (version == v && definition == d).then(|| Some(k.as_bytes().to_vec()))
        })
        .collect::<Vec<_>>();
    let cmds = s.handle(Event::Looked {
        id,
        found: Ok(found),
    });
    assert!(computes(&cmds).is_empty(), "{cmds:?}");
}

/// Two dependents of a stored output on two workers: each worker is handed the bytes itself
/// (the first may not have received its copy when the second would fetch it).
#[test]
fn a_stored_output_is_handed_to_every_worker_that_needs_it() {
    const TWO: &str = r#"{"tasks": [
      {"key": "a", "function": "bytes", "durable": true},
      {"key": "b", "function": "len", "inputs": ["a"]},
      {"key": "c", "function": "concat", "inputs": ["a"]}
    ]}"#;
    let mut s = Sim::new(&[("w0", "", 1), ("w1", "", 1)]);
    let cmds = s.submit(TWO, &["b", "c"]);
    let (id, _, _) = lookups(&cmds)[0].clone();
    let cmds = s.handle(Event::Looked {
        id,
        found: Ok(vec![Some(Some(b"xyz".to_vec()))]),
    });
    let ran = computes(&cmds);
    assert_eq!(ran.len(), 2, "{cmds:?}");
    for (w, key) in ran {
        let data = cmds.iter().position(|c| {
            matches!(c, Command::Worker(x, ToWorker::Data(d)) if *x == w && d == &[(s.id("a"), b"xyz".to_vec())])
        });
        let compute = cmds.iter().position(
            |c| matches!(c, Command::Worker(x, ToWorker::Compute(t)) if *x == w && t.key == key),
        );
        assert!(
            data.is_some() && data < compute,
            "worker {w}, {key}: {cmds:?}"
        );
    }
}
