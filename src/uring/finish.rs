//! Building the SQE of an op, and turning its CQE into the [`Completion`] of
//! the op.

use std::io;
use std::mem;
use std::os::unix::io::FromRawFd;

use io_uring::types::Fd;
use io_uring::{cqueue, opcode, squeue};
use socket2::{SockAddr, Socket};

use super::buf_ring::{self, RecvMemory};
use super::slot::{RecvBuf, Slot};
use crate::contract::{Address, Completion, Op, Outcome, RawSocket, SendBuf};

/// A CQE result as a count, or the error it encodes.
pub(super) fn result(res: i32) -> io::Result<usize> {
    if res < 0 {
        Err(io::Error::from_raw_os_error(-res))
    } else {
        Ok(res as usize)
    }
}

/// The SQE of a recv into the spare capacity of `buf` (which has some).
pub(super) fn recv_sqe(socket: RawSocket, buf: &mut Vec<u8>, key: u64) -> squeue::Entry {
    let spare = buf.spare_capacity_mut();
    let len = u32::try_from(spare.len()).unwrap_or(u32::MAX);
    opcode::Recv::new(Fd(socket), spare.as_mut_ptr().cast(), len)
        .build()
        .user_data(key)
}

/// The SQE of the op in `slot`, whose key is `key`; its buffers were checked
/// by the front (a recv has spare capacity or capacity 0, a send has bytes).
/// A gathered send is a `sendmsg` whose `msghdr` the slot keeps.
pub(super) fn prepare(slot: &mut Slot, key: usize, memory: &mut RecvMemory) -> squeue::Entry {
    let sqe = match &mut slot.op {
        Op::Accept { listener } => {
            opcode::Accept::new(Fd(*listener), std::ptr::null_mut(), std::ptr::null_mut())
                .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
                .build()
        }
        Op::Recv { socket, buf } if buf.capacity() == 0 => {
            if memory.ring.is_some() && !memory.is_hot(*socket) {
                slot.memory = RecvBuf::Selected { cancelled: false };
                opcode::Recv::new(Fd(*socket), std::ptr::null_mut(), 0)
                    .buf_group(buf_ring::GROUP)
                    .build()
                    .flags(squeue::Flags::BUFFER_SELECT)
            } else {
                // No ring, or bytes are known to be waiting: a pooled buffer,
                // received into directly (it is not held while idle).
                *buf = memory.pool.take();
                slot.memory = RecvBuf::Pooled;
                return recv_sqe(*socket, buf, key as u64);
            }
        }
        Op::Recv { socket, buf } => return recv_sqe(*socket, buf, key as u64),
        Op::Send {
            socket,
            buf: SendBuf::Gathered(gather),
            pos,
        } => {
            let slices = gather.io_slices(*pos);
            // SAFETY: msghdr is plain data for which all-zero is valid (no
            // address, no control data, no flags).
            let mut msg: Box<libc::msghdr> = Box::new(unsafe { mem::zeroed() });
            // `IoSlice` is guaranteed to have the layout of `iovec`; the
            // kernel only reads through the pointer.
            msg.msg_iov = slices.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = slices.len() as _;
            // The slot owns the gather (its parts and slices, whose heap
            // blocks never move) and the boxed msghdr until the completion.
            let msg = slot.msg.insert(msg);
            opcode::SendMsg::new(Fd(*socket), &**msg)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build()
        }
        Op::Send { socket, buf, pos } => {
            let rest = buf
                .single()
                .unwrap_or_default()
                .get(*pos..)
                .unwrap_or_default();
            let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
            opcode::Send::new(Fd(*socket), rest.as_ptr(), len)
                .flags(libc::MSG_NOSIGNAL)
                .build()
        }
        Op::Connect { socket, addr } => {
            let addr = slot.addr.insert(Box::new(SockAddr::from(*addr)));
            opcode::Connect::new(Fd(*socket), addr.as_ptr(), addr.len()).build()
        }
    };
    sqe.user_data(key as u64)
}

/// The completion of the op in `slot`, whose CQE carried `res` and `flags`. The
/// kernel is done with the slot's memory (and with the provided buffer the
/// flags name, which goes back to the ring).
pub(super) fn finish(slot: Slot, res: i32, flags: u32, memory: &mut RecvMemory) -> Completion {
    let selected = cqueue::buffer_select(flags);
    let outcome = match slot.op {
        Op::Accept { .. } => Outcome::Accepted(result(res).and_then(|fd| accepted(fd as i32))),
        Op::Recv { mut buf, .. } => {
            let mut result = result(res);
            let mut consumed = false;
            match (slot.memory, &result, selected) {
                (RecvBuf::Selected { .. }, Ok(n), Some(bid)) if *n > 0 => {
                    buf = memory.take_selected(bid, *n);
                    consumed = true;
                }
                (RecvBuf::Selected { cancelled: true }, Err(e), _)
                    if e.raw_os_error() == Some(libc::ENOBUFS) =>
                {
                    result = Err(io::Error::from_raw_os_error(libc::ECANCELED));
                }
                (RecvBuf::Selected { .. }, Ok(n), None) if *n > 0 => {
                    log::error!("io_uring recv of {} bytes named no provided buffer", n);
                    result = Err(io::Error::from_raw_os_error(libc::EIO));
                }
                (_, Ok(n), _) => {
                    let n = *n;
                    assert!(n <= buf.capacity() - buf.len(), "recv overran its buffer");
                    // SAFETY: the kernel wrote `n` bytes into the spare capacity,
                    // which starts at `buf.len()`; `n` fits in it (checked above).
                    unsafe { buf.set_len(buf.len() + n) };
                }
                _ => {}
            }
            if slot.memory == RecvBuf::Pooled && buf.is_empty() {
                // End of stream or an error: the pooled buffer goes back unused.
                memory.pool.give(mem::take(&mut buf));
            }
            if let (Some(bid), false) = (selected, consumed) {
                memory.recycle(bid);
            }
            Outcome::Received { buf, result }
        }
        Op::Send { buf, pos, .. } => Outcome::Sent {
            buf,
            pos,
            result: result(res),
        },
        Op::Connect { .. } => Outcome::Connected(result(res).map(drop)),
    };
    Completion {
        token: slot.token,
        outcome,
    }
}

/// Wrap an accepted descriptor and read its peer address.
pub(super) fn accepted(fd: RawSocket) -> io::Result<(Socket, Address)> {
    // SAFETY: a successful accept returns a new descriptor that nothing else owns.
    with_peer(unsafe { Socket::from_raw_fd(fd) })
}

/// An accepted socket with its peer address (`getpeername`); on failure the
/// socket is closed.
pub(super) fn with_peer(socket: Socket) -> io::Result<(Socket, Address)> {
    let peer = socket.peer_addr()?;
    let peer = Address::from_sock_addr(&peer).ok_or_else(|| {
        io::Error::other("accepted a socket whose peer is neither an IP address nor a Unix socket")
    })?;
    Ok((socket, peer))
}
