//! Which backend a port runs: the names, the choice (forced, from
//! [`BACKEND_ENV`], or automatic) and the io_uring probe, run once per process.
//!
//! Rule: choosing sits above the backends (it may ask io_uring whether it
//! works); no backend imports it.

use std::fmt;
use std::io;

/// The I/O backends this crate has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Linux io_uring.
    IoUring,
    /// Linux epoll, with readiness turned into completions.
    Epoll,
    /// Windows I/O completion ports.
    Iocp,
}

impl Backend {
    /// Every backend's name, as accepted by [`BackendChoice::parse`].
    pub const NAMES: [&'static str; 3] = ["io_uring", "epoll", "iocp"];

    /// The backend's name: `"io_uring"`, `"epoll"` or `"iocp"`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::IoUring => "io_uring",
            Backend::Epoll => "epoll",
            Backend::Iocp => "iocp",
        }
    }

    /// Whether this build can run the backend at all on this OS.
    pub fn compiled_in(self) -> bool {
        match self {
            Backend::IoUring | Backend::Epoll => cfg!(target_os = "linux"),
            Backend::Iocp => cfg!(windows),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How to pick a backend: probe, or a forced one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    /// io_uring where the kernel accepts it, else epoll (Linux); IOCP on Windows.
    Auto,
    /// Exactly this backend; failing to open it is an error, never a fallback.
    Forced(Backend),
}

/// The environment variable that forces a backend when none is given explicitly.
pub const BACKEND_ENV: &str = "IOCP_ECHO_BACKEND";

impl BackendChoice {
    /// Parse `"auto"` or a backend name.
    pub fn parse(name: &str) -> Result<BackendChoice, String> {
        match name {
            "auto" => Ok(BackendChoice::Auto),
            "io_uring" => Ok(BackendChoice::Forced(Backend::IoUring)),
            "epoll" => Ok(BackendChoice::Forced(Backend::Epoll)),
            "iocp" => Ok(BackendChoice::Forced(Backend::Iocp)),
            other => Err(format!(
                "unknown backend {:?}: expected one of auto, io_uring, epoll, iocp",
                other
            )),
        }
    }

    /// `explicit` if it forces a backend, else what [`BACKEND_ENV`] says, else `Auto`.
    pub fn with_env(explicit: BackendChoice) -> Result<BackendChoice, String> {
        if explicit != BackendChoice::Auto {
            return Ok(explicit);
        }
        match std::env::var(BACKEND_ENV) {
            Ok(value) if !value.is_empty() => BackendChoice::parse(&value)
                .map_err(|e| format!("{} environment variable: {}", BACKEND_ENV, e)),
            _ => Ok(BackendChoice::Auto),
        }
    }

    /// The backend this choice resolves to on this machine (probing io_uring
    /// once per process for `Auto`).
    pub fn resolve(self) -> io::Result<Backend> {
        match self {
            BackendChoice::Forced(backend) if !backend.compiled_in() => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "backend {} is not available on this operating system",
                    backend
                ),
            )),
            BackendChoice::Forced(backend) => {
                #[cfg(target_os = "linux")]
                if backend == Backend::IoUring {
                    probe_uring()?;
                }
                Ok(backend)
            }
            BackendChoice::Auto => Ok(auto_backend()),
        }
    }
}

#[cfg(target_os = "linux")]
fn auto_backend() -> Backend {
    use std::sync::atomic::{AtomicBool, Ordering};
    static PROBED: std::sync::Once = std::sync::Once::new();
    static USABLE: AtomicBool = AtomicBool::new(false);
    PROBED.call_once(|| match probe_uring() {
        Ok(()) => USABLE.store(true, Ordering::Release),
        Err(e) => log::warn!("io_uring is not usable here ({}); falling back to epoll", e),
    });
    if USABLE.load(Ordering::Acquire) {
        Backend::IoUring
    } else {
        Backend::Epoll
    }
}

/// Probe io_uring on a thread of its own: tearing down the probe's ring can
/// leave task work for the thread that made it, which interrupts that thread's
/// next timed blocking call with `EINTR`; the caller's thread stays untouched.
#[cfg(target_os = "linux")]
fn probe_uring() -> io::Result<()> {
    match std::thread::Builder::new()
        .name("iocp-echo-probe".to_string())
        .spawn(crate::uring::probe)
    {
        Ok(probe) => probe.join().unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::Other,
                "io_uring probe panicked",
            ))
        }),
        Err(e) => Err(e),
    }
}

#[cfg(windows)]
fn auto_backend() -> Backend {
    Backend::Iocp
}
