//! Unit tests of the worker core: events in, commands out, no threads or sockets.

use super::*;

fn t0() -> Instant {
    // One fixed origin per test run; tests add offsets to it.
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn at(ms: u64) -> Instant {
    t0() + Duration::from_millis(ms)
}

fn task(id: TaskIdx, inputs: &[TaskIdx], sources: &[(TaskIdx, WorkerId)]) -> ComputeTask {
    ComputeTask {
        id,
        key: format!("t{id}"),
        function: "f".into(),
        params: None,
        inputs: inputs.to_vec(),
        sources: sources.to_vec(),
        resources: vec![],
        priority: 0,
        timeout_ms: None,
        report_output: None,
        after: vec![],
    }
}

fn peer(id: WorkerId) -> PeerInfo {
    PeerInfo {
        id,
        name: format!("w{id}"),
        addr: "127.0.0.1:1".parse().unwrap(),
        cert: vec![],
        data_addr: None,
    }
}

fn core(nthreads: u32) -> WorkerCore {
    WorkerCore::new(
        0,
        CoreConfig {
            nthreads,
            ..Default::default()
        },
    )
}

fn sched(c: &mut WorkerCore, msgs: Vec<ToWorker>) -> Vec<Command> {
    c.handle(Event::Scheduler(msgs), at(0))
}

fn sent(cmds: &[Command]) -> Vec<&FromWorker> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Send(m) => Some(m.iter()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn runs(cmds: &[Command]) -> Vec<(JobId, TaskIdx)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Run(j) => Some((j.job, j.task.id)),
            _ => None,
        })
        .collect()
}

fn fetches(cmds: &[Command]) -> Vec<(FetchId, WorkerId, Vec<TaskIdx>)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Fetch { fetch, peer, ids } => Some((*fetch, peer.id, ids.clone())),
            _ => None,
        })
        .collect()
}

fn done(c: &mut WorkerCore, job: JobId, size: u64) -> Vec<Command> {
    c.handle(
        Event::JobDone {
            job,
            result: Ok(size),
            duration_us: 5,
        },
        at(0),
    )
}

/// Runs task `id` with no inputs to completion, so that its result is held here.
fn make_here(c: &mut WorkerCore, id: TaskIdx) {
    let cmds = sched(c, vec![ToWorker::Compute(task(id, &[], &[]))]);
    let (job, _) = runs(&cmds)[0];
    done(c, job, 10);
}

#[test]
fn a_task_with_its_inputs_here_runs_and_its_result_is_kept_and_reported() {
    let mut c = core(1);
    make_here(&mut c, 1);
    let cmds = sched(&mut c, vec![ToWorker::Compute(task(2, &[1], &[]))]);
    assert_eq!(runs(&cmds).len(), 1);
    let (job, _) = runs(&cmds)[0];
    let cmds = done(&mut c, job, 3);
    // Kept before it is reported: the send comes last.
    assert!(matches!(&cmds[0], Command::Keep(ids) if ids == &vec![2]));
    assert!(matches!(
        cmds.last(),
        Some(Command::Send(m)) if matches!(m[..], [FromWorker::Finished { id: 2, size: 3, .. }])
    ));
    assert_eq!(c.held(), vec![1, 2]);
}

