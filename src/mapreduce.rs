//! Crash-friendly map-reduce over a big list of inputs (the at_once seed, done right): every
//! core of this machine by default, a cluster with the same code, and a rerun after a crash, a
//! `kill -9` or a fixed bug maps only the inputs not yet done.
//!
//! A job is a type implementing [`MapReduceJob`] (its map, optional check and reduce), registered
//! on the workers with [`Registry::register_job`](crate::Registry::register_job). The client
//! plans ordinary graph tasks (see [`drover_worker::mapreduce`]):
//!
//! * the inputs (shuffled with a seed if asked) are cut into chunks; each chunk is one
//!   **durable** map task (namespace: the job's name), whose output (the pairs, split into
//!   partitions by key hash, and the chunk's status) is kept in the progress store;
//! * an input whose map fails (an error or a panic) is recorded with its error, the rest goes
//!   on; a later run finds its chunk done before, sees the failures in its status, and maps
//!   those inputs alone, in a *retry chunk*;
//! * with a reduce, one durable task per partition gets that partition of every chunk and
//!   reduces each key's values (the shuffle: no worker needs every key's values).
//!
//! Phases: the chunks go first with their statuses (and partitions); once the statuses are in,
//! the retry chunks of done-before failures go the same way; then the reduces. A rerun of a
//! finished job finds every chunk and reduce done before and runs only the small status and
//! partition tasks over the stored outputs.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use drover_graph::{Graph, Handle, Loader, Untyped};
use drover_worker::mapreduce::{
    map_function, reduce_function, ChunkParams, ChunkStatus, ReduceOutput, PART_FUNCTION,
    STATUS_FUNCTION,
};
pub use drover_worker::mapreduce::{InputFailure, MapReduceJob};
use serde::Serialize;

use crate::client::{Client, ClientError, RunEvent};
use crate::TaskStatus;

/// Most inputs in one chunk when chosen automatically.
const AUTO_CHUNK_MAX: usize = 10_000;
/// Chunks per unit of parallelism when the chunk size is chosen automatically (so the last
/// chunks do not leave cores idle for long).
const CHUNKS_PER_CORE: usize = 8;

/// What can go wrong with a job.
#[derive(Debug, thiserror::Error)]
pub enum MapReduceError {
    /// The scheduler could not be reached or was lost, or refused a graph.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The log file cannot be written.
    #[error("cannot write the log {path}: {error}")]
    Log {
        /// The file.
        path: String,
        /// Why.
        error: String,
    },
    /// An input cannot be encoded as JSON.
    #[error("input {number} cannot be encoded: {error}")]
    Input {
        /// Its number.
        number: u64,
        /// Why.
        error: String,
    },
    /// The local cluster could not start, or the cluster could not be reached.
    #[error("{0}")]
    Cluster(String),
}

/// What a job did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobReport {
    /// The job's name (its progress namespace).
    pub name: String,
    /// Inputs in the job.
    pub inputs: u64,
    /// Inputs per chunk.
    pub chunk_size: usize,
    /// Chunks, retry chunks included.
    pub chunks: usize,
    /// Reduce partitions (0: map-only).
    pub partitions: usize,
    /// Inputs mapped by this run (map calls).
    pub mapped: u64,
    /// Inputs of chunks done before: not mapped again.
    pub done_before: u64,
    /// Inputs the check found done outside Drover.
    pub checked: u64,
    /// Pairs the maps made (this run's and the stored ones).
    pub pairs: u64,
    /// Inputs that failed (retried by the next run), by number.
    pub failed: Vec<InputFailure>,
    /// Keys whose reduce failed: (the key as JSON, why).
    pub failed_keys: Vec<(String, String)>,
    /// Wall time, seconds.
    pub seconds: f64,
}

impl JobReport {
    /// Whether every input and key went through.
    pub fn all_done(&self) -> bool {
        self.failed.is_empty() && self.failed_keys.is_empty()
    }
}

/// A job's result: the reduced value of every key (empty for a map-only job), and the report.
#[derive(Debug)]
pub struct JobOutput<J: MapReduceJob> {
    /// Each key's reduced value.
    pub values: BTreeMap<J::Key, J::Reduced>,
    /// What the job did.
    pub report: JobReport,
}

/// A once-cell every map chunk takes as an input: it adds the cell to a graph.
type CellAdder = std::sync::Arc<dyn Fn(&mut Graph) -> drover_graph::Handle<Untyped> + Send + Sync>;

