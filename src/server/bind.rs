//! The listening socket: created, bound and listening before any worker
//! starts. TCP on `Config::addr`, or a Unix domain socket at `Config::path`
//! (see `socket_file.rs`).

use std::io;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::socket_file::SocketFile;
use crate::config::Config;

/// Create, bind and listen on the server's socket; for a Unix domain socket
/// also its file, removed when dropped.
pub(crate) fn bind(config: &Config) -> io::Result<(Socket, Option<SocketFile>)> {
    if let Some(path) = &config.path {
        let (socket, file) = SocketFile::bind(path, config.backlog)?;
        return Ok((socket, Some(file)));
    }
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
    Ok((socket, None))
}
