//! The workers' side of map-reduce jobs (the at_once seed): a job is a type implementing
//! [`MapReduceJob`] (its map, an optional check and reduce), registered with
//! [`Registry::register_job`]. The client (`drover::mapreduce`) plans a graph of ordinary tasks
//! that call these functions:
//!
//! * `NAME.map` (one per chunk of inputs, durable): checks and maps each input, catching its
//!   error or panic, and outputs a [`ChunkStatus`] followed by the pairs split into partitions
//!   by the hash of their key;
//! * [`STATUS_FUNCTION`]: a chunk's status alone (small, for the client);
//! * [`PART_FUNCTION`]: one partition of a chunk's pairs;
//! * `NAME.reduce` (one per partition, durable): every value of each key of the partition, in
//!   input order, reduced to one value per key.
//!
//! Byte layouts (postcard): a chunk's output is `ChunkStatus` then `Vec<Vec<u8>>` (per
//! partition, the encoded `Vec<(Key, Value)>`); a reduce's output is a [`ReduceOutput`].

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::context::{panic_message, TaskContext};
use crate::registry::{encode_output, parse_params, Registry};

/// The function giving a chunk's status.
pub const STATUS_FUNCTION: &str = "drover.mapreduce.status";
/// The function giving one partition of a chunk's pairs.
pub const PART_FUNCTION: &str = "drover.mapreduce.part";

/// The map function's name of job `name`.
pub fn map_function(name: &str) -> String {
    format!("{name}.map")
}

/// The reduce function's name of job `name`.
pub fn reduce_function(name: &str) -> String {
    format!("{name}.reduce")
}

/// The pairs a map makes of one input.
pub type Pairs<J> = Vec<(<J as MapReduceJob>::Key, <J as MapReduceJob>::Value)>;

/// A map-reduce job's functions and types. The same type names the job on the client and runs
/// it on workers.
pub trait MapReduceJob: Send + Sync + 'static {
    /// The prefix of its functions' names (`NAME.map`, `NAME.reduce`).
    const NAME: &'static str;
    /// One input.
    type Input: Serialize + DeserializeOwned + Send;
    /// The key of a pair the map makes.
    type Key: Serialize + DeserializeOwned + Ord + Clone + Send;
    /// The value of a pair the map makes.
    type Value: Serialize + DeserializeOwned + Send;
    /// One key's values reduced.
    type Reduced: Serialize + DeserializeOwned + Send;
    /// Parameters of the whole job, handed to every call (`()` for none): a command, a model's
    /// path, a threshold. Part of every chunk's definition: other params, other tasks.
    type Params: Serialize + DeserializeOwned + Default + Send + Sync;

    /// Maps one input to zero or more pairs (none for a map-only job). An error (or a panic)
    /// fails this input only: it is recorded, and retried by the next run.
    fn map(
        &self,
        ctx: &TaskContext,
        params: &Self::Params,
        input: Self::Input,
    ) -> Result<Pairs<Self>, String>;

    /// Whether the input was already done outside Drover, and then its pairs (at_once's
    /// `check_inp`). Called first when the job asks for checks; by default nothing is done.
    fn check(
        &self,
        _ctx: &TaskContext,
        _params: &Self::Params,
        _input: &Self::Input,
    ) -> Result<Option<Pairs<Self>>, String> {
        Ok(None)
    }

    /// Reduces every value of `key` (in input order) to one. By default there is none: a job
    /// asking for a reduce gets that error.
    fn reduce(
        &self,
        _ctx: &TaskContext,
        _params: &Self::Params,
        _key: &Self::Key,
        _values: Vec<Self::Value>,
    ) -> Result<Self::Reduced, String> {
        Err(format!("the job {} has no reduce", Self::NAME))
    }
}

/// A map chunk's params.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkParams<I, P> {
    /// The job's params.
    pub job: P,
    /// Its inputs.
    pub inputs: Vec<I>,
    /// Reduce partitions (0 for a map-only job).
    pub partitions: u32,
    /// Call the job's check first.
    pub check: bool,
}

/// An input that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFailure {
    /// Its number: in a chunk's status, its place in the chunk; in a job's report, its place
    /// in the job's list of inputs.
    pub number: u64,
    /// The input, as JSON.
    pub input: String,
    /// Why.
    pub error: String,
}

