//! Claiming keys first come first served: [`Claims`] asks for keys in batches (one round trip
//! per batch, carrying the commits and failures queued since), skips keys done before and keys
//! others hold, renews every live claim in one message every third of the lease, and with
//! [`ClaimOptions::wait`] waits for keys others hold and takes over those whose lease lapses.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_progress::{Op, Outcome, Request};

use super::{Progress, ProgressError};

/// How keys are claimed.
#[derive(Debug, Clone)]
pub struct ClaimOptions {
    /// The version asked for: records of older versions count as not done. Default 0.
    pub version: u64,
    /// How long a claim lasts unless renewed (renewals go every third of it while this
    /// process lives). Default 60 s.
    pub lease: Duration,
    /// Keys asked for per round trip. Default 64.
    pub batch: usize,
    /// Shuffle the keys with this seed first (processes with different seeds spread over the
    /// keys instead of racing for the same ones).
    pub shuffle: Option<u64>,
    /// Once no key is left to claim, wait for keys others hold (until they are done, or their
    /// lease lapses and they are taken over) instead of ending.
    pub wait: bool,
}

impl Default for ClaimOptions {
    fn default() -> Self {
        ClaimOptions {
            version: 0,
            lease: Duration::from_secs(60),
            batch: 64,
            shuffle: None,
            wait: false,
        }
    }
}

/// What a [`Claims`] loop did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Keys this loop committed.
    pub committed: Vec<String>,
    /// Keys this loop failed, with the error.
    pub failed: Vec<(String, String)>,
    /// Keys whose commit or failure was refused: the claim had been lost (its lease lapsed and
    /// another holder took the key), with why.
    pub lost: Vec<(String, String)>,
    /// Keys skipped as done before (by anyone).
    pub skipped_done: u64,
    /// Keys skipped as held by another process when the loop ended.
    pub held_elsewhere: Vec<String>,
    /// Keys refused as invalid (too long), with why.
    pub refused: Vec<(String, String)>,
    /// Keys whose record is of a newer version than asked.
    pub newer_version: Vec<String>,
}

/// What the loop and its claims share.
#[derive(Debug, Default)]
struct Shared {
    /// Live claims: key → fence (renewed until settled).
    live: BTreeMap<String, u64>,
    /// Commits and failures queued to go with the next round trip.
    outbox: Vec<(Request, Settle)>,
    summary: Summary,
}

/// What a queued change does to the summary when answered.
#[derive(Debug, Clone)]
enum Settle {
    Committed,
    Failed(String),
}

/// A loop over keys that yields claims (see the module docs). Drive it with
/// [`Claims::next`]; end it with [`Claims::finish`] to have every queued commit on disk.
pub struct Claims {
    progress: Progress,
    namespace: Arc<str>,
    options: ClaimOptions,
    pending: VecDeque<String>,
    ready: VecDeque<(String, u64)>,
    /// Keys others hold, with when their claim lapses (milliseconds from when we heard).
    held: Vec<(String, u64)>,
    shared: Arc<Mutex<Shared>>,
    renewer: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claims")
            .field("namespace", &self.namespace)
            .field("pending", &self.pending.len())
            .field("ready", &self.ready.len())
            .finish()
    }
}

impl Drop for Claims {
    fn drop(&mut self) {
        self.renewer.abort();
        // Queued commits still go out, best effort (finish() waits for them).
        let outbox = std::mem::take(&mut self.shared.lock().expect("claims lock").outbox);
        if !outbox.is_empty() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let progress = self.progress.clone();
                rt.spawn(async move {
                    let _ = progress
                        .apply(outbox.into_iter().map(|(r, _)| r).collect())
                        .await;
                });
            }
        }
    }
}

/// A small deterministic shuffle (SplitMix64 driven Fisher-Yates).
fn shuffle(keys: &mut [String], seed: u64) {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for i in (1..keys.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        keys.swap(i, j);
    }
}