#[test]
fn missing_inputs_are_fetched_one_request_per_peer_and_reported_as_replicas() {
    let mut c = core(1);
    sched(&mut c, vec![ToWorker::Peers(vec![peer(1), peer(2)])]);
    let cmds = sched(
        &mut c,
        vec![
            ToWorker::Compute(task(10, &[3, 4, 5], &[(3, 1), (4, 1), (5, 2)])),
            // Another task needing 3 does not fetch it again.
            ToWorker::Compute(task(11, &[3], &[(3, 1)])),
        ],
    );
    let f = fetches(&cmds);
    assert_eq!(f.len(), 2);
    assert_eq!((f[0].1, f[0].2.clone()), (1, vec![3, 4]));
    assert_eq!((f[1].1, f[1].2.clone()), (2, vec![5]));
    assert!(runs(&cmds).is_empty());
    let cmds = c.handle(
        Event::Fetched {
            fetch: f[0].0,
            got: vec![(3, 30), (4, 40)],
            failed: vec![],
            error: String::new(),
        },
        at(1),
    );
    assert!(matches!(&cmds[0], Command::Keep(ids) if ids == &vec![3, 4]));
    assert_eq!(runs(&cmds), vec![(1, 11)]);
    assert!(sent(&cmds).iter().any(|m| matches!(m,
        FromWorker::Fetched { task: 10, inputs, .. } if inputs == &vec![(3, 1, 30), (4, 1, 40)])));
    let cmds = c.handle(
        Event::Fetched {
            fetch: f[1].0,
            got: vec![(5, 50)],
            failed: vec![],
            error: String::new(),
        },
        at(2),
    );
    assert_eq!(runs(&cmds), vec![(2, 10)]);
    assert_eq!(c.held(), vec![3, 4, 5]);
}

#[test]
fn a_failed_source_falls_back_to_the_next_and_then_the_task_is_given_back() {
    let mut c = core(1);
    sched(&mut c, vec![ToWorker::Peers(vec![peer(1), peer(2)])]);
    let cmds = sched(
        &mut c,
        vec![ToWorker::Compute(task(10, &[3], &[(3, 1), (3, 2)]))],
    );
    let f = fetches(&cmds);
    assert_eq!(f[0].1, 1);
    let cmds = c.handle(
        Event::Fetched {
            fetch: f[0].0,
            got: vec![],
            failed: vec![3],
            error: "does not hold result 3".into(),
        },
        at(1),
    );
    let f = fetches(&cmds);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].1, 2, "the next source");
    let cmds = c.handle(
        Event::Fetched {
            fetch: f[0].0,
            got: vec![],
            failed: vec![3],
            error: "unreachable".into(),
        },
        at(2),
    );
    assert!(fetches(&cmds).is_empty());
    let lost = sent(&cmds);
    assert!(
        matches!(lost[..], [FromWorker::InputsLost { id: 10, lost, .. }] if lost == &vec![(3, 1), (3, 2)]),
        "{lost:?}"
    );
}

#[test]
fn an_input_named_as_held_here_but_absent_is_reported_never_fetched_from_itself() {
    let mut c = core(1);
    let cmds = sched(&mut c, vec![ToWorker::Compute(task(10, &[3], &[]))]);
    assert!(fetches(&cmds).is_empty());
    assert!(matches!(
        sent(&cmds)[..],
        [FromWorker::InputsLost { id: 10, lost, .. }] if lost == &vec![(3, 0)]
    ));
    // A source that is this worker itself is not dialled either.
    let cmds = sched(&mut c, vec![ToWorker::Compute(task(11, &[3], &[(3, 0)]))]);
    assert!(fetches(&cmds).is_empty());
    assert!(matches!(
        sent(&cmds)[..],
        [FromWorker::InputsLost { id: 11, .. }]
    ));
}

#[test]
fn a_gone_peer_fails_fetches_at_once_and_what_they_bring_later_is_not_kept() {
    let mut c = core(1);
    sched(&mut c, vec![ToWorker::Peers(vec![peer(1), peer(2)])]);
    let cmds = sched(
        &mut c,
        vec![ToWorker::Compute(task(10, &[3], &[(3, 1), (3, 2)]))],
    );
    let first = fetches(&cmds)[0].0;
    let cmds = sched(&mut c, vec![ToWorker::PeerGone(1)]);
    assert!(cmds.iter().any(|c| matches!(c, Command::ForgetPeer(1))));
    let f = fetches(&cmds);
    assert_eq!(f[0].1, 2, "straight to the next source");
    // The old fetch answers late: ignored.
    let cmds = c.handle(
        Event::Fetched {
            fetch: first,
            got: vec![(3, 30)],
            failed: vec![],
            error: String::new(),
        },
        at(1),
    );
    assert!(cmds.iter().all(|c| !matches!(c, Command::Keep(_))));
    // A gone peer is never dialled again.
    let cmds = sched(&mut c, vec![ToWorker::Compute(task(11, &[4], &[(4, 1)]))]);
    assert!(fetches(&cmds).is_empty());
    assert!(matches!(
        sent(&cmds)[..],
        [FromWorker::InputsLost { id: 11, .. }]
    ));
}

