//! Key lists shared by the loops that claim from them. Without them, each of N processes
//! looping over the same K keys asks about every key: N x K claims, most of them for keys
//! another process already took. With a list, the scheduler holds the keys once (uploaded by
//! the first loop, named by their [`digest`]) and every loop attached to it claims from one
//! shared cursor: each key is looked at about once, whatever N is.
//!
//! A list remembers, for the keys it visited and that are not yet known done, who has them
//! (`open`): keys it handed to a member (settled by that member's commits and failures), and
//! keys held by someone else (a process not in the list, a member that stopped renewing, a
//! claim lost). Once the cursor reached the end, asks *sweep* the entries not held by a live
//! member: done ones are counted, lapsed ones claimed again. A member is live while it asks
//! (its renewals are asks too) within its lease. A key a member failed is not handed out again
//! to the members of that time; a loop attaching later gets it offered again (it would have
//! claimed it on its own).
//!
//! The lists live in the scheduler's memory only: after a restart, loops upload them again
//! and the cursor starts over (done keys are skipped, held ones respected: the records on disk
//! decide, the list only saves work).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use crate::engine::{check_names, Pass};
use crate::record::{Millis, Op, Outcome, Record, State};
use crate::store::StoreError;

/// A list's number, given at attach.
pub type ListId = u64;
/// The connection a request came on (a list forgets the members of a connection that ended).
pub type ClientTag = u64;

/// Most keys one ask looks at (claims, skips and sweeps together): an ask over many done keys
/// ends early and is asked again, so no pass of the store grows without bound.
const VISITS_PER_ASK: usize = 4096;
/// Most keys in one list.
pub const MAX_LIST: u64 = 50_000_000;
/// Most keys' bytes in one upload chunk.
pub const UPLOAD_CHUNK_BYTES: usize = 4 << 20;

/// The digest naming a list: its namespace, version and keys in order.
pub fn digest(namespace: &str, version: u64, keys: &[String]) -> u128 {
    let mut h = Xxh3::new();
    h.update(&(namespace.len() as u64).to_le_bytes());
    h.update(namespace.as_bytes());
    h.update(&version.to_le_bytes());
    h.update(&(keys.len() as u64).to_le_bytes());
    for k in keys {
        h.update(&(k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
    }
    h.digest128()
}

/// What a loop asks about key lists.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ListRequest {
    /// Join the list of this digest if the scheduler has it.
    Attach {
        /// The keys' namespace.
        namespace: String,
        /// The version claimed.
        version: u64,
        /// [`digest`] of the namespace, version and keys.
        digest: u128,
        /// How many keys.
        len: u64,
        /// Who claims.
        holder: String,
        /// The holder's lease, milliseconds.
        lease: Millis,
    },
    /// A chunk of the keys of a list the scheduler did not have; the last chunk makes the list
    /// and attaches.
    Upload {
        /// The keys' namespace.
        namespace: String,
        /// The version claimed.
        version: u64,
        /// [`digest`] of all the keys (checked once they are all here).
        digest: u128,
        /// Visit the keys in an order shuffled with this seed.
        shuffle: Option<u64>,
        /// How many keys in all.
        total: u64,
        /// This chunk's keys, in order after the previous chunks'.
        keys: Vec<String>,
        /// Who claims.
        holder: String,
        /// The holder's lease, milliseconds.
        lease: Millis,
    },
    /// Claims and settles (see [`Ask`]).
    Ask(Ask),
}

/// One round trip of a loop on its list: what it settled, and how many new claims it wants.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ask {
    /// The list.
    pub list: ListId,
    /// Who claims.
    pub holder: String,
    /// The holder's lease, milliseconds.
    pub lease: Millis,
    /// Commits, failures and renewals of the holder's claims, by the key's place in the list.
    pub settles: Vec<(u32, Op)>,
    /// New claims wanted.
    pub want: u32,
    /// The loop ends: after this, the holder is no longer a member.
    pub leave: bool,
}

