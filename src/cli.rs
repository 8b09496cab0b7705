//! Helpers shared by the command-line programs (the server binary, `bench`):
//! option values, host names, and Ctrl-C/SIGTERM as a flag.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// The value of option `name`, parsed; errors name the option.
pub fn value<T>(parser: &mut lexopt::Parser, name: &str) -> Result<T, String>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let raw = parser.value().map_err(|e| format!("{}: {}", name, e))?;
    let text = raw
        .into_string()
        .map_err(|_| format!("{}: not valid UTF-8", name))?;
    text.parse()
        .map_err(|e| format!("{}: invalid value {:?}: {}", name, text, e))
}

/// `host` as an IP address, or a name resolved to its first address; the
/// error is the `host` option's message.
pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    crate::options::resolve(host, port).map_err(|e| e.to_string())
}

/// A flag set by the first Ctrl-C or SIGTERM (Linux); the second ends the
/// process at once with status 130. Both signals are blocked in the calling
/// thread and in every thread it starts afterwards, and a thread of its own
/// takes them with `sigwait`, so no other thread sees `EINTR`. Call it before
/// starting other threads, only in a program's main (it changes the mask of
/// the calling thread for good). Elsewhere the flag is never set, and Ctrl-C
/// ends the process as usual.
pub fn interrupt_flag() -> Arc<AtomicBool> {
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
            .name("iocp-echo-signals".to_string())
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
