//! Thin, safe-to-call wrappers over the Win32 and Winsock calls the IOCP port
//! needs: the port handle's owner, the Winsock extension functions, socket
//! options and address conversion. Every OS failure becomes
//! `io::Error::last_os_error()` (Winsock sets the thread's last error too).

use std::ffi::c_void;
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::ptr;

use socket2::SockAddr;
use windows_sys::core::GUID;
use windows_sys::Win32::Foundation::{CloseHandle, RtlNtStatusToDosError, HANDLE, NTSTATUS};
use windows_sys::Win32::Networking::WinSock::{
    bind, recv, setsockopt, WSAGetLastError, WSAGetOverlappedResult, WSAIoctl, AF_INET, AF_INET6,
    LPFN_ACCEPTEX, LPFN_CONNECTEX, LPFN_GETACCEPTEXSOCKADDRS, SIO_GET_EXTENSION_FUNCTION_POINTER,
    SOCKADDR, SOCKADDR_STORAGE, SOCKET, SOCKET_ERROR, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT,
    SO_UPDATE_CONNECT_CONTEXT, WSAEINVAL, WSAID_ACCEPTEX, WSAID_CONNECTEX,
    WSAID_GETACCEPTEXSOCKADDRS,
};
use windows_sys::Win32::System::IO::OVERLAPPED;

/// The room `AcceptEx` needs for one address: the largest sockaddr plus the
/// 16 bytes its documentation requires on top.
pub(super) const ADDRESS_ROOM: u32 = mem::size_of::<SOCKADDR_STORAGE>() as u32 + 16;

/// The size of an `AcceptEx` output buffer holding the local and the remote
/// address and no data (we never receive data with the accept).
pub(super) const ACCEPT_BUFFER: usize = 2 * ADDRESS_ROOM as usize;

/// The owner of a completion port handle: closes it when the last reference
/// (the port or one of its wakers) goes away.
#[derive(Debug)]
pub(super) struct PortHandle(pub(super) HANDLE);

impl Drop for PortHandle {
    fn drop(&mut self) {
        // SAFETY: the handle came from CreateIoCompletionPort, is owned by this
        // value alone and is closed exactly once, here.
        if unsafe { CloseHandle(self.0) } == 0 {
            log::error!(
                "closing the completion port: {}",
                io::Error::last_os_error()
            );
        }
    }
}

/// The Winsock extension functions, looked up once per port with `WSAIoctl`.
#[derive(Default)]
pub(super) struct Extensions {
    accept_ex: LPFN_ACCEPTEX,
    get_addresses: LPFN_GETACCEPTEXSOCKADDRS,
    connect_ex: LPFN_CONNECTEX,
}

/// The type of `AcceptEx`.
pub(super) type AcceptExFn = unsafe extern "system" fn(
    SOCKET,
    SOCKET,
    *mut c_void,
    u32,
    u32,
    u32,
    *mut u32,
    *mut OVERLAPPED,
) -> i32;

/// The type of `ConnectEx`.
pub(super) type ConnectExFn = unsafe extern "system" fn(
    SOCKET,
    *const SOCKADDR,
    i32,
    *const c_void,
    u32,
    *mut u32,
    *mut OVERLAPPED,
) -> i32;

/// The type of `GetAcceptExSockaddrs`.
pub(super) type GetAddressesFn = unsafe extern "system" fn(
    *const c_void,
    u32,
    u32,
    u32,
    *mut *mut SOCKADDR,
    *mut i32,
    *mut *mut SOCKADDR,
    *mut i32,
);

impl Extensions {
    /// `AcceptEx` (and `GetAcceptExSockaddrs`), looked up on `socket` the first time.
    pub(super) fn accept_ex(&mut self, socket: SOCKET) -> io::Result<AcceptExFn> {
        if self.accept_ex.is_none() {
            let found = extension(socket, &WSAID_ACCEPTEX)?;
            // SAFETY: WSAIoctl returned the address of AcceptEx for this GUID; a
            // non-null function pointer and `Option<fn>` have the same layout.
            self.accept_ex = unsafe { mem::transmute::<*mut c_void, LPFN_ACCEPTEX>(found) };
        }
        if self.get_addresses.is_none() {
            let found = extension(socket, &WSAID_GETACCEPTEXSOCKADDRS)?;
            // SAFETY: as above, for GetAcceptExSockaddrs.
            self.get_addresses =
                unsafe { mem::transmute::<*mut c_void, LPFN_GETACCEPTEXSOCKADDRS>(found) };
        }
        self.accept_ex.ok_or_else(missing)
    }

