//! Records in one redb file (`STATE/progress.redb`, or `.drover/progress.redb` for the embedded
//! store). A transaction is durable when its commit returns (redb's immediate durability: the
//! file is synced). Several processes may share the file ([`Sharing::Processes`]): redb then
//! serialises their write transactions, each reading what the others committed.
//!
//! Tables: `records` ((namespace, key) → postcard [`Record`]), `namespaces` (namespace → number
//! of records), `meta` (`format`, `next_fence`). A file without the `meta` table's format mark
//! is refused as not a Drover progress store, and a record that does not decode is reported
//! corrupt, naming the file, never silently dropped.

use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard};

use redb::{
    Builder, ConcurrencyMode, Database, ReadableDatabase, ReadableTable, Table, TableDefinition,
};

use crate::record::Record;
use crate::store::{Store, StoreError, Txn};

const RECORDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("drover.records");
const NAMESPACES: TableDefinition<&str, u64> = TableDefinition::new("drover.namespaces");
const META: TableDefinition<&str, u64> = TableDefinition::new("drover.meta");
/// The `meta` entry marking a Drover progress store, and its layout's version.
const FORMAT_KEY: &str = "format";
const FORMAT: u64 = 1;
const FENCE_KEY: &str = "next_fence";

/// Who may have the file open at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// This process alone (the scheduler's store); another one opening it is refused.
    Exclusive,
    /// Any number of processes of this machine, each writing in turn (the embedded store).
    Processes,
}

/// A progress store in a redb file.
pub struct RedbStore {
    /// The open file; closed after a failed write and opened again at the next use (redb
    /// refuses every transaction after an I/O error until then), so a disk that filled up
    /// works again once it has room.
    db: RwLock<Option<Database>>,
    sharing: Sharing,
    path: PathBuf,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish()
    }
}

impl RedbStore {
    /// Opens the store at `path`, making it (and its directory) if missing.
    pub fn open(path: &Path, sharing: Sharing) -> Result<RedbStore, StoreError> {
        let shown = path.display().to_string();
        let open_err = |e: &dyn std::fmt::Display| StoreError::Open {
            path: shown.clone(),
            error: e.to_string(),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_err(&e))?;
        }
        let db = RedbStore::open_file(path, sharing).map_err(|e| open_err(&e))?;
        let store = RedbStore {
            db: RwLock::new(Some(db)),
            sharing,
            path: path.to_owned(),
        };
        store.check_format()?;
        Ok(store)
    }

    fn open_file(path: &Path, sharing: Sharing) -> Result<Database, String> {
        let mut builder = Builder::new();
        builder.set_concurrency_mode(match sharing {
            Sharing::Exclusive => ConcurrencyMode::ExclusiveWriter,
            Sharing::Processes => ConcurrencyMode::MultiWriter,
        });
        builder.create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                "it is open in another process (another scheduler on this state dir?)".to_owned()
            }
            other => format!("not a usable store file: {other}"),
        })
    }

    /// The open database, opening it again first if a failed write closed it.
    fn db(&self) -> Result<Open<'_>, StoreError> {
        {
            let db = self.db.read().unwrap_or_else(|p| p.into_inner());
            if db.is_some() {
                return Ok(Open(db));
            }
        }
        {
            let mut db = self.db.write().unwrap_or_else(|p| p.into_inner());
            if db.is_none() {
                *db = Some(RedbStore::open_file(&self.path, self.sharing).map_err(|e| self.io(e))?);
            }
        }
        let db = self.db.read().unwrap_or_else(|p| p.into_inner());
        match *db {
            Some(_) => Ok(Open(db)),
            None => Err(self.io("the store was closed meanwhile")),
        }
    }

    /// After a failed write: closes the file if redb refuses every transaction until it is
    /// opened again (what was committed before is intact; the failed transaction left
    /// nothing); the next use opens it.
    fn recover(&self) {
        let poisoned = self.db().is_ok_and(|db| {
            matches!(
                db.begin_write(),
                Err(redb::TransactionError::Storage(
                    redb::StorageError::PreviousIo
                ))
            )
        });
        if poisoned {
            // Closed first: an exclusive file cannot be open twice.
            self.db.write().unwrap_or_else(|p| p.into_inner()).take();
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io {
            path: self.path.display().to_string(),
            error: e.to_string(),
        }
    }

    /// Marks a fresh file (one with no table yet) as a Drover store; refuses a file that is
    /// not one. Decided inside a write transaction, so processes opening a new file at once
    /// agree: the first marks it, the others find it marked.
    fn check_format(&self) -> Result<(), StoreError> {
        let foreign = |why: String| StoreError::Open {
            path: self.path.display().to_string(),
            error: why,
        };
        let db = self.db()?;
        let txn = db.begin_write().map_err(|e| self.io(e))?;
        let fresh = txn.list_tables().map_err(|e| self.io(e))?.next().is_none();
        {
            let mut meta = txn.open_table(META).map_err(|e| foreign(e.to_string()))?;
            let format = meta
                .get(FORMAT_KEY)
                .map_err(|e| self.io(e))?
                .map(|v| v.value());
            match format {
                Some(FORMAT) => {}
                Some(other) => {
                    return Err(foreign(format!(
                        "its format {other} is not the {FORMAT} this version of Drover reads"
                    )))
                }
                None if fresh => {
                    meta.insert(FORMAT_KEY, FORMAT).map_err(|e| self.io(e))?;
                    meta.insert(FENCE_KEY, 0).map_err(|e| self.io(e))?;
                }
                None => {
                    return Err(foreign(
                        "it is a redb file but not a Drover progress store".to_owned(),
                    ))
                }
            }
            txn.open_table(RECORDS)
                .map_err(|e| foreign(e.to_string()))?;
            txn.open_table(NAMESPACES)
                .map_err(|e| foreign(e.to_string()))?;
        }
        txn.commit().map_err(|e| self.io(e))
    }

    fn decode(&self, ns: &str, key: &str, bytes: &[u8]) -> Result<Record, StoreError> {
        postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt {
            path: self.path.display().to_string(),
            namespace: ns.to_owned(),
            key: key.to_owned(),
            error: e.to_string(),
        })
    }
}

