//! What the scheduler's shell sees of the cluster over time, for `drover status`, the
//! dashboard and `/metrics`: per worker rates, times and insights, joins and departures, the
//! task stream (a bar per task, per load), bytes moved, and the Prometheus metrics. Pure: fed
//! each event (with the wall clock) before the core handles it, asked for a
//! [`ClusterStatus`] built on the core's own part.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use drover_protocol::{ClusterStatus, FromWorker, SlowTask, WorkerId};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::core::{Core, Event};

/// Joins and departures kept.
const MAX_EVENTS: usize = 200;
/// Task-stream bars kept (the newest).
const MAX_BARS: usize = 50_000;
/// Bars older than this go, ms.
const STREAM_MS: u64 = 10 * 60 * 1000;
/// The window of `tasks_per_s`, ms.
const RATE_MS: u64 = 5_000;
/// Slowest tasks kept.
const MAX_SLOWEST: usize = 10;

/// One bar of the task stream: a task run or a once-cell load on one of a worker's lanes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bar {
    /// The worker.
    pub worker: WorkerId,
    /// Its lane (one per thread, as far as the times tell).
    pub lane: u32,
    /// The function (or loader) name.
    pub function: Arc<str>,
    /// `task`, `load` (a once-cell) or `fetch` (inputs from other workers).
    pub kind: &'static str,
    /// Start, ms since the Unix epoch.
    pub start_ms: f64,
    /// End, ms since the Unix epoch.
    pub end_ms: f64,
    /// It failed.
    pub failed: bool,
}

/// What the shell knows of a worker.
#[derive(Debug)]
struct Seen {
    name: String,
    pools: Vec<String>,
    nthreads: u32,
    joined_ms: u64,
    last_heard_ms: u64,
    finished: u64,
    failed: u64,
    compute_us: u64,
    fetch_us: u64,
    load_us: u64,
    memory: Option<u64>,
    /// When recent tasks finished, for the rate.
    recent: VecDeque<u64>,
    /// When each lane is free again, ms.
    lanes: Vec<f64>,
}

/// Labels of a metric family.
type Labels = Vec<(String, String)>;

/// The Prometheus metrics (names documented in README.md, "Metrics").
#[derive(Debug)]
struct Metrics {
    registry: Registry,
    tasks: Family<Labels, Gauge>,
    finished: Family<Labels, Counter>,
    failed: Family<Labels, Counter>,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
    bytes_workers: Counter,
    bytes_pools: Counter,
    workers: Family<Labels, Gauge>,
    loads: Family<Labels, Counter>,
    loop_seconds: Histogram,
    commits: Counter,
    clients: Gauge<i64, std::sync::atomic::AtomicI64>,
}

fn duration_histogram() -> Histogram {
    // 10 us to about 3 hours.
    Histogram::new(exponential_buckets(1e-5, 4.0, 15))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("drover");
        let tasks = Family::<Labels, Gauge>::default();
        registry.register(
            "tasks",
            "Tasks the scheduler knows, by state",
            tasks.clone(),
        );
        let finished = Family::<Labels, Counter>::default();
        registry.register(
            "tasks_finished",
            "Tasks finished, by function",
            finished.clone(),
        );
        let failed = Family::<Labels, Counter>::default();
        registry.register("tasks_failed", "Tasks failed, by function", failed.clone());
        let duration = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        registry.register(
            "task_duration_seconds",
            "Run time of finished tasks, by function",
            duration.clone(),
        );
        let bytes_workers = Counter::default();
        registry.register(
            "bytes_between_workers",
            "Bytes of inputs moved from one worker to another",
            bytes_workers.clone(),
        );
        let bytes_pools = Counter::default();
        registry.register(
            "bytes_between_pools",
            "Bytes of inputs moved between workers of different pools",
            bytes_pools.clone(),
        );
        let workers = Family::<Labels, Gauge>::default();
        registry.register(
            "workers",
            "Connected workers, by pool (\"\" for workers of no pool)",
            workers.clone(),
        );
        let loads = Family::<Labels, Counter>::default();
        registry.register(
            "once_cell_loads",
            "Once-cell loads, by loader",
            loads.clone(),
        );
        let loop_seconds = Histogram::new(exponential_buckets(1e-6, 4.0, 12));
        registry.register(
            "event_loop_seconds",
            "Time the scheduler's event loop took per batch of events",
            loop_seconds.clone(),
        );
        let commits = Counter::default();
        registry.register(
            "durable_commits",
            "Durable tasks committed to the progress store",
            commits.clone(),
        );
        let clients = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        registry.register("clients", "Connected clients", clients.clone());
        Metrics {
            registry,
            tasks,
            finished,
            failed,
            duration,
            bytes_workers,
            bytes_pools,
            workers,
            loads,
            loop_seconds,
            commits,
            clients,
        }
    }
}

