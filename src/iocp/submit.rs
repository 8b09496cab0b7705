//! Starting each kind of op: fill a slot, then make the overlapped call. Each
//! function gets the parts of the port it needs and returns the slot it filled
//! with what the call returned ([`Started`]); the port records the start.

use std::io;
use std::net::SocketAddr;
use std::os::windows::io::{AsRawSocket, BorrowedSocket};
use std::ptr;

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};
use windows_sys::Win32::Networking::WinSock::{WSARecv, WSASend, SOCKET, WSABUF};

use super::slots::{Slot, Slots, State};
use super::sys::{self, Extensions};
use crate::contract::{Address, RawSocket, SendBuf, Token};

/// An op whose overlapped call was made.
pub(super) struct Started {
    /// Its slot.
    pub(super) index: usize,
    /// What the call returned: `Ok(bytes)` when it finished inside the call,
    /// else its error (`WSA_IO_PENDING`: it runs on).
    pub(super) inline: io::Result<u32>,
}

/// The address family of a listening socket.
pub(super) fn listener_domain(listener: RawSocket) -> io::Result<Domain> {
    // SAFETY: the caller holds the listener open while it has ops posted,
    // and the borrow ends within this call.
    let borrowed = unsafe { BorrowedSocket::borrow_raw(listener) };
    Ok(SockRef::from(&borrowed).local_addr()?.domain())
}

/// `AcceptEx` on `listener` (of address family `domain`) into a new socket.
/// `Err`: nothing was started (the op fails with that error).
pub(super) fn accept(
    slots: &mut Slots,
    extensions: &mut Extensions,
    token: Token,
    listener: RawSocket,
    domain: Domain,
) -> io::Result<Started> {
    let accept_ex = extensions.accept_ex(listener as SOCKET)?;
    let accepted = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    let accepted_raw = accepted.as_raw_socket() as SOCKET;
    let index = slots.insert(token, listener, State::Accept { listener, accepted });
    let slot = slots.get_mut(index);
    let mut bytes = 0u32;
    // SAFETY: both sockets are open; the output buffer and the OVERLAPPED
    // live in the boxed slot, which stays put and is not reused until this
    // op's completion is seen; the address lengths match the buffer size.
    let ok = unsafe {
        accept_ex(
            listener as SOCKET,
            accepted_raw,
            slot.accept_buffer.as_mut_ptr().cast(),
            0,
            sys::ADDRESS_ROOM,
            sys::ADDRESS_ROOM,
            &mut bytes,
            slot.overlapped(),
        )
    };
    Ok(Started {
        index,
        inline: call_result(ok != 0, bytes),
    })
}

/// `WSARecv` into the spare capacity of `buf` (`pooled`: a buffer of the
/// port's pool, for a recv with port-chosen memory).
pub(super) fn recv(
    slots: &mut Slots,
    token: Token,
    socket: RawSocket,
    buf: Vec<u8>,
    pooled: bool,
) -> Started {
    let index = slots.insert(token, socket, State::Recv { buf, pooled });
    Started {
        index,
        inline: post_recv(slots.get_mut(index)),
    }
}

/// A zero-byte `WSARecv`, for a recv with port-chosen memory: it holds no
/// buffer while it waits. `cancels`: the socket's cancel count now.
pub(super) fn zero_recv(
    slots: &mut Slots,
    token: Token,
    socket: RawSocket,
    cancels: u32,
) -> Started {
    let index = slots.insert(token, socket, State::ZeroRecv { cancels });
    Started {
        index,
        inline: post_recv(slots.get_mut(index)),
    }
}

/// Make the `WSARecv` of `slot`, a recv whose `OVERLAPPED` and flags are
/// zeroed: into the spare capacity of its buffer, or of zero bytes for a
/// zero-byte recv. Returns what the call returned (see [`Started::inline`]).
pub(super) fn post_recv(slot: &mut Slot) -> io::Result<u32> {
    match &mut slot.state {
        State::Recv { buf, .. } => {
            let len = buf.len();
            let spare = buf.capacity() - len;
            slot.wsabuf.len = u32::try_from(spare).unwrap_or(u32::MAX);
            // SAFETY: `len` is within the allocation, so the pointer stays in it.
            slot.wsabuf.buf = unsafe { buf.as_mut_ptr().add(len) };
        }
        _ => {
            // Zero bytes: any valid address does; the kernel writes nothing.
            slot.wsabuf.len = 0;
            slot.wsabuf.buf = slot.accept_buffer.as_mut_ptr();
        }
    }
    let mut bytes = 0u32;
    // SAFETY: the WSABUF describes the buffer's spare capacity (or zero
    // bytes), owned by the slot until the completion; the WSABUF, flags and
    // OVERLAPPED live in the boxed slot at a stable address; no completion
    // routine.
    let rc = unsafe {
        WSARecv(
            slot.socket as SOCKET,
            &slot.wsabuf,
            1,
            &mut bytes,
            &mut slot.flags,
            slot.overlapped(),
            None,
        )
    };
    call_result(rc == 0, bytes)
}