/// The open database, held for a transaction or a read.
struct Open<'a>(RwLockReadGuard<'a, Option<Database>>);

impl std::ops::Deref for Open<'_> {
    type Target = Database;

    fn deref(&self) -> &Database {
        self.0.as_ref().expect("checked open when made")
    }
}

struct RedbTxn<'s, 't> {
    store: &'s RedbStore,
    records: Table<'t, (&'static str, &'static str), &'static [u8]>,
    namespaces: Table<'t, &'static str, u64>,
    meta: Table<'t, &'static str, u64>,
}

impl Txn for RedbTxn<'_, '_> {
    fn get(&mut self, ns: &str, key: &str) -> Result<Option<Record>, StoreError> {
        let got = self.records.get((ns, key)).map_err(|e| self.store.io(e))?;
        got.map(|v| self.store.decode(ns, key, v.value()))
            .transpose()
    }

    fn put(&mut self, ns: &str, key: &str, record: &Record) -> Result<(), StoreError> {
        let bytes = postcard::to_stdvec(record).map_err(|e| self.store.io(e))?;
        let old = self
            .records
            .insert((ns, key), bytes.as_slice())
            .map_err(|e| self.store.io(e))?;
        if old.is_none() {
            drop(old);
            let n = self
                .namespaces
                .get(ns)
                .map_err(|e| self.store.io(e))?
                .map_or(0, |v| v.value());
            self.namespaces
                .insert(ns, n + 1)
                .map_err(|e| self.store.io(e))?;
        }
        Ok(())
    }

    fn delete(&mut self, ns: &str, key: &str) -> Result<bool, StoreError> {
        let old = self
            .records
            .remove((ns, key))
            .map_err(|e| self.store.io(e))?;
        let existed = old.is_some();
        drop(old);
        if existed {
            let n = self
                .namespaces
                .get(ns)
                .map_err(|e| self.store.io(e))?
                .map_or(0, |v| v.value());
            if n <= 1 {
                self.namespaces.remove(ns).map_err(|e| self.store.io(e))?;
            } else {
                self.namespaces
                    .insert(ns, n - 1)
                    .map_err(|e| self.store.io(e))?;
            }
        }
        Ok(existed)
    }

    fn keys(&mut self, ns: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for entry in self
            .records
            .range((ns, "")..)
            .map_err(|e| self.store.io(e))?
        {
            let (k, _) = entry.map_err(|e| self.store.io(e))?;
            let (n, key) = k.value();
            if n != ns {
                break;
            }
            out.push(key.to_owned());
        }
        Ok(out)
    }

    fn take_fence(&mut self) -> Result<u64, StoreError> {
        let n = self
            .meta
            .get(FENCE_KEY)
            .map_err(|e| self.store.io(e))?
            .map_or(0, |v| v.value())
            + 1;
        self.meta
            .insert(FENCE_KEY, n)
            .map_err(|e| self.store.io(e))?;
        Ok(n)
    }
}

impl Store for RedbStore {
    fn transact(
        &self,
        f: &mut dyn FnMut(&mut dyn Txn) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let result = (|| {
            let db = self.db()?;
            let txn = db.begin_write().map_err(|e| self.io(e))?;
            {
                let mut t = RedbTxn {
                    store: self,
                    records: txn.open_table(RECORDS).map_err(|e| self.io(e))?,
                    namespaces: txn.open_table(NAMESPACES).map_err(|e| self.io(e))?,
                    meta: txn.open_table(META).map_err(|e| self.io(e))?,
                };
                // An error drops the transaction: nothing is kept.
                f(&mut t)?;
            }
            txn.commit().map_err(|e| self.io(e))
        })();
        if matches!(result, Err(StoreError::Io { .. })) {
            self.recover();
        }
        result
    }

    fn scan(
        &self,
        ns: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Record)>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(|e| self.io(e))?;
        let table = txn.open_table(RECORDS).map_err(|e| self.io(e))?;
        let start = match after {
            Some(a) if a >= prefix => a,
            _ => prefix,
        };
        let mut out = Vec::new();
        for entry in table.range((ns, start)..).map_err(|e| self.io(e))? {
            let (k, v) = entry.map_err(|e| self.io(e))?;
            let (n, key) = k.value();
            if n != ns || !key.starts_with(prefix) || out.len() >= limit {
                break;
            }
            if after.is_some_and(|a| key <= a) {
                continue;
            }
            out.push((key.to_owned(), self.decode(ns, key, v.value())?));
        }
        Ok(out)
    }

    fn namespaces(&self) -> Result<Vec<String>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(|e| self.io(e))?;
        let table = txn.open_table(NAMESPACES).map_err(|e| self.io(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.io(e))? {
            let (k, _) = entry.map_err(|e| self.io(e))?;
            out.push(k.value().to_owned());
        }
        Ok(out)
    }
}
