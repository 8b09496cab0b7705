//! The port a worker holds: one of the backends compiled into this build,
//! behind the shared front, chosen at run time.
//!
//! * The contract ([`crate::contract`]: [`Op`], [`Completion`],
//!   [`CompletionPort`], ...) is re-exported here, so users name one module.
//! * [`Port`] is an enum of [`Front`]s over each backend's driver
//!   ([`crate::uring::Ring`] and [`crate::epoll::Poller`] on Linux,
//!   `crate::iocp::Iocp` on Windows): static dispatch, no `dyn` per op.
//! * [`Backend`] and [`BackendChoice`] pick one (`choice`), like compio's
//!   `fusion` driver: io_uring where the kernel takes it, else epoll.
//!
//! Rule: this is the top of the port layer; it imports the backends, and no
//! backend (nor the contract or the front) imports it.

use std::io;
use std::time::Duration;

pub use crate::contract::{
    raw_socket, Address, Completion, CompletionPort, Gather, Op, Outcome, RawSocket, SendBuf,
    Token, Wake, Waker, MAX_BATCH, MAX_GATHER,
};
use crate::front::Front;
pub use choice::{Backend, BackendChoice, BACKEND_ENV};

mod choice;

/// The port a worker owns: one of the backends compiled into this build.
pub enum Port {
    /// io_uring.
    #[cfg(target_os = "linux")]
    IoUring(Front<crate::uring::Ring>),
    /// epoll.
    #[cfg(target_os = "linux")]
    Epoll(Front<crate::epoll::Poller>),
    /// IOCP.
    #[cfg(windows)]
    Iocp(Front<crate::iocp::Iocp>),
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
            Backend::IoUring => crate::uring::Ring::new().map(|d| Port::IoUring(Front::new(d))),
            #[cfg(target_os = "linux")]
            Backend::Epoll => crate::epoll::Poller::new().map(|d| Port::Epoll(Front::new(d))),
            #[cfg(windows)]
            Backend::Iocp => crate::iocp::Iocp::new().map(|d| Port::Iocp(Front::new(d))),
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
    #[inline]
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
