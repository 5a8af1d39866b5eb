//! Operations on a [`Store`]: a batch of changes applied in order in one transaction (so many
//! commits share one sync of the file: group commit), and the look-ups around them.

use serde::{Deserialize, Serialize};

use crate::record::{self, Kind, Millis, Op, Outcome, Record};
use crate::store::{Store, StoreError, Txn};

/// The longest key, in bytes.
pub const MAX_KEY: usize = 4096;
/// The longest namespace, in bytes.
pub const MAX_NAMESPACE: usize = 256;
/// The largest output kept with a done key unless configured otherwise, in bytes.
pub const DEFAULT_MAX_OUTPUT: usize = 1 << 20;
/// The longest error kept with a failed key, in bytes (longer ones keep their tail).
pub const MAX_ERROR: usize = 8192;

/// A change asked of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The namespace.
    pub namespace: String,
    /// The key.
    pub key: String,
    /// The change.
    pub op: Op,
}

/// Checks a namespace and a key: non-empty namespace, both within their bounds.
pub fn check_names(namespace: &str, key: &str) -> Result<(), String> {
    if namespace.is_empty() {
        return Err("the namespace is empty".to_owned());
    }
    if namespace.len() > MAX_NAMESPACE {
        return Err(format!(
            "namespace of {} bytes is longer than the {MAX_NAMESPACE} allowed",
            namespace.len()
        ));
    }
    if key.len() > MAX_KEY {
        let start: String = key.chars().take(40).collect();
        return Err(format!(
            "key of {} bytes ({start:?}...) is longer than the {MAX_KEY} allowed",
            key.len()
        ));
    }
    Ok(())
}

/// Changes applied within one transaction: each claim takes the store's next fence.
pub struct Pass<'t> {
    txn: &'t mut dyn Txn,
    fence: u64,
    now: Millis,
    max_output: usize,
}

impl std::fmt::Debug for Pass<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pass").field("now", &self.now).finish()
    }
}

impl<'t> Pass<'t> {
    /// Starts a pass at `now` in `txn`; done keys keep outputs of at most `max_output` bytes.
    pub fn new(
        txn: &'t mut dyn Txn,
        now: Millis,
        max_output: usize,
    ) -> Result<Pass<'t>, StoreError> {
        let fence = txn.take_fence()?;
        Ok(Pass {
            txn,
            fence,
            now,
            max_output,
        })
    }

    /// The pass's clock.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// The record of `key` in `namespace`.
    pub fn get(&mut self, namespace: &str, key: &str) -> Result<Option<Record>, StoreError> {
        self.txn.get(namespace, key)
    }

    /// Applies one change: its outcome, or why it alone was refused (a bad name, an output too
    /// large); an error of the store fails the whole pass.
    pub fn apply(&mut self, r: &Request) -> Result<Result<Outcome, String>, StoreError> {
        self.apply_op(&r.namespace, &r.key, &r.op)
    }

    /// [`Pass::apply`] of `op` to `key` of `namespace`.
    pub fn apply_op(
        &mut self,
        namespace: &str,
        key: &str,
        op: &Op,
    ) -> Result<Result<Outcome, String>, StoreError> {
        if let Err(e) = check_names(namespace, key) {
            return Ok(Err(e));
        }
        let max_output = self.max_output;
        let cut;
        let op = match op {
            Op::Commit {
                output: Some(o), ..
            } if o.len() > max_output => {
                return Ok(Err(format!(
                    "the output of {key:?} is {} bytes, more than the {max_output} a done key may keep",
                    o.len()
                )));
            }
            Op::Fail { fence, by, error } if error.len() > MAX_ERROR => {
                let from = error.len() - MAX_ERROR;
                let from = (from..error.len())
                    .find(|&i| error.is_char_boundary(i))
                    .unwrap_or(error.len());
                cut = Op::Fail {
                    fence: *fence,
                    by: by.clone(),
                    error: format!("...{}", &error[from..]),
                };
                &cut
            }
            op => op,
        };
        let current = self.txn.get(namespace, key)?;
        self.apply_to(namespace, key, current.as_ref(), op).map(Ok)
    }

    /// Applies `op` to `key` of `namespace` whose record (just read in this pass) is
    /// `current`; the names are not checked.
    pub fn apply_to(
        &mut self,
        namespace: &str,
        key: &str,
        current: Option<&Record>,
        op: &Op,
    ) -> Result<Outcome, StoreError> {
        let (next, outcome) = record::apply(current, op, self.now, self.fence);
        if let Some(rec) = next {
            self.txn.put(namespace, key, &rec)?;
        }
        if matches!(outcome, Outcome::Claimed { .. }) {
            self.fence = self.txn.take_fence()?;
        }
        Ok(outcome)
    }
}