/// What a chunk did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkStatus {
    /// Inputs in the chunk.
    pub inputs: u32,
    /// Map calls made.
    pub mapped: u32,
    /// Inputs the check found done.
    pub checked: u32,
    /// Pairs made.
    pub pairs: u64,
    /// Inputs that failed.
    pub failed: Vec<InputFailure>,
}

/// What a reduce partition made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReduceOutput<K, R> {
    /// Each key's reduced value, in key order.
    pub values: Vec<(K, R)>,
    /// Keys whose reduce failed: (the key as JSON, why).
    pub failed: Vec<(String, String)>,
}

/// The partition of `key` among `partitions` (a stable hash of its encoding, the same on
/// every machine).
pub fn partition_of<K: Serialize>(key: &K, partitions: u32) -> u32 {
    let bytes = postcard::to_stdvec(key).unwrap_or_default();
    (xxhash_rust::xxh3::xxh3_64(&bytes) % u64::from(partitions.max(1))) as u32
}

/// Runs `f`, its panic an error.
fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|p| Err(format!("panicked: {}", panic_message(p))))
}

/// A chunk's status and its partitions' bytes, from a chunk's output.
pub fn split_chunk(output: &[u8]) -> Result<(ChunkStatus, Vec<&[u8]>), String> {
    let (status, rest): (ChunkStatus, &[u8]) =
        postcard::take_from_bytes(output).map_err(|e| format!("not a map chunk's output: {e}"))?;
    let parts: Vec<&[u8]> =
        postcard::from_bytes(rest).map_err(|e| format!("not a map chunk's output: {e}"))?;
    Ok((status, parts))
}

fn map_chunk<J: MapReduceJob>(
    job: &J,
    ctx: &TaskContext,
    params: ChunkParams<J::Input, J::Params>,
) -> Result<Vec<u8>, String> {
    let partitions = params.partitions;
    let mut parts: Vec<Vec<(J::Key, J::Value)>> = (0..partitions).map(|_| Vec::new()).collect();
    let mut status = ChunkStatus {
        inputs: params.inputs.len() as u32,
        ..ChunkStatus::default()
    };
    for (number, input) in params.inputs.into_iter().enumerate() {
        let number = number as u64;
        let checked = if params.check {
            guarded(|| job.check(ctx, &params.job, &input))
        } else {
            Ok(None)
        };
        let pairs = match checked {
            Ok(Some(pairs)) => {
                status.checked += 1;
                Ok(pairs)
            }
            Ok(None) => {
                status.mapped += 1;
                // The input goes to the map; its JSON is kept first in case it fails.
                let shown = serde_json::to_string(&input).unwrap_or_default();
                guarded(|| job.map(ctx, &params.job, input)).map_err(|e| (shown, e))
            }
            Err(e) => Err((
                serde_json::to_string(&input).unwrap_or_default(),
                format!("check: {e}"),
            )),
        };
        match pairs {
            Ok(pairs) => {
                status.pairs += pairs.len() as u64;
                for (k, v) in pairs {
                    if partitions > 0 {
                        let p = partition_of(&k, partitions) as usize;
                        parts[p].push((k, v));
                    }
                }
            }
            Err((input, error)) => status.failed.push(InputFailure {
                number,
                input,
                error,
            }),
        }
    }
    let mut out = encode_output(&status)?;
    let encoded: Vec<Vec<u8>> = parts.iter().map(encode_output).collect::<Result<_, _>>()?;
    out.extend(encode_output(&encoded)?);
    Ok(out)
}

fn reduce_partition<J: MapReduceJob>(
    job: &J,
    ctx: &TaskContext,
    params: &J::Params,
    inputs: &[bytes::Bytes],
) -> Result<Vec<u8>, String> {
    let mut grouped: BTreeMap<J::Key, Vec<J::Value>> = BTreeMap::new();
    for part in inputs {
        let pairs: Vec<(J::Key, J::Value)> =
            postcard::from_bytes(part).map_err(|e| format!("a partition does not decode: {e}"))?;
        for (k, v) in pairs {
            grouped.entry(k).or_default().push(v);
        }
    }
    let mut out = ReduceOutput {
        values: Vec::with_capacity(grouped.len()),
        failed: Vec::new(),
    };
    for (k, values) in grouped {
        match guarded(|| job.reduce(ctx, params, &k, values)) {
            Ok(r) => out.values.push((k, r)),
            Err(e) => out
                .failed
                .push((serde_json::to_string(&k).unwrap_or_default(), e)),
        }
    }
    encode_output(&out)
}

