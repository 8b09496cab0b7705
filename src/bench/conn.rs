//! One connection of the closed loop as the client thread sees it: its
//! socket, where it is in its life ([`State`]), its buffers, and what a
//! completion on it led to ([`Step`]), for the client to act on.
//!
//! A connection's `out` (bytes being sent) and `input` (the reply) belong to
//! the port while an op holding them is in flight; `ops` counts those ops, and
//! the socket is closed only once it is back to 0. What plain TCP and TLS
//! share is here too: a send's completion ([`finish_send`]: a partial send
//! posts the rest) and the comparison of an echo ([`compare`]).

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use socket2::{Domain, Protocol, Socket, Type};

use crate::port::{CompletionPort, Op, Port, RawSocket, Token};

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// Not yet asked to connect.
    New,
    /// A TCP connect is in flight.
    Connecting,
    /// Connected, the TLS handshake under way.
    Handshaking,
    /// Established, no message in flight (under TLS a receive waits).
    Ready,
    /// A message and its echo are in flight.
    Busy,
    /// Done with its messages (`--messages-per-connection`): closing cleanly
    /// before a new connection takes its place.
    Retiring,
    /// Aborted; closes when its last op completes.
    Closing,
    /// The socket is closed (or was never opened).
    Closed,
}

impl State {
    /// Whether the connection is on its way somewhere (connecting, in a
    /// message, or retiring): a phase of the client lasts while any is.
    pub(super) fn is_pending(self) -> bool {
        matches!(
            self,
            State::Connecting | State::Handshaking | State::Busy | State::Retiring
        )
    }
}

/// What a completion (or a request of the client) led to on one connection.
#[derive(Debug)]
pub(super) enum Step {
    /// Ops are in flight; nothing for the client to do yet.
    Wait,
    /// Established and ready for its first message (under TLS: the
    /// handshake is done).
    Established,
    /// The current message's echo is back and matches, byte for byte.
    Echoed,
    /// The retiring connection is closed by both sides: its socket can go.
    Retired,
    /// The current message failed (wrong bytes, a broken connection).
    Failed(String),
    /// The TCP connect failed.
    ConnectFailed(io::Error),
    /// The TLS handshake failed, or the server closed during it.
    HandshakeFailed(String),
}

/// One connection of the closed loop.
pub(super) struct Conn {
    pub(super) socket: Option<Socket>,
    pub(super) raw: RawSocket,
    pub(super) state: State,
    /// Ops in flight on the socket.
    pub(super) ops: u8,
    /// Bytes to send: the frame (plaintext) or TLS records (empty while the
    /// port holds it).
    pub(super) out: Vec<u8>,
    /// The reply so far (plaintext: empty while the port holds it).
    pub(super) input: Vec<u8>,
    /// Plaintext: the current message's send and receive are back.
    pub(super) sent: bool,
    pub(super) received: bool,
    /// Messages this slot has sent, over all its connections (varies payloads).
    pub(super) seq: usize,
    /// Messages the current connection has echoed.
    pub(super) echoed: u64,
    /// Whether the slot was ever established (counted once in `connected`).
    pub(super) was_established: bool,
    /// When the current message was posted, or the connect began.
    pub(super) posted: Instant,
    /// Whether the current message counts (it began after the warm-up).
    pub(super) measured: bool,
}

impl Conn {
    /// A slot not yet connected.
    pub(super) fn new(now: Instant) -> Conn {
        Conn {
            socket: None,
            raw: Default::default(),
            state: State::New,
            ops: 0,
            out: Vec::new(),
            input: Vec::new(),
            sent: false,
            received: false,
            seq: 0,
            echoed: 0,
            was_established: false,
            posted: now,
            measured: false,
        }
    }
}

/// Take back the buffer of a send that completed on `conn` with `result`:
/// `None` if only part of it went and the rest is posted again; else the
/// buffer is `conn.out` again and the answer is whether all of it went.
pub(super) fn finish_send(
    conn: &mut Conn,
    port: &mut Port,
    token: Token,
    buf: Vec<u8>,
    pos: usize,
    result: io::Result<usize>,
) -> Option<Result<(), String>> {
    let done = match result {
        Ok(n) if n > 0 && pos + n < buf.len() => {
            conn.ops += 1;
            let (socket, buf, pos) = (conn.raw, buf.into(), pos + n);
            port.submit(token, Op::Send { socket, buf, pos });
            return None;
        }
        Ok(n) if n > 0 => Ok(()),
        Ok(_) => Err("send wrote nothing".to_string()),
        Err(e) => Err(format!("send failed: {}", e)),
    };
    conn.out = buf;
    Some(done)
}

/// `Echoed` if the reply is the frame sent, else a failure naming the first
/// byte that differs.
pub(super) fn compare(reply: &[u8], sent: &[u8]) -> Step {
    if reply == sent {
        return Step::Echoed;
    }
    mismatch(reply, sent)
}

#[cold]
fn mismatch(reply: &[u8], sent: &[u8]) -> Step {
    let at = reply
        .iter()
        .zip(sent)
        .position(|(a, b)| a != b)
        .unwrap_or(0);
    Step::Failed(format!(
        "echo mismatch at byte {} of a {}-byte frame",
        at,
        sent.len()
    ))
}

/// A nonblocking TCP socket for `addr`'s family, with Nagle off (each message
/// is one write and waits for its echo).
pub(super) fn open_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    Ok(socket)
}
