//! Once-cells on a worker: one slot per cell key, loaded at most once per process however many
//! tasks (or eager requests) ask at once. The first asker runs the loader; the others wait for
//! that single load. A failed load is not cached: those waiting fail with its message and the
//! next need loads again.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use drover_graph::decode::Object;

use crate::registry::{LoaderFn, TaskContext};

enum SlotState {
    Empty,
    Loading,
    Ready(Object),
    Failed(String),
}

/// How a [`CellSlot::get`] got its object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Got {
    /// This call ran the loader, taking this long (microseconds).
    Loaded(u64),
    /// It was already loaded.
    Present,
    /// Another caller's load, waited for.
    Waited,
}

/// One once-cell on this worker.
pub(crate) struct CellSlot {
    pub key: String,
    pub function: String,
    loader: Option<Arc<LoaderFn>>,
    params: Option<String>,
    retries: u32,
    state: Mutex<SlotState>,
    changed: Condvar,
}

/// A failed load: the message, and whether this call ran it (and how long it took).
pub(crate) type LoadError = (String, Option<u64>);

impl CellSlot {
    /// The object, loading it if nobody has (see the module docs); `ctx` makes the loader's
    /// context, only when a load runs.
    #[cfg(test)]
    pub fn get(&self, ctx: impl FnOnce() -> TaskContext) -> Result<(Object, Got), LoadError> {
        self.get_reporting(ctx, |_, _| {})
    }

    /// [`CellSlot::get`], calling `report(duration_us, error)` when this call ran a load,
    /// before anyone else sees its outcome: a load is reported before any task that used it.
    pub fn get_reporting(
        &self,
        ctx: impl FnOnce() -> TaskContext,
        report: impl FnOnce(u64, Option<&str>),
    ) -> Result<(Object, Got), LoadError> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut waited = false;
        loop {
            match &*s {
                SlotState::Ready(o) => {
                    let got = if waited { Got::Waited } else { Got::Present };
                    return Ok((o.clone(), got));
                }
                SlotState::Loading => {
                    waited = true;
                    s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
                }
                SlotState::Failed(e) if waited => return Err((e.clone(), None)),
                SlotState::Empty | SlotState::Failed(_) => break,
            }
        }
        *s = SlotState::Loading;
        drop(s);
        let ctx = ctx();
        let start = Instant::now();
        let mut result = Err(String::new());
        for _ in 0..=self.retries {
            result = self.load_once(&ctx);
            if result.is_ok() {
                break;
            }
        }
        let took = start.elapsed().as_micros() as u64;
        report(took, result.as_ref().err().map(String::as_str));
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *s = match &result {
            Ok(o) => SlotState::Ready(o.clone()),
            Err(e) => SlotState::Failed(e.clone()),
        };
        drop(s);
        self.changed.notify_all();
        match result {
            Ok(o) => Ok((o, Got::Loaded(took))),
            Err(e) => Err((e, Some(took))),
        }
    }

    fn load_once(&self, ctx: &TaskContext) -> Result<Object, String> {
        let Some(loader) = &self.loader else {
            return Err(format!(
                "worker {:?} has no loader {:?}",
                ctx.worker_name, self.function
            ));
        };
        match catch_unwind(AssertUnwindSafe(|| loader(ctx, self.params.as_deref()))) {
            Ok(r) => r,
            Err(p) => Err(format!(
                "loader panicked: {}",
                crate::runtime::panic_message(p)
            )),
        }
    }

    /// Drops the object (its `Drop` runs once no running task holds it).
    fn clear(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*s, SlotState::Ready(_) | SlotState::Failed(_)) {
            *s = SlotState::Empty;
        }
    }

    /// True when its object is loaded.
    pub fn is_loaded(&self) -> bool {
        matches!(
            *self.state.lock().unwrap_or_else(|p| p.into_inner()),
            SlotState::Ready(_)
        )
    }

    /// Bytes that came over the wire for it: a shared object's value.
    pub fn wire_bytes(&self) -> u64 {
        if self.function == drover_graph::decode::SHARED_LOADER {
            self.params.as_ref().map_or(0, |p| p.len() as u64)
        } else {
            0
        }
    }
}

/// The worker's once-cells by key.
#[derive(Default)]
pub(crate) struct CellTable {
    slots: Mutex<HashMap<String, Arc<CellSlot>>>,
}

