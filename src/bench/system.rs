//! What the load generator asks of the operating system: enough file
//! descriptors for many connections, whether stderr is a terminal, and Ctrl-C
//! as a request to stop early.

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