    /// `GetAcceptExSockaddrs`; present once `accept_ex` succeeded.
    pub(super) fn get_addresses(&self) -> io::Result<GetAddressesFn> {
        self.get_addresses.ok_or_else(missing)
    }

    /// `ConnectEx`, looked up on `socket` the first time.
    pub(super) fn connect_ex(&mut self, socket: SOCKET) -> io::Result<ConnectExFn> {
        if self.connect_ex.is_none() {
            let found = extension(socket, &WSAID_CONNECTEX)?;
            // SAFETY: WSAIoctl returned the address of ConnectEx for this GUID.
            self.connect_ex = unsafe { mem::transmute::<*mut c_void, LPFN_CONNECTEX>(found) };
        }
        self.connect_ex.ok_or_else(missing)
    }
}

#[cold]
fn missing() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "the Winsock provider has no such extension function",
    )
}

/// Look up a Winsock extension function by GUID on `socket`.
fn extension(socket: SOCKET, guid: &GUID) -> io::Result<*mut c_void> {
    let mut found: *mut c_void = ptr::null_mut();
    let mut returned = 0u32;
    // SAFETY: the in-buffer is the GUID (read only), the out-buffer is `found`,
    // both with their exact sizes; no OVERLAPPED, so the call is synchronous.
    let rc = unsafe {
        WSAIoctl(
            socket,
            SIO_GET_EXTENSION_FUNCTION_POINTER,
            guid as *const GUID as *const c_void,
            mem::size_of::<GUID>() as u32,
            &mut found as *mut *mut c_void as *mut c_void,
            mem::size_of::<*mut c_void>() as u32,
            &mut returned,
            ptr::null_mut(),
            None,
        )
    };
    if rc == SOCKET_ERROR {
        return Err(io::Error::last_os_error());
    }
    if found.is_null() {
        return Err(missing());
    }
    Ok(found)
}

