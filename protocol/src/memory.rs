//! Giving memory back to the operating system. The allocator keeps freed memory for reuse;
//! after a burst (clients' graphs forgotten, results freed) a long-lived process would keep
//! its peak resident size. A [`Trimmer`] returns free heap pages soon after it is told that
//! much was freed, at most once per interval, on a task of its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Trims the heap after [`Trimmer::freed`], at most once per interval. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Trimmer {
    wanted: Arc<AtomicBool>,
}

impl Trimmer {
    /// Starts the trimming task (on the current tokio runtime), looking every `every`.
    pub fn start(every: Duration) -> Trimmer {
        let wanted = Arc::new(AtomicBool::new(false));
        let flag = Arc::downgrade(&wanted);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(flag) = flag.upgrade() else {
                    return; // every handle is gone
                };
                if flag.swap(false, Ordering::Relaxed) {
                    let _ = tokio::task::spawn_blocking(trim).await;
                }
            }
        });
        Trimmer { wanted }
    }

    /// Notes that much memory was freed: the heap is trimmed at the next look.
    pub fn freed(&self) {
        self.wanted.store(true, Ordering::Relaxed);
    }
}

/// Sets the allocator up for a long-lived process (glibc): blocks of 128 KiB and more come
/// straight from the system and go back to it when freed. glibc's default raises that
/// threshold after each such free, so a burst of graph texts and frames then stays in the heap
/// for good, fragmented; fixed, a scheduler returns to about its idle size after a burst.
/// Call first in `main`.
pub fn tune_for_long_life() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a parameter of the allocator.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Returns free heap memory to the operating system now (glibc's `malloc_trim`; elsewhere
/// nothing).
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}
