//! A Python callable as the server's [`Handler`]: attached to the interpreter
//! once per batch of frames, each frame given as `bytes`.
//!
//! Copies: each frame is copied once, into its `bytes`; each reply once, by
//! [`Batch::reply`] framing it into the connection's output (a `bytes`,
//! `bytearray` or C-contiguous `memoryview` is read in place).

use std::mem::MaybeUninit;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView};

use crate::server::{Batch, Handler};

/// Calls `handler(message) -> bytes | bytearray | memoryview | None`.
pub(crate) struct PyHandler {
    callable: Py<PyAny>,
    logger: Py<PyAny>,
}

impl PyHandler {
    pub(crate) fn new(py: Python<'_>, callable: Py<PyAny>) -> PyResult<PyHandler> {
        let logger = logger(py)?;
        Ok(PyHandler { callable, logger })
    }
}

/// The logger handler failures are reported on: `logging.getLogger("iocp_echo")`.
pub(crate) fn logger(py: Python<'_>) -> PyResult<Py<PyAny>> {
    Ok(py
        .import("logging")?
        .call_method1("getLogger", ("iocp_echo",))?
        .unbind())
}

/// The worker loop, handed to `Python::detach`, which runs it on the calling
/// thread. `detach` asks for `Send` only so that no Python reference escapes the
/// attached scope; the loop holds none (it attaches by itself, per batch).
struct OnThisThread<'a>(&'a mut dyn FnMut());

// SAFETY: the value never leaves the thread that made it (`detach` calls the
// closure synchronously on the current thread), and it holds no Python object.
unsafe impl Send for OnThisThread<'_> {}

/// What a handler's return value asks for.
pub(crate) enum Answer {
    Reply,
    Nothing,
}

impl Handler for PyHandler {
    fn handle(&self, batch: &mut Batch) {
        Python::attach(|py| {
            let callable = self.callable.bind(py);
            // A connection's frames are adjacent in a batch (one receive each per
            // turn); once one fails, the rest of that connection's are dropped unseen.
            let mut failed = None;
            for i in 0..batch.len() {
                if failed == Some(batch.owners[i]) {
                    continue;
                }
                let message = PyBytes::new(py, batch.frame(i));
                let answer = callable.call1((message,)).and_then(|reply| {
                    reply_bytes(&reply, "handler", |bytes| batch.reply(i, bytes))
                });
                match answer {
                    Ok(Answer::Reply) | Ok(Answer::Nothing) => {}
                    Err(err) => {
                        log_failure(
                            &self.logger,
                            py,
                            "handler failed; closing its connection",
                            &err,
                        );
                        batch.fail(i);
                        failed = Some(batch.owners[i]);
                    }
                }
            }
        });
    }

    /// Attach once for the worker's life and detach at once: the thread keeps
    /// its interpreter thread state, and every `Python::attach` in `handle` is
    /// a cheap re-attach. The loop itself runs detached.
    fn worker_scope(&self, run: &mut dyn FnMut()) {
        attached_scope(run)
    }
}

/// Run a worker's loop with one interpreter thread state for its life, detached.
pub(crate) fn attached_scope(run: &mut dyn FnMut()) {
    let run = OnThisThread(run);
    Python::attach(|py| {
        py.detach(move || {
            let scope = run;
            (scope.0)()
        })
    });
}

/// Log a Python callback's exception with its traceback on `logger`.
#[cold]
pub(crate) fn log_failure(logger: &Py<PyAny>, py: Python<'_>, message: &str, err: &PyErr) {
    let kwargs = PyDict::new(py);
    let logged = kwargs
        .set_item("exc_info", err.clone_ref(py).into_value(py))
        .and_then(|()| {
            logger
                .bind(py)
                .call_method("error", (message,), Some(&kwargs))
        });
    if let Err(e) = logged {
        e.print(py);
    }
}

/// Hand the bytes of a reply returned by `who` (named in the `TypeError`)
/// to `sink`; `None` means no reply.
pub(crate) fn reply_bytes(
    reply: &Bound<'_, PyAny>,
    who: &str,
    sink: impl FnOnce(&[u8]),
) -> PyResult<Answer> {
    if reply.is_none() {
        return Ok(Answer::Nothing);
    }
    if let Ok(bytes) = reply.cast::<PyBytes>() {
        sink(bytes.as_bytes());
        return Ok(Answer::Reply);
    }
    if let Ok(array) = reply.cast::<PyByteArray>() {
        // SAFETY: the bytearray is not resized while we copy from it: we hold the
        // interpreter and run no Python code until `sink` returns.
        sink(unsafe { array.as_bytes() });
        return Ok(Answer::Reply);
    }
    if reply.is_instance_of::<PyMemoryView>() {
        return memoryview_bytes(reply, sink).map(|()| Answer::Reply);
    }
    Err(wrong_type(reply, who))
}

/// The `TypeError` for a reply of the wrong type.
#[cold]
fn wrong_type(reply: &Bound<'_, PyAny>, who: &str) -> PyErr {
    match reply.get_type().name() {
        Ok(name) => pyo3::exceptions::PyTypeError::new_err(format!(
            "{} must return bytes, bytearray, memoryview or None, not {}",
            who, name
        )),
        Err(e) => e,
    }
}

/// Hand the bytes of a memoryview, whatever its item type, to `sink`: read in
/// place when they are C-contiguous (a simple buffer request sees them as
/// bytes), else copied out with `tobytes` first (as `socket.send` takes them).
fn memoryview_bytes(view: &Bound<'_, PyAny>, sink: impl FnOnce(&[u8])) -> PyResult<()> {
    let mut buffer = MaybeUninit::<ffi::Py_buffer>::uninit();
    // SAFETY: `view` is a live object and `buffer` is writable memory for one
    // `Py_buffer`, which the call fills on success (returning 0).
    let got =
        unsafe { ffi::PyObject_GetBuffer(view.as_ptr(), buffer.as_mut_ptr(), ffi::PyBUF_SIMPLE) };
    if got != 0 {
        // Not C-contiguous (a `BufferError`), or released: `tobytes` copies the
        // first and raises the same error for the second.
        drop(PyErr::fetch(view.py()));
        let bytes = view.call_method0("tobytes")?;
        sink(bytes.cast::<PyBytes>()?.as_bytes());
        return Ok(());
    }
    // SAFETY: `PyObject_GetBuffer` succeeded, so `buffer` is initialised.
    let mut buffer = unsafe { buffer.assume_init() };
    let len = usize::try_from(buffer.len).unwrap_or(0);
    let bytes = if len == 0 || buffer.buf.is_null() {
        &[][..]
    } else {
        // SAFETY: a simple buffer request gives `len` contiguous bytes at `buf`,
        // valid until the buffer is released below; no Python code runs (so
        // nothing can resize the exporter) until `sink` returns.
        unsafe { std::slice::from_raw_parts(buffer.buf as *const u8, len) }
    };
    sink(bytes);
    // SAFETY: `buffer` was filled by a successful `PyObject_GetBuffer` and is
    // released once; `bytes` is not used after this.
    unsafe { ffi::PyBuffer_Release(&mut buffer) };
    Ok(())
}
