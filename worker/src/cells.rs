//! Once-cells on a worker: one slot per cell key, loaded at most once per process however many
//! tasks (or eager requests) ask at once. The first asker runs the load; the others wait for
//! that single load. A failed load is not cached: those waiting fail with its message and the
//! next need loads again.
//!
//! This module knows nothing of loaders or contexts: whoever asks passes the load itself as a
//! closure, so it sits at the bottom of the crate's modules.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use drover_graph::decode::Object;

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
    params: Option<String>,
    state: Mutex<SlotState>,
    changed: Condvar,
}

/// A failed load: the message, and whether this call ran it (and how long it took).
pub(crate) type LoadError = (String, Option<u64>);

impl CellSlot {
    /// The object, running `load` if nobody has loaded it (see the module docs).
    #[cfg(test)]
    pub fn get(
        &self,
        load: impl FnOnce() -> Result<Object, String>,
    ) -> Result<(Object, Got), LoadError> {
        self.get_reporting(load, |_, _| {})
    }

    /// [`CellSlot::get`], calling `report(duration_us, error)` when this call ran a load,
    /// before anyone else sees its outcome: a load is reported before any task that used it.
    pub fn get_reporting(
        &self,
        load: impl FnOnce() -> Result<Object, String>,
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
        let start = Instant::now();
        let result = load();
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

    /// The loader's params, as the cell spec gave them.
    pub fn params(&self) -> Option<&str> {
        self.params.as_deref()
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
    /// The slot for `key`, made from the spec on first sight. A known key with the same loader
    /// and params keeps its slot (and its object): the cell is the same whichever scheduler
    /// session names it. A key redefined with another loader or params gets a fresh slot; the
    /// old object goes once no task holds it.
    pub fn slot(&self, key: &str, function: &str, params: Option<&str>) -> Arc<CellSlot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slots.get(key) {
            if s.function == function && s.params.as_deref() == params {
                return s.clone();
            }
        }
        let slot = Arc::new(CellSlot {
            key: key.to_owned(),
            function: function.to_owned(),
            params: params.map(str::to_owned),
            state: Mutex::new(SlotState::Empty),
            changed: Condvar::new(),
        });
        if let Some(old) = slots.insert(key.to_owned(), slot.clone()) {
            old.clear();
        }
        slot
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

    #[test]
    fn concurrent_first_uses_share_one_load() {
        let calls = AtomicU32::new(0);
        let load = || {
            calls.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(50));
            Ok(Arc::new(42u32) as Object)
        };
        let t = CellTable::default();
        let slot = t.slot("m", "load", None);
        let results: Vec<Got> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| slot.get(load).unwrap().1))
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
        assert_eq!(slot.get(load).unwrap().1, Got::Present);
    }

    #[test]
    fn a_failed_load_is_not_kept_and_the_next_need_loads_again() {
        let calls = AtomicU32::new(0);
        let load = || {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err("flaky disk".to_owned())
            } else {
                Ok(Arc::new(()) as Object)
            }
        };
        let slot = CellTable::default().slot("m", "load", None);
        assert_eq!(slot.get(load).unwrap_err().0, "flaky disk");
        assert!(slot.get(load).is_err());
        assert!(matches!(slot.get(load).unwrap().1, Got::Loaded(_)));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn dropping_runs_drop_and_a_redefined_key_gets_a_fresh_slot() {
        struct Noisy(Arc<AtomicU32>);
        impl Drop for Noisy {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let drops = Arc::new(AtomicU32::new(0));
        let t = CellTable::default();
        let slot = t.slot("n", "load", None);
        let (obj, _) = slot
            .get(|| Ok(Arc::new(Noisy(drops.clone())) as Object))
            .unwrap();
        assert_eq!(t.loaded_keys(), vec!["n".to_owned()]);
        assert!(Arc::ptr_eq(&slot, &t.slot("n", "load", None)));
        assert!(t.drop_key("n"));
        assert_eq!(drops.load(Ordering::SeqCst), 0, "a task still holds it");
        drop(obj);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(t.loaded_keys().is_empty());
        // Other params under the same key: a new slot, and the old object goes.
        let a = t.slot("k", "load", Some("1"));
        a.get(|| Ok(Arc::new(Noisy(drops.clone())) as Object))
            .unwrap();
        let b = t.slot("k", "load", Some("2"));
        assert!(!Arc::ptr_eq(&a, &b));
        assert!(!b.is_loaded());
        assert_eq!(drops.load(Ordering::SeqCst), 2);
    }
}
