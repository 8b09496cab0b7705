//! One client connection: its socket, transport, decoder, output, phase, its
//! PROXY protocol preamble while it lasts, the two ops (at most one recv and one send) it may have in flight, and its
//! place under `max_connections`.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::Socket;

use super::admission::Admission;
use super::event::{CloseReason, ConnectionId};
use super::output::Output;
use super::preamble::Preamble;
use super::transport::Transport;
use crate::framing::Decoder;
use crate::port::{raw_socket, Address, CompletionPort, Port, RawSocket};

/// A lingering connection ([`Phase::Lingering`]) closes once its peer sent
/// nothing for `linger_timeout` (only input already on its way is waited
/// for), or once it lingered this long in all (nginx's `lingering_time`).
pub(crate) const LINGER_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a worker with lingering connections checks them.
pub(crate) const LINGER_CHECK: Duration = Duration::from_millis(50);

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading frames and sending replies.
    Open,
    /// No more reading (peer sent EOF, the server is draining, or a close was
    /// requested): send what is queued, then close.
    Flushing,
    /// Flushed and its sending side shut (the peer is sent the end of
    /// stream): what the peer still sends is read and thrown away until its
    /// own end of stream, or `linger_timeout` without input. Closing a socket
    /// with unread input, or one its peer still sends to, makes the kernel
    /// send a reset, which can destroy replies the peer has not read yet;
    /// lingering makes the close clean. A connection quiet for
    /// `linger_timeout` already when it is flushed does not linger.
    Lingering,
    /// Cancelled: waiting for the completions of the ops in flight, then close.
    Closing,
}

/// A client connection owned by one worker.
pub(crate) struct Connection {
    /// Unique for the life of the server, so a stale reference to a reused table
    /// slot is recognised.
    pub(crate) id: ConnectionId,
    /// Owned here: closed when the connection is freed, after its last op completed.
    socket: Socket,
    pub(crate) peer: Address,
    pub(crate) transport: Transport,
    pub(crate) decoder: Decoder,
    pub(crate) output: Output,
    phase: Phase,
    /// Why it is closing, once decided (the first reason wins).
    reason: Option<CloseReason>,
    pub(crate) recv_in_flight: bool,
    /// The peer's end of stream (or a receive error) was seen: there is
    /// nothing to linger for.
    pub(crate) peer_finished: bool,
    /// When it was accepted.
    pub(crate) accepted_at: Instant,
    /// Accepted just before the server began to stop (or while it stops): it
    /// is served on until its client is quiet for `linger_timeout` (a short
    /// exchange finishes), then closed cleanly.
    pub(crate) served_in_drain: bool,
    /// Its ops were cancelled through the port (not only ended by `shutdown`).
    cancelled: bool,
    pub(crate) last_active: Instant,
    /// Already placed on the worker's list of connections to pump this turn.
    pub(crate) dirty: bool,
    /// Where the worker publishes the length of its output for other threads
    /// (`ConnectionSender::write_buffer_size`); only when events are on.
    pub(crate) published: Option<Arc<AtomicUsize>>,
    /// With `proxy_protocol`: its PROXY header, until it is read (the
    /// connection opens after it).
    pub(crate) proxy: Option<Box<Preamble>>,
    /// Released when the connection is freed.
    _admission: Admission,
}

impl Connection {
    pub(crate) fn new(
        id: ConnectionId,
        socket: Socket,
        peer: Address,
        transport: Transport,
        decoder: Decoder,
        admission: Admission,
    ) -> Connection {
        Connection {
            id,
            socket,
            peer,
            transport,
            decoder,
            output: Output::default(),
            phase: Phase::Open,
            reason: None,
            recv_in_flight: false,
            peer_finished: false,
            accepted_at: Instant::now(),
            served_in_drain: false,
            cancelled: false,
            last_active: Instant::now(),
            dirty: false,
            published: None,
            proxy: None,
            _admission: admission,
        }
    }

    /// The socket's OS handle, for posting ops.
    pub(crate) fn raw(&self) -> RawSocket {
        raw_socket(&self.socket)
    }