/// `SO_UPDATE_ACCEPT_CONTEXT`: lets `getpeername`, `shutdown` and friends work
/// on a socket accepted by `AcceptEx` on `listener`.
pub(super) fn update_accept_context(accepted: SOCKET, listener: SOCKET) -> io::Result<()> {
    // SAFETY: the option value is `listener`, read for its exact size.
    let rc = unsafe {
        setsockopt(
            accepted,
            SOL_SOCKET,
            SO_UPDATE_ACCEPT_CONTEXT,
            &listener as *const SOCKET as *const u8,
            mem::size_of::<SOCKET>() as i32,
        )
    };
    if rc == SOCKET_ERROR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `SO_UPDATE_CONNECT_CONTEXT`: makes a socket connected by `ConnectEx` behave
/// like one connected by `connect`.
pub(super) fn update_connect_context(socket: SOCKET) -> io::Result<()> {
    // SAFETY: this option takes no value (null pointer, length 0).
    let rc = unsafe {
        setsockopt(
            socket,
            SOL_SOCKET,
            SO_UPDATE_CONNECT_CONTEXT,
            ptr::null(),
            0,
        )
    };
    if rc == SOCKET_ERROR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Bind an unbound socket to the wildcard address of `peer`'s family, as
/// `ConnectEx` requires. A socket that is already bound is left as it is.
pub(super) fn bind_wildcard(socket: SOCKET, peer: &SocketAddr) -> io::Result<()> {
    let any: SocketAddr = match peer {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let any = SockAddr::from(any);
    // SAFETY: the address pointer and length come from a live SockAddr.
    let rc = unsafe { bind(socket, any.as_ptr(), any.len()) };
    if rc == SOCKET_ERROR {
        // SAFETY: no arguments; reads this thread's last Winsock error.
        let code = unsafe { WSAGetLastError() };
        if code == WSAEINVAL {
            return Ok(()); // already bound
        }
        return Err(io::Error::from_raw_os_error(code));
    }
    Ok(())
}

/// The remote address stored by `AcceptEx` in `buffer` (`ACCEPT_BUFFER` bytes).
pub(super) fn accepted_peer(
    get_addresses: GetAddressesFn,
    buffer: &[u8; ACCEPT_BUFFER],
) -> Option<SocketAddr> {
    let mut local: *mut SOCKADDR = ptr::null_mut();
    let mut local_len = 0i32;
    let mut remote: *mut SOCKADDR = ptr::null_mut();
    let mut remote_len = 0i32;
    // SAFETY: `buffer` is the output buffer AcceptEx filled, with the same data
    // and address lengths; the out-pointers are locals. The returned pointers
    // point into `buffer`, which outlives their use below.
    unsafe {
        get_addresses(
            buffer.as_ptr() as *const c_void,
            0,
            ADDRESS_ROOM,
            ADDRESS_ROOM,
            &mut local,
            &mut local_len,
            &mut remote,
            &mut remote_len,
        );
    }
    socket_addr(remote, remote_len)
}

/// Convert the raw socket address `GetAcceptExSockaddrs` pointed to (`len`
/// bytes at `addr`, inside the accept buffer) to a std one.
fn socket_addr(addr: *const SOCKADDR, len: i32) -> Option<SocketAddr> {
    if addr.is_null() || len <= 0 || len as usize > mem::size_of::<SOCKADDR_STORAGE>() {
        return None;
    }
    // SAFETY: `addr` points to `len` readable bytes of the accept buffer (as
    // GetAcceptExSockaddrs reported), at least a SOCKADDR header; `storage` is
    // a zeroed SOCKADDR_STORAGE of at least `len` bytes; the regions are distinct.
    let (_, sock_addr) = unsafe {
        let family = (*addr).sa_family;
        if family != AF_INET && family != AF_INET6 {
            return None;
        }
        SockAddr::try_init(|storage, storage_len| {
            ptr::copy_nonoverlapping(addr as *const u8, storage as *mut u8, len as usize);
            *storage_len = len;
            Ok(())
        })
    }
    .ok()?;
    sock_addr.as_socket()
}

/// The error of a failed overlapped op on `socket`: the Winsock error code
/// (`WSAECONNRESET`, ...) where Winsock can tell it, else the NT status
/// converted to a Win32 error (`ERROR_OPERATION_ABORTED` for a cancelled op).
///
/// `overlapped` is the OVERLAPPED of an op whose completion was dequeued.
pub(super) fn op_error(
    socket: SOCKET,
    overlapped: *const OVERLAPPED,
    status: NTSTATUS,
) -> io::Error {
    let mut bytes = 0u32;
    let mut flags = 0u32;
    // SAFETY: `overlapped` belongs to an op whose completion was dequeued (the
    // only caller's invariant), so it only holds its final status, read here;
    // no wait is asked for (fWait = FALSE); the out-values are locals.
    let ok = unsafe { WSAGetOverlappedResult(socket, overlapped, &mut bytes, 0, &mut flags) };
    if ok == 0 {
        // SAFETY: no arguments; reads this thread's last Winsock error.
        let code = unsafe { WSAGetLastError() };
        // A socket already closed cannot answer: WSAENOTSOCK says nothing of the op.
        if code != 0 && code != windows_sys::Win32::Networking::WinSock::WSAENOTSOCK {
            return io::Error::from_raw_os_error(code);
        }
    }
    // SAFETY: a pure conversion of a status code.
    let code = unsafe { RtlNtStatusToDosError(status) };
    io::Error::from_raw_os_error(code as i32)
}

/// A nonblocking `recv` into the spare capacity of `buf` (empty, as the pool
/// hands it out): the bytes received, which the caller adds to its length (0:
/// end of stream), or the error (`WouldBlock` when nothing is there).
pub(super) fn recv_now(socket: SOCKET, buf: &mut Vec<u8>) -> io::Result<usize> {
    let len = buf.len();
    let spare = i32::try_from(buf.capacity() - len).unwrap_or(i32::MAX);
    // SAFETY: the pointer and length describe the buffer's spare capacity,
    // written during this call only (the socket is nonblocking).
    let n = unsafe { recv(socket, buf.as_mut_ptr().add(len), spare, 0) };
    if n == SOCKET_ERROR {
        // SAFETY: no arguments; reads this thread's last Winsock error.
        return Err(io::Error::from_raw_os_error(unsafe { WSAGetLastError() }));
    }
    Ok(n as usize)
}