/// The answer about key lists.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ListReply {
    /// Attached to this list.
    Attached {
        /// The list.
        list: ListId,
    },
    /// The scheduler has no such list (any more): upload the keys.
    Unknown,
    /// Chunk received; send the next.
    Uploading,
    /// The ask's answer.
    Answered(Answer),
}

/// What an [`Ask`] got.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// Per settle, in order: its outcome, or why it alone was refused.
    pub settled: Vec<Result<Outcome, String>>,
    /// New claims: (the key's place in the list, the claim's fence).
    pub claims: Vec<(u32, u64)>,
    /// Keys that cannot be claimed at the version asked (a newer version's record, a bad key),
    /// each reported once per list.
    pub refused: Vec<(u32, Result<Outcome, String>)>,
    /// The list now.
    pub status: Status,
    /// On leaving: the keys others hold.
    pub held: Vec<u32>,
}

/// Where a list stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Keys in the list.
    pub total: u64,
    /// Keys known done (by anyone).
    pub done: u64,
    /// Nothing is left to claim now: every key was visited, and the keys not done are held
    /// by others (or failed here, or refused).
    pub exhausted: bool,
    /// Keys others hold (when exhausted).
    pub held_elsewhere: u64,
    /// In how many milliseconds the first claim held by a non-member lapses, if any.
    pub soonest_lapse: Option<Millis>,
}

/// A member: a holder claiming from the list.
#[derive(Debug, Clone)]
struct Member {
    client: ClientTag,
    lease: Millis,
    seen: Millis,
    loops: u32,
}

/// Who has an open key: a holder (a member, or not), or nobody known (to be looked at).
type Owner = Option<Arc<str>>;

/// What a list's visits changed: saved before a pass and put back if the pass fails.
#[derive(Debug, Clone, Default)]
struct Walk {
    cursor: usize,
    open: BTreeMap<u32, Owner>,
    retry: VecDeque<u32>,
    failed: Vec<u32>,
    done: u64,
    sweep_from: u32,
}

/// One shared list.
#[derive(Debug)]
struct KeyList {
    namespace: String,
    version: u64,
    digest: u128,
    keys: Vec<String>,
    /// The visiting order (places in `keys`), when shuffled.
    order: Option<Vec<u32>>,
    members: HashMap<Arc<str>, Member>,
    walk: Walk,
}

/// A list being uploaded.
#[derive(Debug)]
struct Upload {
    namespace: String,
    version: u64,
    shuffle: Option<u64>,
    total: u64,
    keys: Vec<String>,
}

/// Every list of a scheduler (see the module docs).
#[derive(Debug, Default)]
pub struct KeyLists {
    lists: HashMap<ListId, KeyList>,
    by_digest: HashMap<u128, ListId>,
    uploads: HashMap<(ClientTag, u128), Upload>,
    next: ListId,
}

/// Lists' state saved before a pass (see [`KeyLists::save`]).
#[derive(Debug, Default)]
pub struct Saved(Vec<(ListId, Walk)>);

/// A seeded order of `n` places.
fn shuffled(n: usize, seed: u64) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    crate::seeded_shuffle(&mut order, seed);
    order
}

/// What a key's record says to a claimer.
enum Seen {
    Claimable,
    Done,
    /// Held by a live claim: by whom, lapsing in how long.
    Held(String, Millis),
    Newer(u64),
}

fn seen(record: Option<&Record>, version: u64, now: Millis) -> Seen {
    let Some(r) = record else {
        return Seen::Claimable;
    };
    if r.version > version {
        return Seen::Newer(r.version);
    }
    if r.version < version {
        return Seen::Claimable;
    }
    match &r.state {
        State::Done { .. } => Seen::Done,
        State::Claimed {
            holder, expires, ..
        } if *expires > now => Seen::Held(holder.clone(), expires - now),
        _ => Seen::Claimable,
    }
}

/// What visits of one ask gather.
#[derive(Default)]
struct Found {
    claims: Vec<(u32, u64)>,
    refused: Vec<(u32, Result<Outcome, String>)>,
    soonest: Option<Millis>,
    claimable_left: bool,
}

impl KeyList {
    fn len(&self) -> usize {
        self.keys.len()
    }

