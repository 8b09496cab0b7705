//! The syscalls behind the epoll port's ops: accept, recv, send and connect.

use std::io::{self, IoSlice};
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, RawFd};

use socket2::{SockAddr, Socket};

use crate::contract::{Address, SendBuf};
use crate::linux::{cvt, retry_eintr};

/// `accept4` a nonblocking, close-on-exec connection and its peer address.
pub(super) fn accept(listener: RawFd) -> io::Result<(Socket, Address)> {
    let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: try_init hands the closure a zeroed sockaddr_storage and its size;
    // accept4 writes at most that many bytes and stores the real length in `len`.
    let (fd, peer) = unsafe {
        SockAddr::try_init(|storage, len| {
            retry_eintr(|| cvt(libc::accept4(listener, storage.cast(), len, flags)))
        })
    }?;
    // SAFETY: accept4 returned a new fd that nothing else owns.
    let socket = unsafe { Socket::from_raw_fd(fd) };
    // The address accept4 filled in is what getpeername would say, one syscall sooner.
    let peer = Address::from_sock_addr(&peer).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "accepted a connection whose peer is neither an IP address nor a Unix socket",
        )
    })?;
    Ok((socket, peer))
}

/// `recv` into the spare capacity of `buf`, growing its length by the count.
pub(super) fn recv(socket: RawFd, buf: &mut Vec<u8>) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let (ptr, len) = (spare.as_mut_ptr(), spare.len());
    let n = retry_eintr(|| {
        // SAFETY: `ptr` and `len` describe the spare capacity of `buf`, which stays
        // allocated and unaliased during the call; recv writes at most `len` bytes.
        cvt(unsafe { libc::recv(socket, ptr.cast(), len, 0) })
    })?;
    let n = usize::try_from(n).unwrap_or(0);
    // SAFETY: recv initialised `n <= len` bytes right after the old length.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Send the bytes of `buf` from `pos` on without raising `SIGPIPE` on a
/// closed peer: `send` of one buffer, `sendmsg` of a gathered one's parts.
pub(super) fn send(socket: RawFd, buf: &mut SendBuf, pos: usize) -> io::Result<usize> {
    match buf {
        SendBuf::Gathered(gather) => send_vectored(socket, gather.io_slices(pos)),
        single => send_one(socket, &single.single().unwrap_or_default()[pos..]),
    }
}

/// `sendmsg` of `slices` (at most `MAX_GATHER`, the kernel's `IOV_MAX`)
/// without raising `SIGPIPE`.
fn send_vectored(socket: RawFd, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: msghdr is plain data for which all-zero is valid (no address,
    // no control data).
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    // `IoSlice` is guaranteed to have the layout of `iovec`; sendmsg only
    // reads through the pointer.
    msg.msg_iov = slices.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = slices.len() as _;
    let n = retry_eintr(|| {
        // SAFETY: `msg` describes `slices`, which stay borrowed (and their
        // bytes alive) for the duration of the call.
        cvt(unsafe { libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL) })
    })?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// `send` `bytes` without raising `SIGPIPE` on a closed peer.
fn send_one(socket: RawFd, bytes: &[u8]) -> io::Result<usize> {
    let n = retry_eintr(|| {
        // SAFETY: the pointer and length describe `bytes`, which send only reads.
        cvt(unsafe {
            libc::send(
                socket,
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_NOSIGNAL,
            )
        })
    })?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Start a nonblocking connect: `Ok` if it finished at once, `EINPROGRESS` if it runs on.
pub(super) fn start_connect(socket: RawFd, addr: SocketAddr) -> io::Result<()> {
    let addr = SockAddr::from(addr);
    // SAFETY: the pointer and length describe `addr`, a valid socket address that
    // outlives the call.
    match cvt(unsafe { libc::connect(socket, addr.as_ptr(), addr.len()) }) {
        Ok(_) => Ok(()),
        // An interrupted connect goes on asynchronously, like EINPROGRESS.
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {
            Err(io::Error::from_raw_os_error(libc::EINPROGRESS))
        }
        // EAGAIN from a TCP connect means no free local port, not "wait for
        // readiness": it completes the op as an error.
        Err(e) => Err(e),
    }
}

/// Finish a connect that returned `EINPROGRESS`, now that the socket signalled.
pub(super) fn finish_connect(socket: RawFd, hangup: bool) -> io::Result<()> {
    if let Some(error) = take_socket_error(socket)? {
        return Err(error);
    }
    // No pending error: connected, or (a spurious wake-up) still connecting.
    // SAFETY: a zeroed sockaddr_storage and its size; getpeername writes at most that.
    let peer = unsafe {
        SockAddr::try_init(|storage, len| cvt(libc::getpeername(socket, storage.cast(), len)))
    };
    match peer {
        Ok(_) => Ok(()),
        // A hung-up socket with no peer will never connect; its error was taken already.
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) && !hangup => {
            Err(io::Error::from_raw_os_error(libc::EINPROGRESS))
        }
        Err(e) => Err(e),
    }
}

/// Take the pending error of a socket (`SO_ERROR`), which also clears it.
pub(super) fn take_socket_error(socket: RawFd) -> io::Result<Option<io::Error>> {
    let mut error: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `error` and `len` are valid for writes and `len` is the size of `error`.
    cvt(unsafe {
        libc::getsockopt(
            socket,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut error as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok((error != 0).then(|| io::Error::from_raw_os_error(error)))
}