#[test]
fn free_keeps_an_input_a_queued_task_needs_until_it_starts() {
    // A long task holds the only gpu, so a task needing it waits in the queue.
    let mut long = task(2, &[], &[]);
    long.resources = vec![("gpu".into(), 1.0)];
    let mut c = WorkerCore::new(
        0,
        CoreConfig {
            nthreads: 1,
            resources: vec![("gpu".into(), 1.0)],
            ..Default::default()
        },
    );
    make_here(&mut c, 1);
    let cmds = sched(&mut c, vec![ToWorker::Compute(long)]);
    let (job, _) = runs(&cmds)[0];
    let mut user = task(3, &[1], &[]);
    user.resources = vec![("gpu".into(), 1.0)];
    let cmds = sched(
        &mut c,
        vec![ToWorker::Compute(user), ToWorker::Free(vec![1])],
    );
    assert!(runs(&cmds).is_empty(), "waits for the gpu");
    assert!(cmds.iter().all(|c| !matches!(c, Command::Drop(_))));
    assert_eq!(c.held(), Vec::<TaskIdx>::new(), "not counted as held");
    assert_eq!(c.stored(), vec![1]);
    let cmds = done(&mut c, job, 0);
    let order: Vec<&str> = cmds
        .iter()
        .map(|c| match c {
            Command::Run(_) => "run",
            Command::Drop(_) => "drop",
            _ => "",
        })
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(order, vec!["run", "drop"], "the job takes its input first");
    assert_eq!(c.stored(), vec![2]);
}

#[test]
fn resources_and_threads_bound_what_runs() {
    let mut c = WorkerCore::new(
        0,
        CoreConfig {
            nthreads: 2,
            resources: vec![("gpu".into(), 1.0)],
            ..Default::default()
        },
    );
    let gpu = |id| {
        let mut t = task(id, &[], &[]);
        t.resources = vec![("gpu".into(), 1.0)];
        t
    };
    let cmds = sched(
        &mut c,
        vec![ToWorker::Compute(gpu(1)), ToWorker::Compute(gpu(2))],
    );
    assert_eq!(runs(&cmds), vec![(1, 1)]);
    let cmds = done(&mut c, 1, 0);
    assert_eq!(runs(&cmds), vec![(2, 2)]);
    assert_eq!(c.busy(), (1, 1.0));
    done(&mut c, 2, 0);
    assert_eq!(c.busy(), (0, 0.0));
}

#[test]
fn a_timeout_fails_the_task_when_its_function_stops_and_its_result_is_dropped() {
    let mut c = core(1);
    let mut t = task(1, &[], &[]);
    t.timeout_ms = Some(500);
    let cmds = sched(&mut c, vec![ToWorker::Compute(t)]);
    let (job, _) = runs(&cmds)[0];
    c.handle(Event::JobStarted { job }, at(100));
    assert_eq!(c.next_wakeup(), Some(at(150)), "the start report first");
    let cmds = c.handle(Event::Tick, at(150));
    assert!(matches!(sent(&cmds)[..], [FromWorker::Started(1)]));
    assert_eq!(c.next_wakeup(), Some(at(600)));
    let cmds = c.handle(Event::Tick, at(600));
    assert!(
        sent(&cmds).is_empty(),
        "the function gets its grace: {cmds:?}"
    );
    assert_eq!(c.next_wakeup(), Some(at(1100)));
    // It stops in time (with the result it had): failed as timed out, the result dropped.
    let cmds = c.handle(
        Event::JobDone {
            job,
            result: Ok(9),
            duration_us: 9,
        },
        at(700),
    );
    assert!(matches!(
        sent(&cmds)[..],
        [FromWorker::Failed { id: 1, error, .. }] if error == "task timed out after 0.5 s"
    ));
    assert!(c.held().is_empty());
    assert_eq!(c.busy().0, 0);
}