fn label(name: &str, value: &str) -> Labels {
    vec![(name.to_owned(), value.to_owned())]
}

/// One function's metrics, looked up once per function, not once per task.
#[derive(Debug, Clone)]
struct FnMetrics {
    name: Arc<str>,
    finished: Counter,
    failed: Counter,
    duration: Histogram,
}

/// The shell's view of the cluster over time (see the module docs).
#[derive(Debug)]
pub struct Monitor {
    by_function: HashMap<Box<str>, FnMetrics>,
    by_loader: HashMap<Box<str>, (Arc<str>, Counter)>,
    /// The name fetch bars carry.
    fetch_name: Arc<str>,
    started_ms: u64,
    workers: BTreeMap<WorkerId, Seen>,
    events: VecDeque<(u64, String)>,
    stream: VecDeque<Bar>,
    slowest: Vec<SlowTask>,
    bytes_between_workers: u64,
    bytes_between_pools: u64,
    pool_bytes_in: HashMap<String, u64>,
    clients: i64,
    /// The event loop's busy time, microseconds.
    loop_us: u64,
    metrics: Metrics,
}

impl Monitor {
    /// A monitor started at `now_ms`.
    pub fn new(now_ms: u64) -> Monitor {
        Monitor {
            by_function: HashMap::new(),
            by_loader: HashMap::new(),
            fetch_name: Arc::from("fetch"),
            started_ms: now_ms,
            workers: BTreeMap::new(),
            events: VecDeque::new(),
            stream: VecDeque::new(),
            slowest: Vec::new(),
            bytes_between_workers: 0,
            bytes_between_pools: 0,
            pool_bytes_in: HashMap::new(),
            clients: 0,
            loop_us: 0,
            metrics: Metrics::new(),
        }
    }

    fn note(&mut self, now_ms: u64, text: String) {
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back((now_ms, text));
    }

    /// Takes in `event` (arriving at `now_ms`), before `core` handles it.
    pub fn observe(&mut self, core: &Core, event: &Event, now_ms: u64) {
        match event {
            Event::WorkerJoined { id, hello } => {
                let pools: Vec<String> = hello
                    .resources
                    .iter()
                    .filter_map(|(k, _)| k.strip_prefix("pool-").map(str::to_owned))
                    .collect();
                self.note(
                    now_ms,
                    format!(
                        "worker {} joined ({} thread{}{})",
                        hello.name,
                        hello.nthreads,
                        if hello.nthreads == 1 { "" } else { "s" },
                        if pools.is_empty() {
                            String::new()
                        } else {
                            format!(", pools {}", pools.join(", "))
                        }
                    ),
                );
                self.workers.insert(
                    *id,
                    Seen {
                        name: hello.name.clone(),
                        pools,
                        nthreads: hello.nthreads.max(1),
                        joined_ms: now_ms,
                        last_heard_ms: now_ms,
                        finished: 0,
                        failed: 0,
                        compute_us: 0,
                        fetch_us: 0,
                        load_us: 0,
                        memory: None,
                        recent: VecDeque::new(),
                        lanes: vec![0.0; hello.nthreads.max(1) as usize],
                    },
                );
            }
            Event::WorkerLeft { id } => {
                if let Some(w) = self.workers.remove(id) {
                    self.note(now_ms, format!("worker {} left", w.name));
                }
            }
            Event::ClientJoined { .. } => self.clients += 1,
            Event::ClientLeft { .. } => self.clients -= 1,
            Event::Worker(w, msg) => self.observe_worker(core, *w, msg, now_ms),
            _ => {}
        }
    }