impl Claims {
    pub(super) fn new(
        progress: Progress,
        namespace: &str,
        mut keys: Vec<String>,
        options: ClaimOptions,
    ) -> Claims {
        if let Some(seed) = options.shuffle {
            shuffle(&mut keys, seed);
        }
        let shared: Arc<Mutex<Shared>> = Arc::default();
        let renewer = tokio::spawn(renew(
            progress.clone(),
            Arc::from(namespace),
            shared.clone(),
            (options.lease / 3).max(Duration::from_millis(50)),
        ));
        Claims {
            progress,
            namespace: Arc::from(namespace),
            options: ClaimOptions {
                batch: options.batch.max(1),
                ..options
            },
            pending: keys.into(),
            ready: VecDeque::new(),
            held: Vec::new(),
            shared,
            renewer,
        }
    }

    /// Whether [`Claims::next`] can answer without waiting for others: claims are ready, or
    /// keys are left to ask for.
    pub fn has_more_now(&self) -> bool {
        !self.ready.is_empty() || !self.pending.is_empty()
    }

    /// The next claim, or `None` once no key is left to claim (with [`ClaimOptions::wait`],
    /// once every key is done or claimed here). A store or connection error ends the loop.
    ///
    /// With `wait`, this can wait a long time for keys others hold: a caller that still has
    /// claims of its own at work should ask [`Claims::next_without_waiting`] instead (others
    /// may be waiting for those).
    pub async fn next(&mut self) -> Option<Result<Claim, ProgressError>> {
        self.next_claim(self.options.wait).await
    }

    /// The next claim if one can be had without waiting for keys others hold, else `None`
    /// (the held keys are asked for again by a later [`Claims::next`]).
    pub async fn next_without_waiting(&mut self) -> Option<Result<Claim, ProgressError>> {
        self.next_claim(false).await
    }

    async fn next_claim(&mut self, wait: bool) -> Option<Result<Claim, ProgressError>> {
        loop {
            if let Some((key, fence)) = self.ready.pop_front() {
                return Some(Ok(Claim {
                    key,
                    fence,
                    namespace: self.namespace.clone(),
                    progress: self.progress.clone(),
                    shared: self.shared.clone(),
                    settled: false,
                }));
            }
            if self.pending.is_empty() {
                if !wait || self.held.is_empty() {
                    return None;
                }
                // Wait for the first lease to lapse (or a while, to see keys finish), then ask
                // for the held keys again.
                let soonest = self.held.iter().map(|(_, ms)| *ms).min().unwrap_or(0);
                let wait = Duration::from_millis(soonest + 50)
                    .min(self.options.lease / 3)
                    .max(Duration::from_millis(50));
                if let Err(e) = self.flush().await {
                    return Some(Err(e));
                }
                tokio::time::sleep(wait).await;
                self.pending.extend(self.held.drain(..).map(|(k, _)| k));
            }
            if let Err(e) = self.round_trip().await {
                return Some(Err(e));
            }
        }
    }

    /// One round trip: the queued commits and failures, then claims of the next batch.
    async fn round_trip(&mut self) -> Result<(), ProgressError> {
        let n = self.options.batch.min(self.pending.len());
        let keys: Vec<String> = self.pending.drain(..n).collect();
        let (mut requests, settles) = self.take_outbox();
        let queued = requests.len();
        let holder = self.progress.holder().to_owned();
        let lease = self.options.lease.as_millis() as u64;
        requests.extend(keys.iter().map(|k| Request {
            namespace: self.namespace.to_string(),
            key: k.clone(),
            op: Op::Claim {
                version: self.options.version,
                holder: holder.clone(),
                lease,
            },
        }));
        tracing::debug!(queued, claims = keys.len(), "claims round trip");
        let outcomes = match self.progress.apply(requests).await {
            Ok(o) => o,
            Err(e) => {
                // Nothing was kept: the keys are to be asked again, the changes to be sent again.
                self.pending.extend(keys);
                return Err(e);
            }
        };
        let mut s = self.shared.lock().expect("claims lock");
        settle(&mut s, &settles, &outcomes[..queued]);
        for (key, outcome) in keys.into_iter().zip(&outcomes[queued..]) {
            match outcome {
                Ok(Outcome::Claimed { fence }) => {
                    s.live.insert(key.clone(), *fence);
                    self.ready.push_back((key, *fence));
                }
                Ok(Outcome::Done { .. }) => s.summary.skipped_done += 1,
                Ok(Outcome::Held { expires_in, .. }) => self.held.push((key, *expires_in)),
                Ok(Outcome::NewerVersion { .. }) => s.summary.newer_version.push(key),
                Ok(other) => s.summary.refused.push((key, format!("{other:?}"))),
                Err(e) => s.summary.refused.push((key, e.clone())),
            }
        }
        Ok(())
    }