/// Registers the functions every job's tasks use (a chunk's status, a partition of it).
pub(crate) fn register_common(r: &mut Registry) {
    r.register_raw(STATUS_FUNCTION, |_, _, inputs| {
        let chunk = inputs.first().ok_or("a status needs its chunk as input")?;
        let (status, _) = split_chunk(chunk)?;
        encode_output(&status)
    });
    r.register_raw(PART_FUNCTION, |_, params, inputs| {
        let p: u32 = parse_params(params)?;
        let chunk = inputs
            .first()
            .ok_or("a partition needs its chunk as input")?;
        let (_, parts) = split_chunk(chunk)?;
        parts
            .get(p as usize)
            .map(|b| b.to_vec())
            .ok_or_else(|| format!("the chunk has no partition {p}"))
    });
}

impl Registry {
    /// Registers map-reduce job `job` (see the module docs): its map (with its check) and its
    /// reduce.
    pub fn register_job<J: MapReduceJob>(&mut self, job: J) -> &mut Registry {
        let job = std::sync::Arc::new(job);
        let mapper = job.clone();
        self.register_raw(&map_function(J::NAME), move |ctx, params, _| {
            let params = parse_params::<ChunkParams<J::Input, J::Params>>(params)?;
            map_chunk(&*mapper, ctx, params)
        });
        self.register_raw(&reduce_function(J::NAME), move |ctx, params, inputs| {
            let params = parse_params::<J::Params>(params)?;
            reduce_partition(&*job, ctx, &params, inputs)
        });
        register_common(self);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Words;
    impl MapReduceJob for Words {
        const NAME: &'static str = "words";
        type Input = String;
        type Key = String;
        type Value = u64;
        type Reduced = u64;
        type Params = ();
        fn map(&self, _: &TaskContext, _: &(), line: String) -> Result<Vec<(String, u64)>, String> {
            if line.contains("bad") {
                return Err("a bad line".into());
            }
            if line.contains("boom") {
                panic!("boom");
            }
            Ok(line.split_whitespace().map(|w| (w.to_owned(), 1)).collect())
        }
        fn check(
            &self,
            _: &TaskContext,
            _: &(),
            line: &String,
        ) -> Result<Option<Vec<(String, u64)>>, String> {
            Ok(line
                .starts_with("done:")
                .then(|| vec![("done".to_owned(), 1)]))
        }
        fn reduce(
            &self,
            _: &TaskContext,
            _: &(),
            _: &String,
            values: Vec<u64>,
        ) -> Result<u64, String> {
            Ok(values.into_iter().sum())
        }
    }

    #[test]
    fn a_chunk_maps_checks_and_records_failures_then_partitions_reduce() {
        let ctx = TaskContext::standalone("t");
        let inputs: Vec<String> = ["a b a", "bad one", "done: x", "b c", "boom"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let params = ChunkParams {
            job: (),
            inputs,
            partitions: 3,
            check: true,
        };
        let out = map_chunk(&Words, &ctx, params).unwrap();
        let (status, parts) = split_chunk(&out).unwrap();
        assert_eq!(
            (status.inputs, status.mapped, status.checked, status.pairs),
            (5, 4, 1, 6)
        );
        let failed: Vec<(u64, &str)> = status
            .failed
            .iter()
            .map(|f| (f.number, f.input.as_str()))
            .collect();
        assert_eq!(failed, vec![(1, "\"bad one\""), (4, "\"boom\"")]);
        assert!(status.failed[1].error.contains("panicked: boom"));
        assert_eq!(parts.len(), 3);
        // Each key lands in its partition; reducing every partition gives the counts.
        let mut total = BTreeMap::new();
        for (p, bytes) in parts.iter().enumerate() {
            let out = reduce_partition(&Words, &ctx, &(), &[bytes::Bytes::copy_from_slice(bytes)])
                .unwrap();
            let r: ReduceOutput<String, u64> = postcard::from_bytes(&out).unwrap();
            for (k, v) in r.values {
                assert_eq!(partition_of(&k, 3), p as u32);
                total.insert(k, v);
            }
        }
        let want: BTreeMap<String, u64> = [("a", 2), ("b", 2), ("c", 1), ("done", 1)]
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        assert_eq!(total, want);
    }
}