    fn place(&self, n: usize) -> u32 {
        self.order.as_ref().map_or(n as u32, |o| o[n])
    }

    fn live(&self, holder: &str, now: Millis) -> bool {
        self.members
            .get(holder)
            .is_some_and(|m| now < m.seen.saturating_add(m.lease))
    }

    /// The member `holder` (joining if new), seen now.
    fn member(&mut self, holder: &str, client: ClientTag, lease: Millis, now: Millis) -> Arc<str> {
        let Some((name, _)) = self.members.get_key_value(holder) else {
            return self.join(holder, client, lease, now);
        };
        let name = name.clone();
        let m = self.members.get_mut(holder).expect("just found");
        m.seen = now;
        m.lease = lease;
        m.client = client;
        name
    }

    /// A new loop of `holder` joins: keys failed by the list so far are offered again.
    fn join(&mut self, holder: &str, client: ClientTag, lease: Millis, now: Millis) -> Arc<str> {
        let failed = std::mem::take(&mut self.walk.failed);
        self.walk.retry.extend(failed);
        let name: Arc<str> = Arc::from(holder);
        let m = self.members.entry(name.clone()).or_insert(Member {
            client,
            lease,
            seen: now,
            loops: 0,
        });
        m.loops += 1;
        m.client = client;
        m.lease = lease;
        m.seen = now;
        name
    }

    /// What a settle of the key at `place` by `holder` did to the list.
    fn settled(
        &mut self,
        place: u32,
        op: &Op,
        outcome: &Result<Outcome, String>,
        holder: &Arc<str>,
    ) {
        let Some(owner) = self.walk.open.get_mut(&place) else {
            return; // not visited yet (the list is new): its visit will see the record
        };
        match (op, outcome) {
            (Op::Commit { .. }, Ok(Outcome::Applied)) => {
                self.walk.open.remove(&place);
                self.walk.done += 1;
            }
            (Op::Fail { .. }, Ok(Outcome::Applied)) => {
                self.walk.open.remove(&place);
                self.walk.failed.push(place);
            }
            (Op::Renew { .. }, Ok(Outcome::Applied)) => {}
            // Lost or refused: whoever has it now, a sweep finds out.
            _ => {
                if owner.as_ref() == Some(holder) {
                    *owner = None;
                }
            }
        }
    }

    /// Looks at the key at `place` for `holder`: claims it if claimable and `claim`, else
    /// notes who has it.
    #[allow(clippy::too_many_arguments)]
    fn visit(
        &mut self,
        pass: &mut Pass<'_>,
        place: u32,
        holder: &Arc<str>,
        lease: Millis,
        claim: bool,
        found: &mut Found,
    ) -> Result<(), StoreError> {
        let key = &self.keys[place as usize];
        if let Err(e) = check_names(&self.namespace, key) {
            self.walk.open.remove(&place);
            found.refused.push((place, Err(e)));
            return Ok(());
        }
        let now = pass.now();
        let record = pass.get(&self.namespace, key)?;
        match seen(record.as_ref(), self.version, now) {
            Seen::Done => {
                // Counted once: a key is visited again only while open (or offered again
                // after failing), never once counted done.
                self.walk.open.remove(&place);
                self.walk.done += 1;
            }
            Seen::Newer(version) => {
                self.walk.open.remove(&place);
                found
                    .refused
                    .push((place, Ok(Outcome::NewerVersion { version })));
            }
            Seen::Held(by, expires_in) => {
                let owner = if by.as_str() == &**holder {
                    Some(holder.clone())
                } else {
                    let live = self.live(&by, now);
                    if !live {
                        found.soonest =
                            Some(found.soonest.map_or(expires_in, |s| s.min(expires_in)));
                    }
                    match self.members.get_key_value(by.as_str()) {
                        Some((name, _)) if live => Some(name.clone()),
                        _ => None,
                    }
                };
                self.walk.open.insert(place, owner);
            }
            Seen::Claimable if claim => {
                let op = Op::Claim {
                    version: self.version,
                    holder: holder.to_string(),
                    lease,
                };
                match pass.apply_to(&self.namespace, key, record.as_ref(), &op)? {
                    Outcome::Claimed { fence } => {
                        found.claims.push((place, fence));
                        self.walk.open.insert(place, Some(holder.clone()));
                    }
                    other => found.refused.push((place, Ok(other))),
                }
            }
            Seen::Claimable => {
                found.claimable_left = true;
                self.walk.open.entry(place).or_insert(None);
            }
        }
        Ok(())
    }

