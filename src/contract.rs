//! The completion-port contract: what every I/O backend does, and nothing of how.
//!
//! A port takes *operations* ([`Op`]): accept, recv, send and connect. Each is
//! submitted with a [`Token`] chosen by the caller and, where it moves bytes, a
//! buffer (for a send, a [`SendBuf`]: owned, shared by many sends, or several
//! of those gathered into one vectored send of up to [`MAX_GATHER`] buffers).
//! From the moment of [`CompletionPort::submit`] the port owns that buffer; it
//! comes back inside the operation's [`Completion`] from
//! [`CompletionPort::wait`]. Rules every backend keeps:
//!
//! * **One submission, one completion.** Every submitted op yields exactly one
//!   completion: on success, on failure (a failure found while submitting is
//!   reported as a completion, never as a lost op), and on cancellation.
//! * **No buffer is freed, reused or moved while the kernel may write to it.**
//!   A port dropped with ops still in flight leaks their buffers rather than free
//!   them; the server always drains first, so this is a last resort.
//! * Sockets are registered once with [`CompletionPort::register`] before their
//!   first op and are already nonblocking. An op on a socket that is not
//!   registered fails (as its completion) with [`std::io::ErrorKind::NotFound`];
//!   registering twice fails with [`std::io::ErrorKind::AlreadyExists`]. Accepted
//!   sockets come back nonblocking and close-on-exec (not inheritable).
//! * [`CompletionPort::cancel`] asks the kernel to stop every op in flight on a
//!   socket; their completions still arrive (with an error such as
//!   `ECANCELED`, or with their result if they finished first). Only after the
//!   last of them may the caller close the socket.
//! * A [`Waker`] makes a blocked `wait` return from any thread.
//!
//! **Port-chosen receive memory.** A recv whose buffer has capacity 0
//! (`Vec::new()`) asks the port to choose the memory: its completion's
//! [`Outcome::Received`] carries a `Vec` of the port's own whose length is
//! exactly the bytes received (an empty `Vec` on end of stream, error or
//! cancellation). How big one such recv may be is the backend's choice (tens
//! of KiB), and so is whether a waiting recv holds memory (on Linux it holds
//! none, so an idle connection costs no buffer). The caller may keep that
//! `Vec` (for example to send it) and should hand spent ones back with
//! [`CompletionPort::give_buffer`], which refills the port's pool so that
//! steady traffic allocates nothing per message. A recv with a buffer of spare
//! capacity works exactly as described at [`Op::Recv`].
//!
//! Rule of this module: it imports nothing of any backend, of the front
//! ([`crate::front`]) or of the backend choice ([`crate::port`]); they all build
//! on it. A backend implements the narrow [`Driver`], and
//! [`crate::front::Front`] makes a [`CompletionPort`] of it.

mod address;
mod completion_port;
mod driver;
pub(crate) mod errors;
mod op;
mod pool;
mod send_buf;
mod timeout;

pub use address::Address;
pub use completion_port::{CompletionPort, Wake, Waker, MAX_BATCH};
pub use driver::{Driver, Ready};
pub use op::{raw_socket, Completion, Op, Outcome, RawSocket, Token};
pub(crate) use pool::BufferPool;
pub use send_buf::{Gather, SendBuf, MAX_GATHER};
pub use timeout::whole_millis;
