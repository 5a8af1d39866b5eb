//! Detached runs: they outlive their submitter, any client can follow them, and their outputs
//! go when released, cancelled or past the retention time.

use super::*;
use drover_protocol::{RunsReply, RunsRequest};

const CHAIN: &str = r#"{"tasks": [
  {"key": "a", "function": "bytes"},
  {"key": "b", "function": "len", "inputs": ["a"]},
  {"key": "c", "function": "len", "inputs": ["b"]}
]}"#;

fn runs(s: &mut Sim, client: ClientId, req: u32, request: RunsRequest) -> Vec<Command> {
    s.handle(Event::Client(client, FromClient::Runs { req, request }))
}

fn reply(cmds: &[Command], client: ClientId, req: u32) -> RunsReply {
    cmds.iter()
        .find_map(|c| match c {
            Command::Client(to, ToClient::Runs { req: r, reply }) if *to == client && *r == req => {
                Some(reply.clone())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no reply {req} to {client}: {cmds:?}"))
}

/// Submits CHAIN detached as client 0, wanting "c"; returns its id.
fn submit_detached(s: &mut Sim) -> String {
    let cmds = runs(
        s,
        0,
        1,
        RunsRequest::Submit {
            graph_json: CHAIN.to_owned(),
            wants: vec!["c".into()],
            name: "chain".into(),
            by: "ann@box".into(),
        },
    );
    match reply(&cmds, 0, 1) {
        RunsReply::Submitted { id, tasks } => {
            assert_eq!(tasks, 3);
            id
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_detached_run_in_the_wire_form_runs_like_one_in_json() {
    let mut s = Sim::new(&[("w0", "", 1)]);
    let wire = drover_graph::Graph::from_json_str(CHAIN).unwrap().to_wire();
    let cmds = runs(
        &mut s,
        0,
        1,
        RunsRequest::SubmitWire {
            graph: wire,
            wants: vec!["c".into()],
            name: "chain".into(),
            by: "ann@box".into(),
        },
    );
    let RunsReply::Submitted { id, tasks } = reply(&cmds, 0, 1) else {
        panic!("{cmds:?}")
    };
    assert_eq!(tasks, 3);
    s.handle(Event::ClientLeft { id: 0 });
    run_chain(&mut s);
    let info = list(&mut s, 1);
    assert_eq!(info.len(), 1);
    assert_eq!((info[0].id.as_str(), info[0].done), (id.as_str(), 3));
    // A wire form that is not one is refused with the decoder's words, like bad JSON.
    let cmds = runs(
        &mut s,
        1,
        2,
        RunsRequest::SubmitWire {
            graph: vec![1, 2, 3],
            wants: vec![],
            name: String::new(),
            by: String::new(),
        },
    );
    assert!(
        matches!(reply(&cmds, 1, 2), RunsReply::Refused(_)),
        "{cmds:?}"
    );
}

fn list(s: &mut Sim, client: ClientId) -> Vec<drover_protocol::RunInfo> {
    let cmds = runs(s, client, 99, RunsRequest::List);
    match reply(&cmds, client, 99) {
        RunsReply::List(l) => l,
        other => panic!("{other:?}"),
    }
}

fn run_chain(s: &mut Sim) {
    s.finish(0, "a", 10, vec![]);
    s.finish(0, "b", 2, vec![]);
    s.finish(0, "c", 1, vec![]);
}

#[test]
fn a_detached_run_outlives_its_submitter_and_a_later_client_follows_it() {
    let mut s = Sim::new(&[("w0", "", 1)]);
    s.handle(Event::Tick { now_ms: 1_000 });
    let id = submit_detached(&mut s);
    // The submitter leaves at once: nothing is cancelled.
    let cmds = s.handle(Event::ClientLeft { id: 0 });
    assert!(events(&cmds).is_empty());
    s.finish(0, "a", 10, vec![]);
    // A client attaches halfway: it gets what happened so far, then the rest, as its run 7.
    s.handle(Event::ClientJoined { id: 5 });
    let cmds = runs(
        &mut s,
        5,
        1,
        RunsRequest::Attach {
            run: 7,
            id: id.clone(),
            from: 0,
        },
    );
    let RunsReply::Attached { info, wants } = reply(&cmds, 5, 1) else {
        panic!("{cmds:?}")
    };
    assert_eq!(
        (info.state.as_str(), info.done, info.tasks),
        ("running", 1, 3)
    );
    assert_eq!((info.name.as_str(), info.by.as_str()), ("chain", "ann@box"));
    assert_eq!(wants, vec!["c".to_owned()]);
    let seen = events(&cmds);
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[0].key.as_str(), seen[0].run), ("a", 7));
    let cmds = s.finish(0, "b", 2, vec![]);
    let later = events(&cmds);
    assert!(later.iter().all(|e| e.run == 7) && later.iter().any(|e| e.key == "b"));
    s.finish(0, "c", 1, vec![]);
    let info = &list(&mut s, 5)[0];
    assert_eq!((info.state.as_str(), info.done), ("finished", 3));
    assert_eq!(info.expires_ms, Some(1_000 + s.core.config.retention_ms));
    // "c" is kept for fetching; released, it is freed and the run listed as released.
    assert_eq!(s.core.tasks[s.id("c") as usize].state, State::Memory);
    let cmds = runs(&mut s, 5, 2, RunsRequest::Release { id: id.clone() });
    assert!(matches!(reply(&cmds, 5, 2), RunsReply::Done(ref i) if i.state == "released"));
    assert!(cmds
        .iter()
        .any(|c| matches!(c, Command::Worker(0, ToWorker::Free(_)))));
    assert!(
        s.core.leftover_tasks().is_empty(),
        "{:?}",
        s.core.leftover_tasks()
    );
    // Gone outputs cannot be followed.
    let cmds = runs(
        &mut s,
        5,
        3,
        RunsRequest::Attach {
            run: 8,
            id,
            from: 0,
        },
    );
    assert!(matches!(reply(&cmds, 5, 3), RunsReply::Refused(ref why) if why.contains("released")));
}

#[test]
fn cancelling_drops_waiting_tasks_and_tells_followers() {
    let mut s = Sim::new(&[("w0", "", 1)]);
    let id = submit_detached(&mut s);
    s.handle(Event::ClientJoined { id: 5 });
    runs(
        &mut s,
        5,
        1,
        RunsRequest::Attach {
            run: 3,
            id: id.clone(),
            from: 0,
        },
    );
    let cmds = runs(&mut s, 0, 2, RunsRequest::Cancel { id: id.clone() });
    assert!(matches!(reply(&cmds, 0, 2), RunsReply::Done(ref i) if i.state == "cancelled"));
    assert!(cmds.iter().any(|c| matches!(
        c,
        Command::Client(5, ToClient::RunEnded { run: 3, why }) if why.contains("cancelled")
    )));
    // "a" was running: it finishes, and then nothing is left.
    s.finish(0, "a", 10, vec![]);
    assert!(
        s.core.leftover_tasks().is_empty(),
        "{:?}",
        s.core.leftover_tasks()
    );
    assert_eq!(list(&mut s, 0)[0].state, "cancelled");
}

#[test]
fn outputs_expire_after_the_retention_time_and_records_after_another() {
    let mut s = Sim::new(&[("w0", "", 1)]);
    s.core.config.retention_ms = 10_000;
    s.handle(Event::Tick { now_ms: 1_000 });
    let id = submit_detached(&mut s);
    run_chain(&mut s);
    s.handle(Event::Tick { now_ms: 10_999 });
    assert_eq!(list(&mut s, 0)[0].state, "finished");
    let cmds = s.handle(Event::Tick { now_ms: 11_000 });
    assert!(cmds
        .iter()
        .any(|c| matches!(c, Command::Worker(0, ToWorker::Free(_)))));
    assert_eq!(list(&mut s, 0)[0].state, "expired");
    assert!(s.core.leftover_tasks().is_empty());
    s.handle(Event::Tick { now_ms: 21_000 });
    assert!(list(&mut s, 0).is_empty());
    let cmds = runs(
        &mut s,
        0,
        5,
        RunsRequest::Attach {
            run: 1,
            id,
            from: 0,
        },
    );
    assert!(
        matches!(reply(&cmds, 0, 5), RunsReply::Refused(ref why) if why.contains("no detached run"))
    );
}

#[test]
fn a_refused_graph_leaves_no_run_and_a_follower_after_an_outage_gets_only_new_events() {
    let mut s = Sim::new(&[("w0", "", 1)]);
    let cmds = runs(
        &mut s,
        0,
        1,
        RunsRequest::Submit {
            graph_json: r#"{"tasks": [{"key": "x", "function": "len", "inputs": ["nope"]}]}"#
                .into(),
            wants: vec![],
            name: String::new(),
            by: String::new(),
        },
    );
    assert!(matches!(reply(&cmds, 0, 1), RunsReply::Refused(ref why) if why.contains("nope")));
    assert!(list(&mut s, 0).is_empty());
    let id = submit_detached(&mut s);
    s.finish(0, "a", 10, vec![]);
    s.finish(0, "b", 2, vec![]);
    let cmds = runs(
        &mut s,
        0,
        2,
        RunsRequest::Attach {
            run: 4,
            id,
            from: 1,
        },
    );
    let keys: Vec<String> = events(&cmds).into_iter().map(|e| e.key).collect();
    assert_eq!(keys, ["b"]);
}

#[test]
fn a_live_run_is_drawn_with_its_states() {
    let mut s = Sim::new(&[("w0", "", 1)]);
    let id = submit_detached(&mut s);
    s.finish(0, "a", 10, vec![]);
    let svg = s.core.run_picture(&id).expect("a picture");
    assert!(svg.starts_with("<svg"), "{svg}");
    for class in ["state-done", "state-running", "state-waiting"] {
        assert!(svg.contains(class), "{class}: {svg}");
    }
    assert!(s.core.run_picture("nope").is_none());
    // A client's run by CLIENT.RUN.
    s.submit(CHAIN, &["c"]);
    assert!(s.core.run_picture("0.1").is_some());
}

#[test]
fn a_run_cancelled_before_it_was_accepted_tells_its_submitter() {
    let mut s = Sim::new(&[("w0", "", 1)]);
    // A durable task: the core asks the progress store first, so the run waits to be accepted.
    let cmds = runs(
        &mut s,
        0,
        1,
        RunsRequest::Submit {
            graph_json: r#"{"tasks": [{"key": "d", "function": "bytes", "durable": true}]}"#.into(),
            wants: vec!["d".into()],
            name: "waiting".into(),
            by: String::new(),
        },
    );
    assert!(
        cmds.iter().any(|c| matches!(c, Command::Lookup { .. })),
        "{cmds:?}"
    );
    let id = list(&mut s, 5)[0].id.clone();
    s.handle(Event::ClientJoined { id: 5 });
    let cmds = runs(&mut s, 5, 2, RunsRequest::Cancel { id });
    assert!(matches!(reply(&cmds, 5, 2), RunsReply::Done(ref i) if i.state == "cancelled"));
    assert!(
        matches!(reply(&cmds, 0, 1), RunsReply::Refused(ref why) if why.contains("cancelled before it was accepted")),
        "{cmds:?}"
    );
}
