//! The core's part of the cluster at a glance ([`ClusterStatus`]): tasks by state overall, per
//! pool and per live run, and each worker's load. One pass over the tasks; what only the shell
//! sees (times, rates, bytes moved, insights) is added by [`crate::monitor::Monitor`].

use std::collections::{BTreeMap, HashMap};

use drover_protocol::{ClusterStatus, PoolStatus, RunStatus, TaskCounts, WorkerStatus};

use super::{Core, State, StaticPlace, TaskIdx};

/// Failures listed per run.
const MAX_FAILURES: usize = 20;

/// The most tasks a live run's picture is drawn for (it is made on the event loop).
const MAX_PICTURE_TASKS: usize = 20_000;

fn count(c: &mut TaskCounts, state: &State) {
    match state {
        State::Idle => {}
        State::Waiting => c.waiting += 1,
        State::Ready => c.ready += 1,
        State::Assigned(_) => c.running += 1,
        State::Memory | State::Released => c.done += 1,
        State::Failed(_) => c.failed += 1,
    }
}

impl Core {
    /// The function name of task `id`, while the core knows it.
    pub fn function_of(&self, id: TaskIdx) -> Option<&str> {
        let task = self.tasks.get(id as usize)?;
        if task.key.is_empty() {
            return None;
        }
        self.functions.get(task.function as usize).map(|f| &**f)
    }

    /// The key of task `id`, while the core knows it.
    pub fn key_of(&self, id: TaskIdx) -> Option<&str> {
        let task = self.tasks.get(id as usize)?;
        (!task.key.is_empty()).then_some(&*task.key)
    }

    /// The core's part of the cluster's status (see the module docs).
    pub fn status(&self) -> ClusterStatus {
        let mut status = ClusterStatus::default();
        let mut pools: Vec<TaskCounts> = vec![TaskCounts::default(); self.pools.len()];
        // Live runs: a connected client's run not ended, or a detached run's.
        let mut runs: HashMap<u32, RunStatus> = HashMap::new();
        for (t, task) in self.tasks.iter().enumerate() {
            if task.key.is_empty() || task.cell.is_some() || task.state == State::Idle {
                continue;
            }
            count(&mut status.tasks, &task.state);
            let pool = task.placed_pool.or(match task.place {
                StaticPlace::Pinned(p) => Some(p),
                StaticPlace::Pass(p) => p,
                StaticPlace::Optimised(p) => Some(p),
                StaticPlace::Any => None,
            });
            if let Some(p) = pool {
                count(&mut pools[p as usize], &task.state);
            }
            for r in self.runs_of(t as TaskIdx) {
                let run = &self.runs[r as usize];
                if run.ended && !self.detached.is_stand_in(run.client) {
                    continue;
                }
                if !self.run_connected(r) {
                    continue;
                }
                let entry = runs.entry(r).or_insert_with(|| RunStatus {
                    id: self
                        .detached
                        .id_of(run.client)
                        .map(str::to_owned)
                        .unwrap_or_else(|| format!("{}.{}", run.client, run.client_run)),
                    name: self.detached.name_of(run.client).unwrap_or("").to_owned(),
                    ..Default::default()
                });
                count(&mut entry.tasks, &task.state);
                if let State::Failed(why) = &task.state {
                    if entry.failures.len() < MAX_FAILURES {
                        entry.failures.push((task.key.to_string(), why.to_string()));
                    }
                }
            }
        }
        let mut workers_in: BTreeMap<&str, u32> = BTreeMap::new();
        for (&id, w) in &self.workers {
            let started = w
                .assigned
                .iter()
                .filter(|&&t| self.tasks[t as usize].started)
                .count() as u32;
            let pool_names: Vec<String> = w
                .pools
                .iter()
                .map(|&p| self.pools[p as usize].to_string())
                .collect();
            for p in &w.pools {
                *workers_in.entry(&self.pools[*p as usize]).or_default() += 1;
            }
            status.workers.push(WorkerStatus {
                id,
                name: w.name.to_string(),
                pools: pool_names,
                resources: w
                    .resources
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
                nthreads: w.nthreads,
                running: started,
                queued: w.assigned.len() as u32 - started,
                held: w.has.len() as u64,
                cells: w.cells.len() as u64,
                retiring: w.retiring,
                ..Default::default()
            });
        }
        let mut order: Vec<usize> = (0..self.pools.len()).collect();
        order.sort_by(|&a, &b| self.pools[a].cmp(&self.pools[b]));
        for p in order {
            let name = &self.pools[p];
            let workers = workers_in.get(&**name).copied().unwrap_or(0);
            if workers == 0 && pools[p].total() == 0 {
                continue;
            }
            status.pools.push(PoolStatus {
                name: name.to_string(),
                workers,
                tasks: pools[p],
                bytes_in: 0,
            });
        }
        let mut runs: Vec<(u32, RunStatus)> = runs.into_iter().collect();
        runs.sort_by_key(|(r, _)| *r);
        status.runs = runs.into_iter().map(|(_, r)| r).collect();
        status.detached = self.detached_infos();
        status.estimated_bytes_between_pools = self.estimated_cross_pool;
        status
    }
}

