//! The completion-port contract that every I/O backend implements.
//!
//! A port takes *operations* ([`Op`]): accept, recv, send and connect. Each is
//! submitted with a [`Token`] chosen by the caller and, where it moves bytes, an
//! owned buffer. From the moment of [`CompletionPort::submit`] the port owns that
//! buffer; it comes back inside the operation's [`Completion`] from
//! [`CompletionPort::wait`]. Rules every backend keeps:
//!
//! * **One submission, one completion.** Every submitted op yields exactly one
//!   completion: on success, on failure (a failure found while submitting is
//!   reported as a completion, never as a lost op), and on cancellation.
//! * **No buffer is freed, reused or moved while the kernel may write to it.**
//!   A port dropped with ops still in flight leaks their buffers rather than free
//!   them; the server always drains first, so this is a last resort.
//! * Sockets are registered once with [`CompletionPort::register`] before their
//!   first op and are already nonblocking. Accepted sockets come back nonblocking
//!   and close-on-exec.
//! * [`CompletionPort::cancel`] asks the kernel to stop every op in flight on a
//!   socket; their completions still arrive (with an error such as
//!   `ECANCELED`, or with their result if they finished first). Only after the
//!   last of them may the caller close the socket.
//! * A [`Waker`] makes a blocked `wait` return from any thread.
//!
//! **Port-chosen receive memory.** A recv whose buffer has capacity 0
//! (`Vec::new()`) asks the port to choose the memory: nothing is held for it
//! while it waits for data (so an idle connection costs no buffer), and its
//! completion's [`Outcome::Received`] carries a `Vec` of the port's own whose
//! length is exactly the bytes received (an empty `Vec` on end of stream, error
//! or cancellation). How big one such recv may be is the backend's choice
//! (tens of KiB). The caller may keep that `Vec` (for example to send it) and
//! should hand spent ones back with [`CompletionPort::give_buffer`], which
//! refills the port's pool so that steady traffic allocates nothing per
//! message. A recv with a buffer of spare capacity works exactly as described
//! at [`Op::Recv`].
//!
//! Backends: [`crate::uring`] (io_uring) and [`crate::epoll`] (readiness turned
//! into completions) on Linux, `crate::iocp` on Windows. [`Port`] is the enum the
//! server holds; [`Backend`] and [`BackendChoice`] pick one.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::Socket;

/// The OS handle of a socket as the kernel sees it.
#[cfg(unix)]
pub type RawSocket = std::os::unix::io::RawFd;
/// The OS handle of a socket as the kernel sees it.
#[cfg(windows)]
pub type RawSocket = std::os::windows::io::RawSocket;

/// The caller's name for an operation; returned unchanged in its completion.
pub type Token = u64;

/// The most completions one call to [`CompletionPort::wait`] appends.
pub const MAX_BATCH: usize = 1024;

/// The capacity of the buffers a Linux port chooses for a recv: the most one
/// such recv returns.
///
/// Large enough that a 100 KiB message usually arrives in one recv and goes
/// back in one send (with 64 KiB it took two of each; uvloop reads into
/// 256 KiB), and below glibc's 128 KiB `mmap` threshold: a `Vec` of 128 KiB or
/// more is a mapping of its own, and echoing 100 KiB messages through such
/// buffers measured 1.3 to 2 times the CPU per message (the cause was not found).
/// An idle connection holds no receive buffer on Linux, so the size costs only
/// while bytes are being received.
#[cfg(target_os = "linux")]
pub(crate) const LINUX_RECV_SIZE: usize = 124 << 10;

/// An operation to post on a port.
#[derive(Debug)]
pub enum Op {
    /// Accept one connection on a listening socket.
    Accept {
        /// The listening socket.
        listener: RawSocket,
    },
    /// Receive into the spare capacity of `buf` (`buf.len()..buf.capacity()`);
    /// on success `buf.len()` grows by the count. A `buf` with capacity 0 lets
    /// the port choose the memory (see the module doc); otherwise the spare
    /// capacity must not be 0.
    Recv {
        /// The connected socket.
        socket: RawSocket,
        /// The buffer the kernel fills.
        buf: Vec<u8>,
    },
    /// Send `buf[pos..]` (which must not be empty). A partial send is a success
    /// with a smaller count; the caller resubmits the rest.
    Send {
        /// The connected socket.
        socket: RawSocket,
        /// The bytes to send.
        buf: Vec<u8>,
        /// Where in `buf` sending starts.
        pos: usize,
    },
    /// Connect a (registered, nonblocking, unconnected) socket to `addr`.
    Connect {
        /// The socket to connect.
        socket: RawSocket,
        /// The peer address.
        addr: SocketAddr,
    },
}

