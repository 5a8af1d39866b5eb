//! Claiming keys first come first served: [`Claims`] asks for keys in batches (one round trip
//! per batch, carrying the commits and failures queued since), skips keys done before and keys
//! others hold, renews every live claim in one message every third of the lease, and with
//! [`ClaimOptions::wait`] waits for keys others hold and takes over those whose lease lapses.
//!
//! On a scheduler, the keys go to it once as a *key list* (see [`drover_progress::lists`]):
//! every loop over the same keys claims from the list's one cursor, so N loops over K keys cost
//! about K look-ups, not N x K. On the embedded store, each loop asks key by key.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_progress::lists::{self, Answer, Ask, ListId, ListReply, ListRequest, Status};
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
    /// Keys of the loop not done (by anyone) when it ended: 0 when every key is done.
    pub not_done: u64,
}

/// What the loop and its claims share.
#[derive(Debug, Default)]
struct Shared {
    /// Live claims: key → (fence, place in the key list) (renewed until settled).
    live: BTreeMap<String, LiveClaim>,
    /// Commits and failures queued to go with the next round trip, with the key's place in
    /// the key list.
    outbox: Vec<(Request, Settle, Option<u32>)>,
    /// The key list attached to, if any.
    list: Option<ListId>,
    summary: Summary,
}

/// A live claim: its fence, and its key's place in the key list (if from one).
type LiveClaim = (u64, Option<u32>);

/// Where the loop's claims come from.
#[derive(Debug)]
enum Source {
    /// Key by key (the embedded store): the keys not asked for yet, and the keys others hold
    /// with when their claim lapses (milliseconds from when we heard).
    Keys {
        pending: VecDeque<String>,
        held: Vec<(String, u64)>,
    },
    /// A key list on the scheduler: the keys (their places are the list's), its digest, the
    /// shuffle seed, and the list's status at the last claiming round trip.
    List {
        keys: Arc<Vec<String>>,
        digest: u128,
        shuffle: Option<u64>,
        status: Option<Status>,
    },
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
    source: Source,
    ready: VecDeque<(String, u64, Option<u32>)>,
    shared: Arc<Mutex<Shared>>,
    renewer: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claims")
            .field("namespace", &self.namespace)
            .field("source", &self.source)
            .field("ready", &self.ready.len())
            .finish()
    }
}

impl Drop for Claims {
    fn drop(&mut self) {
        self.renewer.abort();
        // Queued commits still go out, best effort (finish() waits for them), and the loop
        // leaves its list.
        let (outbox, list) = {
            let mut s = self.shared.lock().expect("claims lock");
            (std::mem::take(&mut s.outbox), s.list.take())
        };
        if outbox.is_empty() && list.is_none() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let progress = self.progress.clone();
            let lease = self.options.lease.as_millis() as u64;
            rt.spawn(async move {
                let (by_place, by_key): (Vec<_>, Vec<_>) = outbox
                    .into_iter()
                    .partition(|(_, _, p)| p.is_some() && list.is_some());
                if !by_key.is_empty() {
                    let _ = progress
                        .apply(by_key.into_iter().map(|(r, _, _)| r).collect())
                        .await;
                }
                if let Some(list) = list {
                    let ask = Ask {
                        list,
                        holder: progress.holder().to_owned(),
                        lease,
                        settles: by_place
                            .into_iter()
                            .map(|(r, _, p)| (p.expect("partitioned"), r.op))
                            .collect(),
                        want: 0,
                        leave: true,
                    };
                    let _ = progress.lists(ListRequest::Ask(ask)).await;
                }
            });
        }
    }
}

