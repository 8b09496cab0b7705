//! The listening socket: created, bound and listening before any worker starts.

use std::io;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::config::Config;

/// Create, bind and listen on the server's socket.
pub(crate) fn bind(config: &Config) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(config.addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    // On Unix SO_REUSEADDR only lets us rebind past TIME_WAIT; on Windows it
    // would let another process steal the port, so it stays off there.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(config.addr))?;
    socket.listen(config.backlog)?;
    Ok(socket)
}
