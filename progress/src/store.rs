//! Where records live: a [`Store`] runs a transaction of reads and writes atomically, and
//! durably when it returns. [`MemStore`] keeps them in memory (tests); [`crate::RedbStore`] in
//! one redb file, shared safely by several processes.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::record::Record;

/// What can go wrong with a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store file cannot be opened or is not a Drover progress store.
    #[error("progress store {path}: {error}")]
    Open {
        /// The file.
        path: String,
        /// What is wrong.
        error: String,
    },
    /// Reading or writing failed (disk full, read-only, I/O error): nothing of the
    /// transaction was kept.
    #[error("progress store {path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        error: String,
    },
    /// A record could not be decoded: the file is corrupt.
    #[error("progress store {path}: the record of {key:?} in namespace {namespace:?} is corrupt: {error}")]
    Corrupt {
        /// The file.
        path: String,
        /// The namespace.
        namespace: String,
        /// The key.
        key: String,
        /// The decoder's message.
        error: String,
    },
    /// A namespace, key or output was refused.
    #[error("{0}")]
    Invalid(String),
}

/// Reads and writes within one transaction.
pub trait Txn {
    /// The record of `key` in `ns`.
    fn get(&mut self, ns: &str, key: &str) -> Result<Option<Record>, StoreError>;
    /// Sets the record of `key` in `ns`.
    fn put(&mut self, ns: &str, key: &str, record: &Record) -> Result<(), StoreError>;
    /// Removes the record of `key` in `ns`; whether there was one.
    fn delete(&mut self, ns: &str, key: &str) -> Result<bool, StoreError>;
    /// Keys of `ns` (sorted), for a reset of the whole namespace.
    fn keys(&mut self, ns: &str) -> Result<Vec<String>, StoreError>;
    /// The next fence number (each call takes one; they only grow, across restarts and
    /// resets).
    fn take_fence(&mut self) -> Result<u64, StoreError>;
}

/// A place records live.
pub trait Store: Send + Sync {
    /// Runs `f` in one write transaction: all of it is kept, durably when this returns, or
    /// (on an error from `f` or from the store) none of it.
    fn transact(
        &self,
        f: &mut dyn FnMut(&mut dyn Txn) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
    /// Records of `ns` whose key starts with `prefix` and comes after `after`, in key order,
    /// at most `limit`.
    fn scan(
        &self,
        ns: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Record)>, StoreError>;
    /// The namespaces that have records, sorted.
    fn namespaces(&self) -> Result<Vec<String>, StoreError>;
}

/// Records in memory, for tests and for the simulation.
#[derive(Debug, Default)]
pub struct MemStore {
    inner: Mutex<MemInner>,
}

#[derive(Debug, Default, Clone)]
struct MemInner {
    records: BTreeMap<(String, String), Record>,
    next_fence: u64,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore::default()
    }
}

struct MemTxn<'a>(&'a mut MemInner);

impl Txn for MemTxn<'_> {
    fn get(&mut self, ns: &str, key: &str) -> Result<Option<Record>, StoreError> {
        Ok(self
            .0
            .records
            .get(&(ns.to_owned(), key.to_owned()))
            .cloned())
    }
    fn put(&mut self, ns: &str, key: &str, record: &Record) -> Result<(), StoreError> {
        self.0
            .records
            .insert((ns.to_owned(), key.to_owned()), record.clone());
        Ok(())
    }
    fn delete(&mut self, ns: &str, key: &str) -> Result<bool, StoreError> {
        Ok(self
            .0
            .records
            .remove(&(ns.to_owned(), key.to_owned()))
            .is_some())
    }
    fn keys(&mut self, ns: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .0
            .records
            .keys()
            .filter(|(n, _)| n == ns)
            .map(|(_, k)| k.clone())
            .collect())
    }
    fn take_fence(&mut self) -> Result<u64, StoreError> {
        self.0.next_fence += 1;
        Ok(self.0.next_fence)
    }
}

impl Store for MemStore {
    fn transact(
        &self,
        f: &mut dyn FnMut(&mut dyn Txn) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // All or nothing: work on a copy.
        let mut copy = inner.clone();
        f(&mut MemTxn(&mut copy))?;
        *inner = copy;
        Ok(())
    }

    fn scan(
        &self,
        ns: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Record)>, StoreError> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Ok(inner
            .records
            .range((ns.to_owned(), prefix.to_owned())..)
            .take_while(|((n, k), _)| n == ns && k.starts_with(prefix))
            .filter(|((_, k), _)| after.is_none_or(|a| k.as_str() > a))
            .take(limit)
            .map(|((_, k), r)| (k.clone(), r.clone()))
            .collect())
    }

    fn namespaces(&self) -> Result<Vec<String>, StoreError> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<String> = inner.records.keys().map(|(n, _)| n.clone()).collect();
        v.dedup();
        Ok(v)
    }
}
