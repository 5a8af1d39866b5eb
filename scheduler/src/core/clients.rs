//! Clients: what they want kept, where results are, and what happens when they leave.

use std::collections::BTreeMap;

use drover_protocol::{PeerInfo, TaskIdx, ToClient, WorkerId};

use super::{ClientId, Command, Core, State};

impl Core {
    /// A client left: its wanted results are released, its runs are over (their run-scoped
    /// once-cells go), and the tasks only its runs included that have not started are
    /// cancelled (tasks another connected client's run shares go on). Tasks already running
    /// finish; their results are freed as nobody needs them.
    pub(crate) fn client_left(&mut self, id: ClientId) {
        if let Some(wants) = self.clients.remove(&id) {
            let mut wants: Vec<TaskIdx> = wants.into_iter().collect();
            wants.sort_unstable();
            for t in wants {
                self.unneed(t);
            }
        }
        self.warned.retain(|(c, _)| *c != id);
        self.pending_locates.retain(|(c, _, _)| *c != id);
        self.drop_scoped_cells_of_client(id);
        let mut cancelled = 0usize;
        for t in 0..self.tasks.len() as TaskIdx {
            let task = &self.tasks[t as usize];
            if matches!(task.state, State::Waiting | State::Ready)
                && task.waiters == 0
                && !self.has_connected_run(t)
            {
                // Its inputs lose its need, and those nobody else needs go the same way.
                self.cancel(t);
                cancelled += 1;
            }
        }
        if cancelled > 0 {
            tracing::info!(
                client = id,
                cancelled,
                "client left: its waiting tasks are cancelled"
            );
        }
        self.forget_departed();
    }

    /// The client no longer wants these results kept.
    pub(crate) fn release_wants(&mut self, client: ClientId, keys: &[String]) {
        for k in keys {
            let Some(t) = self.slot_of(k) else {
                continue;
            };
            let removed = self.clients.get_mut(&client).is_some_and(|w| w.remove(&t));
            if removed {
                self.unneed(t);
            }
        }
    }

    /// Answers the locate requests whose keys are all settled: held, or failed, released or
    /// unknown. A key still being computed (or recomputed after a lost worker) keeps its request
    /// waiting, so a client never hears "not held" for a result that is on its way.
    pub(crate) fn answer_locates(&mut self) {
        let pending = std::mem::take(&mut self.pending_locates);
        for (client, req, keys) in pending {
            let unsettled = keys.iter().any(|k| {
                self.slot_of(k)
                    .is_some_and(|t| self.tasks[t as usize].state.is_pending())
            });
            if unsettled && self.clients.contains_key(&client) {
                self.pending_locates.push((client, req, keys));
                continue;
            }
            let mut peers: BTreeMap<WorkerId, PeerInfo> = BTreeMap::new();
            let mut inline: Vec<(String, Vec<u8>)> = Vec::new();
            let found = keys
                .into_iter()
                .map(|k| {
                    let holder = self.slot_of(k.as_str()).and_then(|t| {
                        let task = &self.tasks[t as usize];
                        if task.state != State::Memory || task.cell.is_some() {
                            return None;
                        }
                        let Some(w) = task.holders.first() else {
                            // Held by no worker but by the core (a stored output): inline.
                            if let Some(bytes) = self.stored.get(&t) {
                                inline.push((k.clone(), bytes.to_vec()));
                            }
                            return None;
                        };
                        let worker = self.workers.get(w)?;
                        peers.entry(*w).or_insert_with(|| worker.peer.clone());
                        Some((t, *w))
                    });
                    (k, holder)
                })
                .collect();
            self.out.push(Command::Client(
                client,
                ToClient::Located {
                    req,
                    found,
                    peers: peers.into_values().collect(),
                    inline,
                },
            ));
        }
    }
}
