//! Starting each kind of op: fill a slot, then make the overlapped call.

use std::io;
use std::net::SocketAddr;
use std::os::windows::io::{AsRawSocket, BorrowedSocket};
use std::ptr;

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};
use windows_sys::Win32::Networking::WinSock::{WSARecv, WSASend, SOCKET};

use super::slots::State;
use super::{sys, Iocp};
use crate::contract::{Op, RawSocket, Ready, Token};

impl Iocp {
    /// The address family of a listener, asked once and remembered.
    fn listener_domain(&mut self, listener: RawSocket) -> io::Result<Domain> {
        if let Some(domain) = self.sockets.get(&listener).and_then(|r| r.domain) {
            return Ok(domain);
        }
        // SAFETY: the caller holds the listener open while it has ops posted,
        // and the borrow ends within this call.
        let borrowed = unsafe { BorrowedSocket::borrow_raw(listener) };
        let domain = SockRef::from(&borrowed).local_addr()?.domain();
        if let Some(registered) = self.sockets.get_mut(&listener) {
            registered.domain = Some(domain);
        }
        Ok(domain)
    }

    pub(super) fn submit_accept(&mut self, token: Token, listener: RawSocket, ready: &mut Ready) {
        let prepared = self.listener_domain(listener).and_then(|domain| {
            let accept_ex = self.extensions.accept_ex(listener as SOCKET)?;
            let accepted = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
            Ok((accept_ex, accepted))
        });
        let (accept_ex, accepted) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => return ready.push_back(Op::Accept { listener }.fail(token, e)),
        };
        let accepted_raw = accepted.as_raw_socket() as SOCKET;
        let index = self
            .slots
            .insert(token, listener, State::Accept { listener, accepted });
        let slot = self.slots.get_mut(index);
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
        let inline = if ok != 0 {
            Ok(bytes)
        } else {
            Err(io::Error::last_os_error())
        };
        self.started(index, inline, ready);
    }

    /// A recv whose buffer has spare capacity, or capacity 0 (checked by the front).
    pub(super) fn submit_recv(
        &mut self,
        token: Token,
        socket: RawSocket,
        buf: Vec<u8>,
        ready: &mut Ready,
    ) {
        // Capacity 0: the port chooses the memory, a buffer from its pool.
        let pooled = buf.capacity() == 0;
        let buf = if pooled { self.pool.take() } else { buf };
        let spare = buf.capacity() - buf.len();
        let index = self
            .slots
            .insert(token, socket, State::Recv { buf, pooled });
        let slot = self.slots.get_mut(index);
        if let State::Recv { buf, .. } = &mut slot.state {
            let len = buf.len();
            slot.wsabuf.len = u32::try_from(spare).unwrap_or(u32::MAX);
            // SAFETY: `len` is within the allocation, so the pointer stays in it.
            slot.wsabuf.buf = unsafe { buf.as_mut_ptr().add(len) };
        }
        let mut bytes = 0u32;
        // SAFETY: the WSABUF describes the buffer's spare capacity, owned by the
        // slot until the completion; the WSABUF, flags and OVERLAPPED live in the
        // boxed slot at a stable address; no completion routine.
        let rc = unsafe {
            WSARecv(
                socket as SOCKET,
                &slot.wsabuf,
                1,
                &mut bytes,
                &mut slot.flags,
                slot.overlapped(),
                None,
            )
        };
        let inline = if rc == 0 {
            Ok(bytes)
        } else {
            Err(io::Error::last_os_error())
        };
        self.started(index, inline, ready);
    }

    /// A send with bytes after `pos` (checked by the front).
    pub(super) fn submit_send(
        &mut self,
        token: Token,
        socket: RawSocket,
        buf: Vec<u8>,
        pos: usize,
        ready: &mut Ready,
    ) {
        let index = self.slots.insert(token, socket, State::Send { buf, pos });
        let slot = self.slots.get_mut(index);
        if let State::Send { buf, pos } = &mut slot.state {
            let rest = &mut buf[*pos..];
            slot.wsabuf.len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
            slot.wsabuf.buf = rest.as_mut_ptr();
        }
        let mut bytes = 0u32;
        // SAFETY: the WSABUF describes `buf[pos..]`, owned by the slot until the
        // completion; WSABUF and OVERLAPPED live in the boxed slot at a stable
        // address; no completion routine.
        let rc = unsafe {
            WSASend(
                socket as SOCKET,
                &slot.wsabuf,
                1,
                &mut bytes,
                0,
                slot.overlapped(),
                None,
            )
        };
        let inline = if rc == 0 {
            Ok(bytes)
        } else {
            Err(io::Error::last_os_error())
        };
        self.started(index, inline, ready);
    }

    pub(super) fn submit_connect(
        &mut self,
        token: Token,
        socket: RawSocket,
        addr: SocketAddr,
        ready: &mut Ready,
    ) {
        let connect_ex = match sys::bind_wildcard(socket as SOCKET, &addr)
            .and_then(|()| self.extensions.connect_ex(socket as SOCKET))
        {
            Ok(f) => f,
            Err(e) => return ready.push_back(Op::Connect { socket, addr }.fail(token, e)),
        };
        let index = self.slots.insert(token, socket, State::Connect);
        let slot = self.slots.get_mut(index);
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
        let inline = if ok != 0 {
            Ok(0)
        } else {
            Err(io::Error::last_os_error())
        };
        self.started(index, inline, ready);
    }
}

/// Finish a connection accepted by `AcceptEx` on `listener`.
pub(super) fn finish_accept(
    listener: RawSocket,
    accepted: Socket,
    peer: Option<SocketAddr>,
) -> io::Result<(Socket, SocketAddr)> {
    sys::update_accept_context(accepted.as_raw_socket() as SOCKET, listener as SOCKET)?;
    accepted.set_nonblocking(true)?;
    let peer = match peer {
        Some(peer) => peer,
        None => accepted.peer_addr()?.as_socket().ok_or_else(|| {
            io::Error::new(io::ErrorKind::Other, "accepted socket has no IP peer")
        })?,
    };
    Ok((accepted, peer))
}