impl Op {
    /// The socket this op works on.
    pub fn socket(&self) -> RawSocket {
        match *self {
            Op::Accept { listener } => listener,
            Op::Recv { socket, .. } | Op::Send { socket, .. } | Op::Connect { socket, .. } => {
                socket
            }
        }
    }

    /// The completion of this op when it failed with `error` before reaching
    /// the kernel (or was cancelled before it started): buffers are handed back.
    pub fn fail(self, token: Token, error: io::Error) -> Completion {
        let outcome = match self {
            Op::Accept { .. } => Outcome::Accepted(Err(error)),
            Op::Recv { buf, .. } => Outcome::Received {
                buf,
                result: Err(error),
            },
            Op::Send { buf, pos, .. } => Outcome::Sent {
                buf,
                pos,
                result: Err(error),
            },
            Op::Connect { .. } => Outcome::Connected(Err(error)),
        };
        Completion { token, outcome }
    }
}

/// What a finished op produced; buffers come back here.
#[derive(Debug)]
pub enum Outcome {
    /// A new connection, nonblocking and close-on-exec, with its peer address.
    Accepted(io::Result<(Socket, SocketAddr)>),
    /// `Ok(0)` is end of stream. On `Ok(n)`, `buf.len()` already includes the `n` bytes.
    Received {
        /// The buffer of the op.
        buf: Vec<u8>,
        /// Bytes received.
        result: io::Result<usize>,
    },
    /// Bytes sent from `buf[pos..]`; `pos` is as submitted.
    Sent {
        /// The buffer of the op.
        buf: Vec<u8>,
        /// Where sending started.
        pos: usize,
        /// Bytes sent.
        result: io::Result<usize>,
    },
    /// The socket is connected (or why not).
    Connected(io::Result<()>),
}

/// A finished op: the caller's token and what it produced.
#[derive(Debug)]
pub struct Completion {
    /// The token the op was submitted with.
    pub token: Token,
    /// The result, with the op's buffer.
    pub outcome: Outcome,
}

/// Makes a blocked [`CompletionPort::wait`] return; usable from any thread.
pub trait Wake: Send + Sync {
    /// Wake the port's waiting thread (or make its next wait return at once).
    fn wake(&self) -> io::Result<()>;
}

/// A shareable handle on a port's wake-up mechanism.
pub type Waker = Arc<dyn Wake>;

/// What a completion-port backend provides. See the module doc for the rules.
pub trait CompletionPort {
    /// Associate a socket with the port; once, before its first op.
    fn register(&mut self, socket: RawSocket) -> io::Result<()>;

    /// Forget a socket (before it is closed), once no op is in flight on it.
    fn deregister(&mut self, socket: RawSocket) -> io::Result<()>;

    /// Post an op. Never loses it: a failure comes back as its completion.
    fn submit(&mut self, token: Token, op: Op);

    /// Ask for every op in flight on `socket` to end soon; each still completes.
    fn cancel(&mut self, socket: RawSocket);

    /// Flush submissions, then wait up to `timeout` (`None`: no limit) until at
    /// least one completion is ready or a waker fires, and append up to
    /// [`MAX_BATCH`] ready completions to `out`. May return with none appended.
    fn wait(&mut self, out: &mut Vec<Completion>, timeout: Option<Duration>) -> io::Result<()>;

    /// A handle that wakes this port from any thread.
    fn waker(&self) -> Waker;

    /// Ops submitted whose completion has not yet been returned by `wait`.
    fn in_flight(&self) -> usize;

    /// Hand a spent buffer back to the port's pool, for the next recv that
    /// lets the port choose its memory. The port may keep it (emptied) or drop
    /// it; any `Vec` is accepted, and by default it is dropped.
    fn give_buffer(&mut self, buf: Vec<u8>) {
        drop(buf);
    }
}

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

/// The port a worker owns: one of the backends compiled into this build.
pub enum Port {
    /// io_uring.
    #[cfg(target_os = "linux")]
    IoUring(crate::uring::Ring),
    /// epoll.
    #[cfg(target_os = "linux")]
    Epoll(crate::epoll::Poller),
    /// IOCP.
    #[cfg(windows)]
    Iocp(crate::iocp::Iocp),
}

macro_rules! each_backend {
    ($port:expr, $p:ident => $body:expr) => {
        match $port {
            #[cfg(target_os = "linux")]
            Port::IoUring($p) => $body,
            #[cfg(target_os = "linux")]
            Port::Epoll($p) => $body,
            #[cfg(windows)]
            Port::Iocp($p) => $body,
        }
    };
}