    /// The metrics of function `name`.
    fn function(&mut self, name: &str) -> FnMetrics {
        if let Some(m) = self.by_function.get(name) {
            return m.clone();
        }
        let l = label("function", name);
        let m = FnMetrics {
            name: Arc::from(name),
            finished: self.metrics.finished.get_or_create(&l).clone(),
            failed: self.metrics.failed.get_or_create(&l).clone(),
            duration: self.metrics.duration.get_or_create(&l).clone(),
        };
        self.by_function.insert(name.into(), m.clone());
        m
    }

    /// The name and load counter of loader `name`.
    fn loader(&mut self, name: &str) -> (Arc<str>, Counter) {
        if let Some(m) = self.by_loader.get(name) {
            return m.clone();
        }
        let m = (
            Arc::<str>::from(name),
            self.metrics
                .loads
                .get_or_create(&label("loader", name))
                .clone(),
        );
        self.by_loader.insert(name.into(), m.clone());
        m
    }

    fn observe_worker(&mut self, core: &Core, w: WorkerId, msg: &FromWorker, now_ms: u64) {
        match msg {
            FromWorker::Finished {
                id, duration_us, ..
            }
            | FromWorker::Failed {
                id, duration_us, ..
            } => {
                let failed = matches!(msg, FromWorker::Failed { .. });
                let f = self.function(core.function_of(*id).unwrap_or("?"));
                let Some(seen) = self.workers.get_mut(&w) else {
                    return;
                };
                seen.last_heard_ms = now_ms;
                if failed {
                    seen.failed += 1;
                    f.failed.inc();
                } else {
                    seen.finished += 1;
                    f.finished.inc();
                    f.duration.observe(*duration_us as f64 / 1e6);
                }
                seen.compute_us = seen.compute_us.saturating_add(*duration_us);
                seen.recent.push_back(now_ms);
                while seen.recent.front().is_some_and(|&t| t + RATE_MS < now_ms) {
                    seen.recent.pop_front();
                }
                self.bar(w, f.name.clone(), "task", now_ms, *duration_us, failed);
                if self.is_slow(*duration_us) {
                    let worker = self
                        .workers
                        .get(&w)
                        .map_or(String::new(), |s| s.name.clone());
                    self.slow(SlowTask {
                        key: core.key_of(*id).unwrap_or("?").to_owned(),
                        function: f.name.to_string(),
                        worker,
                        duration_us: *duration_us,
                    });
                }
                return;
            }
            FromWorker::Loaded {
                id: cell,
                duration_us,
                error,
                ..
            } => {
                let (loader, loads) = self.loader(core.function_of(*cell).unwrap_or("?"));
                if let Some(seen) = self.workers.get_mut(&w) {
                    seen.last_heard_ms = now_ms;
                    seen.load_us = seen.load_us.saturating_add(*duration_us);
                }
                if *duration_us > 0 {
                    loads.inc();
                    self.bar(w, loader, "load", now_ms, *duration_us, error.is_some());
                }
                return;
            }
            _ => {}
        }
        let Some(seen) = self.workers.get_mut(&w) else {
            return;
        };
        seen.last_heard_ms = now_ms;
        match msg {
            FromWorker::Stats {
                rss_bytes,
                fetch_us,
            } => {
                seen.memory = Some(*rss_bytes);
                seen.fetch_us = seen.fetch_us.saturating_add(*fetch_us);
            }
            FromWorker::Fetched {
                inputs, fetch_us, ..
            } => {
                if *fetch_us > 0 {
                    let name = self.fetch_name.clone();
                    self.bar(w, name, "fetch", now_ms, *fetch_us, false);
                }
                // Bytes in, and the part from workers sharing no pool with this one.
                let here = &self.workers[&w].pools;
                let (mut all, mut cross) = (0u64, 0u64);
                for &(_, from, bytes) in inputs {
                    all = all.saturating_add(bytes);
                    let shared = self
                        .workers
                        .get(&from)
                        .is_some_and(|f| here.iter().any(|p| f.pools.contains(p)));
                    if !shared {
                        cross = cross.saturating_add(bytes);
                    }
                }
                self.bytes_between_workers = self.bytes_between_workers.saturating_add(all);
                self.metrics.bytes_workers.inc_by(all);
                if cross > 0 {
                    self.bytes_between_pools = self.bytes_between_pools.saturating_add(cross);
                    self.metrics.bytes_pools.inc_by(cross);
                    for p in &self.workers[&w].pools {
                        if let Some(b) = self.pool_bytes_in.get_mut(p) {
                            *b += cross;
                        } else {
                            self.pool_bytes_in.insert(p.clone(), cross);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// A bar of `duration_us` ending at `end_ms` on the first lane of worker `w` free by its
    /// start.
    fn bar(
        &mut self,
        w: WorkerId,
        function: Arc<str>,
        kind: &'static str,
        end_ms: u64,
        duration_us: u64,
        failed: bool,
    ) {
        let Some(seen) = self.workers.get_mut(&w) else {
            return;
        };
        let end = end_ms as f64;
        let start = end - duration_us as f64 / 1000.0;
        let lane = seen
            .lanes
            .iter()
            .position(|&free| free <= start + 0.5)
            .unwrap_or_else(|| {
                // More overlap than threads (clocks are coarse): the lane free soonest.
                seen.lanes
                    .iter()
                    .enumerate()
                    .min_by(|a, b| a.1.total_cmp(b.1))
                    .map_or(0, |(i, _)| i)
            });
        seen.lanes[lane] = end;
        if self.stream.len() == MAX_BARS {
            self.stream.pop_front();
        }
        self.stream.push_back(Bar {
            worker: w,
            lane: lane as u32,
            function,
            kind,
            start_ms: start,
            end_ms: end,
            failed,
        });
        while self
            .stream
            .front()
            .is_some_and(|b| (b.end_ms as u64).saturating_add(STREAM_MS) < end_ms)
        {
            self.stream.pop_front();
        }
    }

    /// Whether a task of `duration_us` would enter the slowest list.
    fn is_slow(&self, duration_us: u64) -> bool {
        self.slowest.len() < MAX_SLOWEST
            || self
                .slowest
                .last()
                .is_some_and(|s| s.duration_us < duration_us)
    }

    fn slow(&mut self, task: SlowTask) {
        if self.slowest.len() == MAX_SLOWEST
            && self
                .slowest
                .last()
                .is_some_and(|s| s.duration_us >= task.duration_us)
        {
            return;
        }
        // A task already listed (run again) keeps its slowest run.
        if let Some(i) = self.slowest.iter().position(|s| s.key == task.key) {
            if self.slowest[i].duration_us >= task.duration_us {
                return;
            }
            self.slowest.remove(i);
        }
        let at = self
            .slowest
            .partition_point(|s| s.duration_us >= task.duration_us);
        self.slowest.insert(at, task);
        self.slowest.truncate(MAX_SLOWEST);
    }

    /// A durable task was committed.
    pub fn committed(&mut self) {
        self.metrics.commits.inc();
    }

    /// The event loop took `seconds` for a batch.
    pub fn loop_took(&mut self, seconds: f64) {
        self.metrics.loop_seconds.observe(seconds);
        self.loop_us = self.loop_us.saturating_add((seconds * 1e6) as u64);
    }

    /// The cluster's status at `now_ms`: the core's part and the monitor's.
    pub fn status(&self, core: &Core, now_ms: u64) -> ClusterStatus {
        let mut s = core.status();
        s.now_ms = now_ms;
        s.uptime_ms = now_ms.saturating_sub(self.started_ms);
        for w in &mut s.workers {
            let Some(seen) = self.workers.get(&w.id) else {
                continue;
            };
            w.finished = seen.finished;
            w.failed = seen.failed;
            let window = now_ms.saturating_sub(seen.joined_ms).clamp(1, RATE_MS);
            let recent = seen
                .recent
                .iter()
                .filter(|&&t| t + RATE_MS >= now_ms)
                .count();
            w.tasks_per_s = recent as f64 * 1000.0 / window as f64;
            w.memory_bytes = seen.memory;
            w.joined_ms = seen.joined_ms;
            w.last_heard_ago_ms = now_ms.saturating_sub(seen.last_heard_ms);
            let thread_us = now_ms.saturating_sub(seen.joined_ms) * 1000 * u64::from(seen.nthreads);
            w.insights.compute_us = seen.compute_us;
            w.insights.fetch_us = seen.fetch_us;
            w.insights.load_us = seen.load_us;
            w.insights.idle_us =
                thread_us.saturating_sub(seen.compute_us + seen.fetch_us + seen.load_us);
            s.insights.compute_us += w.insights.compute_us;
            s.insights.fetch_us += w.insights.fetch_us;
            s.insights.load_us += w.insights.load_us;
            s.insights.idle_us += w.insights.idle_us;
        }
        for p in &mut s.pools {
            p.bytes_in = self.pool_bytes_in.get(&p.name).copied().unwrap_or(0);
        }
        s.insights.scheduler_us = self.loop_us;
        s.bytes_between_workers = self.bytes_between_workers;
        s.bytes_between_pools = self.bytes_between_pools;
        s.events = self.events.iter().cloned().collect();
        s.slowest = self.slowest.clone();
        s
    }

    /// The task stream's bars that ended in the last `window_ms` before `now_ms`, at most
    /// `limit` (the newest).
    pub fn stream(&self, now_ms: u64, window_ms: u64, limit: usize) -> Vec<Bar> {
        let since = now_ms.saturating_sub(window_ms) as f64;
        let mut bars: Vec<Bar> = self
            .stream
            .iter()
            .rev()
            .take_while(|b| b.end_ms >= since)
            .take(limit)
            .cloned()
            .collect();
        bars.reverse();
        bars
    }

    /// The Prometheus text exposition of the metrics, with the gauges brought up to date from
    /// `status`.
    pub fn metrics_text(&self, status: &ClusterStatus) -> String {
        let m = &self.metrics;
        let t = &status.tasks;
        for (state, n) in [
            ("waiting", t.waiting),
            ("ready", t.ready),
            ("running", t.running),
            ("done", t.done),
            ("failed", t.failed),
        ] {
            m.tasks.get_or_create(&label("state", state)).set(n as i64);
        }
        m.workers.clear();
        for w in &status.workers {
            if w.pools.is_empty() {
                m.workers.get_or_create(&label("pool", "")).inc();
            }
            for p in &w.pools {
                m.workers.get_or_create(&label("pool", p)).inc();
            }
        }
        m.clients.set(self.clients);
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &m.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_protocol::{FromClient, WorkerHello};

    fn hello(name: &str, pool: &str, nthreads: u32) -> WorkerHello {
        WorkerHello {
            name: name.to_owned(),
            resources: vec![(format!("pool-{pool}"), 1.0)],
            nthreads,
            peer_addr: "127.0.0.1:1".parse().unwrap(),
            peer_cert: vec![],
            data_addr: None,
            functions: vec!["bytes".into(), "len".into()],
        }
    }

    /// Feeds the event to the monitor and the core, as the server does.
    fn feed(m: &mut Monitor, core: &mut Core, e: Event, now: u64) {
        m.observe(core, &e, now);
        core.handle(e);
    }

    #[test]
    fn tasks_are_counted_timed_and_drawn_on_free_lanes() {
        let (mut m, mut core) = (Monitor::new(0), Core::new());
        feed(
            &mut m,
            &mut core,
            Event::WorkerJoined {
                id: 0,
                hello: hello("wa", "A", 2),
            },
            0,
        );
        feed(
            &mut m,
            &mut core,
            Event::WorkerJoined {
                id: 1,
                hello: hello("wb", "B", 1),
            },
            0,
        );
        feed(&mut m, &mut core, Event::ClientJoined { id: 1 }, 0);
        let graph = r#"{"tasks": [
          {"key": "x", "function": "bytes", "pool": "A"},
          {"key": "y", "function": "bytes", "pool": "A"},
          {"key": "z", "function": "len", "inputs": ["x", "y"], "pool": "B"}
        ]}"#;
        feed(
            &mut m,
            &mut core,
            Event::Client(
                1,
                FromClient::Submit {
                    run: 1,
                    graph_json: graph.into(),
                    wants: vec!["z".into()],
                },
            ),
            0,
        );
        let done = |id, us| FromWorker::Finished {
            id,
            size: 100,
            duration_us: us,
            output: None,
        };
        // x and y overlap in time on wa: two lanes.
        feed(&mut m, &mut core, Event::Worker(0, done(0, 400_000)), 1_000);
        feed(&mut m, &mut core, Event::Worker(0, done(1, 300_000)), 1_100);
        let fetched = FromWorker::Fetched {
            task: 2,
            inputs: vec![(0, 0, 100), (1, 0, 100)],
            fetch_us: 2_000,
        };
        feed(&mut m, &mut core, Event::Worker(1, fetched), 1_200);
        feed(&mut m, &mut core, Event::Worker(1, done(2, 1_000)), 1_201);
        let bars = m.stream(2_000, 10_000, 100);
        assert_eq!(bars.len(), 4);
        assert_eq!((bars[0].lane, bars[1].lane), (0, 1), "{bars:?}");
        assert_eq!((bars[2].kind, &*bars[2].function), ("fetch", "fetch"));
        assert_eq!(&*bars[3].function, "len");
        let s = m.status(&core, 2_000);
        let wa = s.workers.iter().find(|w| w.name == "wa").unwrap();
        assert_eq!((wa.finished, wa.insights.compute_us), (2, 700_000));
        // 2 threads x 2 s = 4 s of thread time, 0.7 s of it computing.
        assert_eq!(wa.insights.idle_us, 3_300_000);
        assert_eq!((s.bytes_between_workers, s.bytes_between_pools), (200, 200));
        let b = s.pools.iter().find(|p| p.name == "B").unwrap();
        assert_eq!((b.bytes_in, b.workers, b.tasks.done), (200, 1, 1));
        assert_eq!(s.slowest[0].key, "x");
        assert_eq!(s.runs.len(), 1);
        assert_eq!(s.runs[0].tasks.done, 3);
        let text = m.metrics_text(&s);
        assert!(
            text.contains("drover_tasks_finished_total{function=\"bytes\"} 2"),
            "{text}"
        );
        assert!(text.contains("drover_workers{pool=\"A\"} 1"), "{text}");
        assert!(
            text.contains("drover_bytes_between_pools_total 200"),
            "{text}"
        );
    }

    #[test]
    fn joins_and_departures_are_logged() {
        let (mut m, mut core) = (Monitor::new(0), Core::new());
        feed(
            &mut m,
            &mut core,
            Event::WorkerJoined {
                id: 3,
                hello: hello("w", "A", 1),
            },
            5,
        );
        feed(&mut m, &mut core, Event::WorkerLeft { id: 3 }, 9);
        let s = m.status(&core, 10);
        assert!(s.workers.is_empty());
        assert_eq!(
            s.events,
            vec![
                (5, "worker w joined (1 thread, pools A)".to_owned()),
                (9, "worker w left".to_owned())
            ]
        );
    }
}
