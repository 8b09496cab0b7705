//! One client connection: its socket, decoder, queued output and the two ops
//! (at most one recv and one send) it may have in flight.

use std::net::SocketAddr;
use std::time::Instant;

use socket2::Socket;

use crate::framing::Decoder;
use crate::port::{raw_socket, RawSocket};

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading frames and sending replies.
    Open,
    /// No more reading (peer sent EOF, or the server is draining): send what is
    /// queued, then close.
    Flushing,
    /// Cancelled: waiting for the completions of the ops in flight, then close.
    Closing,
}

/// A client connection owned by one worker.
pub(crate) struct Connection {
    /// Unique for the life of the server, so a stale reference to a reused table
    /// slot is recognised.
    pub(crate) id: u64,
    /// Owned here: closed when the connection is freed, after its last op completed.
    pub(crate) socket: Socket,
    pub(crate) peer: SocketAddr,
    pub(crate) decoder: Decoder,
    pub(crate) phase: Phase,
    pub(crate) recv_in_flight: bool,
    pub(crate) send_in_flight: bool,
    /// Bytes of the send in flight not yet confirmed sent.
    pub(crate) sending: usize,
    /// Replies queued behind the send in flight.
    pub(crate) pending: Vec<u8>,
    /// Reading is paused until queued output falls below the low-water mark.
    pub(crate) paused: bool,
    pub(crate) last_active: Instant,
    /// Already placed on the worker's list of connections to pump this turn.
    pub(crate) dirty: bool,
    /// Its ops were cancelled through the port (not only ended by `shutdown`).
    pub(crate) cancelled: bool,
}

impl Connection {
    pub(crate) fn new(id: u64, socket: Socket, peer: SocketAddr, decoder: Decoder) -> Connection {
        Connection {
            id,
            socket,
            peer,
            decoder,
            phase: Phase::Open,
            recv_in_flight: false,
            send_in_flight: false,
            sending: 0,
            pending: Vec::new(),
            paused: false,
            last_active: Instant::now(),
            dirty: false,
            cancelled: false,
        }
    }

    /// The socket's OS handle, for posting ops.
    pub(crate) fn raw(&self) -> RawSocket {
        raw_socket(&self.socket)
    }

    /// Output queued or in flight.
    pub(crate) fn queued_output(&self) -> usize {
        self.sending + self.pending.len()
    }

    /// Whether any op of this connection is in flight.
    pub(crate) fn busy(&self) -> bool {
        self.recv_in_flight || self.send_in_flight
    }
}
