//! Detached runs: runs that outlive the client that submitted them (`drover submit`, then
//! `drover runs`, `drover wait ID`, `drover cancel ID`).
//!
//! A detached run belongs to a *stand-in client* of the core: an id of its own
//! ([`DETACHED_BASE`] and up) that never disconnects, so the run's tasks and its kept outputs
//! live by the same rules as any client's (shared keys, frees, cancellation when it goes). What
//! the core sends the stand-in is taken here ([`Core::route_detached`]): its acceptance is
//! answered to the submitter, its task events recorded (the run's report) and forwarded to the
//! clients following it, its warnings too. The stand-in leaves (releasing the outputs and
//! cancelling what has not started) when the run is cancelled, its outputs are released after
//! fetching, or the retention time after it ended passes ([`Event::Tick`](super::Event)).
//! Detached runs live in the scheduler's memory: a scheduler restart forgets them.

use std::collections::{BTreeMap, HashMap, HashSet};

use drover_protocol::{RunInfo, RunsReply, RunsRequest, TaskEvent, ToClient};

use super::{ClientId, Command, Core};

/// Stand-in client ids start here (the server numbers real clients from 1).
pub const DETACHED_BASE: ClientId = 0x8000_0000;

/// How many warnings a detached run keeps for clients that attach later.
const MAX_WARNINGS: usize = 100;

/// Where a detached run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Submitted, not accepted yet (the progress store is asked about durable tasks).
    Pending,
    /// Accepted; tasks not all done.
    Running,
    /// Every task done; outputs kept.
    Ended,
    /// Cancelled before its tasks were done.
    Cancelled,
    /// Outputs fetched and released.
    Released,
    /// Outputs dropped at the retention time.
    Expired,
}

/// One detached run.
#[derive(Debug)]
struct DetachedRun {
    id: String,
    name: String,
    by: String,
    submitted_ms: u64,
    ended_ms: Option<u64>,
    /// When the outputs were let go (released, expired, cancelled): the record goes a
    /// retention time later.
    gone_ms: Option<u64>,
    phase: Phase,
    /// The submitter, until the run is accepted or refused: (client, request).
    submitter: Option<(ClientId, u32)>,
    tasks: u32,
    wants: Vec<String>,
    /// Every task event so far (the run's report), loads included.
    events: Vec<TaskEvent>,
    /// Keys of tasks done (finished, failed, skipped).
    done: HashSet<String>,
    failed: u32,
    warnings: Vec<String>,
    /// Clients following it: (client, their run number).
    followers: Vec<(ClientId, u32)>,
}

/// The detached runs of a core.
#[derive(Debug, Default)]
pub(crate) struct DetachedRuns {
    runs: BTreeMap<ClientId, DetachedRun>,
    by_id: HashMap<String, ClientId>,
    next: u32,
    /// The scheduler's clock, ms since the Unix epoch, as of the last tick.
    pub now_ms: u64,
}

impl DetachedRuns {
    /// Whether `client` is a detached run's stand-in.
    pub fn is_stand_in(&self, client: ClientId) -> bool {
        self.runs.contains_key(&client)
    }

    /// The stand-in of the detached run `id`.
    pub fn stand_in_of(&self, id: &str) -> Option<ClientId> {
        self.by_id.get(id).copied()
    }

    /// The id of the detached run of stand-in `client`.
    pub fn id_of(&self, client: ClientId) -> Option<&str> {
        self.runs.get(&client).map(|r| r.id.as_str())
    }

    /// The name of the detached run of stand-in `client`.
    pub fn name_of(&self, client: ClientId) -> Option<&str> {
        self.runs.get(&client).map(|r| r.name.as_str())
    }

    /// Whether there are none (then nothing is routed).
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }
}