/// Applies `requests` in order at `now`, in one transaction: durable when this returns, all
/// or nothing. A request refused on its own (a bad name, an output over `max_output`) gets its
/// error and spoils nothing else; an error of the store fails the whole batch.
pub fn apply(
    store: &dyn Store,
    requests: &[Request],
    now: Millis,
    max_output: usize,
) -> Result<Vec<Result<Outcome, String>>, StoreError> {
    let mut outcomes: Vec<Result<Outcome, String>> = Vec::with_capacity(requests.len());
    store.transact(&mut |txn| {
        outcomes.clear();
        let mut pass = Pass::new(txn, now, max_output)?;
        for r in requests {
            outcomes.push(pass.apply(r)?);
        }
        Ok(())
    })?;
    Ok(outcomes)
}

/// The record of `key` in `namespace`.
pub fn get(store: &dyn Store, namespace: &str, key: &str) -> Result<Option<Record>, StoreError> {
    Ok(store
        .scan(namespace, key, None, 1)?
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, r)| r))
}

/// A durable graph task asked about: (key, version, fingerprint of its definition).
pub type DurableTask = (String, u64, u128);

/// Per durable task of `namespace`, whether it is done (see [`Record::done_for`]): `None` if
/// not, else its stored output (if it had one).
pub fn done_for(
    store: &dyn Store,
    namespace: &str,
    tasks: &[DurableTask],
) -> Result<Vec<Option<Option<Vec<u8>>>>, StoreError> {
    tasks
        .iter()
        .map(|(key, version, definition)| {
            Ok(
                get(store, namespace, key)?
                    .and_then(|r| r.done_for(*version, *definition).cloned()),
            )
        })
        .collect()
}

/// How many keys of a namespace are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Claimable again: lapsed claims (keys never claimed have no record and are not counted).
    pub free: u64,
    /// Held by live claims.
    pub claimed: u64,
    /// Done.
    pub done: u64,
    /// Failed (claimable again).
    pub failed: u64,
}

impl Counts {
    fn add(&mut self, kind: Kind) {
        match kind {
            Kind::Free => self.free += 1,
            Kind::Claimed => self.claimed += 1,
            Kind::Done => self.done += 1,
            Kind::Failed => self.failed += 1,
        }
    }
}

/// Rows read per page when scanning a namespace.
const PAGE: usize = 4096;

/// Counts per state of `namespace`'s keys at `now`.
pub fn counts(store: &dyn Store, namespace: &str, now: Millis) -> Result<Counts, StoreError> {
    let mut c = Counts::default();
    let mut after: Option<String> = None;
    loop {
        let page = store.scan(namespace, "", after.as_deref(), PAGE)?;
        for (_, r) in &page {
            c.add(r.kind(now));
        }
        match page.last() {
            Some((k, _)) if page.len() == PAGE => after = Some(k.clone()),
            _ => return Ok(c),
        }
    }
}