    fn take_outbox(&self) -> (Vec<Request>, Vec<(String, Settle)>) {
        let mut s = self.shared.lock().expect("claims lock");
        std::mem::take(&mut s.outbox)
            .into_iter()
            .map(|(r, settle)| {
                let key = r.key.clone();
                (r, (key, settle))
            })
            .unzip()
    }

    /// Sends the queued commits and failures now and waits until they are on disk.
    pub async fn flush(&mut self) -> Result<(), ProgressError> {
        let (requests, settles) = self.take_outbox();
        if requests.is_empty() {
            return Ok(());
        }
        tracing::debug!(queued = requests.len(), "claims flush");
        let outcomes = self.progress.apply(requests).await?;
        tracing::debug!(answered = outcomes.len(), "claims flushed");
        let mut s = self.shared.lock().expect("claims lock");
        settle(&mut s, &settles, &outcomes);
        Ok(())
    }

    /// Ends the loop: every queued commit and failure is sent and on disk, and the summary
    /// says what this loop did (keys still held by others are listed).
    pub async fn finish(mut self) -> Result<Summary, ProgressError> {
        self.flush().await?;
        self.renewer.abort();
        let mut s = self.shared.lock().expect("claims lock");
        s.summary.held_elsewhere = self.held.iter().map(|(k, _)| k.clone()).collect();
        Ok(std::mem::take(&mut s.summary))
    }
}

/// Records what the store said of queued changes.
fn settle(s: &mut Shared, settles: &[(String, Settle)], outcomes: &[Result<Outcome, String>]) {
    for ((key, what), outcome) in settles.iter().zip(outcomes) {
        s.live.remove(key);
        match (outcome, what) {
            (Ok(Outcome::Applied), Settle::Committed) => s.summary.committed.push(key.clone()),
            (Ok(Outcome::Applied), Settle::Failed(e)) => {
                s.summary.failed.push((key.clone(), e.clone()))
            }
            (Ok(Outcome::Stale { reason }), _) => {
                s.summary.lost.push((key.clone(), reason.clone()))
            }
            (Ok(other), _) => s.summary.refused.push((key.clone(), format!("{other:?}"))),
            (Err(e), _) => s.summary.refused.push((key.clone(), e.clone())),
        }
    }
}

/// Renews every live claim of the loop in one message, every `every`.
async fn renew(
    progress: Progress,
    namespace: Arc<str>,
    shared: Arc<Mutex<Shared>>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let live: Vec<(String, u64)> = {
            let s = shared.lock().expect("claims lock");
            s.live.iter().map(|(k, f)| (k.clone(), *f)).collect()
        };
        if live.is_empty() {
            continue;
        }
        let requests = live
            .iter()
            .map(|(k, f)| Request {
                namespace: namespace.to_string(),
                key: k.clone(),
                op: Op::Renew { fence: *f },
            })
            .collect();
        let Ok(outcomes) = progress.apply(requests).await else {
            continue; // the scheduler is away: try again at the next tick
        };
        let mut s = shared.lock().expect("claims lock");
        for ((k, f), o) in live.into_iter().zip(outcomes) {
            if matches!(o, Ok(Outcome::Stale { .. })) && s.live.get(&k) == Some(&f) {
                // Lost: someone else holds it now; its commit would be refused.
                s.live.remove(&k);
            }
        }
    }
}

