//! Connection events a handler may ask for: a connection opened (a TLS one once
//! its handshake finished, with what it negotiated), its output paused and
//! resumed its reading (backpressure), a connection closed and why. Ids are
//! unique across the workers of a server, for its life. A TLS connection whose
//! handshake fails never opens, so it makes no event at all.

use crate::port::Address;
use std::fmt;
use std::io;

use crate::framing::FrameError;
use crate::tls::{TlsFailure, TlsInfo};

/// A connection's id: unique among all connections a server ever had, on
/// every worker. The worker that owns connection `id` is `id % workers`.
pub type ConnectionId = u64;

/// Why a connection closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer ended its stream (after every reply to what it sent was sent).
    PeerClosed,
    /// A recv or send failed (reset, broken pipe ...).
    Io {
        /// The error's kind.
        kind: io::ErrorKind,
        /// The OS error code, if there was one.
        code: Option<i32>,
    },
    /// The peer sent a frame the codec refuses (too large, truncated ...).
    Frame(FrameError),
    /// Nothing complete arrived or left for `idle_timeout`.
    IdleTimeout,
    /// TLS failed: a bad record, a stream cut inside a record (a handshake
    /// that fails never opens, so no event carries its reason).
    Tls(TlsFailure),
    /// The handler failed one of the connection's frames, or gave a reply
    /// the codec cannot frame.
    HandlerFailed,
    /// [`ConnectionSender::close`](super::ConnectionSender::close) asked for it
    /// (queued output was flushed first).
    Requested,
    /// Its queued output would have passed `max_output` (a client that does
    /// not read what it is sent): closed at once, its queued output dropped.
    SlowConsumer,
    /// The server closed.
    Shutdown,
}

impl CloseReason {
    /// The reason for an I/O failure.
    pub(crate) fn io(e: &io::Error) -> CloseReason {
        CloseReason::Io {
            kind: e.kind(),
            code: e.raw_os_error(),
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("closed by the peer"),
            CloseReason::Io { kind, code } => match code {
                Some(code) => write!(f, "{} (os error {})", io::Error::from(*kind), code),
                None => write!(f, "{}", io::Error::from(*kind)),
            },
            CloseReason::Frame(e) => write!(f, "bad frame: {}", e),
            CloseReason::IdleTimeout => f.write_str("idle timeout"),
            CloseReason::Tls(e) => e.fmt(f),
            CloseReason::HandlerFailed => f.write_str("the handler failed"),
            CloseReason::Requested => f.write_str("closed by the server"),
            CloseReason::SlowConsumer => {
                f.write_str("slow consumer: queued output passed max_output")
            }
            CloseReason::Shutdown => f.write_str("the server closed"),
        }
    }
}

/// Something that happened to a connection, given to a handler that asks for
/// events ([`Handler::wants_events`](super::Handler::wants_events)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A connection opened: before any of its frames; a TLS connection once
    /// its handshake finished.
    Open {
        /// The new connection.
        id: ConnectionId,
        /// The client's address.
        peer: Address,
        /// The server's address of this connection.
        local: Address,
        /// What the TLS handshake negotiated; `None` for plain TCP.
        tls: Option<Box<TlsInfo>>,
    },
    /// The connection's queued output passed `high_water`: it stops reading
    /// until its output falls to `low_water` ([`Event::ResumeWriting`]).
    /// Produce less for it until then.
    PauseWriting {
        /// The connection.
        id: ConnectionId,
    },
    /// The connection's queued output fell to `low_water` after a
    /// [`Event::PauseWriting`]: it reads again.
    ResumeWriting {
        /// The connection.
        id: ConnectionId,
    },
    /// A connection closed: after its last frame, once for every `Open`.
    Close {
        /// The connection.
        id: ConnectionId,
        /// Why it closed.
        reason: CloseReason,
    },
}

impl Event {
    /// The connection the event is about.
    pub fn id(&self) -> ConnectionId {
        match self {
            Event::Open { id, .. }
            | Event::PauseWriting { id }
            | Event::ResumeWriting { id }
            | Event::Close { id, .. } => *id,
        }
    }
}