impl Claims {
    pub(super) fn new(
        progress: Progress,
        namespace: &str,
        keys: Vec<String>,
        options: ClaimOptions,
    ) -> Claims {
        // Each key once, in its first place.
        let mut seen = std::collections::HashSet::with_capacity(keys.len());
        let mut keys: Vec<String> = keys
            .into_iter()
            .filter(|k| seen.insert(k.clone()))
            .collect();
        drop(seen);
        let source = if progress.is_remote() {
            Source::List {
                digest: lists::digest(namespace, options.version, &keys),
                keys: Arc::new(keys),
                shuffle: options.shuffle,
                status: None,
            }
        } else {
            if let Some(seed) = options.shuffle {
                drover_progress::seeded_shuffle(&mut keys, seed);
            }
            Source::Keys {
                pending: keys.into(),
                held: Vec::new(),
            }
        };
        let shared: Arc<Mutex<Shared>> = Arc::default();
        let renewer = tokio::spawn(renew(
            progress.clone(),
            Arc::from(namespace),
            shared.clone(),
            (options.lease / 3).max(Duration::from_millis(50)),
            options.lease.as_millis() as u64,
        ));
        Claims {
            progress,
            namespace: Arc::from(namespace),
            options: ClaimOptions {
                batch: options.batch.max(1),
                ..options
            },
            source,
            ready: VecDeque::new(),
            shared,
            renewer,
        }
    }