impl DetachedRun {
    fn info(&self, retention_ms: u64) -> RunInfo {
        let state = match self.phase {
            Phase::Pending | Phase::Running => "running",
            Phase::Ended if self.failed > 0 => "failed",
            Phase::Ended => "finished",
            Phase::Cancelled => "cancelled",
            Phase::Released => "released",
            Phase::Expired => "expired",
        };
        RunInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            state: state.to_owned(),
            tasks: self.tasks,
            done: self.done.len() as u32,
            failed: self.failed,
            submitted_ms: self.submitted_ms,
            ended_ms: self.ended_ms,
            by: self.by.clone(),
            expires_ms: match self.phase {
                Phase::Ended => self.ended_ms.map(|e| e.saturating_add(retention_ms)),
                _ => None,
            },
        }
    }

    fn complete(&self) -> bool {
        self.done.len() as u32 >= self.tasks
    }
}

impl Core {
    /// A detached run of `graph` (as read), submitted by `client`'s request `req`.
    fn submit_detached(
        &mut self,
        client: ClientId,
        req: u32,
        graph: Result<drover_graph::Graph, String>,
        wants: Vec<String>,
        name: String,
        by: String,
    ) {
        let d = &mut self.detached;
        d.next += 1;
        let stand_in = DETACHED_BASE + d.next;
        let id = format!("{}-{:04x}", d.next, self.config.instance);
        d.by_id.insert(id.clone(), stand_in);
        d.runs.insert(
            stand_in,
            DetachedRun {
                id,
                name,
                by,
                submitted_ms: d.now_ms,
                ended_ms: None,
                gone_ms: None,
                phase: Phase::Pending,
                submitter: Some((client, req)),
                tasks: 0,
                wants: wants.clone(),
                events: Vec::new(),
                done: HashSet::new(),
                failed: 0,
                warnings: Vec::new(),
                followers: Vec::new(),
            },
        );
        self.clients.entry(stand_in).or_default();
        self.submit(stand_in, 0, graph, &wants);
    }

    /// A client's request about detached runs.
    pub(crate) fn runs_request(&mut self, client: ClientId, req: u32, request: RunsRequest) {
        let reply = |core: &mut Core, reply: RunsReply| {
            core.out
                .push(Command::Client(client, ToClient::Runs { req, reply }));
        };
        match request {
            RunsRequest::Submit {
                graph_json,
                wants,
                name,
                by,
            } => {
                let graph = super::graph_of_json(graph_json);
                self.submit_detached(client, req, graph, wants, name, by);
            }
            RunsRequest::SubmitWire {
                graph,
                wants,
                name,
                by,
            } => {
                let graph = super::graph_of_wire(graph);
                self.submit_detached(client, req, graph, wants, name, by);
            }
            RunsRequest::Attach { run, id, from } => {
                let retention = self.config.retention_ms;
                let Some(run_state) = self.detached_by_id(&id) else {
                    return reply(self, RunsReply::Refused(self.unknown_run(&id)));
                };
                match run_state.phase {
                    Phase::Running | Phase::Ended => {}
                    Phase::Pending => {
                        return reply(
                            self,
                            RunsReply::Refused(format!("run {id} is not accepted yet")),
                        )
                    }
                    _ => {
                        let info = run_state.info(retention);
                        return reply(
                            self,
                            RunsReply::Refused(format!(
                                "run {id} is {}: its outputs are gone",
                                info.state
                            )),
                        );
                    }
                }
                let info = run_state.info(retention);
                let wants = run_state.wants.clone();
                let events: Vec<TaskEvent> = run_state
                    .events
                    .iter()
                    .skip(from as usize)
                    .map(|e| TaskEvent { run, ..e.clone() })
                    .collect();
                let warnings = run_state.warnings.clone();
                run_state.followers.retain(|f| *f != (client, run));
                run_state.followers.push((client, run));
                reply(self, RunsReply::Attached { info, wants });
                if from == 0 {
                    for w in warnings {
                        self.out.push(Command::Client(client, ToClient::Warning(w)));
                    }
                }
                if !events.is_empty() {
                    self.out
                        .push(Command::Client(client, ToClient::Events(events)));
                }
            }
            RunsRequest::List => {
                let list = self.detached_infos();
                reply(self, RunsReply::List(list));
            }
            RunsRequest::Cancel { id } | RunsRequest::Release { id } => {
                let Some(&stand_in) = self.detached.by_id.get(&id) else {
                    return reply(self, RunsReply::Refused(self.unknown_run(&id)));
                };
                let phase = self.detached.runs[&stand_in].phase;
                let to = match phase {
                    Phase::Pending | Phase::Running => Phase::Cancelled,
                    Phase::Ended => Phase::Released,
                    gone => gone,
                };
                self.let_go(stand_in, to);
                let info = self.detached.runs[&stand_in].info(self.config.retention_ms);
                reply(self, RunsReply::Done(info));
            }
        }
    }