    /// Looks again at the open keys no live member has (starting where the last sweep
    /// stopped), claiming up to `want` in all; whether every one was looked at.
    fn sweep(
        &mut self,
        pass: &mut Pass<'_>,
        holder: &Arc<str>,
        lease: Millis,
        want: usize,
        budget: &mut usize,
        found: &mut Found,
    ) -> Result<bool, StoreError> {
        let now = pass.now();
        let from = self.walk.sweep_from;
        let places: Vec<u32> = self
            .walk
            .open
            .range(from..)
            .chain(self.walk.open.range(..from))
            .filter(|(_, owner)| owner.as_ref().is_none_or(|h| !self.live(h, now)))
            .map(|(p, _)| *p)
            .collect();
        for (i, place) in places.iter().enumerate() {
            if *budget == 0 {
                self.walk.sweep_from = *place;
                return Ok(false);
            }
            *budget -= 1;
            let claim = found.claims.len() < want;
            self.visit(pass, *place, holder, lease, claim, found)?;
            if i + 1 == places.len() {
                self.walk.sweep_from = place.wrapping_add(1);
            }
        }
        Ok(true)
    }

    /// The keys open and not `holder`'s.
    fn held_elsewhere(&self, holder: &Arc<str>) -> impl Iterator<Item = u32> + '_ {
        let holder = holder.clone();
        self.walk
            .open
            .iter()
            .filter(move |(_, owner)| owner.as_ref() != Some(&holder))
            .map(|(p, _)| *p)
    }

    fn ask(
        &mut self,
        pass: &mut Pass<'_>,
        client: ClientTag,
        ask: &Ask,
    ) -> Result<Answer, StoreError> {
        let now = pass.now();
        let holder = self.member(&ask.holder, client, ask.lease, now);
        let mut settled = Vec::with_capacity(ask.settles.len());
        for (place, op) in &ask.settles {
            let Some(key) = self.keys.get(*place as usize) else {
                settled.push(Err(format!("the list has no key at place {place}")));
                continue;
            };
            let outcome = pass.apply_op(&self.namespace, key, op)?;
            self.settled(*place, op, &outcome, &holder);
            settled.push(outcome);
        }
        let want = ask.want as usize;
        let mut found = Found::default();
        let mut budget = VISITS_PER_ASK.max(4 * want);
        while found.claims.len() < want && budget > 0 {
            let Some(place) = self.walk.retry.pop_front() else {
                break;
            };
            budget -= 1;
            self.visit(pass, place, &holder, ask.lease, true, &mut found)?;
        }
        while found.claims.len() < want && budget > 0 && self.walk.cursor < self.len() {
            let place = self.place(self.walk.cursor);
            self.walk.cursor += 1;
            budget -= 1;
            self.visit(pass, place, &holder, ask.lease, true, &mut found)?;
        }
        let at_end = self.walk.cursor == self.len() && self.walk.retry.is_empty();
        let mut swept = false;
        if at_end && (found.claims.len() < want || ask.leave) {
            if ask.leave {
                budget = usize::MAX;
            }
            swept = self.sweep(pass, &holder, ask.lease, want, &mut budget, &mut found)?;
        }
        let exhausted =
            at_end && swept && !found.claimable_left && found.claims.len() < want.max(1);
        let mut status = Status {
            total: self.len() as u64,
            done: self.walk.done,
            exhausted,
            held_elsewhere: 0,
            soonest_lapse: found.soonest,
        };
        let mut held = Vec::new();
        if exhausted || ask.leave {
            status.held_elsewhere = self.held_elsewhere(&holder).count() as u64;
        }
        if ask.leave {
            held = self.held_elsewhere(&holder).collect();
            self.leave(&holder);
        }
        Ok(Answer {
            settled,
            claims: found.claims,
            refused: found.refused,
            status,
            held,
        })
    }

    /// One loop of `holder` ends.
    fn leave(&mut self, holder: &str) {
        if let Some(m) = self.members.get_mut(holder) {
            m.loops -= 1;
            if m.loops == 0 {
                self.members.remove(holder);
            }
        }
    }
}