    /// Whether [`Claims::next`] can answer without waiting for others: claims are ready, or
    /// keys are left to ask for.
    pub fn has_more_now(&self) -> bool {
        !self.ready.is_empty()
            || match &self.source {
                Source::Keys { pending, .. } => !pending.is_empty(),
                Source::List { status, .. } => !status.is_some_and(|s| s.exhausted),
            }
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
            if let Some((key, fence, place)) = self.ready.pop_front() {
                return Some(Ok(Claim {
                    key,
                    fence,
                    place,
                    namespace: self.namespace.clone(),
                    progress: self.progress.clone(),
                    shared: self.shared.clone(),
                    settled: false,
                    lease: self.options.lease.as_millis() as u64,
                }));
            }
            // Nothing left to claim now: end, or wait for the keys others hold.
            let pause = match &mut self.source {
                Source::Keys { pending, held } if pending.is_empty() => {
                    if !wait || held.is_empty() {
                        return None;
                    }
                    // Until the first lease lapses (or a while, to see keys finish), then ask
                    // for the held keys again.
                    let soonest = held.iter().map(|(_, ms)| *ms).min().unwrap_or(0);
                    pending.extend(held.drain(..).map(|(k, _)| k));
                    Some(Duration::from_millis(soonest + 50).min(self.options.lease / 3))
                }
                Source::List {
                    status: Some(s), ..
                } if s.exhausted => {
                    if !wait || s.held_elsewhere == 0 {
                        return None;
                    }
                    // Members' keys settle soon; others' lapse at the soonest.
                    let soonest = s.soonest_lapse.map_or(1000, |ms| ms + 50);
                    Some(
                        Duration::from_millis(soonest)
                            .min(Duration::from_secs(1))
                            .min(self.options.lease / 3),
                    )
                }
                _ => None,
            };
            if let Some(pause) = pause {
                if let Err(e) = self.flush().await {
                    return Some(Err(e));
                }
                tokio::time::sleep(pause.max(Duration::from_millis(50))).await;
            }
            if let Err(e) = self.round_trip().await {
                return Some(Err(e));
            }
        }
    }

    /// One round trip: the queued commits and failures, then claims of the next batch.
    async fn round_trip(&mut self) -> Result<(), ProgressError> {
        if matches!(self.source, Source::List { .. }) {
            return self
                .list_round_trip(self.options.batch as u32, false)
                .await
                .map(|_| ());
        }
        let Source::Keys { pending, .. } = &mut self.source else {
            unreachable!("matched above")
        };
        let n = self.options.batch.min(pending.len());
        let keys: Vec<String> = pending.drain(..n).collect();
        let items = self.take_outbox();
        let queued = items.len();
        let mut requests: Vec<Request> = items.iter().map(|(r, _, _)| r.clone()).collect();
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
                // Nothing was kept: the keys are to be asked again (the changes were put back).
                if let Source::Keys { pending, .. } = &mut self.source {
                    pending.extend(keys);
                }
                self.put_back(items);
                return Err(e);
            }
        };
        let Source::Keys { held, .. } = &mut self.source else {
            unreachable!("matched above")
        };
        let mut s = self.shared.lock().expect("claims lock");
        settle(&mut s, &items, &outcomes[..queued]);
        for (key, outcome) in keys.into_iter().zip(&outcomes[queued..]) {
            match outcome {
                Ok(Outcome::Claimed { fence }) => {
                    s.live.insert(key.clone(), (*fence, None));
                    self.ready.push_back((key, *fence, None));
                }
                Ok(Outcome::Done { .. }) => s.summary.skipped_done += 1,
                Ok(Outcome::Held { expires_in, .. }) => held.push((key, *expires_in)),
                Ok(Outcome::NewerVersion { .. }) => s.summary.newer_version.push(key),
                Ok(other) => s.summary.refused.push((key, format!("{other:?}"))),
                Err(e) => s.summary.refused.push((key, e.clone())),
            }
        }
        Ok(())
    }

    /// Attaches to the key list (uploading the keys if the scheduler does not have them).
    async fn attach(&mut self) -> Result<ListId, ProgressError> {
        let Source::List {
            keys,
            digest,
            shuffle,
            ..
        } = &self.source
        else {
            unreachable!("only lists attach")
        };
        let (keys, digest, shuffle) = (keys.clone(), *digest, *shuffle);
        let holder = self.progress.holder().to_owned();
        let lease = self.options.lease.as_millis() as u64;
        let attach = ListRequest::Attach {
            namespace: self.namespace.to_string(),
            version: self.options.version,
            digest,
            len: keys.len() as u64,
            holder: holder.clone(),
            lease,
        };
        let mut reply = self.progress.lists(attach).await?;
        if matches!(reply, ListReply::Unknown) {
            tracing::debug!(keys = keys.len(), "uploading the key list");
            let mut start = 0;
            while start < keys.len() || start == 0 {
                let mut end = start;
                let mut bytes = 0;
                while end < keys.len() && (end == start || bytes < lists::UPLOAD_CHUNK_BYTES) {
                    bytes += keys[end].len() + 8;
                    end += 1;
                }
                reply = self
                    .progress
                    .lists(ListRequest::Upload {
                        namespace: self.namespace.to_string(),
                        version: self.options.version,
                        digest,
                        shuffle,
                        total: keys.len() as u64,
                        keys: keys[start..end].to_vec(),
                        holder: holder.clone(),
                        lease,
                    })
                    .await?;
                start = end.max(1);
                if !matches!(reply, ListReply::Uploading) {
                    break;
                }
            }
        }
        match reply {
            ListReply::Attached { list } => {
                self.shared.lock().expect("claims lock").list = Some(list);
                Ok(list)
            }
            other => Err(ProgressError::Unexpected(format!("{other:?}"))),
        }
    }

    /// One round trip on the key list: the queued commits and failures, and up to `want` new
    /// claims (`leave`: the loop ends). The answer, if the list answered.
    async fn list_round_trip(
        &mut self,
        want: u32,
        leave: bool,
    ) -> Result<Option<Answer>, ProgressError> {
        for _attempt in 0..3 {
            let attached = self.shared.lock().expect("claims lock").list;
            let list = match attached {
                Some(l) => l,
                None if leave => return Ok(None),
                None => self.attach().await?,
            };
            let items = self.take_outbox();
            let ask = Ask {
                list,
                holder: self.progress.holder().to_owned(),
                lease: self.options.lease.as_millis() as u64,
                settles: items
                    .iter()
                    .filter_map(|(r, _, p)| p.map(|p| (p, r.op.clone())))
                    .collect(),
                want,
                leave,
            };
            if ask.settles.len() < items.len() {
                // Only claims of the list settle through it: the rest goes key by key.
                self.put_back(items);
                self.flush_by_key().await?;
                continue;
            }
            tracing::debug!(
                queued = ask.settles.len(),
                want,
                leave,
                "key list round trip"
            );
            let answer = match self.progress.lists(ListRequest::Ask(ask)).await {
                Ok(ListReply::Answered(a)) => a,
                Ok(ListReply::Unknown) => {
                    // The scheduler forgot the list (it restarted, or we were away): again.
                    self.put_back(items);
                    self.shared.lock().expect("claims lock").list = None;
                    continue;
                }
                Ok(other) => {
                    self.put_back(items);
                    return Err(ProgressError::Unexpected(format!("{other:?}")));
                }
                Err(e) => {
                    self.put_back(items);
                    return Err(e);
                }
            };
            let Source::List { keys, status, .. } = &mut self.source else {
                unreachable!("only lists ask")
            };
            let mut s = self.shared.lock().expect("claims lock");
            settle(&mut s, &items, &answer.settled);
            for (place, fence) in &answer.claims {
                let key = keys[*place as usize].clone();
                s.live.insert(key.clone(), (*fence, Some(*place)));
                self.ready.push_back((key, *fence, Some(*place)));
            }
            for (place, outcome) in &answer.refused {
                let key = keys[*place as usize].clone();
                match outcome {
                    Ok(Outcome::NewerVersion { .. }) => s.summary.newer_version.push(key),
                    Ok(other) => s.summary.refused.push((key, format!("{other:?}"))),
                    Err(e) => s.summary.refused.push((key, e.clone())),
                }
            }
            if want > 0 || leave {
                *status = Some(answer.status);
            }
            if leave {
                s.list = None;
            }
            return Ok(Some(answer));
        }
        Err(ProgressError::Unexpected(
            "the scheduler keeps forgetting the key list".to_owned(),
        ))
    }

    /// Takes the queued commits and failures.
    fn take_outbox(&self) -> Vec<Queued> {
        std::mem::take(&mut self.shared.lock().expect("claims lock").outbox)
    }

    /// Puts changes taken from the outbox back at its front (their round trip failed: nothing
    /// of it was kept).
    fn put_back(&self, items: Vec<Queued>) {
        self.shared
            .lock()
            .expect("claims lock")
            .outbox
            .splice(0..0, items);
    }

    /// Sends the queued commits and failures now and waits until they are on disk.
    pub async fn flush(&mut self) -> Result<(), ProgressError> {
        if self.shared.lock().expect("claims lock").outbox.is_empty() {
            return Ok(());
        }
        if matches!(self.source, Source::List { .. }) {
            return self.list_round_trip(0, false).await.map(|_| ());
        }
        self.flush_by_key().await
    }

    /// Sends the queued commits and failures key by key (not through a key list).
    async fn flush_by_key(&mut self) -> Result<(), ProgressError> {
        let items = self.take_outbox();
        if items.is_empty() {
            return Ok(());
        }
        tracing::debug!(queued = items.len(), "claims flush");
        let outcomes = match self
            .progress
            .apply(items.iter().map(|(r, _, _)| r.clone()).collect())
            .await
        {
            Ok(o) => o,
            Err(e) => {
                self.put_back(items);
                return Err(e);
            }
        };
        let mut s = self.shared.lock().expect("claims lock");
        settle(&mut s, &items, &outcomes);
        Ok(())
    }

    /// Ends the loop: every queued commit and failure is sent and on disk, and the summary
    /// says what this loop did (keys still held by others are listed) and how many of its
    /// keys are not done.
    pub async fn finish(mut self) -> Result<Summary, ProgressError> {
        let left = if matches!(self.source, Source::List { .. }) {
            self.list_round_trip(0, true).await?
        } else {
            None
        };
        // Whatever the list could not take (it was forgotten) goes key by key.
        let source = std::mem::replace(
            &mut self.source,
            Source::Keys {
                pending: VecDeque::new(),
                held: Vec::new(),
            },
        );
        self.flush_by_key().await?;
        self.renewer.abort();
        let mut summary = std::mem::take(&mut self.shared.lock().expect("claims lock").summary);
        match (left, source) {
            (Some(answer), Source::List { keys, .. }) => {
                summary.held_elsewhere = answer
                    .held
                    .iter()
                    .map(|p| keys[*p as usize].clone())
                    .collect();
                let done = answer.status.done;
                summary.skipped_done = done.saturating_sub(summary.committed.len() as u64);
                summary.not_done = answer.status.total.saturating_sub(done);
            }
            (_, source) => {
                if let Source::Keys { held, .. } = source {
                    summary.held_elsewhere = held.into_iter().map(|(k, _)| k).collect();
                }
                // Keys lost here may have been done by their new holder.
                let mut not_done = summary.failed.len()
                    + summary.held_elsewhere.len()
                    + summary.refused.len()
                    + summary.newer_version.len();
                for (key, _) in &summary.lost {
                    let done = self
                        .progress
                        .record(&self.namespace, key)
                        .await?
                        .is_some_and(|r| {
                            matches!(r.state, drover_progress::State::Done { .. })
                                && r.version == self.options.version
                        });
                    not_done += usize::from(!done);
                }
                summary.not_done = not_done as u64;
            }
        }
        Ok(summary)
    }
}

