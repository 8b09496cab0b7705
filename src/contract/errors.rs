//! The errors a port reports for the caller's mistakes, alike on every backend.
//!
//! Rule: each is `#[cold]` and has one [`io::ErrorKind`] everywhere, so a
//! caller (and the conformance tests) can tell them apart without knowing the
//! backend.

use std::io;

use super::op::RawSocket;

/// An op (or a deregister) on a socket the port does not know.
#[cold]
pub(crate) fn not_registered(socket: RawSocket) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("socket {} is not registered with this port", socket),
    )
}

/// A second register of the same socket.
#[cold]
pub(crate) fn already_registered(socket: RawSocket) -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("socket {} is already registered with this port", socket),
    )
}

/// A recv whose buffer has capacity but no spare capacity.
#[cold]
pub(crate) fn no_spare_capacity() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "recv buffer has no spare capacity",
    )
}

/// A send with no bytes after its `pos`.
#[cold]
pub(crate) fn nothing_to_send() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "send buffer has nothing after pos",
    )
}

/// An op ended by a cancel before the kernel finished it (`ECANCELED`).
#[cfg(target_os = "linux")]
#[cold]
pub(crate) fn canceled() -> io::Error {
    io::Error::from_raw_os_error(libc::ECANCELED)
}