impl KeyLists {
    /// No lists.
    pub fn new() -> KeyLists {
        KeyLists::default()
    }

    /// How many lists are held.
    pub fn len(&self) -> usize {
        self.lists.len()
    }

    /// Whether no list is held.
    pub fn is_empty(&self) -> bool {
        self.lists.is_empty()
    }

    /// Answers an attach or an upload (an ask goes to [`KeyLists::ask`]).
    pub fn answer(
        &mut self,
        client: ClientTag,
        request: ListRequest,
        now: Millis,
    ) -> Result<ListReply, String> {
        match request {
            ListRequest::Attach {
                namespace,
                version,
                digest,
                len,
                holder,
                lease,
            } => {
                let Some(list) = self
                    .by_digest
                    .get(&digest)
                    .and_then(|id| self.lists.get_mut(id).map(|l| (*id, l)))
                    .filter(|(_, l)| {
                        l.namespace == namespace && l.version == version && l.len() as u64 == len
                    })
                else {
                    return Ok(ListReply::Unknown);
                };
                list.1.join(&holder, client, lease, now);
                Ok(ListReply::Attached { list: list.0 })
            }
            ListRequest::Upload {
                namespace,
                version,
                digest: d,
                shuffle,
                total,
                keys,
                holder,
                lease,
            } => {
                if total > MAX_LIST {
                    return Err(format!(
                        "a list of {total} keys is longer than the {MAX_LIST} allowed"
                    ));
                }
                let up = self.uploads.entry((client, d)).or_insert_with(|| Upload {
                    namespace: namespace.clone(),
                    version,
                    shuffle,
                    total,
                    keys: Vec::new(),
                });
                if up.namespace != namespace || up.version != version || up.total != total {
                    self.uploads.remove(&(client, d));
                    return Err("the upload's chunks do not agree on the list".to_owned());
                }
                up.keys.extend(keys);
                if (up.keys.len() as u64) < total {
                    return Ok(ListReply::Uploading);
                }
                let up = self.uploads.remove(&(client, d)).expect("just seen");
                if up.keys.len() as u64 != total || digest(&namespace, version, &up.keys) != d {
                    return Err("the uploaded keys do not match their digest".to_owned());
                }
                let id = match self.by_digest.get(&d) {
                    Some(id) if self.lists.contains_key(id) => *id,
                    _ => {
                        let id = self.next;
                        self.next += 1;
                        let order = up.shuffle.map(|seed| shuffled(up.keys.len(), seed));
                        self.lists.insert(
                            id,
                            KeyList {
                                namespace,
                                version,
                                digest: d,
                                keys: up.keys,
                                order,
                                members: HashMap::new(),
                                walk: Walk::default(),
                            },
                        );
                        self.by_digest.insert(d, id);
                        id
                    }
                };
                let list = self.lists.get_mut(&id).expect("just made");
                list.join(&holder, client, lease, now);
                Ok(ListReply::Attached { list: id })
            }
            ListRequest::Ask(_) => Err("an ask needs the store's pass".to_owned()),
        }
    }

