//! Python exceptions and the conversion of Rust errors into them.

use std::io;

use pyo3::exceptions::{
    PyBrokenPipeError, PyConnectionAbortedError, PyConnectionError, PyConnectionResetError,
    PyFileExistsError, PyOSError, PyRuntimeError, PyTimeoutError, PyValueError,
};
use pyo3::prelude::*;

use crate::framing::FrameError;
use crate::server::CloseReason;
use crate::tls::LoadError;

pyo3::create_exception!(
    iocp_echo,
    FramingError,
    PyValueError,
    "A message cannot be framed or a byte stream cannot be decoded."
);
pyo3::create_exception!(
    iocp_echo,
    FrameTooLarge,
    FramingError,
    "A frame's payload is over the limit (max_frame), or its length prefix claims so."
);

/// A codec error as the matching Python exception.
pub(crate) fn frame_error(e: FrameError) -> PyErr {
    match e {
        FrameError::TooLarge { .. } => FrameTooLarge::new_err(e.to_string()),
        _ => FramingError::new_err(e.to_string()),
    }
}

/// An OS error as `OSError(errno, strerror, what)`, which Python turns into the
/// matching subclass (`ConnectionRefusedError`, ...). PyO3's own conversion would
/// lose the errno for errors it has no subclass for, such as `EADDRINUSE`.
pub(crate) fn os_error(e: &io::Error, what: &str) -> PyErr {
    match e.raw_os_error() {
        Some(errno) => {
            let message = io::Error::from_raw_os_error(errno).to_string();
            let strerror = match message.find(" (os error") {
                Some(end) => message[..end].to_string(),
                None => message,
            };
            PyOSError::new_err((errno, strerror, what.to_string()))
        }
        None => PyOSError::new_err(format!("{}: {}", what, e)),
    }
}

/// An error of `Server.start` as Python's: [`os_error`], but a Unix socket
/// path holding something that is not a socket (left untouched) is a
/// `FileExistsError` naming it.
pub(crate) fn start_error(e: &io::Error, what: &str) -> PyErr {
    if e.raw_os_error().is_none() && e.kind() == io::ErrorKind::AlreadyExists {
        return PyFileExistsError::new_err((
            libc::EEXIST,
            "exists and is not a socket (left untouched)",
            what.to_string(),
        ));
    }
    os_error(e, what)
}

pyo3::create_exception!(
    iocp_echo,
    ConnectionClosed,
    PyConnectionError,
    "The connection is closed: nothing more can be sent on it."
);

/// The exception `connection_lost` is given for a connection that closed
/// for `reason`; None for a clean close (by the peer or by the server on
/// request). Every reason is mapped here: a new one fails to compile until it is.
pub(crate) fn close_error(reason: &CloseReason) -> Option<PyErr> {
    Some(match reason {
        CloseReason::PeerClosed | CloseReason::Requested => return None,
        CloseReason::Io {
            code: Some(errno), ..
        } => {
            let message = io::Error::from_raw_os_error(*errno).to_string();
            let strerror = match message.find(" (os error") {
                Some(end) => message[..end].to_string(),
                None => message,
            };
            PyOSError::new_err((*errno, strerror))
        }
        CloseReason::Io { kind, code: None } => match kind {
            io::ErrorKind::ConnectionReset => PyConnectionResetError::new_err(reason.to_string()),
            io::ErrorKind::BrokenPipe => PyBrokenPipeError::new_err(reason.to_string()),
            io::ErrorKind::ConnectionAborted => {
                PyConnectionAbortedError::new_err(reason.to_string())
            }
            _ => PyOSError::new_err(reason.to_string()),
        },
        CloseReason::Frame(e) => frame_error(e.clone()),
        CloseReason::IdleTimeout => PyTimeoutError::new_err(reason.to_string()),
        CloseReason::Tls(_) => PyConnectionError::new_err(reason.to_string()),
        CloseReason::HandlerFailed => PyRuntimeError::new_err(reason.to_string()),
        CloseReason::Shutdown => PyConnectionAbortedError::new_err(reason.to_string()),
        // Queued output passed `max_output` (a client that does not read).
        CloseReason::SlowConsumer => PyConnectionError::new_err(reason.to_string()),
    })
}

/// A TLS file that cannot be used: `OSError(errno, strerror, filename)` when
/// it cannot be read, else `ValueError` naming the option and the file.
pub(crate) fn tls_load_error(e: &LoadError) -> PyErr {
    match e {
        LoadError::Unreadable { path, error, .. } => os_error(error, &path.to_string_lossy()),
        LoadError::Invalid { .. } => PyValueError::new_err(e.to_string()),
    }
}
