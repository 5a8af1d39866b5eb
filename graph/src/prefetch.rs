//! Prefetch hints: asking the processor for memory a loop will read a little later, so that
//! the fetches of a batch overlap instead of each waiting its turn. Graphs of millions of tasks
//! read their tables at random (an input is any earlier task), and most of such a pass is
//! waiting for memory otherwise.

/// How many tasks ahead a pass over a graph asks for the memory it will read.
pub const AHEAD: usize = 8;

/// Asks the processor to bring the cache line of `at` closer. A hint: it never faults and
/// changes nothing but the caches (a no-op off x86-64).
#[inline]
pub fn prefetch<T>(at: &T) {
    prefetch_ptr(at as *const T);
}

/// [`prefetch`] of any address, valid or not (say, where a vector's next element will go).
#[inline]
pub fn prefetch_ptr<T>(at: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address, and changes nothing but the
    // caches.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(at.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}