/// Up to `limit` keys of `namespace` starting with `prefix`, after `after`, in key order, with
/// their records, of kind `kind` if given.
pub fn list(
    store: &dyn Store,
    namespace: &str,
    prefix: &str,
    kind: Option<Kind>,
    after: Option<&str>,
    limit: usize,
    now: Millis,
) -> Result<Vec<(String, Record)>, StoreError> {
    let mut out = Vec::new();
    let mut after = after.map(str::to_owned);
    loop {
        let page = store.scan(namespace, prefix, after.as_deref(), PAGE)?;
        let full = page.len() == PAGE;
        let last = page.last().map(|(k, _)| k.clone());
        for (k, r) in page {
            if kind.is_none_or(|want| r.kind(now) == want) {
                out.push((k, r));
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
        if !full {
            return Ok(out);
        }
        after = last;
    }
}

/// Removes the records of `keys` in `namespace` (all of the namespace when `None`): they are
/// free again. Returns how many there were.
pub fn reset(
    store: &dyn Store,
    namespace: &str,
    keys: Option<&[String]>,
) -> Result<u64, StoreError> {
    let mut removed = 0;
    store.transact(&mut |txn| {
        removed = 0;
        let all;
        let keys = match keys {
            Some(k) => k,
            None => {
                all = txn.keys(namespace)?;
                &all
            }
        };
        for k in keys {
            removed += u64::from(txn.delete(namespace, k)?);
        }
        Ok(())
    })?;
    Ok(removed)
}

/// After a restart: every live claim of every namespace gets a fresh lease from `now` (its
/// holder may renew it, or let it lapse). Returns how many.
pub fn refresh_leases(store: &dyn Store, now: Millis) -> Result<u64, StoreError> {
    let mut refreshed = 0;
    for ns in store.namespaces()? {
        let mut claimed: Vec<(String, Record)> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = store.scan(&ns, "", after.as_deref(), PAGE)?;
            claimed.extend(
                page.iter()
                    .filter(|(_, r)| matches!(r.state, record::State::Claimed { .. }))
                    .cloned(),
            );
            match page.last() {
                Some((k, _)) if page.len() == PAGE => after = Some(k.clone()),
                _ => break,
            }
        }
        if claimed.is_empty() {
            continue;
        }
        store.transact(&mut |txn| {
            for (k, r) in &claimed {
                txn.put(&ns, k, &record::restored(r.clone(), now))?;
            }
            Ok(())
        })?;
        refreshed += claimed.len() as u64;
    }
    Ok(refreshed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemStore, RedbStore, Sharing};

    fn claim(ns: &str, key: &str, who: &str) -> Request {
        Request {
            namespace: ns.into(),
            key: key.into(),
            op: Op::Claim {
                version: 0,
                holder: who.into(),
                lease: 1000,
            },
        }
    }

    fn commit(ns: &str, key: &str, fence: u64, output: Option<Vec<u8>>) -> Request {
        Request {
            namespace: ns.into(),
            key: key.into(),
            op: Op::Commit {
                fence,
                by: "a".into(),
                output,
            },
        }
    }

    fn fence(o: &Result<Outcome, String>) -> u64 {
        match o {
            Ok(Outcome::Claimed { fence }) => *fence,
            other => panic!("{other:?}"),
        }
    }

    fn exercise(store: &dyn Store) {
        // One batch: two claims, and a claim of the first key again by someone else.
        let out = apply(
            store,
            &[
                claim("ns", "k1", "a"),
                claim("ns", "k2", "a"),
                claim("ns", "k1", "b"),
            ],
            100,
            16,
        )
        .unwrap();
        let (f1, f2) = (fence(&out[0]), fence(&out[1]));
        assert!(f2 > f1, "fences grow");
        assert!(matches!(&out[2], Ok(Outcome::Held { holder, .. }) if holder == "a"));
        // Commits in one batch; an oversized output is refused alone.
        let out = apply(
            store,
            &[
                commit("ns", "k1", f1, Some(b"out".to_vec())),
                commit("ns", "k2", f2, Some(vec![0; 17])),
            ],
            200,
            16,
        )
        .unwrap();
        assert_eq!(out[0], Ok(Outcome::Applied));
        assert!(
            out[1].as_ref().unwrap_err().contains("more than the 16"),
            "{out:?}"
        );
        let r = get(store, "ns", "k1").unwrap().unwrap();
        assert_eq!(r.kind(0), Kind::Done);
        assert_eq!(
            counts(store, "ns", 300).unwrap(),
            Counts {
                claimed: 1,
                done: 1,
                ..Counts::default()
            }
        );
        // Keys are any UTF-8, stored as they are; names are bounded.
        let odd = "ключ/with spaces\u{0}and\u{10FFFF}";
        assert!(matches!(
            apply(store, &[claim("ns", odd, "a")], 300, 16).unwrap()[0],
            Ok(Outcome::Claimed { .. })
        ));
        let listed = list(store, "ns", "", Some(Kind::Claimed), None, 10, 300).unwrap();
        let keys: Vec<&str> = listed.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, vec!["k2", odd]);
        let long = "x".repeat(MAX_KEY + 1);
        assert!(
            apply(store, &[claim("ns", &long, "a")], 300, 16).unwrap()[0]
                .as_ref()
                .unwrap_err()
                .contains("longer than the 4096 allowed")
        );
        assert_eq!(store.namespaces().unwrap(), vec!["ns".to_owned()]);
        // Reset: one key, then the namespace.
        assert_eq!(reset(store, "ns", Some(&["k1".to_owned()])).unwrap(), 1);
        assert_eq!(get(store, "ns", "k1").unwrap(), None);
        assert_eq!(reset(store, "ns", None).unwrap(), 2);
        assert!(store.namespaces().unwrap().is_empty());
        // Fences keep growing after a reset: an old holder cannot commit a new claim.
        let out = apply(store, &[claim("ns", "k1", "c")], 400, 16).unwrap();
        assert!(fence(&out[0]) > f2);
    }

    #[test]
    fn the_memory_store_keeps_the_rules() {
        exercise(&MemStore::new());
    }

    #[test]
    fn the_redb_store_keeps_the_rules_and_its_records_across_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/progress.redb");
        {
            let s = RedbStore::open(&path, Sharing::Exclusive).unwrap();
            exercise(&s);
        }
        let s = RedbStore::open(&path, Sharing::Exclusive).unwrap();
        assert_eq!(
            get(&s, "ns", "k1").unwrap().unwrap().kind(400),
            Kind::Claimed
        );
        // A restart gives the live claim a fresh lease from now.
        assert_eq!(refresh_leases(&s, 10_000).unwrap(), 1);
        assert_eq!(
            get(&s, "ns", "k1").unwrap().unwrap().kind(10_500),
            Kind::Claimed
        );
        // Exclusive: a second opener is refused, naming the file.
        let err = RedbStore::open(&path, Sharing::Exclusive)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("progress.redb") && err.contains("another process"),
            "{err}"
        );
    }

    #[test]
    fn foreign_and_corrupt_files_are_refused_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.redb");
        std::fs::write(&junk, b"this is not a database at all, just some text").unwrap();
        let err = RedbStore::open(&junk, Sharing::Exclusive)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("progress store {}", junk.display())),
            "{err}"
        );
        // A valid redb file of someone else.
        let other = dir.path().join("other.redb");
        {
            let db = redb::Database::create(&other).unwrap();
            let t = db.begin_write().unwrap();
            t.open_table(redb::TableDefinition::<&str, u64>::new("theirs"))
                .unwrap()
                .insert("x", 1)
                .unwrap();
            t.commit().unwrap();
        }
        let err = RedbStore::open(&other, Sharing::Exclusive)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a Drover progress store"), "{err}");
    }

    #[test]
    fn processes_share_the_embedded_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("progress.redb");
        // Two handles (as two processes would have) write in turn and see each other.
        let a = RedbStore::open(&path, Sharing::Processes).unwrap();
        let b = RedbStore::open(&path, Sharing::Processes).unwrap();
        let out = apply(&a, &[claim("ns", "k", "a")], 0, 16).unwrap();
        assert!(matches!(out[0], Ok(Outcome::Claimed { .. })));
        let out = apply(&b, &[claim("ns", "k", "b")], 1, 16).unwrap();
        assert!(
            matches!(&out[0], Ok(Outcome::Held { holder, .. }) if holder == "a"),
            "{out:?}"
        );
    }
}