    /// The server's address of this connection.
    pub(crate) fn local_addr(&self) -> Option<Address> {
        self.socket
            .local_addr()
            .ok()
            .and_then(|a| Address::from_sock_addr(&a))
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// Why the connection closed (`Shutdown` if no reason was recorded).
    pub(crate) fn take_reason(&mut self) -> CloseReason {
        self.reason.take().unwrap_or(CloseReason::Shutdown)
    }

    /// Whether any op of this connection is in flight.
    pub(crate) fn busy(&self) -> bool {
        self.recv_in_flight || self.output.in_flight()
    }

    /// Stop reading: send what is queued, then close for `reason`. Only from `Open`.
    pub(crate) fn flush_then_close(&mut self, reason: CloseReason) {
        if self.phase == Phase::Open {
            self.phase = Phase::Flushing;
            self.reason.get_or_insert(reason);
        }
    }

    /// Close for the server's drain: at once (flush, then close), or, for a
    /// connection accepted within `quiet`, once its client has been quiet
    /// that long. A client that connected just before the stop finishes its
    /// short exchange instead of finding the end of stream in its place.
    /// Returns whether it is served on (the table must time it).
    pub(crate) fn close_for_drain(&mut self, quiet: Duration) -> bool {
        if self.phase == Phase::Open && self.accepted_at.elapsed() < quiet {
            self.served_in_drain = true;
            return true;
        }
        self.flush_then_close(CloseReason::Shutdown);
        false
    }

    /// Flushed: shut the sending side and linger for the peer's end of stream
    /// ([`Phase::Lingering`]), unless its peer was quiet for `quiet`
    /// already. Returns false when there is nothing to linger
    /// for (the peer already finished, or the socket refused): close now.
    pub(crate) fn linger(&mut self, quiet: Duration) -> bool {
        if self.phase != Phase::Flushing
            || self.peer_finished
            || self.last_active.elapsed() >= quiet
        {
            return false;
        }
        match self.socket.shutdown(std::net::Shutdown::Write) {
            Ok(()) => {
                self.phase = Phase::Lingering;
                true
            }
            Err(e) => {
                log::debug!("shutdown(write) of {}: {}", self.peer, e);
                false
            }
        }
    }

    /// Close now for `reason` (unless already closing): make the ops in flight
    /// end soon; the connection is freed once they completed. Returns whether
    /// it was not closing before.
    pub(crate) fn abort(&mut self, reason: CloseReason, port: &mut Port) -> bool {
        if self.phase == Phase::Closing {
            return false;
        }
        self.phase = Phase::Closing;
        self.reason.get_or_insert(reason);
        if self.busy() {
            self.end_ops(port);
        }
        true
    }

    /// Close for a failure found on receiving: a TLS failure whose alert
    /// rustls queued is flushed first (so the peer learns why), any other
    /// closes now.
    pub(crate) fn fail(&mut self, reason: CloseReason, port: &mut Port) {
        if self.phase == Phase::Open
            && matches!(reason, CloseReason::Tls(_))
            && self.transport.wants_write()
        {
            self.flush_then_close(reason);
        } else {
            self.abort(reason, port);
        }
    }

    /// Whether the connection closed by a TLS failure: closed for one, or
    /// closed (not by the server's shutdown) before its handshake finished
    /// (a connection closed before its PROXY header was read is not: it
    /// counts as a PROXY protocol failure, or not at all).
    pub(crate) fn tls_failed(&self) -> bool {
        match &self.reason {
            Some(CloseReason::Tls(_)) => true,
            Some(CloseReason::Shutdown) | None => false,
            Some(_) => self.proxy.is_none() && self.transport.handshaking(),
        }
    }

    /// Close now as a slow consumer (unless already closing): its queued
    /// output is dropped, not flushed, and this reason replaces any other
    /// (a flush it was waiting for will never happen). Returns whether it was
    /// not closing before.
    #[cold]
    pub(crate) fn close_slow_consumer(&mut self, port: &mut Port) -> bool {
        if self.phase == Phase::Closing {
            return false;
        }
        self.output.discard();
        self.reason = Some(CloseReason::SlowConsumer);
        self.abort(CloseReason::SlowConsumer, port)
    }

    /// Cancel through the port whatever `shutdown` did not end (past the drain
    /// deadline).
    pub(crate) fn cancel_ops(&mut self, port: &mut Port) {
        if self.busy() && !self.cancelled {
            self.cancelled = true;
            port.cancel(self.raw());
        }
    }

    /// Make a closing connection's ops in flight complete soon.
    ///
    /// On Linux, `shutdown` does it: a pending recv completes with end of stream
    /// and a pending send with `EPIPE`, at O(1) cost. Cancelling by socket instead
    /// makes io_uring search every op in flight, which is quadratic when thousands
    /// of connections close at once. Windows cancels (`CancelIoEx` looks only at
    /// the socket's own ops), as does any socket that `shutdown` refuses.
    fn end_ops(&mut self, port: &mut Port) {
        #[cfg(not(windows))]
        {
            if self.socket.shutdown(std::net::Shutdown::Both).is_ok() {
                return;
            }
        }
        self.cancelled = true;
        port.cancel(self.raw());
    }
}