#[test]
fn a_function_that_ignores_its_timeout_loses_its_thread_and_too_many_retire_the_worker() {
    let mut c = core(1);
    let mut lost = Vec::new();
    for id in 1..=5 {
        let mut t = task(id, &[], &[]);
        t.timeout_ms = Some(100);
        let cmds = sched(&mut c, vec![ToWorker::Compute(t)]);
        let (job, _) = runs(&cmds)[0];
        let base = 1000 * u64::from(id);
        c.handle(Event::JobStarted { job }, at(base));
        c.handle(Event::Tick, at(base + 100));
        // Still running at the deadline plus the grace: its thread is given up, and the
        // next task runs (on the replacement).
        let cmds = c.handle(Event::Tick, at(base + 700));
        assert!(
            cmds.iter()
                .any(|c| matches!(c, Command::ThreadLost(j) if *j == job)),
            "{cmds:?}"
        );
        let failed: Vec<&FromWorker> = sent(&cmds)
            .into_iter()
            .filter(|m| matches!(m, FromWorker::Failed { .. }))
            .collect();
        assert!(
            matches!(failed[..], [FromWorker::Failed { id: i, error, .. }]
                if *i == id && error.starts_with("task timed out after 0.1 s; its function did not stop, so its thread was given up")),
            "{failed:?}"
        );
        lost.push((job, cmds));
    }
    // Four given up (max(4, 1 thread)) is the limit; the fifth retires the worker.
    let retired: Vec<bool> = lost
        .iter()
        .map(|(_, cmds)| {
            sent(cmds)
                .iter()
                .any(|m| matches!(m, FromWorker::Retiring { successor: true }))
        })
        .collect();
    assert_eq!(retired, [false, false, false, false, true]);
    // A stuck function that returns at last changes nothing but its resources.
    let (job, _) = lost[0];
    let cmds = c.handle(
        Event::JobDone {
            job,
            result: Ok(1),
            duration_us: 1,
        },
        at(99_000),
    );
    assert!(sent(&cmds).is_empty(), "{cmds:?}");
}

#[test]
fn short_tasks_are_not_reported_as_started() {
    let mut c = core(1);
    let cmds = sched(&mut c, vec![ToWorker::Compute(task(1, &[], &[]))]);
    let (job, _) = runs(&cmds)[0];
    c.handle(Event::JobStarted { job }, at(0));
    let cmds = done(&mut c, job, 1);
    let cmds2 = c.handle(Event::Tick, at(60));
    assert!(sent(&cmds)
        .iter()
        .chain(sent(&cmds2).iter())
        .all(|m| !matches!(m, FromWorker::Started(_))));
}

