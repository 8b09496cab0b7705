//! What the load generator asks of the operating system: enough file
//! descriptors for many connections, whether stderr is a terminal, and Ctrl-C
//! as a request to stop early.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Raise the soft limit on open files to the hard limit (Linux), so thousands
/// of connections fit. Returns the soft limit now in force, or `None` where it
/// is unknown (other systems, or the query failed).
#[cfg(target_os = "linux")]
pub fn raise_fd_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit that setrlimit only reads.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    // rlim_t is u64 on every 64-bit Linux.
    Some(limit.rlim_cur)
}

/// Raise the soft limit on open files to the hard limit (Linux); elsewhere
/// there is nothing to raise and the limit is unknown.
#[cfg(not(target_os = "linux"))]
pub fn raise_fd_limit() -> Option<u64> {
    None
}

/// Whether standard error is a terminal (always false off Linux: no progress
/// line there).
pub fn stderr_is_terminal() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: isatty only inspects the file descriptor number.
        unsafe { libc::isatty(libc::STDERR_FILENO) == 1 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// A flag set by the first Ctrl-C or SIGTERM (Linux); the second ends the
/// process at once with status 130. Both signals are blocked in the calling
/// thread and in every thread it starts afterwards, and a thread of its own
/// takes them with `sigwait`, so no other thread sees `EINTR`. Call it before
/// starting other threads, only in a program's main (it changes the mask of
/// the calling thread for good). Elsewhere the flag is never set, and Ctrl-C
/// ends the process as usual.
pub(crate) fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    #[cfg(target_os = "linux")]
    {
        use std::sync::atomic::Ordering;
        // SAFETY: `set` is a local sigset_t initialised by sigemptyset before
        // use; pthread_sigmask only reads it.
        let set = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            set
        };
        let setter = Arc::clone(&flag);
        let spawned = std::thread::Builder::new()
            .name("iocp-echo-bench-signals".to_string())
            .spawn(move || loop {
                let mut signal = 0;
                // SAFETY: `set` is a valid signal set owned by this closure and
                // `signal` a valid out-pointer.
                if unsafe { libc::sigwait(&set, &mut signal) } != 0 {
                    return;
                }
                if setter.swap(true, Ordering::SeqCst) {
                    std::process::exit(130);
                }
            });
        if spawned.is_err() {
            // Without the waiting thread the signals must not stay blocked.
            // SAFETY: as above; this only unblocks the same set.
            unsafe {
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            }
        }
    }
    flag
}