/// A claim of one key: exclusive until committed, failed, or its lease lapses. Dropped without
/// either, it is failed with "abandoned" (sent with the loop's next round trip).
#[derive(Debug)]
pub struct Claim {
    key: String,
    fence: u64,
    namespace: Arc<str>,
    progress: Progress,
    shared: Arc<Mutex<Shared>>,
    settled: bool,
}

impl Claim {
    /// The key claimed.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The claim's fence number (it grows with every claim in the store).
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// Commits the key with `output` (at most the store's limit, 1 MiB by default) and waits
    /// until it is on disk. `Err(Stale)` when the claim had been lost: the key is someone
    /// else's, and this work did not count.
    pub async fn done(mut self, output: Option<Vec<u8>>) -> Result<(), ProgressError> {
        self.settled = true;
        let op = Op::Commit {
            fence: self.fence,
            by: self.progress.holder().to_owned(),
            output,
        };
        self.send_now(op, Settle::Committed).await
    }

    /// Fails the key with `error` now (it is claimable again at once) and waits until that is
    /// on disk.
    pub async fn fail(mut self, error: &str) -> Result<(), ProgressError> {
        self.settled = true;
        let op = Op::Fail {
            fence: self.fence,
            by: self.progress.holder().to_owned(),
            error: error.to_owned(),
        };
        self.send_now(op, Settle::Failed(error.to_owned())).await
    }

    /// Queues the commit to go with the loop's next round trip (or [`Claims::flush`] /
    /// [`Claims::finish`]): no round trip of its own.
    pub fn done_later(mut self, output: Option<Vec<u8>>) {
        self.settled = true;
        let op = Op::Commit {
            fence: self.fence,
            by: self.progress.holder().to_owned(),
            output,
        };
        self.queue(op, Settle::Committed);
    }

    /// Queues the failure like [`Claim::done_later`].
    pub fn fail_later(mut self, error: &str) {
        self.settled = true;
        let op = Op::Fail {
            fence: self.fence,
            by: self.progress.holder().to_owned(),
            error: error.to_owned(),
        };
        self.queue(op, Settle::Failed(error.to_owned()));
    }

    fn request(&self, op: Op) -> Request {
        Request {
            namespace: self.namespace.to_string(),
            key: self.key.clone(),
            op,
        }
    }

    fn queue(&self, op: Op, settle: Settle) {
        let r = self.request(op);
        if Arc::strong_count(&self.shared) > 1 {
            self.shared
                .lock()
                .expect("claims lock")
                .outbox
                .push((r, settle));
            return;
        }
        // The loop is gone: nobody would send it; send it on its own, best effort.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let progress = self.progress.clone();
            rt.spawn(async move {
                let _ = progress.apply(vec![r]).await;
            });
        }
    }

    async fn send_now(&self, op: Op, what: Settle) -> Result<(), ProgressError> {
        let outcomes = self.progress.apply(vec![self.request(op)]).await?;
        let outcome = outcomes
            .into_iter()
            .next()
            .unwrap_or(Err("no answer".into()));
        let mut s = self.shared.lock().expect("claims lock");
        settle(
            &mut s,
            &[(self.key.clone(), what)],
            std::slice::from_ref(&outcome),
        );
        match outcome {
            Ok(Outcome::Applied) => Ok(()),
            Ok(Outcome::Stale { reason }) => Err(ProgressError::Stale {
                key: self.key.clone(),
                reason,
            }),
            Ok(other) => Err(ProgressError::Unexpected(format!("{other:?}"))),
            Err(e) => Err(ProgressError::Refused(e)),
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.settled {
            let op = Op::Fail {
                fence: self.fence,
                by: self.progress.holder().to_owned(),
                error: "abandoned".to_owned(),
            };
            self.queue(op, Settle::Failed("abandoned".to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shuffle;

    #[test]
    fn shuffles_are_seeded_and_keep_every_key() {
        let keys: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        let (mut a, mut b, mut c) = (keys.clone(), keys.clone(), keys.clone());
        shuffle(&mut a, 1);
        shuffle(&mut b, 1);
        shuffle(&mut c, 2);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, keys);
        a.sort_by_key(|k| k.parse::<u32>().unwrap());
        assert_eq!(a, keys);
    }
}