#[test]
fn the_lifespan_retires_for_a_successor_and_retired_exits_recycled() {
    let mut c = WorkerCore::new(
        0,
        CoreConfig {
            nthreads: 1,
            lifespan_tasks: Some(2),
            ..Default::default()
        },
    );
    make_here(&mut c, 1);
    sched(&mut c, vec![ToWorker::Peers(vec![peer(1)])]);
    let cmds = sched(
        &mut c,
        vec![
            ToWorker::Compute(task(2, &[], &[])),
            // Waits for 2 here, and for a fetch from a peer.
            ToWorker::Compute(ComputeTask {
                after: vec![2],
                ..task(3, &[2, 1, 7], &[(7, 1)])
            }),
        ],
    );
    let cmds = done(&mut c, runs(&cmds)[0].0, 0);
    assert!(cmds.iter().any(|c| matches!(c, Command::Recycling)));
    // What did not start goes back, after the retirement, and nothing more runs here.
    let reports = sent(&cmds);
    let find = |f: fn(&FromWorker) -> bool| reports.iter().position(|m| f(m));
    let retiring = find(|m| matches!(m, FromWorker::Retiring { successor: true })).unwrap();
    let returned = find(|m| matches!(m, FromWorker::Returned(ids) if ids == &vec![3]))
        .unwrap_or_else(|| panic!("{reports:?}"));
    assert!(retiring < returned, "{reports:?}");
    assert!(runs(&cmds).is_empty());
    c.check().unwrap();
    // A task sent before the scheduler heard goes back at once.
    let cmds = sched(&mut c, vec![ToWorker::Compute(task(4, &[1], &[]))]);
    assert!(matches!(sent(&cmds)[..], [FromWorker::Returned(ids)] if ids == &vec![4]));
    assert!(runs(&cmds).is_empty());
    let cmds = sched(&mut c, vec![ToWorker::Retired]);
    assert!(matches!(cmds[..], [Command::Exit(Exit::Recycled)]));
    // SIGTERM while recycling: no successor after all.
    let cmds = c.handle(Event::Retire, at(0));
    assert!(sent(&cmds)
        .iter()
        .any(|m| matches!(m, FromWorker::Retiring { successor: false })));
}

#[test]
fn replication_copies_what_is_missing_and_counts_what_is_here() {
    let mut c = core(1);
    sched(&mut c, vec![ToWorker::Peers(vec![peer(1)])]);
    make_here(&mut c, 5);
    let cmds = sched(
        &mut c,
        vec![ToWorker::Replicate {
            from: 1,
            ids: vec![5, 6],
        }],
    );
    let f = fetches(&cmds);
    assert_eq!(f[0].2, vec![6]);
    let cmds = c.handle(
        Event::Fetched {
            fetch: f[0].0,
            got: vec![(6, 60)],
            failed: vec![],
            error: String::new(),
        },
        at(1),
    );
    assert!(matches!(
        sent(&cmds)[..],
        [FromWorker::Replicated { from: 1, ids, failed: false }] if ids == &vec![5, 6]
    ));
    assert_eq!(c.held(), vec![5, 6]);
}

