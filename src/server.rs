//! The message server: a listener, worker threads each owning a completion
//! port, the connections they own, limits, stats and shutdown. Nothing here
//! knows which OS or backend runs underneath, nor Python.
//!
//! Shape (see `docs/architecture.md`, "the path of a message"): worker 0 owns
//! the acceptor and keeps a few accepts posted on the listener;
//! each accepted socket is handed, round robin, to a worker (itself included)
//! through that worker's mailbox and waker. A connection then lives on one
//! worker for its whole life, so its state needs no lock. This hand-over works
//! the same on every backend, including IOCP where a listening socket can
//! belong to a single port only. Output pushed from other threads
//! ([`ConnectionSender`]) travels the same way.
//!
//! Rules: a connection's ops in flight own their buffers until they complete;
//! a connection is freed only once none is in flight; it counts under
//! `max_connections` from admission to free (its admission token); what
//! the server does with frames (its mode) is fixed at start.
//!
//! Files: `handle` (the [`Server`] handle), `shared` (state shared with the
//! workers), `bind`, `worker` (the turn loop) over `acceptor`, `table`,
//! `connection` (`transport`, `output`, `decode`, `preamble`: a PROXY
//! protocol header), `receive`, `answer`,
//! `letters` (mailbox letters and adoption), `pump`, `shutdown`; `ids` (maps
//! by connection id), `stats` and `handler_time` (the counters and the
//! handler-time histogram); `handler` and `event` are the handler seam, `sender`
//! and `mailbox` the push seam.

mod acceptor;
mod admission;
mod answer;
mod bind;
mod connection;
mod decode;
mod event;
mod handle;
mod handler;
mod handler_time;
mod ids;
mod letters;
mod lock;
mod mailbox;
mod mode;
mod output;
mod preamble;
mod pump;
mod receive;
mod sender;
mod shared;
mod shutdown;
mod socket_file;
mod stats;
mod table;
mod transport;
mod turn;
mod worker;

pub use event::{CloseReason, ConnectionId, Event};
pub use handle::{Server, StartError};
pub use handler::{Batch, Handler};
pub use handler_time::{HandlerTimes, HANDLER_TIME_BOUNDS_NANOS, HANDLER_TIME_BUCKETS};
pub use sender::{ConnectionSender, SendError};
pub use stats::Stats;

pub(crate) use lock::lock;

pub use crate::config::{default_workers, Config, ConfigError, DEFAULT_MAX_FRAME};
pub use crate::port::Address;

#[cfg(test)]
mod tests;