    /// Every detached run as listed, oldest first.
    pub(crate) fn detached_infos(&self) -> Vec<RunInfo> {
        let retention = self.config.retention_ms;
        self.detached
            .runs
            .values()
            .map(|r| r.info(retention))
            .collect()
    }

    /// A detached run's report: the run as listed and every task event so far.
    pub fn detached_report(&self, id: &str) -> Option<serde_json::Value> {
        let stand_in = self.detached.by_id.get(id)?;
        let r = self.detached.runs.get(stand_in)?;
        Some(serde_json::json!({
            "run": r.info(self.config.retention_ms),
            "events": r.events,
        }))
    }

    fn detached_by_id(&mut self, id: &str) -> Option<&mut DetachedRun> {
        let stand_in = self.detached.by_id.get(id)?;
        self.detached.runs.get_mut(stand_in)
    }

    fn unknown_run(&self, id: &str) -> String {
        format!(
            "no detached run {id:?} on this scheduler (runs are kept in its memory: a restart \
             forgets them, and a run's record goes a retention time after its outputs)"
        )
    }

    /// The run's stand-in leaves (its outputs are released, its tasks not started cancelled)
    /// and the run is in phase `to`.
    fn let_go(&mut self, stand_in: ClientId, to: Phase) {
        let Some(r) = self.detached.runs.get_mut(&stand_in) else {
            return;
        };
        if matches!(r.phase, Phase::Cancelled | Phase::Released | Phase::Expired) {
            return;
        }
        let now = self.detached.now_ms;
        r.phase = to;
        r.gone_ms = Some(now);
        if r.ended_ms.is_none() {
            r.ended_ms = Some(now);
        }
        let followers = std::mem::take(&mut r.followers);
        // Cancelled before it was accepted (the progress store was asked about its durable
        // tasks): its submitter, still waiting, hears so.
        if let Some((client, req)) = r.submitter.take() {
            let why = format!("run {} was cancelled before it was accepted", r.id);
            self.out.push(Command::Client(
                client,
                ToClient::Runs {
                    req,
                    reply: RunsReply::Refused(why),
                },
            ));
        }
        if to == Phase::Cancelled {
            let why = format!("run {} was cancelled", r.id);
            for (c, run) in followers {
                self.out.push(Command::Client(
                    c,
                    ToClient::RunEnded {
                        run,
                        why: why.clone(),
                    },
                ));
            }
        }
        self.client_left(stand_in);
    }

    /// The clock moved on: outputs of runs ended a retention time ago go, and records of runs
    /// whose outputs went a retention time ago are forgotten.
    pub(crate) fn detached_tick(&mut self, now_ms: u64) {
        self.detached.now_ms = now_ms;
        let retention = self.config.retention_ms;
        let due = |at: Option<u64>| at.is_some_and(|t| t.saturating_add(retention) <= now_ms);
        let expired: Vec<ClientId> = self
            .detached
            .runs
            .iter()
            .filter(|(_, r)| r.phase == Phase::Ended && due(r.ended_ms))
            .map(|(&c, _)| c)
            .collect();
        for stand_in in expired {
            self.let_go(stand_in, Phase::Expired);
        }
        let forgotten: Vec<ClientId> = self
            .detached
            .runs
            .iter()
            .filter(|(_, r)| due(r.gone_ms))
            .map(|(&c, _)| c)
            .collect();
        for stand_in in forgotten {
            if let Some(r) = self.detached.runs.remove(&stand_in) {
                self.detached.by_id.remove(&r.id);
            }
        }
    }