/// A map-reduce job over a list of inputs (see the module docs).
pub struct MapReduce<J: MapReduceJob> {
    name: String,
    inputs: Vec<J::Input>,
    params: J::Params,
    reduce: bool,
    check: bool,
    shuffle: Option<u64>,
    chunk_size: Option<usize>,
    partitions: Option<usize>,
    version: u64,
    log: Option<PathBuf>,
    pool: Option<String>,
    parallelism: usize,
    progress_bar: bool,
    cells: Vec<CellAdder>,
}

impl<J: MapReduceJob> std::fmt::Debug for MapReduce<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapReduce")
            .field("name", &self.name)
            .field("inputs", &self.inputs.len())
            .field("reduce", &self.reduce)
            .field("version", &self.version)
            .field("cells", &self.cells.len())
            .finish()
    }
}

/// What a reduce partition's task outputs.
type Reduced<J> = ReduceOutput<<J as MapReduceJob>::Key, <J as MapReduceJob>::Reduced>;

/// One chunk of the plan: its key stem, and the job-wide numbers of its inputs.
#[derive(Debug, Clone)]
struct Chunk {
    stem: String,
    numbers: Vec<u64>,
    /// How many retries of failures this is (0: a chunk of the list).
    depth: u32,
}

impl Chunk {
    fn map_key(&self) -> String {
        format!("map/{}", self.stem)
    }
    fn status_key(&self) -> String {
        format!("status/{}", self.stem)
    }
    fn part_key(&self, p: usize) -> String {
        format!("part/{}/{p}", self.stem)
    }
}

/// The log file, if any: lines with a timestamp, appended.
struct Log {
    file: Option<(std::fs::File, String)>,
}

impl Log {
    fn open(path: Option<&Path>) -> Result<Log, MapReduceError> {
        let file = match path {
            None => None,
            Some(p) => Some((
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| MapReduceError::Log {
                        path: p.display().to_string(),
                        error: e.to_string(),
                    })?,
                p.display().to_string(),
            )),
        };
        Ok(Log { file })
    }

    fn line(&mut self, text: &str) -> Result<(), MapReduceError> {
        let Some((f, path)) = &mut self.file else {
            return Ok(());
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        writeln!(f, "{}.{:03} {text}", now.as_secs(), now.subsec_millis()).map_err(|e| {
            MapReduceError::Log {
                path: path.clone(),
                error: e.to_string(),
            }
        })
    }
}