    /// Saves the state of the lists these asks touch, to put back if the pass fails.
    pub fn save<'a>(&self, asks: impl Iterator<Item = &'a Ask>) -> Saved {
        let mut saved: Vec<(ListId, Walk)> = Vec::new();
        for a in asks {
            if saved.iter().all(|(id, _)| *id != a.list) {
                if let Some(l) = self.lists.get(&a.list) {
                    saved.push((a.list, l.walk.clone()));
                }
            }
        }
        Saved(saved)
    }

    /// Puts back what [`KeyLists::save`] saved (the pass failed: nothing of it was kept).
    pub fn restore(&mut self, saved: Saved) {
        for (id, walk) in saved.0 {
            if let Some(l) = self.lists.get_mut(&id) {
                l.walk = walk;
            }
        }
    }

    /// Answers an ask within `pass`: settles, then claims from the shared cursor.
    pub fn ask(
        &mut self,
        pass: &mut Pass<'_>,
        client: ClientTag,
        ask: &Ask,
    ) -> Result<ListReply, StoreError> {
        let Some(list) = self.lists.get_mut(&ask.list) else {
            return Ok(ListReply::Unknown);
        };
        let answer = list.ask(pass, client, ask)?;
        if list.members.is_empty() {
            let digest = list.digest;
            self.lists.remove(&ask.list);
            self.by_digest.remove(&digest);
        }
        Ok(ListReply::Answered(answer))
    }

    /// A connection ended: its members leave their lists (their open keys are swept by the
    /// others, the records deciding when they are free), lists left with none go.
    pub fn client_left(&mut self, client: ClientTag) {
        self.uploads.retain(|(c, _), _| *c != client);
        self.lists.retain(|_, l| {
            l.members.retain(|_, m| m.client != client);
            !l.members.is_empty()
        });
        let lists = &self.lists;
        self.by_digest.retain(|_, id| lists.contains_key(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::MemStore;

    const LEASE: Millis = 1000;

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("k{i}")).collect()
    }

    /// Uploads `keys` in chunks of `chunk` for `holder`: the list's number.
    fn upload(
        lists: &mut KeyLists,
        client: ClientTag,
        holder: &str,
        keys: &[String],
        chunk: usize,
    ) -> ListId {
        let d = digest("ns", 0, keys);
        let mut reply = None;
        for part in keys.chunks(chunk) {
            reply = Some(
                lists
                    .answer(
                        client,
                        ListRequest::Upload {
                            namespace: "ns".into(),
                            version: 0,
                            digest: d,
                            shuffle: Some(7),
                            total: keys.len() as u64,
                            keys: part.to_vec(),
                            holder: holder.into(),
                            lease: LEASE,
                        },
                        0,
                    )
                    .unwrap(),
            );
        }
        match reply {
            Some(ListReply::Attached { list }) => list,
            other => panic!("{other:?}"),
        }
    }

    fn attach(
        lists: &mut KeyLists,
        client: ClientTag,
        holder: &str,
        keys: &[String],
        now: Millis,
    ) -> ListReply {
        lists
            .answer(
                client,
                ListRequest::Attach {
                    namespace: "ns".into(),
                    version: 0,
                    digest: digest("ns", 0, keys),
                    len: keys.len() as u64,
                    holder: holder.into(),
                    lease: LEASE,
                },
                now,
            )
            .unwrap()
    }

    struct Asker {
        list: ListId,
        client: ClientTag,
        holder: &'static str,
    }

    impl Asker {
        fn ask(
            &self,
            store: &MemStore,
            lists: &mut KeyLists,
            settles: Vec<(u32, Op)>,
            want: u32,
            leave: bool,
            now: Millis,
        ) -> Answer {
            let a = Ask {
                list: self.list,
                holder: self.holder.into(),
                lease: LEASE,
                settles,
                want,
                leave,
            };
            let mut out = None;
            store
                .transact(&mut |txn| {
                    let mut pass = Pass::new(txn, now, 1 << 20)?;
                    out = Some(lists.ask(&mut pass, self.client, &a)?);
                    Ok(())
                })
                .unwrap();
            match out {
                Some(ListReply::Answered(a)) => a,
                other => panic!("{other:?}"),
            }
        }

        fn commits(&self, claims: &[(u32, u64)]) -> Vec<(u32, Op)> {
            claims
                .iter()
                .map(|(p, f)| {
                    (
                        *p,
                        Op::Commit {
                            fence: *f,
                            by: self.holder.into(),
                            output: None,
                        },
                    )
                })
                .collect()
        }
    }

    #[test]
    fn members_share_one_cursor_and_each_key_is_claimed_once() {
        let store = MemStore::new();
        let mut lists = KeyLists::new();
        let ks = keys(100);
        let a = Asker {
            list: upload(&mut lists, 1, "a", &ks, 30),
            client: 1,
            holder: "a",
        };
        let Ok(ListReply::Attached { list }) = Ok::<_, ()>(attach(&mut lists, 2, "b", &ks, 0))
        else {
            panic!()
        };
        assert_eq!(list, a.list, "the same keys join the same list");
        let b = Asker {
            list,
            client: 2,
            holder: "b",
        };
        let mut claimed = vec![0u32; ks.len()];
        let (mut pa, mut pb) = (Vec::new(), Vec::new());
        let mut ended = [false, false];
        let mut asks = 0;
        while !(ended[0] && ended[1]) {
            asks += 1;
            for (i, (m, prev)) in [(&a, &mut pa), (&b, &mut pb)].into_iter().enumerate() {
                if ended[i] {
                    continue;
                }
                let answer = m.ask(&store, &mut lists, m.commits(prev), 7, false, 10);
                assert!(answer.settled.iter().all(|o| *o == Ok(Outcome::Applied)));
                assert!(answer.refused.is_empty());
                for (p, _) in &answer.claims {
                    claimed[*p as usize] += 1;
                }
                *prev = answer.claims;
                ended[i] = answer.status.exhausted && prev.is_empty();
            }
        }
        assert!(claimed.iter().all(|&n| n == 1), "{claimed:?}");
        assert!(asks <= 100 / 14 + 3, "{asks} asks");
        let last = a.ask(&store, &mut lists, vec![], 0, true, 10);
        assert_eq!(last.status.done, 100);
        assert!(last.held.is_empty());
        // Visited in the shuffled order, not the keys' order.
        assert_ne!(shuffled(100, 7), (0..100).collect::<Vec<u32>>());
    }

    #[test]
    fn a_member_that_stops_asking_loses_its_keys_after_the_lease() {
        let store = MemStore::new();
        let mut lists = KeyLists::new();
        let ks = keys(10);
        let a = Asker {
            list: upload(&mut lists, 1, "a", &ks, 100),
            client: 1,
            holder: "a",
        };
        let b = Asker {
            list: a.list,
            client: 2,
            holder: "b",
        };
        attach(&mut lists, 2, "b", &ks, 0);
        let stalled = a.ask(&store, &mut lists, vec![], 4, false, 0).claims;
        let got = b.ask(&store, &mut lists, vec![], 100, false, 100);
        assert_eq!(got.claims.len(), 6);
        // The rest are a's, live: nothing to claim, four held elsewhere.
        let mid = b.ask(&store, &mut lists, b.commits(&got.claims), 100, false, 500);
        assert!(mid.claims.is_empty() && mid.status.exhausted, "{mid:?}");
        assert_eq!((mid.status.held_elsewhere, mid.status.done), (4, 6));
        // a's lease lapsed without a word from it: b sweeps its keys up.
        let late = b.ask(&store, &mut lists, vec![], 100, false, 1500);
        let mut taken: Vec<u32> = late.claims.iter().map(|(p, _)| *p).collect();
        let mut lost: Vec<u32> = stalled.iter().map(|(p, _)| *p).collect();
        taken.sort_unstable();
        lost.sort_unstable();
        assert_eq!(taken, lost);
        let end = b.ask(
            &store,
            &mut lists,
            b.commits(&late.claims),
            100,
            false,
            1600,
        );
        assert!(end.status.exhausted && end.status.held_elsewhere == 0);
        assert_eq!(end.status.done, 10);
        // a wakes up: its commits are refused, and the count stays right.
        let woke = a.ask(&store, &mut lists, a.commits(&stalled), 1, true, 1700);
        assert!(woke
            .settled
            .iter()
            .all(|o| matches!(o, Ok(Outcome::Stale { .. }))));
        assert_eq!(woke.status.done, 10);
    }

    #[test]
    fn failed_keys_are_offered_again_only_to_loops_that_join_later() {
        let store = MemStore::new();
        let mut lists = KeyLists::new();
        let ks = keys(3);
        let a = Asker {
            list: upload(&mut lists, 1, "a", &ks, 100),
            client: 1,
            holder: "a",
        };
        let got = a.ask(&store, &mut lists, vec![], 10, false, 0).claims;
        let mut settles = a.commits(&got[1..]);
        settles.push((
            got[0].0,
            Op::Fail {
                fence: got[0].1,
                by: "a".into(),
                error: "boom".into(),
            },
        ));
        let again = a.ask(&store, &mut lists, settles, 10, false, 10);
        assert!(
            again.claims.is_empty() && again.status.exhausted,
            "{again:?}"
        );
        assert_eq!(again.status.done, 2);
        attach(&mut lists, 3, "c", &ks, 20);
        let c = Asker {
            list: a.list,
            client: 3,
            holder: "c",
        };
        let retried = c.ask(&store, &mut lists, vec![], 10, false, 20);
        assert_eq!(
            retried.claims.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            vec![got[0].0]
        );
        let end = c.ask(&store, &mut lists, c.commits(&retried.claims), 10, true, 30);
        assert_eq!(end.status.done, 3);
    }

    #[test]
    fn lists_go_with_their_members_and_uploads_must_match_their_digest() {
        let store = MemStore::new();
        let mut lists = KeyLists::new();
        let ks = keys(5);
        let a = Asker {
            list: upload(&mut lists, 1, "a", &ks, 2),
            client: 1,
            holder: "a",
        };
        let held = a.ask(&store, &mut lists, vec![], 3, false, 0).claims;
        lists.client_left(1);
        assert!(lists.is_empty());
        assert!(matches!(
            attach(&mut lists, 1, "a", &ks, 10),
            ListReply::Unknown
        ));
        // The keys again (a reconnected): those a still holds are not handed out again, and
        // its claims stay good.
        let a = Asker {
            list: upload(&mut lists, 4, "a", &ks, 5),
            client: 4,
            holder: "a",
        };
        let fresh = a.ask(&store, &mut lists, vec![], 10, false, 20);
        assert_eq!(fresh.claims.len(), 2, "{fresh:?}");
        let mut all = held.clone();
        all.extend(fresh.claims.iter().copied());
        let end = a.ask(&store, &mut lists, a.commits(&all), 10, true, 30);
        assert!(
            end.settled.iter().all(|o| *o == Ok(Outcome::Applied)),
            "{end:?}"
        );
        assert_eq!(end.status.done, 5);
        assert!(lists.is_empty(), "its last member left");
        // A lie about the keys is refused.
        let err = lists
            .answer(
                1,
                ListRequest::Upload {
                    namespace: "ns".into(),
                    version: 0,
                    digest: digest("ns", 0, &ks),
                    shuffle: None,
                    total: 1,
                    keys: vec!["other".into()],
                    holder: "a".into(),
                    lease: LEASE,
                },
                0,
            )
            .unwrap_err();
        assert!(err.contains("do not match their digest"), "{err}");
    }

    #[test]
    fn keys_of_a_newer_version_are_refused_once_and_not_counted_done() {
        let store = MemStore::new();
        crate::apply(
            &store,
            &[crate::Request {
                namespace: "ns".into(),
                key: "k1".into(),
                op: Op::Claim {
                    version: 5,
                    holder: "x".into(),
                    lease: LEASE,
                },
            }],
            0,
            16,
        )
        .unwrap();
        let mut lists = KeyLists::new();
        let ks = keys(3);
        let a = Asker {
            list: upload(&mut lists, 1, "a", &ks, 100),
            client: 1,
            holder: "a",
        };
        let got = a.ask(&store, &mut lists, vec![], 10, false, 0);
        assert_eq!(got.claims.len(), 2);
        assert_eq!(
            got.refused,
            vec![(1, Ok(Outcome::NewerVersion { version: 5 }))]
        );
        let end = a.ask(&store, &mut lists, a.commits(&got.claims), 10, true, 10);
        assert!(end.refused.is_empty());
        assert_eq!((end.status.done, end.status.total), (2, 3));
    }
}