    /// A client left: it follows no run any more.
    pub(crate) fn detached_client_left(&mut self, client: ClientId) {
        for r in self.detached.runs.values_mut() {
            r.followers.retain(|(c, _)| *c != client);
        }
    }

    /// Takes what the core sent detached runs' stand-ins out of `out`: acceptances go to the
    /// submitters, events and warnings are recorded and forwarded to the followers.
    pub(crate) fn route_detached(&mut self, out: Vec<Command>) -> Vec<Command> {
        let mut routed = Vec::with_capacity(out.len());
        let mut ended = Vec::new();
        let mut refused = Vec::new();
        for command in out {
            let Command::Client(c, msg) = command else {
                routed.push(command);
                continue;
            };
            let Some(r) = self.detached.runs.get_mut(&c) else {
                routed.push(Command::Client(c, msg));
                continue;
            };
            match msg {
                ToClient::Accepted { tasks, .. } => {
                    r.tasks = tasks;
                    r.phase = Phase::Running;
                    if let Some((client, req)) = r.submitter.take() {
                        routed.push(Command::Client(
                            client,
                            ToClient::Runs {
                                req,
                                reply: RunsReply::Submitted {
                                    id: r.id.clone(),
                                    tasks,
                                },
                            },
                        ));
                    }
                    if r.complete() {
                        ended.push(c);
                    }
                }
                ToClient::Rejected { error, .. } => {
                    if let Some((client, req)) = r.submitter.take() {
                        routed.push(Command::Client(
                            client,
                            ToClient::Runs {
                                req,
                                reply: RunsReply::Refused(error),
                            },
                        ));
                    }
                    refused.push(c);
                }
                ToClient::Events(events) => {
                    for e in &events {
                        if !e.load
                            && r.done.insert(e.key.clone())
                            && e.status == drover_protocol::TaskStatus::Failed
                        {
                            r.failed += 1;
                        }
                    }
                    for &(f, run) in &r.followers {
                        let relabelled = events
                            .iter()
                            .map(|e| TaskEvent { run, ..e.clone() })
                            .collect();
                        routed.push(Command::Client(f, ToClient::Events(relabelled)));
                    }
                    r.events.extend(events);
                    if r.phase == Phase::Running && r.complete() {
                        ended.push(c);
                    }
                }
                ToClient::Warning(w) => {
                    for &(f, _) in &r.followers {
                        routed.push(Command::Client(f, ToClient::Warning(w.clone())));
                    }
                    if r.warnings.len() < MAX_WARNINGS && !r.warnings.contains(&w) {
                        r.warnings.push(w);
                    }
                }
                // A stand-in asks nothing, so nothing else is addressed to it.
                _ => {}
            }
        }
        for stand_in in ended {
            if let Some(r) = self.detached.runs.get_mut(&stand_in) {
                r.phase = Phase::Ended;
                r.ended_ms = Some(self.detached.now_ms);
            }
            // Its run-scoped once-cells go; its outputs stay until fetched or expired.
            self.end_run(stand_in, 0);
        }
        for stand_in in refused {
            if let Some(r) = self.detached.runs.remove(&stand_in) {
                self.detached.by_id.remove(&r.id);
            }
            self.client_left(stand_in);
        }
        // What ending and leaving sent (once-cell drops, cancellations) goes too.
        routed.append(&mut self.out);
        routed
    }
}
