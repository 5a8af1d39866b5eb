//! String interning: each distinct string is stored once and named by a dense `u32`.

use std::collections::HashMap;
use std::sync::Arc;

/// Maps strings to dense ids in order of first appearance, and back.
#[derive(Debug, Clone, Default)]
pub(crate) struct Interner {
    names: Vec<Arc<str>>,
    index: HashMap<Arc<str>, u32>,
}

impl Interner {
    /// An interner with room for `n` strings.
    pub fn with_capacity(n: usize) -> Interner {
        Interner {
            names: Vec::with_capacity(n),
            index: HashMap::with_capacity(n),
        }
    }

    /// The id of `s`, adding it if new. The flag says whether it was new.
    pub fn intern(&mut self, s: &str) -> (u32, bool) {
        if let Some(&i) = self.index.get(s) {
            return (i, false);
        }
        let id = u32::try_from(self.names.len()).expect("more than 2^32 interned strings");
        let shared: Arc<str> = Arc::from(s);
        self.names.push(shared.clone());
        self.index.insert(shared, id);
        (id, true)
    }

    /// The id of `s`, if interned.
    pub fn get(&self, s: &str) -> Option<u32> {
        self.index.get(s).copied()
    }

    /// The string of `id`. Panics on an id this interner never gave out.
    pub fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }

    /// The shared string of `id`.
    pub fn shared(&self, id: u32) -> &Arc<str> {
        &self.names[id as usize]
    }

    /// How many strings are interned.
    pub fn len(&self) -> usize {
        self.names.len()
    }
}