impl Port {
    /// Open a port of the given (already resolved) backend.
    pub fn open(backend: Backend) -> io::Result<Port> {
        match backend {
            #[cfg(target_os = "linux")]
            Backend::IoUring => crate::uring::Ring::new().map(Port::IoUring),
            #[cfg(target_os = "linux")]
            Backend::Epoll => crate::epoll::Poller::new().map(Port::Epoll),
            #[cfg(windows)]
            Backend::Iocp => crate::iocp::Iocp::new().map(Port::Iocp),
            #[allow(unreachable_patterns)]
            other => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "backend {} is not available on this operating system",
                    other
                ),
            )),
        }
    }

    /// Which backend this port runs.
    pub fn backend(&self) -> Backend {
        match self {
            #[cfg(target_os = "linux")]
            Port::IoUring(_) => Backend::IoUring,
            #[cfg(target_os = "linux")]
            Port::Epoll(_) => Backend::Epoll,
            #[cfg(windows)]
            Port::Iocp(_) => Backend::Iocp,
        }
    }
}

impl CompletionPort for Port {
    fn register(&mut self, socket: RawSocket) -> io::Result<()> {
        each_backend!(self, p => p.register(socket))
    }
    fn deregister(&mut self, socket: RawSocket) -> io::Result<()> {
        each_backend!(self, p => p.deregister(socket))
    }
    fn submit(&mut self, token: Token, op: Op) {
        each_backend!(self, p => p.submit(token, op))
    }
    fn cancel(&mut self, socket: RawSocket) {
        each_backend!(self, p => p.cancel(socket))
    }
    fn wait(&mut self, out: &mut Vec<Completion>, timeout: Option<Duration>) -> io::Result<()> {
        each_backend!(self, p => p.wait(out, timeout))
    }
    fn waker(&self) -> Waker {
        each_backend!(self, p => p.waker())
    }
    fn in_flight(&self) -> usize {
        each_backend!(self, p => p.in_flight())
    }
    fn give_buffer(&mut self, buf: Vec<u8>) {
        each_backend!(self, p => p.give_buffer(buf))
    }
}

/// A port's pool of spare receive buffers, refilled by
/// [`CompletionPort::give_buffer`]: so that recvs with port-chosen memory
/// allocate nothing per message in steady traffic.
#[derive(Debug)]
pub(crate) struct BufferPool {
    spare: Vec<Vec<u8>>,
    /// The capacity of a buffer made when the pool is empty.
    size: usize,
}

impl BufferPool {
    /// At most this many spare buffers are kept.
    const LIMIT: usize = 256;

    /// An empty pool whose new buffers have capacity `size` (at least 1).
    pub(crate) fn new(size: usize) -> BufferPool {
        BufferPool {
            spare: Vec::new(),
            size: size.max(1),
        }
    }

    /// An empty buffer with at least `size` bytes of capacity.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        self.spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.size))
    }

    /// Keep `buf` (emptied) for a later [`BufferPool::take`], unless the pool is
    /// full or its capacity is below the pool's size or far above it.
    ///
    /// A smaller buffer is dropped rather than kept: a recv into it returns
    /// less, so a large message takes more recvs. (The native echo hands back
    /// output buffers grown to one message's size; kept, they made 100 KiB
    /// messages at 1,000 connections arrive in 36 and 28 KiB recvs, 2.4 per
    /// message instead of 2.)
    pub(crate) fn give(&mut self, mut buf: Vec<u8>) {
        let capacity = buf.capacity();
        if self.spare.len() < Self::LIMIT && capacity >= self.size && capacity <= 4 * self.size {
            buf.clear();
            self.spare.push(buf);
        }
    }

    /// Spare buffers held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.spare.len()
    }
}

/// The raw handle of a socket, for building ops.
pub fn raw_socket(socket: &Socket) -> RawSocket {
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        socket.as_raw_fd()
    }
    #[cfg(windows)]
    {
        use std::os::windows::io::AsRawSocket;
        socket.as_raw_socket()
    }
}

#[cfg(test)]
mod tests {
    use super::BufferPool;

    #[test]
    fn the_pool_keeps_only_buffers_a_full_recv_fits_in() {
        let mut pool = BufferPool::new(1024);
        pool.give(Vec::with_capacity(700));
        pool.give(Vec::with_capacity(8192));
        assert_eq!(pool.len(), 0, "kept a buffer too small or too large");
        let mut kept = Vec::with_capacity(1024);
        kept.extend_from_slice(b"old bytes");
        pool.give(kept);
        assert_eq!(pool.len(), 1);
        let taken = pool.take();
        assert!(taken.is_empty() && taken.capacity() >= 1024);
        assert!(pool.take().capacity() >= 1024, "a new buffer is full size");
    }
}
