//! The `iocp_echo._native` extension module: the PyO3 face of the server and
//! the codecs. Python-facing rules: bad arguments are
//! `ValueError`/`TypeError` naming the argument, OS failures are `OSError` with
//! the real errno, frame errors are `FramingError(ValueError)` subclasses.

mod bench;
mod call;
mod connection;
mod errors;
mod framing;
mod handler;
mod options;
mod protocol;
mod server;
mod slot;
mod tls_config;
mod tls_info;

use pyo3::prelude::*;

/// The extension module. It declares that it needs the GIL (`gil_used = true`):
/// a `bytearray` reply is read in place on the promise that no other thread
/// resizes it meanwhile, which only the GIL keeps. The abi3 wheel does not load
/// on free-threaded CPython at all; a build from source for one re-enables the
/// GIL at import (see docs/architecture.md, packaging).
#[pymodule(gil_used = true)]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Rust `log` records go to Python's `logging`, under the "iocp_echo" logger.
    let _ = pyo3_log::try_init();
    let py = m.py();
    m.add("FramingError", py.get_type::<errors::FramingError>())?;
    m.add("FrameTooLarge", py.get_type::<errors::FrameTooLarge>())?;
    m.add(
        "ConnectionClosed",
        py.get_type::<errors::ConnectionClosed>(),
    )?;
    m.add_class::<connection::PyConnection>()?;
    m.add_class::<framing::PyFraming>()?;
    m.add_class::<framing::PyDecoder>()?;
    m.add_class::<server::PyServer>()?;
    m.add_class::<tls_config::PyTlsConfig>()?;
    m.add_class::<tls_info::PyTlsInfo>()?;
    m.add("DEFAULT_MAX_FRAME", crate::config::DEFAULT_MAX_FRAME)?;
    m.add("BACKENDS", crate::port::Backend::NAMES.to_vec())?;
    m.add_class::<options::PyServerOption>()?;
    m.add("OPTIONS", options::options_tuple(py)?)?;
    m.add_function(wrap_pyfunction!(options::option_from_text, m)?)?;
    m.add_function(wrap_pyfunction!(server::resolve_backend, m)?)?;
    m.add_function(wrap_pyfunction!(bench::run_bench, m)?)?;
    Ok(())
}
