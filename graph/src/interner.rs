//! String interning: each distinct string is stored once and named by a dense `u32`.
//!
//! All strings live in one buffer (their ends in a `Vec`), and the index is a hash table of ids
//! alone, hashed with xxh3: about 13 bytes per string besides its text, where a map of shared
//! strings took about 75, and one allocation per growth instead of one per string. Graphs of
//! millions of tasks intern every key once.

use hashbrown::HashTable;

/// Maps strings to dense ids in order of first appearance, and back.
#[derive(Clone, Default)]
pub(crate) struct Interner {
    /// Every string, one after the other.
    text: String,
    /// Where string `i` ends in `text`.
    ends: Vec<usize>,
    /// Ids, found by their string's hash.
    index: HashTable<u32>,
    /// The strings interned or found most recently, by a few bits of their hash (empty
    /// until the interner holds [`RECENT_FROM`] strings): graphs mostly name tasks defined
    /// shortly before, and these are found here without a probe of the large table.
    recent: Vec<(u64, u32)>,
}

/// Slots of the recent-strings cache (a power of two).
const RECENT: usize = 4096;
/// Interners of fewer strings keep no cache (the table itself is in cache then).
const RECENT_FROM: usize = 1 << 16;

impl std::fmt::Debug for Interner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interner")
            .field("strings", &self.ends.len())
            .finish()
    }
}

fn hash(s: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(s.as_bytes())
}

/// String `id` of `text` and `ends`.
fn slice<'a>(text: &'a str, ends: &[usize], id: u32) -> &'a str {
    let i = id as usize;
    let start = if i == 0 { 0 } else { ends[i - 1] };
    &text[start..ends[i]]
}

impl Interner {
    /// An interner with room for `n` strings.
    pub fn with_capacity(n: usize) -> Interner {
        Interner {
            text: String::with_capacity(n.saturating_mul(8)),
            ends: Vec::with_capacity(n),
            index: HashTable::with_capacity(n),
            recent: Vec::new(),
        }
    }

    /// The id of `s`, adding it if new. The flag says whether it was new.
    pub fn intern(&mut self, s: &str) -> (u32, bool) {
        let h = hash(s);
        let Interner {
            text,
            ends,
            index,
            recent,
        } = self;
        // Bits the table does not use for its position (the low ones) or its tag (the top 7).
        let r = (h >> 32) as usize & (RECENT - 1);
        if let Some(&(rh, id)) = recent.get(r) {
            if rh == h && slice(text, ends, id) == s {
                return (id, false);
            }
        }
        let found = index.find(h, |&id| slice(text, ends, id) == s).copied();
        let (id, new) = match found {
            Some(id) => (id, false),
            None => {
                let id = u32::try_from(ends.len()).expect("more than 2^32 interned strings");
                text.push_str(s);
                ends.push(text.len());
                index.insert_unique(h, id, |&id| hash(slice(text, ends, id)));
                if ends.len() == RECENT_FROM {
                    recent.resize(RECENT, (0, u32::MAX));
                }
                (id, true)
            }
        };
        if let Some(slot) = recent.get_mut(r) {
            *slot = (h, id);
        }
        (id, new)
    }

    /// The id of `s`, if interned.
    pub fn get(&self, s: &str) -> Option<u32> {
        self.index
            .find(hash(s), |&id| slice(&self.text, &self.ends, id) == s)
            .copied()
    }

    /// The string of `id`. Panics on an id this interner never gave out.
    pub fn name(&self, id: u32) -> &str {
        slice(&self.text, &self.ends, id)
    }

    /// How many strings are interned.
    pub fn len(&self) -> usize {
        self.ends.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_get_dense_ids_in_order_and_come_back() {
        let mut i = Interner::with_capacity(1);
        assert_eq!(i.intern("b"), (0, true));
        assert_eq!(i.intern(""), (1, true));
        assert_eq!(i.intern("é"), (2, true));
        assert_eq!(i.intern("b"), (0, false));
        for n in 0..10_000 {
            i.intern(&format!("k{n}"));
        }
        assert_eq!(i.len(), 10_003);
        assert_eq!((i.name(0), i.name(1), i.name(2)), ("b", "", "é"));
        assert_eq!(i.get("k9999"), Some(10_002));
        assert_eq!(i.name(10_002), "k9999");
        assert_eq!(i.get("nope"), None);
    }
}