impl<J: MapReduceJob> MapReduce<J>
where
    J::Input: Clone,
{
    /// A map-only job named `name` (its progress namespace) over `inputs`.
    pub fn new(name: &str, inputs: Vec<J::Input>) -> MapReduce<J> {
        MapReduce {
            name: name.to_owned(),
            inputs,
            params: J::Params::default(),
            reduce: false,
            check: false,
            shuffle: None,
            chunk_size: None,
            partitions: None,
            version: 0,
            log: None,
            pool: None,
            parallelism: std::thread::available_parallelism().map_or(2, |n| n.get()),
            progress_bar: true,
            cells: Vec::new(),
        }
    }

    /// The job's params, handed to every map, check and reduce (default: `Default`).
    pub fn params(mut self, params: J::Params) -> Self {
        self.params = params;
        self
    }

    /// Reduces each key's values with the job's reduce.
    pub fn reduce(mut self) -> Self {
        self.reduce = true;
        self
    }

    /// Calls the job's check on each input first (done outside Drover: its pairs are taken
    /// as they are, the map is not called).
    pub fn check(mut self) -> Self {
        self.check = true;
        self
    }

    /// Takes the inputs in an order shuffled with `seed` (the chunks follow it: keep the seed
    /// to continue a job).
    pub fn shuffle(mut self, seed: u64) -> Self {
        self.shuffle = Some(seed);
        self
    }

    /// Inputs per chunk (default: chosen from the inputs and the parallelism, at most 10,000;
    /// keep it to continue a job: other chunks are other tasks).
    pub fn chunk_size(mut self, n: usize) -> Self {
        self.chunk_size = Some(n.max(1));
        self
    }

    /// Reduce partitions (default: the parallelism).
    pub fn partitions(mut self, n: usize) -> Self {
        self.partitions = Some(n.max(1));
        self
    }

    /// The version: a new one starts the job from scratch.
    pub fn version(mut self, v: u64) -> Self {
        self.version = v;
        self
    }

    /// Appends each failure (with its input and error) and the job's start and end to this
    /// file.
    pub fn log(mut self, path: impl Into<PathBuf>) -> Self {
        self.log = Some(path.into());
        self
    }

    /// Runs the map chunks in pool `pool`.
    pub fn pool(mut self, pool: &str) -> Self {
        self.pool = Some(pool.to_owned());
        self
    }

    /// Worker threads the job can count on (for the automatic chunk size and partitions);
    /// default this machine's cores.
    pub fn parallelism(mut self, n: usize) -> Self {
        self.parallelism = n.max(1);
        self
    }

    /// Gives every map chunk the once-cell `L` made from `params` as an input: each worker
    /// process loads it at most once (a model, a parsed dataset) and every chunk there shares
    /// it. The job's map reads it with `ctx.object_as::<L::Object>(i)`, `i` counting the cells
    /// in the order they were given.
    pub fn once_cell<L: Loader>(mut self, params: &L::Params) -> Self
    where
        L::Params: Serialize + Clone + Send + Sync + 'static,
    {
        let params = params.clone();
        let json = serde_json::to_string(&params).unwrap_or_default();
        let key = format!(
            "cell/{}/{:032x}",
            L::NAME,
            xxhash_rust::xxh3::xxh3_128(json.as_bytes())
        );
        self.cells.push(std::sync::Arc::new(move |g: &mut Graph| {
            g.once::<L>(&params).key(key.clone()).add().untyped()
        }));
        self
    }

    /// Shows a progress bar on a terminal (default on).
    pub fn progress_bar(mut self, on: bool) -> Self {
        self.progress_bar = on;
        self
    }

    fn chunk_size_now(&self) -> usize {
        self.chunk_size.unwrap_or_else(|| {
            let target = self.parallelism * CHUNKS_PER_CORE;
            self.inputs.len().div_ceil(target).clamp(1, AUTO_CHUNK_MAX)
        })
    }

    /// The chunk of inputs `numbers` at retry depth `depth`, its params JSON.
    fn chunk(
        &self,
        numbers: Vec<u64>,
        depth: u32,
        partitions: usize,
    ) -> Result<(Chunk, String), MapReduceError> {
        let params = ChunkParams {
            job: &self.params,
            inputs: numbers
                .iter()
                .map(|n| self.inputs[*n as usize].clone())
                .collect::<Vec<_>>(),
            partitions: partitions as u32,
            check: self.check,
        };
        let json = serde_json::to_string(&params).map_err(|e| MapReduceError::Input {
            number: numbers.first().copied().unwrap_or(0),
            error: e.to_string(),
        })?;
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(json.as_bytes());
        h.update(&self.version.to_le_bytes());
        let stem = format!("{:032x}-{depth}", h.digest128());
        Ok((
            Chunk {
                stem,
                numbers,
                depth,
            },
            json,
        ))
    }

    /// Adds the chunk's map task (and nothing else) to `g`.
    fn add_map(&self, g: &mut Graph, chunk: &Chunk, params: &str, cells: &[Handle<Untyped>]) {
        let function = map_function(J::NAME);
        let mut t = g
            .task_json(&function, params)
            .key(chunk.map_key())
            .durable_version(self.version);
        for c in cells {
            t = t.input(*c);
        }
        if let Some(p) = &self.pool {
            t = t.pool(p);
        }
        t.add();
    }

    /// The reduces over every chunk of the plan: each key's value, failures in the report.
    async fn reduce_phase(
        &self,
        client: &Client,
        planned: &[(Chunk, String)],
        partitions: usize,
        report: &mut JobReport,
        log: &mut Log,
    ) -> Result<BTreeMap<J::Key, J::Reduced>, MapReduceError> {
        let mut g = Graph::new();
        g.set_namespace(&self.name);
        let cells: Vec<Handle<Untyped>> = self.cells.iter().map(|add| add(&mut g)).collect();
        for (chunk, params) in planned {
            self.add_map(&mut g, chunk, params, &cells);
            for p in 0..partitions {
                g.task(PART_FUNCTION, &p)
                    .key(chunk.part_key(p))
                    .input_key(&chunk.map_key())
                    .add();
            }
        }
        // The reduces' keys name what they reduce (the params and every chunk), so another
        // set of chunks is other keys, never a redefinition of keys a live run uses.
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(
            serde_json::to_string(&self.params)
                .unwrap_or_default()
                .as_bytes(),
        );
        h.update(&self.version.to_le_bytes());
        for (chunk, _) in planned {
            h.update(chunk.stem.as_bytes());
        }
        let set = format!("{:032x}", h.digest128());
        let mut wants = Vec::new();
        let function = reduce_function(J::NAME);
        for p in 0..partitions {
            let key = format!("reduce/{set}/{p}-of-{partitions}");
            let mut t = g
                .task(&function, &self.params)
                .key(key.clone())
                .durable_version(self.version);
            for (chunk, _) in planned {
                t = t.input_key(&chunk.part_key(p));
            }
            t.add();
            wants.push(key);
        }
        let mut run = client.submit_with(&g, &wants).await?;
        run.wait().await?;
        let mut decoded: Vec<Result<Reduced<J>, String>> = Vec::new();
        run.fetch_outputs(&wants, |_, r| {
            decoded.push(r.map_err(|e| e.to_string()).and_then(|b| {
                postcard::from_bytes(&b).map_err(|e| format!("a reduce's output: {e}"))
            }));
        })
        .await?;
        let mut values = BTreeMap::new();
        for (p, d) in decoded.into_iter().enumerate() {
            match d {
                Ok(out) => {
                    values.extend(out.values);
                    for (k, e) in out.failed {
                        log.line(&format!("failed key {k}: {e}"))?;
                        report.failed_keys.push((k, e));
                    }
                }
                Err(e) => {
                    log.line(&format!("failed partition {p}: {e}"))?;
                    report.failed_keys.push((format!("partition {p}"), e));
                }
            }
        }
        Ok(values)
    }

    /// Runs the job on the cluster of `access_file`, or without one on worker processes of this
    /// program started here, one per core (the program calls
    /// [`run_as_worker_if_asked`](crate::run_as_worker_if_asked) first in `main`), keeping the
    /// job's progress in the embedded store of `store` (`.drover` is the usual one).
    pub async fn run_here_or_on(
        self,
        access_file: Option<&Path>,
        store: &Path,
    ) -> Result<JobOutput<J>, MapReduceError> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let spec = crate::ClusterSpec::plain(cores, 1).with_progress_dir(store);
        let session = crate::program::Session::connect_or_start(access_file, &spec)
            .await
            .map_err(MapReduceError::Cluster)?;
        let job = if access_file.is_none() {
            self.parallelism(cores)
        } else {
            self
        };
        let out = job.run(&session.client).await;
        session.finish().await;
        out
    }

    /// Runs the job through `client`.
    pub async fn run(self, client: &Client) -> Result<JobOutput<J>, MapReduceError> {
        let start = Instant::now();
        let mut log = Log::open(self.log.as_deref())?;
        let n = self.inputs.len();
        let size = self.chunk_size_now();
        let partitions = if self.reduce {
            self.partitions.unwrap_or(self.parallelism)
        } else {
            0
        };
        let order: Vec<u64> = match self.shuffle {
            Some(seed) => {
                let mut order: Vec<u64> = (0..n as u64).collect();
                drover_progress::seeded_shuffle(&mut order, seed);
                order
            }
            None => (0..n as u64).collect(),
        };
        let mut report = JobReport {
            name: self.name.clone(),
            inputs: n as u64,
            chunk_size: size,
            partitions,
            ..JobReport::default()
        };
        log.line(&format!(
            "job {} start: {n} inputs, chunks of {size}, {partitions} partitions, version {}",
            self.name, self.version
        ))?;
        let bar = if self.progress_bar && std::io::stderr().is_terminal() {
            indicatif::ProgressBar::new(n as u64)
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} inputs {msg} ETA {eta}")
                .expect("valid template"),
        );
        let mut pending: Vec<(Chunk, String)> = order
            .chunks(size)
            .map(|c| self.chunk(c.to_vec(), 0, partitions))
            .collect::<Result<_, _>>()?;
        // Every chunk of the plan with its params, and the runs keeping their partitions.
        let mut planned: Vec<(Chunk, String)> = Vec::new();
        let mut runs = Vec::new();
        let (mut done, mut skipped) = (0u64, 0u64);
        while !pending.is_empty() {
            let mut g = Graph::new();
            g.set_namespace(&self.name);
            let mut wants = Vec::new();
            let mut size_of: BTreeMap<String, u64> = BTreeMap::new();
            let cells: Vec<Handle<Untyped>> = self.cells.iter().map(|add| add(&mut g)).collect();
            for (chunk, params) in &pending {
                self.add_map(&mut g, chunk, params, &cells);
                size_of.insert(chunk.map_key(), chunk.numbers.len() as u64);
                g.task_json(STATUS_FUNCTION, "null")
                    .key(chunk.status_key())
                    .input_key(&chunk.map_key())
                    .add();
                wants.push(chunk.status_key());
                for p in 0..partitions {
                    g.task(PART_FUNCTION, &p)
                        .key(chunk.part_key(p))
                        .input_key(&chunk.map_key())
                        .add();
                    wants.push(chunk.part_key(p));
                }
            }
            let mut run = client.submit_with(&g, &wants).await?;
            // Chunks done before and chunks that failed as a whole (their inputs are retried
            // by the next run).
            let mut before: BTreeMap<String, bool> = BTreeMap::new();
            while let Some(event) = run.next_event().await {
                let RunEvent::Task(e) = event else { continue };
                let Some(&inputs) = size_of.get(&e.key) else {
                    continue;
                };
                match e.status {
                    TaskStatus::Finished if e.done_before || e.reused => {
                        skipped += inputs;
                        before.insert(e.key.clone(), true);
                    }
                    TaskStatus::Finished => {
                        done += inputs;
                        before.insert(e.key.clone(), false);
                    }
                    _ => {}
                }
                bar.set_position(done + skipped);
                bar.set_message(format!(
                    "({done} mapped, {skipped} done before, {} failed)",
                    report.failed.len()
                ));
            }
            let status_keys: Vec<String> = pending.iter().map(|(c, _)| c.status_key()).collect();
            let mut statuses: BTreeMap<String, Result<ChunkStatus, String>> = BTreeMap::new();
            run.fetch_outputs(&status_keys, |key, r| {
                let s = r.map_err(|e| e.to_string()).and_then(|b| {
                    postcard::from_bytes::<ChunkStatus>(&b).map_err(|e| e.to_string())
                });
                statuses.insert(key.to_owned(), s);
            })
            .await?;
            let mut next = Vec::new();
            let task_errors: BTreeMap<String, String> = run
                .report()
                .tasks
                .iter()
                .filter_map(|t| t.error.clone().map(|e| (t.key.clone(), e)))
                .collect();
            for (chunk, params) in pending {
                let status = statuses
                    .remove(&chunk.status_key())
                    .unwrap_or(Err("no status".into()));
                let status = match status {
                    Ok(s) => s,
                    Err(e) => {
                        // The chunk failed as a whole: each input failed with the task's error.
                        let why = task_errors.get(&chunk.map_key()).cloned().unwrap_or(e);
                        for number in &chunk.numbers {
                            let f = InputFailure {
                                number: *number,
                                input: serde_json::to_string(&self.inputs[*number as usize])
                                    .unwrap_or_default(),
                                error: why.clone(),
                            };
                            log.line(&format!(
                                "failed input #{}: {}: {}",
                                f.number, f.input, f.error
                            ))?;
                            report.failed.push(f);
                        }
                        continue;
                    }
                };
                report.checked += u64::from(status.checked);
                report.pairs += status.pairs;
                let was_before = before.get(&chunk.map_key()).copied().unwrap_or(false);
                if was_before {
                    report.done_before += u64::from(status.inputs) - status.failed.len() as u64;
                } else {
                    report.mapped += u64::from(status.mapped);
                }
                if !status.failed.is_empty() && was_before {
                    // Failed in an earlier run: map those inputs again, alone.
                    let numbers: Vec<u64> = status
                        .failed
                        .iter()
                        .filter_map(|f| chunk.numbers.get(f.number as usize).copied())
                        .collect();
                    next.push(self.chunk(numbers, chunk.depth + 1, partitions)?);
                } else {
                    for f in status.failed {
                        let f = InputFailure {
                            number: chunk
                                .numbers
                                .get(f.number as usize)
                                .copied()
                                .unwrap_or(f.number),
                            ..f
                        };
                        log.line(&format!(
                            "failed input #{}: {}: {}",
                            f.number, f.input, f.error
                        ))?;
                        report.failed.push(f);
                    }
                }
                planned.push((chunk, params));
            }
            bar.set_message(format!(
                "({done} mapped, {skipped} done before, {} failed)",
                report.failed.len()
            ));
            runs.push(run);
            pending = next;
        }
        report.chunks = planned.len();
        let values = if partitions > 0 && !planned.is_empty() {
            self.reduce_phase(client, &planned, partitions, &mut report, &mut log)
                .await?
        } else {
            BTreeMap::new()
        };
        drop(runs);
        bar.finish_and_clear();
        report.failed.sort_by_key(|f| f.number);
        report.seconds = start.elapsed().as_secs_f64();
        log.line(&format!(
            "job {} end: {} mapped, {} done before, {} checked, {} failed inputs, {} failed keys, {:.1} s",
            self.name,
            report.mapped,
            report.done_before,
            report.checked,
            report.failed.len(),
            report.failed_keys.len(),
            report.seconds
        ))?;
        Ok(JobOutput { values, report })
    }
}
