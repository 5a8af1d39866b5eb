//! Commands that leave nothing behind (Linux). A command task's process is started under a
//! *guard*: the worker forks the guard, the guard forks the command into a process group of its
//! own and waits. When the command exits, the guard kills what is left of its group (a
//! background job it started) and exits with the command's status. When the worker asks it to
//! stop ([`stop`], at a timeout) or the worker dies, however it dies (the guard's parent-death
//! signal), the guard kills the whole group. A command that leaves its group on purpose
//! (`setsid`) escapes; nothing short of a cgroup holds it.
//!
//! The guard is the fork of a multithreaded process: between fork and exit it calls only
//! async-signal-safe functions, and it closes every file descriptor it inherited (the command
//! has its own copies), so the pipes and the spawn's exec check see only the command.

use std::process::{Child, Command};

/// Starts `cmd` under a guard (see the module docs).
pub(crate) fn guard(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs in the forked child and calls only async-signal-safe
        // functions; the guard branch never returns (it exits), the command branch returns
        // to exec.
        unsafe {
            cmd.pre_exec(|| linux::split());
        }
    }
    #[cfg(all(unix, not(target_os = "linux")))]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    #[cfg(not(unix))]
    let _ = cmd;
}

/// Stops a guarded command and everything in its group; returns once the guard is gone.
pub(crate) fn stop(child: &mut Child) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a signal to our own child's pid (it is not reaped yet, so the pid is its).
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    #[cfg(all(unix, not(target_os = "linux")))]
    {
        // SAFETY: the command leads its own group (process_group(0)).
        unsafe {
            libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
        }
    }
    #[cfg(not(unix))]
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(target_os = "linux")]
mod linux {
    /// In the forked child: forks the command (returns `Ok` there, to exec it) and becomes its
    /// guard (never returns).
    pub(super) unsafe fn split() -> std::io::Result<()> {
        let parent = libc::getppid();
        let mut waited: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut waited);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGCHLD] {
            libc::sigaddset(&mut waited, s);
        }
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_BLOCK, &waited, &mut old);
        // The worker's death reaches the guard as SIGTERM.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::getppid() != parent {
            libc::_exit(137); // the worker is already gone
        }
        let command = libc::fork();
        if command < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if command == 0 {
            // The command: a group of its own, the signals it had, and death with its guard.
            libc::setpgid(0, 0);
            libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            return Ok(());
        }
        libc::setpgid(command, command);
        close_everything();
        guard_loop(command, &waited, &old)
    }

    /// Closes every inherited descriptor (the command holds its own copies).
    unsafe fn close_everything() {
        if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) == 0 {
            return;
        }
        let max = libc::sysconf(libc::_SC_OPEN_MAX);
        let max = if max <= 0 { 65_536 } else { max.min(1 << 20) } as libc::c_int;
        for fd in 0..max {
            libc::close(fd);
        }
    }

    /// Waits for the command's end or a stop; kills the group; exits as the command did.
    unsafe fn guard_loop(command: libc::pid_t, waited: &libc::sigset_t, old: &libc::sigset_t) -> ! {
        loop {
            let sig = libc::sigwaitinfo(waited, std::ptr::null_mut());
            let mut status: libc::c_int = 0;
            if sig == libc::SIGCHLD {
                if libc::waitpid(command, &mut status, libc::WNOHANG) != command {
                    continue;
                }
                // What the command left running in its group goes with it.
                libc::kill(-command, libc::SIGKILL);
                if libc::WIFEXITED(status) {
                    libc::_exit(libc::WEXITSTATUS(status));
                }
                if libc::WIFSIGNALED(status) {
                    die_by(libc::WTERMSIG(status), old);
                }
                libc::_exit(1);
            }
            if sig > 0 {
                // Stopped by the worker, or the worker died: the whole group goes.
                libc::kill(-command, libc::SIGKILL);
                libc::waitpid(command, &mut status, 0);
                die_by(libc::SIGKILL, old);
            }
        }
    }

    /// Ends the guard by signal `sig`, as its command ended.
    unsafe fn die_by(sig: libc::c_int, old: &libc::sigset_t) -> ! {
        libc::signal(sig, libc::SIG_DFL);
        let mut only: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut only);
        libc::sigaddset(&mut only, sig);
        libc::sigprocmask(libc::SIG_SETMASK, old, std::ptr::null_mut());
        libc::sigprocmask(libc::SIG_UNBLOCK, &only, std::ptr::null_mut());
        libc::kill(libc::getpid(), sig);
        libc::_exit(128 + sig);
    }
}