/// Every STATS_EVERY a memory sample goes to the scheduler with the time spent fetching.
#[test]
fn memory_and_fetch_time_are_reported_every_few_seconds() {
    let mut c = core(1);
    sched(&mut c, vec![ToWorker::Peers(vec![peer(1)])]);
    let cmds = sched(&mut c, vec![ToWorker::Compute(task(10, &[3], &[(3, 1)]))]);
    let f = fetches(&cmds);
    c.handle(
        Event::Fetched {
            fetch: f[0].0,
            got: vec![(3, 30)],
            failed: vec![],
            error: String::new(),
        },
        at(7),
    );
    let stats = |cmds: &[Command]| -> Vec<(u64, u64)> {
        sent(cmds)
            .into_iter()
            .filter_map(|m| match m {
                FromWorker::Stats {
                    rss_bytes,
                    fetch_us,
                } => Some((*rss_bytes, *fetch_us)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        stats(&c.handle(Event::Memory(1 << 20), at(10))),
        [(1 << 20, 7_000)]
    );
    // Not again before STATS_EVERY; then with nothing fetched meanwhile.
    assert!(stats(&c.handle(Event::Memory(2 << 20), at(1_000))).is_empty());
    let later = 10 + crate::core::STATS_EVERY.as_millis() as u64;
    assert_eq!(
        stats(&c.handle(Event::Memory(3 << 20), at(later))),
        [(3 << 20, 0)]
    );
}

/// A task pre-assigned here after inputs being made here.
fn after(id: TaskIdx, inputs: &[TaskIdx]) -> ComputeTask {
    ComputeTask {
        after: inputs.to_vec(),
        ..task(id, inputs, &[])
    }
}

fn fail(c: &mut WorkerCore, job: JobId) -> Vec<Command> {
    c.handle(
        Event::JobDone {
            job,
            result: Err("boom".into()),
            duration_us: 5,
        },
        at(0),
    )
}

#[test]
fn a_pre_assigned_chain_runs_back_to_back_without_fetching() {
    let mut c = core(1);
    let cmds = sched(
        &mut c,
        vec![
            ToWorker::Compute(task(1, &[], &[])),
            ToWorker::Compute(after(2, &[1])),
            ToWorker::Compute(after(3, &[2, 1])),
        ],
    );
    assert!(fetches(&cmds).is_empty());
    let r = runs(&cmds);
    assert_eq!(r.iter().map(|r| r.1).collect::<Vec<_>>(), [1]);
    c.check().unwrap();
    // Each result starts the next task in the same step.
    let cmds = done(&mut c, r[0].0, 1);
    let r = runs(&cmds);
    assert_eq!(r.iter().map(|r| r.1).collect::<Vec<_>>(), [2]);
    c.check().unwrap();
    let cmds = done(&mut c, r[0].0, 1);
    let r = runs(&cmds);
    assert_eq!(r.iter().map(|r| r.1).collect::<Vec<_>>(), [3]);
    done(&mut c, r[0].0, 1);
    c.check().unwrap();
    assert_eq!(c.held(), vec![1, 2, 3]);
}

#[test]
fn a_failed_input_drops_its_followers_here_all_the_way_down_without_reports() {
    let mut c = core(1);
    make_here(&mut c, 9);
    let cmds = sched(
        &mut c,
        vec![
            ToWorker::Compute(task(1, &[], &[])),
            ToWorker::Compute(after(2, &[1])),
            // Also needs a result held here: its pin is given back when it is dropped.
            ToWorker::Compute(ComputeTask {
                after: vec![2],
                ..task(3, &[2, 9], &[])
            }),
        ],
    );
    let (job, _) = runs(&cmds)[0];
    let cmds = fail(&mut c, job);
    let reports = sent(&cmds);
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(matches!(reports[0], FromWorker::Failed { id: 1, .. }));
    assert!(runs(&cmds).is_empty());
    c.check().unwrap();
    // Nothing waits any more: 9 can be freed at once.
    let cmds = sched(&mut c, vec![ToWorker::Free(vec![9])]);
    assert!(
        cmds.iter()
            .any(|c| matches!(c, Command::Drop(ids) if ids == &vec![9])),
        "{cmds:?}"
    );
    assert!(c.held().is_empty());
}

#[test]
fn a_follower_arriving_after_its_input_failed_is_dropped_and_one_after_it_succeeded_runs() {
    let mut c = core(1);
    let cmds = sched(&mut c, vec![ToWorker::Compute(task(1, &[], &[]))]);
    fail(&mut c, runs(&cmds)[0].0);
    let cmds = sched(&mut c, vec![ToWorker::Compute(after(2, &[1]))]);
    assert!(runs(&cmds).is_empty() && sent(&cmds).is_empty(), "{cmds:?}");
    c.check().unwrap();
    // The retry of 1 succeeds before its follower arrives: the follower runs at once.
    let cmds = sched(&mut c, vec![ToWorker::Compute(task(1, &[], &[]))]);
    done(&mut c, runs(&cmds)[0].0, 1);
    let cmds = sched(&mut c, vec![ToWorker::Compute(after(2, &[1]))]);
    assert_eq!(runs(&cmds).iter().map(|r| r.1).collect::<Vec<_>>(), [2]);
    c.check().unwrap();
}
