//! The listening socket: created, bound and listening before any worker starts.
//!
//! With `reuse_port` (Linux only) the socket joins the port's `SO_REUSEPORT`
//! group: every process of `--processes` binds its own listener on the same
//! address and the kernel spreads new connections over them (see "Several
//! processes" in `docs/architecture.md`). Elsewhere `reuse_port` is refused here,
//! at start, with an error that says so.

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
    if config.reuse_port {
        set_reuse_port(&socket)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(config.addr))?;
    socket.listen(config.backlog)?;
    Ok(socket)
}

#[cfg(target_os = "linux")]
fn set_reuse_port(socket: &Socket) -> io::Result<()> {
    socket.set_reuse_port(true)
}

#[cfg(not(target_os = "linux"))]
fn set_reuse_port(_socket: &Socket) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "reuse_port is supported on Linux only",
    ))
}

#[cfg(test)]
mod tests {
    use super::bind;
    use crate::config::Config;

    fn config(port: u16, reuse_port: bool) -> Config {
        let mut config = Config::default();
        config.addr.set_port(port);
        config.reuse_port = reuse_port;
        config
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn two_listeners_with_reuse_port_share_one_port() {
        let first = bind(&config(0, true)).unwrap();
        let port = first.local_addr().unwrap().as_socket().unwrap().port();
        let second = bind(&config(port, true)).unwrap();
        assert_eq!(
            second.local_addr().unwrap().as_socket().unwrap().port(),
            port
        );
        // Without it the port is taken.
        assert!(bind(&config(port, false)).is_err());
    }

    #[cfg(not(target_os = "linux"))]
    #[test]
    fn reuse_port_is_refused_off_linux() {
        let err = bind(&config(0, true)).unwrap_err();
        assert_eq!(err.to_string(), "reuse_port is supported on Linux only");
        assert!(bind(&config(0, false)).is_ok());
    }
}
