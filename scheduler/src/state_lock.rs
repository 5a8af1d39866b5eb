//! One scheduler per state dir: an advisory lock on `STATE/scheduler.lock`, held for the
//! process's life (the operating system drops it when the process dies, however it dies). The
//! file says who holds it (pid and address), so a second scheduler is refused naming the first.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::Path;

/// The lock file's name in the state dir.
pub const LOCK_FILE: &str = "scheduler.lock";

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct StateLock {
    file: File,
}

impl StateLock {
    /// Takes the lock of state dir `dir` (made if missing), or says who holds it.
    pub fn acquire(dir: &Path) -> Result<StateLock, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let path = dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        if !try_lock(&file) {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(format!(
                "another scheduler holds it ({}); stop it first, or give this one another --state-dir",
                if holder.is_empty() { "its pid and address are not written yet" } else { holder }
            ));
        }
        let _ = file.set_len(0);
        let _ = write!(file, "pid {}", std::process::id());
        let _ = file.flush();
        Ok(StateLock { file })
    }

    /// Records the address the holder listens at, for a second scheduler's message.
    pub fn note_address(&mut self, address: &str) {
        let _ = self.file.set_len(0);
        let _ = self.file.rewind();
        let _ = write!(
            self.file,
            "pid {}, listening at {address}",
            std::process::id()
        );
        let _ = self.file.flush();
    }
}

#[cfg(unix)]
fn try_lock(file: &File) -> bool {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a file descriptor we own; it only sets the lock.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

#[cfg(not(unix))]
fn try_lock(_: &File) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_naming_the_first_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = StateLock::acquire(dir.path()).unwrap();
        first.note_address("127.0.0.1:7000");
        let err = StateLock::acquire(dir.path()).unwrap_err();
        assert!(
            err.contains(&format!(
                "pid {}, listening at 127.0.0.1:7000",
                std::process::id()
            )),
            "{err}"
        );
        drop(first);
        StateLock::acquire(dir.path()).unwrap();
    }
}
