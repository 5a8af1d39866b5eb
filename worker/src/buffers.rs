//! Recycled buffers for large results.
//!
//! Fresh memory is expensive: the kernel hands it over a page at a time, zeroed, on first
//! touch, and on this kind of machine that costs more than the copy itself (256 MiB: about
//! 160 ms of page faults, against about 30 ms to fill memory already touched). Ray's object
//! store avoids it by preallocating; here, a large result's buffer goes back to a small
//! process-wide pool when its last reference is dropped, and the next large output or fetched
//! result of a similar size reuses it. The pool is bounded ([`POOL_LIMIT`] bytes, or a quarter
//! of a worker's memory limit) and forgets
//! buffers idle for [`IDLE`], so memory a worker no longer needs is given back.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Buffers smaller than this are never pooled (the allocator reuses those well).
pub const POOL_MIN: usize = 1 << 20;
/// Most bytes the pool keeps by default (see [`set_limit`]).
pub const POOL_LIMIT: usize = 1 << 30;

static LIMIT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(POOL_LIMIT);

/// Keeps at most `bytes` in the pool (a worker with a memory limit gives it a quarter).
pub fn set_limit(bytes: usize) {
    LIMIT.store(bytes, std::sync::atomic::Ordering::Relaxed);
}
/// A buffer unused this long is freed.
pub const IDLE: Duration = Duration::from_secs(10);

struct Pool {
    /// Free buffers, most recently returned last.
    free: Vec<(Vec<u8>, Instant)>,
    bytes: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    free: Vec::new(),
    bytes: 0,
});

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    fn trim(&mut self, now: Instant) {
        let mut bytes = self.bytes;
        self.free.retain(|(b, since)| {
            let keep = now.duration_since(*since) < IDLE;
            if !keep {
                bytes -= b.capacity();
            }
            keep
        });
        self.bytes = bytes;
    }
}

/// An empty buffer with room for at least `n` bytes: a recycled one when one of between `n`
/// and `2n` bytes is free, else a new one. `None` when `n` bytes cannot be allocated.
pub fn take(n: usize) -> Option<Vec<u8>> {
    if let Some(mut b) = recycled(n) {
        b.clear();
        return Some(b);
    }
    let mut v = Vec::new();
    v.try_reserve_exact(n).ok()?;
    Some(v)
}

/// A buffer of exactly `n` bytes for a reader that overwrites all of them: a recycled one
/// keeps its old bytes (no pass to clear them), a new one is zeroed by the kernel as it is
/// first touched. `None` when `n` bytes cannot be allocated.
pub fn take_len(n: usize) -> Option<Vec<u8>> {
    if let Some(mut b) = recycled(n) {
        if b.len() >= n {
            b.truncate(n);
        } else {
            b.resize(n, 0);
        }
        return Some(b);
    }
    zeroed(n)
}

/// The smallest free buffer of between `n` and `2n` bytes, as it was returned (its length
/// that of the result it held).
fn recycled(n: usize) -> Option<Vec<u8>> {
    if n < POOL_MIN {
        return None;
    }
    let mut p = pool();
    let i = p
        .free
        .iter()
        .enumerate()
        .filter(|(_, (b, _))| b.capacity() >= n && b.capacity() <= n.saturating_mul(2))
        .min_by_key(|(_, (b, _))| b.capacity())
        .map(|(i, _)| i)?;
    let (b, _) = p.free.swap_remove(i);
    p.bytes -= b.capacity();
    Some(b)
}

/// `n` zero bytes without writing them: the allocator's zeroed memory (fresh pages, zero
/// until touched), or `None`.
fn zeroed(n: usize) -> Option<Vec<u8>> {
    if n == 0 {
        return Some(Vec::new());
    }
    let layout = std::alloc::Layout::array::<u8>(n).ok()?;
    // SAFETY: the layout has a non-zero size; the pointer, if not null, is an allocation of
    // `n` initialised (zero) bytes with the global allocator and `u8`'s alignment, which is
    // what a `Vec<u8>` of length and capacity `n` owns.
    let v = unsafe {
        let ptr = std::alloc::alloc_zeroed(layout);
        if ptr.is_null() {
            return None;
        }
        Vec::from_raw_parts(ptr, n, n)
    };
    Some(v)
}

/// The buffer as shared bytes; a large one goes back to the pool when the last reference
/// drops.
pub fn into_bytes(v: Vec<u8>) -> Bytes {
    if v.capacity() < POOL_MIN {
        return Bytes::from(v);
    }
    Bytes::from_owner(Recycled(v))
}

/// Frees pooled buffers idle for [`IDLE`] (the worker calls this now and then).
pub fn trim() {
    pool().trim(Instant::now());
}

/// Bytes held by the pool now.
pub fn pooled_bytes() -> usize {
    pool().bytes
}

/// A buffer that returns to the pool when dropped.
struct Recycled(Vec<u8>);

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        let now = Instant::now();
        let mut p = pool();
        p.trim(now);
        if p.bytes + v.capacity() <= LIMIT.load(std::sync::atomic::Ordering::Relaxed) {
            p.bytes += v.capacity();
            p.free.push((v, now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the pool is process-wide.
    #[test]
    fn large_buffers_come_back_and_small_ones_never_go() {
        let small = into_bytes(vec![1u8; 10]);
        drop(small);
        assert_eq!(pooled_bytes(), 0);
        let mut v = take(3 * POOL_MIN).unwrap();
        v.resize(3 * POOL_MIN, 7);
        let ptr = v.as_ptr();
        let b = into_bytes(v);
        assert_eq!(b.len(), 3 * POOL_MIN);
        assert!(b.iter().all(|&x| x == 7));
        let shared = b.clone();
        drop(b);
        assert_eq!(pooled_bytes(), 0, "still referenced");
        drop(shared);
        assert_eq!(pooled_bytes(), 3 * POOL_MIN);
        // Too small for a 7 MiB ask: a new one.
        let bigger = take(7 * POOL_MIN).unwrap();
        assert_ne!(bigger.as_ptr(), ptr);
        // A 2 MiB ask reuses the 3 MiB buffer (within 2x), empty.
        let again = take(2 * POOL_MIN).unwrap();
        assert_eq!(again.as_ptr(), ptr);
        assert!(again.is_empty());
        assert_eq!(pooled_bytes(), 0);
        // A buffer of a given length for a reader: the recycled one, of that length.
        drop(into_bytes(again));
        let exact = take_len(2 * POOL_MIN + 1).unwrap();
        assert_eq!((exact.as_ptr(), exact.len()), (ptr, 2 * POOL_MIN + 1));
        let again = exact;
        // A new one is zeroed.
        let fresh = take_len(9 * POOL_MIN).unwrap();
        assert_eq!(fresh.len(), 9 * POOL_MIN);
        assert!(fresh.iter().all(|&x| x == 0));
        drop(fresh);
        // Idle buffers are freed by trim.
        drop(into_bytes(again));
        assert_eq!(pooled_bytes(), 3 * POOL_MIN);
        pool().trim(Instant::now() + IDLE);
        assert_eq!(pooled_bytes(), 0);
        drop(bigger);
    }
}
