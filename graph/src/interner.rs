//! String interning: each distinct string is stored once and named by a dense `u32`.
//!
//! All strings live in one buffer (their ends in a `Vec`), and the index is an open-addressing
//! table of 8-byte slots, each an id with 32 bits of its string's hash (xxh3), probed linearly
//! and kept at most three quarters full. A lookup reads one slot and, only when the hash bits
//! match, the string itself: about one cache miss for a new string and three for a known one,
//! where a table of bare ids compared the string at every tag match. Graphs of millions of tasks
//! intern every key once; [`Interner::prefetch`] lets a reader ask for a slot's cache line ahead
//! of the lookup.

use crate::prefetch::prefetch;

/// Maps strings to dense ids in order of first appearance, and back.
#[derive(Clone, Default)]
pub(crate) struct Interner {
    /// Every string, one after the other.
    text: String,
    /// Where string `i` ends in `text`.
    ends: Vec<usize>,
    /// The index: [`EMPTY`], or a string's id in the low 32 bits and the high 32 bits of its
    /// hash in the high ones, at the position of the hash's low bits (or the next free one).
    /// A power of two long (or empty).
    slots: Vec<u64>,
    /// The strings interned or found most recently, by a few bits of their hash (empty
    /// until the interner holds [`RECENT_FROM`] strings): graphs mostly name tasks defined
    /// shortly before, and these are found here without a probe of the large table.
    recent: Vec<(u64, u32)>,
}

/// An unused slot (no id is `u32::MAX`: ids stop below it).
const EMPTY: u64 = u64::MAX;
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

/// The hash the index uses.
pub(crate) fn hash(s: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(s.as_bytes())
}

/// String `id` of `text` and `ends`.
fn slice<'a>(text: &'a str, ends: &[usize], id: u32) -> &'a str {
    let i = id as usize;
    let start = if i == 0 { 0 } else { ends[i - 1] };
    &text[start..ends[i]]
}

/// A table of `n` slots for about `strings` strings: a power of two, at most 3/4 full.
fn slots_for(strings: usize) -> usize {
    (strings.saturating_mul(4) / 3 + 1)
        .next_power_of_two()
        .max(16)
}

impl Interner {
    /// An interner with room for `n` strings.
    pub fn with_capacity(n: usize) -> Interner {
        Interner {
            text: String::with_capacity(n.saturating_mul(8)),
            ends: Vec::with_capacity(n),
            slots: vec![EMPTY; slots_for(n)],
            recent: Vec::new(),
        }
    }

    /// The slot holding `s` (hash `h`), or the free slot where it would go.
    fn probe(&self, s: &str, h: u64) -> (usize, Option<u32>) {
        let mask = self.slots.len() - 1;
        let tag = h >> 32;
        let mut i = h as usize & mask;
        loop {
            let e = self.slots[i];
            if e == EMPTY {
                return (i, None);
            }
            if e >> 32 == tag && slice(&self.text, &self.ends, e as u32) == s {
                return (i, Some(e as u32));
            }
            i = (i + 1) & mask;
        }
    }

    /// Doubles the table (or makes the first one), placing every string again.
    fn grow(&mut self) {
        let n = (self.slots.len() * 2).max(16);
        let mut slots = vec![EMPTY; n];
        let mask = n - 1;
        for id in 0..self.ends.len() as u32 {
            let h = hash(slice(&self.text, &self.ends, id));
            let mut i = h as usize & mask;
            while slots[i] != EMPTY {
                i = (i + 1) & mask;
            }
            slots[i] = (h >> 32) << 32 | u64::from(id);
        }
        self.slots = slots;
    }

    /// Asks the processor for the cache line of the slot where a lookup of `s` starts, and
    /// returns the hash for [`Interner::intern_hashed`]. A hint: without it a lookup still
    /// works, only waits for memory.
    #[inline]
    pub fn prefetch(&self, s: &str) -> u64 {
        let h = hash(s);
        if let Some(slot) = self
            .slots
            .get(h as usize & self.slots.len().wrapping_sub(1))
        {
            prefetch(slot);
        }
        h
    }