/// A change queued to go with a round trip: the request, what it does to the summary, and the
/// key's place in the key list (if from one).
type Queued = (Request, Settle, Option<u32>);

/// Records what the store said of queued changes.
fn settle(s: &mut Shared, settles: &[Queued], outcomes: &[Result<Outcome, String>]) {
    for ((r, what, _), outcome) in settles.iter().zip(outcomes) {
        let key = &r.key;
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

/// Renews every live claim of the loop in one message, every `every` (through the key list
/// when attached to one: that also tells the list the loop lives).
async fn renew(
    progress: Progress,
    namespace: Arc<str>,
    shared: Arc<Mutex<Shared>>,
    every: Duration,
    lease: u64,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let (live, list): (Vec<(String, LiveClaim)>, Option<ListId>) = {
            let s = shared.lock().expect("claims lock");
            (
                s.live.iter().map(|(k, f)| (k.clone(), *f)).collect(),
                s.list,
            )
        };
        let outcomes = match list {
            Some(list) if live.iter().all(|(_, (_, p))| p.is_some()) => {
                let ask = Ask {
                    list,
                    holder: progress.holder().to_owned(),
                    lease,
                    settles: live
                        .iter()
                        .map(|(_, (f, p))| (p.expect("checked"), Op::Renew { fence: *f }))
                        .collect(),
                    want: 0,
                    leave: false,
                };
                match progress.lists(ListRequest::Ask(ask)).await {
                    Ok(ListReply::Answered(a)) => Some(a.settled),
                    _ => None, // forgotten or away: by key below, or at the next tick
                }
            }
            _ => None,
        };
        let outcomes = match outcomes {
            Some(o) => o,
            None if live.is_empty() => continue,
            None => {
                let requests = live
                    .iter()
                    .map(|(k, (f, _))| Request {
                        namespace: namespace.to_string(),
                        key: k.clone(),
                        op: Op::Renew { fence: *f },
                    })
                    .collect();
                match progress.apply(requests).await {
                    Ok(o) => o,
                    Err(_) => continue, // the scheduler is away: try again at the next tick
                }
            }
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
    /// Its place in the key list, if from one.
    place: Option<u32>,
    namespace: Arc<str>,
    progress: Progress,
    shared: Arc<Mutex<Shared>>,
    settled: bool,
    /// The loop's lease, milliseconds.
    lease: u64,
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
                .push((r, settle, self.place));
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
        let r = self.request(op);
        let list = self.shared.lock().expect("claims lock").list;
        // Through the key list when from one (so it knows the key is settled), else by key.
        let by_list = match (list, self.place) {
            (Some(list), Some(place)) => {
                let ask = Ask {
                    list,
                    holder: self.progress.holder().to_owned(),
                    lease: self.lease,
                    settles: vec![(place, r.op.clone())],
                    want: 0,
                    leave: false,
                };
                match self.progress.lists(ListRequest::Ask(ask)).await? {
                    ListReply::Answered(a) => a.settled.into_iter().next(),
                    _ => None, // the list was forgotten: by key
                }
            }
            _ => None,
        };
        let outcome = match by_list {
            Some(o) => o,
            None => self
                .progress
                .apply(vec![r.clone()])
                .await?
                .into_iter()
                .next()
                .unwrap_or(Err("no answer".into())),
        };
        let mut s = self.shared.lock().expect("claims lock");
        settle(
            &mut s,
            &[(r, what, self.place)],
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