/// `WSASend` of the bytes of `buf` from `pos` on, which are some (checked by
/// the front): one `WSABUF` in the slot for an owned or shared buffer, the
/// gather's own slice array for a gathered one.
pub(super) fn send(
    slots: &mut Slots,
    token: Token,
    socket: RawSocket,
    buf: SendBuf,
    pos: usize,
) -> Started {
    let index = slots.insert(token, socket, State::Send { buf, pos });
    let slot = slots.get_mut(index);
    let mut gathered = None;
    if let State::Send { buf, pos } = &mut slot.state {
        match buf {
            SendBuf::Gathered(gather) => {
                let slices = gather.io_slices(*pos);
                // `IoSlice` is guaranteed to have the layout of `WSABUF`;
                // at most `MAX_GATHER` of them, so the count fits.
                gathered = Some((slices.as_ptr() as *const WSABUF, slices.len() as u32));
            }
            single => {
                let rest = &single.single().unwrap_or_default()[*pos..];
                slot.wsabuf.len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
                // `WSASend` only reads through the pointer (WSABUF has no
                // const form): a shared buffer is never written.
                slot.wsabuf.buf = rest.as_ptr() as *mut u8;
            }
        }
    }
    let (buffers, count) = match gathered {
        Some(gathered) => gathered,
        None => (&slot.wsabuf as *const WSABUF, 1),
    };
    let mut bytes = 0u32;
    // SAFETY: the WSABUFs describe the bytes from `pos` on, owned by the slot
    // until the completion (a gather's parts and its slice array, whose heap
    // blocks never move, or the slot's own WSABUF); the OVERLAPPED lives in
    // the boxed slot at a stable address; no completion routine.
    let rc = unsafe {
        WSASend(
            socket as SOCKET,
            buffers,
            count,
            &mut bytes,
            0,
            slot.overlapped(),
            None,
        )
    };
    Started {
        index,
        inline: call_result(rc == 0, bytes),
    }
}

/// `ConnectEx` to `addr`, after binding the socket to the wildcard address.
/// `Err`: nothing was started (the op fails with that error).
pub(super) fn connect(
    slots: &mut Slots,
    extensions: &mut Extensions,
    token: Token,
    socket: RawSocket,
    addr: SocketAddr,
) -> io::Result<Started> {
    sys::bind_wildcard(socket as SOCKET, &addr)?;
    let connect_ex = extensions.connect_ex(socket as SOCKET)?;
    let index = slots.insert(token, socket, State::Connect);
    let slot = slots.get_mut(index);
    let peer = SockAddr::from(addr);
    let mut bytes = 0u32;
    // SAFETY: the address is read during the call only; no data to send;
    // the OVERLAPPED lives in the boxed slot at a stable address.
    let ok = unsafe {
        connect_ex(
            socket as SOCKET,
            peer.as_ptr(),
            peer.len(),
            ptr::null(),
            0,
            &mut bytes,
            slot.overlapped(),
        )
    };
    Ok(Started {
        index,
        inline: call_result(ok != 0, 0),
    })
}

/// What an overlapped call returned: `Ok(bytes)` if it succeeded, else the
/// thread's last error (read at once, before anything else can change it).
fn call_result(succeeded: bool, bytes: u32) -> io::Result<u32> {
    if succeeded {
        Ok(bytes)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Finish a connection accepted by `AcceptEx` on `listener`.
pub(super) fn finish_accept(
    listener: RawSocket,
    accepted: Socket,
    peer: Option<SocketAddr>,
) -> io::Result<(Socket, Address)> {
    sys::update_accept_context(accepted.as_raw_socket() as SOCKET, listener as SOCKET)?;
    accepted.set_nonblocking(true)?;
    let peer = match peer {
        Some(peer) => peer,
        None => accepted.peer_addr()?.as_socket().ok_or_else(|| {
            io::Error::new(io::ErrorKind::Other, "accepted socket has no IP peer")
        })?,
    };
    Ok((accepted, Address::Inet(peer)))
}