    /// After [`Interner::prefetch`] gave `h`: asks for the memory of the string that the first
    /// slot probed names, if its hash bits match (`text` false: its end in `ends`; true: its
    /// text, once that end is in cache). A hint, like `prefetch`.
    #[inline]
    pub fn prefetch_string(&self, h: u64, text: bool) {
        let Some(&e) = self
            .slots
            .get(h as usize & self.slots.len().wrapping_sub(1))
        else {
            return;
        };
        if e == EMPTY || e >> 32 != h >> 32 {
            return;
        }
        self.prefetch_name(e as u32, text);
    }

    /// Asks for the memory of string `id` (`text` false: where it starts and ends; true: its
    /// text, once those are in cache). A hint, like [`Interner::prefetch`].
    #[inline]
    pub fn prefetch_name(&self, id: u32, text: bool) {
        let i = id as usize;
        let before = i.checked_sub(1).and_then(|b| self.ends.get(b));
        if text {
            let start = before.copied().unwrap_or(0);
            if let Some(at) = self.text.as_bytes().get(start) {
                prefetch(at);
            }
        } else if let Some(end) = before.or(self.ends.get(i)) {
            prefetch(end);
        }
    }

    /// The id of `s`, adding it if new. The flag says whether it was new.
    pub fn intern(&mut self, s: &str) -> (u32, bool) {
        self.intern_hashed(s, hash(s))
    }

    /// [`Interner::intern`] of `s` whose hash is `h` (from [`Interner::prefetch`]).
    pub fn intern_hashed(&mut self, s: &str, h: u64) -> (u32, bool) {
        // A few middle bits of the hash pick the cache slot (it compares the whole hash, so
        // sharing bits with the table's position costs nothing).
        let r = (h >> 20) as usize & (RECENT - 1);
        if let Some(&(rh, id)) = self.recent.get(r) {
            if rh == h && slice(&self.text, &self.ends, id) == s {
                return (id, false);
            }
        }
        if self.slots.is_empty() || (self.ends.len() + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let (slot, found) = self.probe(s, h);
        let (id, new) = match found {
            Some(id) => (id, false),
            None => {
                let id = u32::try_from(self.ends.len())
                    .ok()
                    .filter(|&id| id != u32::MAX)
                    .expect("fewer than 2^32 - 1 interned strings");
                self.text.push_str(s);
                self.ends.push(self.text.len());
                self.slots[slot] = (h >> 32) << 32 | u64::from(id);
                if self.ends.len() == RECENT_FROM {
                    self.recent.resize(RECENT, (0, u32::MAX));
                }
                (id, true)
            }
        };
        if let Some(slot) = self.recent.get_mut(r) {
            *slot = (h, id);
        }
        (id, new)
    }

    /// The id of `s`, if interned.
    pub fn get(&self, s: &str) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        self.probe(s, hash(s)).1
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

    #[test]
    fn prefetched_lookups_find_the_same_ids_through_growth_and_the_recent_cache() {
        let mut plain = Interner::default();
        let mut hinted = Interner::default();
        assert_eq!(plain.get("x"), None);
        // Hints on an empty interner are harmless.
        let h = hinted.prefetch("x");
        hinted.prefetch_string(h, false);
        hinted.prefetch_string(h, true);
        // Past the recent cache's threshold, with repeats near and far.
        for n in 0..(RECENT_FROM + 5_000) {
            for s in [
                format!("k{n}"),
                format!("k{}", n / 2),
                format!("k{}", n % 97),
            ] {
                let h = hinted.prefetch(&s);
                hinted.prefetch_string(h, false);
                hinted.prefetch_string(h, true);
                assert_eq!(hinted.intern_hashed(&s, h), plain.intern(&s), "{s}");
            }
        }
        assert_eq!(hinted.len(), RECENT_FROM + 5_000);
        for n in (0..hinted.len()).step_by(997) {
            let s = format!("k{n}");
            assert_eq!(hinted.get(&s), Some(n as u32));
            assert_eq!(hinted.name(n as u32), s);
        }
        assert!(
            hinted.slots.len() * 3 >= hinted.len() * 4,
            "at most 3/4 full"
        );
    }
}