impl CellTable {
    /// The slot for `key`, made from the spec on first sight. A known key keeps its slot (and
    /// its object): the cell is the same whichever scheduler session names it.
    pub fn slot(
        &self,
        key: &str,
        function: &str,
        params: Option<&str>,
        retries: u32,
        loader: Option<Arc<LoaderFn>>,
    ) -> Arc<CellSlot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .entry(key.to_owned())
            .or_insert_with(|| {
                Arc::new(CellSlot {
                    key: key.to_owned(),
                    function: function.to_owned(),
                    loader,
                    params: params.map(str::to_owned),
                    retries,
                    state: Mutex::new(SlotState::Empty),
                    changed: Condvar::new(),
                })
            })
            .clone()
    }

    /// Forgets `key` and drops its object.
    pub fn drop_key(&self, key: &str) -> bool {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        if let Some(slot) = &slot {
            slot.clear();
        }
        slot.is_some()
    }

    /// Keys whose object is loaded, sorted.
    pub fn loaded_keys(&self) -> Vec<String> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let mut keys: Vec<String> = slots
            .iter()
            .filter(|(_, s)| s.is_loaded())
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn table_with(loader: Arc<LoaderFn>, retries: u32) -> (CellTable, Arc<CellSlot>) {
        let t = CellTable::default();
        let s = t.slot("m", "load", None, retries, Some(loader));
        (t, s)
    }

    #[test]
    fn concurrent_first_uses_share_one_load() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let loader: Arc<LoaderFn> = Arc::new(move |_, _| {
            c.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(50));
            Ok(Arc::new(42u32) as Object)
        });
        let (_t, slot) = table_with(loader, 0);
        let ctx = TaskContext::standalone("m");
        let results: Vec<Got> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| slot.get(|| ctx.clone()).unwrap().1))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            results
                .iter()
                .filter(|g| matches!(g, Got::Loaded(_)))
                .count(),
            1
        );
        assert_eq!(slot.get(|| ctx.clone()).unwrap().1, Got::Present);
    }

    #[test]
    fn a_failed_load_is_retried_by_the_next_need_and_retries_apply() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let loader: Arc<LoaderFn> = Arc::new(move |_, _| {
            if c.fetch_add(1, Ordering::SeqCst) % 3 < 2 {
                Err("flaky disk".to_owned())
            } else {
                Ok(Arc::new(()) as Object)
            }
        });
        let ctx = TaskContext::standalone("m");
        // No retries: the first two needs fail, the third loads.
        let (_t, slot) = table_with(loader.clone(), 0);
        assert_eq!(slot.get(|| ctx.clone()).unwrap_err().0, "flaky disk");
        assert!(slot.get(|| ctx.clone()).is_err());
        assert!(matches!(
            slot.get(|| ctx.clone()).unwrap().1,
            Got::Loaded(_)
        ));
        // Two retries: one need is enough.
        let (_t, slot) = table_with(loader, 2);
        assert!(matches!(
            slot.get(|| ctx.clone()).unwrap().1,
            Got::Loaded(_)
        ));
        assert_eq!(calls.load(Ordering::SeqCst), 6);
    }

    #[test]
    fn panics_fail_the_load_and_dropping_runs_drop() {
        struct Noisy(Arc<AtomicU32>);
        impl Drop for Noisy {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let ctx = TaskContext::standalone("m");
        let panicky: Arc<LoaderFn> = Arc::new(|_, _| panic!("no model file"));
        let (_t, slot) = table_with(panicky, 0);
        assert!(slot
            .get(|| ctx.clone())
            .unwrap_err()
            .0
            .contains("no model file"));
        let drops = Arc::new(AtomicU32::new(0));
        let d = drops.clone();
        let loader: Arc<LoaderFn> = Arc::new(move |_, _| Ok(Arc::new(Noisy(d.clone())) as Object));
        let t = CellTable::default();
        let slot = t.slot("n", "load", None, 0, Some(loader));
        let (obj, _) = slot.get(|| ctx.clone()).unwrap();
        assert_eq!(t.loaded_keys(), vec!["n".to_owned()]);
        assert!(t.drop_key("n"));
        assert_eq!(drops.load(Ordering::SeqCst), 0, "a task still holds it");
        drop(obj);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(t.loaded_keys().is_empty());
    }
}
