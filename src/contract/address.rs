//! The address of one end of a connection: an IP address and port, or a Unix
//! domain socket's path.
//!
//! Accepts give it for the peer; the server gives it for both ends of a
//! connection. The IP case costs what a `SocketAddr` costs (no allocation);
//! only a named Unix socket's address allocates, once per accept.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use socket2::SockAddr;

/// One end of a stream connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// An IPv4 or IPv6 address and port.
    Inet(SocketAddr),
    /// A Unix domain socket: its path, or `None` when the socket is unnamed
    /// (a client that connected without binding). An address in Linux's
    /// abstract namespace is its name with the leading NUL byte.
    Unix(Option<PathBuf>),
}

impl Address {
    /// The address a socket call filled in, if it is an IP or a Unix one.
    pub fn from_sock_addr(addr: &SockAddr) -> Option<Address> {
        if let Some(inet) = addr.as_socket() {
            return Some(Address::Inet(inet));
        }
        unix_address(addr)
    }

    /// The IP address and port, if this is one.
    pub fn inet(&self) -> Option<SocketAddr> {
        match self {
            Address::Inet(addr) => Some(*addr),
            Address::Unix(_) => None,
        }
    }

    /// Whether this is a Unix domain socket's address.
    pub fn is_unix(&self) -> bool {
        matches!(self, Address::Unix(_))
    }
}

#[cfg(unix)]
fn unix_address(addr: &SockAddr) -> Option<Address> {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    if !addr.is_unix() {
        return None;
    }
    if let Some(path) = addr.as_pathname() {
        return Some(Address::Unix(Some(path.to_path_buf())));
    }
    if let Some(name) = addr.as_abstract_namespace() {
        let mut bytes = Vec::with_capacity(name.len() + 1);
        bytes.push(0);
        bytes.extend_from_slice(name);
        return Some(Address::Unix(Some(PathBuf::from(OsStr::from_bytes(
            &bytes,
        )))));
    }
    Some(Address::Unix(None))
}

#[cfg(not(unix))]
fn unix_address(_addr: &SockAddr) -> Option<Address> {
    None
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Address {
        Address::Inet(addr)
    }
}

/// `127.0.0.1:8080`, `[::1]:8080`, a Unix socket's path, or `unnamed` for an
/// unnamed Unix socket.
impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Inet(addr) => addr.fmt(f),
            Address::Unix(Some(path)) => path.display().fmt(f),
            Address::Unix(None) => f.write_str("unnamed"),
        }
    }
}