impl Core {
    /// The run `id` (a detached run's id, or `CLIENT.RUN`) drawn as SVG with its pools and each
    /// task's state now (summarised above 300 tasks, as the export). `None` for an unknown or
    /// ended run.
    pub fn run_picture(&self, id: &str) -> Option<String> {
        use drover_graph::export::TaskState;
        let r = self.find_run(id)?;
        let in_run: Vec<TaskIdx> = (0..self.tasks.len() as TaskIdx)
            .filter(|&t| {
                let task = &self.tasks[t as usize];
                !task.key.is_empty()
                    && task.cell.is_none()
                    && task.state != State::Idle
                    && self.runs_of(t).any(|x| x == r)
            })
            .collect();
        if in_run.len() > MAX_PICTURE_TASKS {
            // Drawing it would hold up the event loop: say so in a picture.
            return Some(format!(
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"640\" height=\"60\"><text x=\"10\" y=\"35\" font-family=\"sans-serif\" font-size=\"14\">Run {} has {} tasks: too many to draw live (at most {}); drover export draws its graph file.</text></svg>",
                id.replace(['<', '>', '&', '"'], "_"),
                in_run.len(),
                MAX_PICTURE_TASKS
            ));
        }
        let member: std::collections::HashSet<TaskIdx> = in_run.iter().copied().collect();
        let tasks: Vec<serde_json::Value> = in_run
            .iter()
            .map(|&t| {
                let task = &self.tasks[t as usize];
                let inputs: Vec<&str> = task
                    .inputs
                    .iter()
                    .filter(|i| member.contains(i))
                    .map(|&i| &*self.tasks[i as usize].key)
                    .collect();
                let mut v = serde_json::json!({
                    "key": &*task.key,
                    "function": &*self.functions[task.function as usize],
                    "inputs": inputs,
                });
                match task.place {
                    StaticPlace::Pinned(p) => {
                        v["pool"] = serde_json::json!(&*self.pools[p as usize])
                    }
                    StaticPlace::Any => v["any_pool"] = serde_json::json!(true),
                    StaticPlace::Pass(_) | StaticPlace::Optimised(_) => {}
                }
                if matches!(task.state, State::Memory | State::Released) {
                    v["size_hint"] = serde_json::json!(task.size);
                }
                v
            })
            .collect();
        let text = serde_json::json!({ "tasks": tasks }).to_string();
        let graph = drover_graph::Graph::from_json_str(&text).ok()?;
        let topo = graph.validate().ok()?;
        let prop = drover_graph::propagate_pools(&graph, &topo);
        let mut states = vec![TaskState::Waiting; graph.len()];
        for &t in &in_run {
            let task = &self.tasks[t as usize];
            if let Some(g) = graph.id_of(&task.key) {
                states[g.index()] = match task.state {
                    State::Ready => TaskState::Ready,
                    State::Assigned(_) => TaskState::Running,
                    State::Memory | State::Released => TaskState::Done,
                    State::Failed(_) => TaskState::Failed,
                    State::Waiting | State::Idle => TaskState::Waiting,
                };
            }
        }
        Some(drover_graph::export::to_svg_with_states(
            &graph,
            &topo,
            &prop,
            Default::default(),
            &states,
        ))
    }

    /// The core's run named `id`: a detached run's id or `CLIENT.RUN` of a live run.
    fn find_run(&self, id: &str) -> Option<u32> {
        let client_and_run = match self.detached.stand_in_of(id) {
            Some(stand_in) => (stand_in, 0),
            None => {
                let (c, r) = id.split_once('.')?;
                (c.parse().ok()?, r.parse().ok()?)
            }
        };
        self.runs
            .iter()
            .rposition(|run| (run.client, run.client_run) == client_and_run)
            .map(|r| r as u32)
    }
}
