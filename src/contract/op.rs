//! The ops a port takes and the completions it gives back.

use std::io;
use std::net::SocketAddr;

use socket2::Socket;

use super::address::Address;
use super::send_buf::SendBuf;

/// The OS handle of a socket as the kernel sees it.
#[cfg(unix)]
pub type RawSocket = std::os::unix::io::RawFd;
/// The OS handle of a socket as the kernel sees it.
#[cfg(windows)]
pub type RawSocket = std::os::windows::io::RawSocket;

/// The caller's name for an operation; returned unchanged in its completion.
pub type Token = u64;

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
    /// Send the bytes of `buf` from `pos` on (there must be some). A
    /// partial send is a success with a smaller count; the caller resubmits
    /// the rest. A shared `buf` is kept alive by the port (it holds a
    /// reference) until the completion. A gathered `buf` is one vectored
    /// send of all its parts, `pos` counting bytes over their concatenation
    /// (see [`SendBuf`]); the port keeps the gather, and with it the slice
    /// array the kernel reads, until the completion hands it back.
    Send {
        /// The connected socket.
        socket: RawSocket,
        /// The bytes to send: owned, shared or gathered.
        buf: SendBuf,
        /// Where in the bytes of `buf` sending starts.
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
    /// A new connection, nonblocking and close-on-exec, with its peer address
    /// (an IP address, or for a Unix domain socket its path, if it has one).
    Accepted(io::Result<(Socket, Address)>),
    /// `Ok(0)` is end of stream. On `Ok(n)`, `buf.len()` already includes the `n` bytes.
    Received {
        /// The buffer of the op.
        buf: Vec<u8>,
        /// Bytes received.
        result: io::Result<usize>,
    },
    /// Bytes sent of those of `buf` from `pos` on; `pos` is as submitted.
    Sent {
        /// The buffer of the op.
        buf: SendBuf,
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
