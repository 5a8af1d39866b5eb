//! Detached runs from the client's side: submit a graph that outlives this client, follow a
//! run by its id from any client, list runs, cancel one, release its outputs.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use drover_graph::Graph;
use drover_protocol::{FromClient, RunInfo, RunsReply, RunsRequest};
use tokio::sync::{mpsc, oneshot};

use super::link::{RunRoute, RunSource};
use super::{Client, ClientError, Run};

/// Who a client is, for `drover runs`: `USER@HOST`.
fn submitter() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| {
            // No login name in the environment: the user id.
            std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("Uid:"))
                        .and_then(|l| l.split_whitespace().next().map(|u| format!("uid {u}")))
                })
                .unwrap_or_else(|| "?".to_owned())
        });
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{user}@{}", host.trim())
}

impl Client {
    /// Sends a request about detached runs and waits for the answer.
    async fn runs_request(&self, request: RunsRequest) -> Result<RunsReply, ClientError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut s = self.lock();
            s.next_runs_request = s.next_runs_request.wrapping_add(1);
            let req = s.next_runs_request;
            s.runs_requests.insert(req, (request.clone(), tx));
            s.send(FromClient::Runs { req, request })
                .map_err(ClientError::Lost)?;
        }
        match rx.await.map_err(|_| self.lost())? {
            RunsReply::Refused(why) => Err(ClientError::Refused(why)),
            reply => Ok(reply),
        }
    }

    /// Submits `graph` as a *detached* run and returns its id at once: it runs whether or not
    /// this client stays, and keeps its sinks' outputs until a client fetches and releases
    /// them ([`Client::attach`], [`Run::release_detached`]) or the scheduler's retention time
    /// after it ended passes. `name` is what `drover runs` lists it by.
    pub async fn submit_detached(&self, graph: &Graph, name: &str) -> Result<String, ClientError> {
        let topo = graph.validate()?;
        let sinks: Vec<String> = topo
            .sinks()
            .filter(|&t| !graph.is_once_cell(t))
            .map(|t| graph.key(t).to_owned())
            .collect();
        self.submit_detached_with(graph, &sinks, name).await
    }

    /// [`Client::submit_detached`] keeping the outputs of `wants` (instead of the sinks'),
    /// the graph sent in the binary wire form.
    pub async fn submit_detached_with(
        &self,
        graph: &Graph,
        wants: &[String],
        name: &str,
    ) -> Result<String, ClientError> {
        self.submit_request(RunsRequest::SubmitWire {
            graph: graph.to_wire(),
            wants: wants.to_vec(),
            name: name.to_owned(),
            by: submitter(),
        })
        .await
    }

    /// [`Client::submit_detached`] for a graph in the JSON graph format, keeping the outputs
    /// of `wants`.
    pub async fn submit_json_detached(
        &self,
        graph_json: String,
        wants: &[String],
        name: &str,
    ) -> Result<String, ClientError> {
        self.submit_request(RunsRequest::Submit {
            graph_json,
            wants: wants.to_vec(),
            name: name.to_owned(),
            by: submitter(),
        })
        .await
    }

    /// Sends a detached submission; the run's id.
    async fn submit_request(&self, request: RunsRequest) -> Result<String, ClientError> {
        let reply = self.runs_request(request).await.map_err(|e| match e {
            ClientError::Refused(why) => ClientError::Rejected(why),
            other => other,
        })?;
        match reply {
            RunsReply::Submitted { id, .. } => Ok(id),
            other => Err(unexpected(other)),
        }
    }

    /// Follows the detached run `id` (submitted by any client, this one or another process):
    /// a [`Run`] with every event so far and the rest as they happen, its outputs fetchable
    /// as a submitted run's. Refused for an unknown id and for a run whose outputs are gone
    /// (cancelled, released, expired).
    pub async fn attach(&self, id: &str) -> Result<Run, ClientError> {
        let run = self.inner.next_run.fetch_add(1, Ordering::Relaxed);
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        {
            let mut s = self.lock();
            if let Some(why) = s.gone() {
                return Err(ClientError::Lost(why.to_owned()));
            }
            s.runs.insert(
                run,
                RunRoute {
                    events: ev_tx,
                    source: RunSource::Detached(id.to_owned()),
                    wants: Vec::new(),
                    complete: false,
                    seen: 0,
                },
            );
        }
        let reply = self
            .runs_request(RunsRequest::Attach {
                run,
                id: id.to_owned(),
                from: 0,
            })
            .await;
        let (info, wants) = match reply {
            Ok(RunsReply::Attached { info, wants }) => (info, wants),
            Ok(other) => {
                self.lock().runs.remove(&run);
                return Err(unexpected(other));
            }
            Err(e) => {
                self.lock().runs.remove(&run);
                return Err(e);
            }
        };
        if let Some(r) = self.lock().runs.get_mut(&run) {
            r.wants = wants.clone();
        }
        Ok(Run {
            client: self.clone(),
            id: run,
            ended: false,
            tasks: info.tasks,
            events: ev_rx,
            done: HashMap::default(),
            log: Vec::new(),
            log_ms: Vec::new(),
            submitted: std::time::Instant::now(),
            warnings: Vec::new(),
            wants: wants.iter().cloned().collect(),
            ended_why: None,
            detached: Some(id.to_owned()),
            kept: wants,
        })
    }

    /// The cluster at a glance: workers, pools, live runs, detached runs, bytes moved,
    /// insights (what `drover status` prints).
    pub async fn status(&self) -> Result<drover_protocol::ClusterStatus, ClientError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut s = self.lock();
            s.next_runs_request = s.next_runs_request.wrapping_add(1);
            let req = s.next_runs_request;
            s.status_requests.insert(req, tx);
            s.send(FromClient::Status { req })
                .map_err(ClientError::Lost)?;
        }
        rx.await.map(|b| *b).map_err(|_| self.lost())
    }

    /// The detached runs the scheduler knows, oldest first.
    pub async fn runs(&self) -> Result<Vec<RunInfo>, ClientError> {
        match self.runs_request(RunsRequest::List).await? {
            RunsReply::List(runs) => Ok(runs),
            other => Err(unexpected(other)),
        }
    }

    /// Cancels the detached run `id`: its tasks not started are dropped (those another run
    /// shares go on; running ones finish), its outputs released; clients following it see it
    /// end. A run already done has its outputs released. Returns the run as it is now.
    pub async fn cancel(&self, id: &str) -> Result<RunInfo, ClientError> {
        match self
            .runs_request(RunsRequest::Cancel { id: id.to_owned() })
            .await?
        {
            RunsReply::Done(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    /// Releases the outputs of the detached run `id` (fetched, or no longer wanted); it stays
    /// listed as `released` until the retention time.
    pub async fn release_run(&self, id: &str) -> Result<RunInfo, ClientError> {
        match self
            .runs_request(RunsRequest::Release { id: id.to_owned() })
            .await?
        {
            RunsReply::Done(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }
}

fn unexpected(reply: RunsReply) -> ClientError {
    ClientError::Refused(format!("unexpected answer from the scheduler: {reply:?}"))
}

impl Run {
    /// The id of the detached run this follows ([`Client::attach`]), if it is one.
    pub fn detached_id(&self) -> Option<&str> {
        self.detached.as_deref()
    }

    /// For a followed detached run: releases its outputs on the scheduler (after fetching
    /// them). Does nothing for a run this client submitted (its outputs go with it).
    pub async fn release_detached(&self) -> Result<Option<RunInfo>, ClientError> {
        match &self.detached {
            Some(id) => self.client.release_run(id).await.map(Some),
            None => Ok(None),
        }
    }
}
