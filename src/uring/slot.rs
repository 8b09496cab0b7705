//! An op the kernel (or the backlog) holds, with the memory its SQE points to.

use socket2::SockAddr;

use crate::contract::{Op, Token};

/// One op posted as an SQE of its own; its slab key is the SQE's `user_data`.
pub(super) struct Slot {
    pub(super) token: Token,
    /// Owns the buffer of a recv or send: its heap block never moves while the
    /// slot lives, even when the slab grows.
    pub(super) op: Op,
    /// The peer address of a connect, at a stable address.
    pub(super) addr: Option<Box<SockAddr>>,
    /// The `msghdr` of a gathered send, at a stable address: it points to
    /// the slice array of the op's gather. (One small allocation per
    /// gathered send, which sends many buffers; a pool of them would not
    /// pay for the room it takes in the ring.)
    pub(super) msg: Option<Box<libc::msghdr>>,
    /// How a recv's memory was chosen.
    pub(super) memory: RecvBuf,
}

/// Where a recv receives into.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum RecvBuf {
    /// The caller's buffer (and every op other than a recv).
    Caller,
    /// A buffer the kernel selects from the provided-buffer ring; `cancelled`:
    /// a cancel of its socket was requested (so an `ENOBUFS` is not retried).
    Selected { cancelled: bool },
    /// A pooled `Vec` the port put in the op for a port-chosen recv.
    Pooled,
}
