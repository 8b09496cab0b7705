//! Python exceptions and the conversion of Rust errors into them.

use std::io;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;

use crate::framing::FrameError;

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
