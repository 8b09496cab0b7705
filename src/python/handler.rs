//! A Python callable as the server's [`Handler`]: attached to the interpreter
//! once per batch of frames, each frame given as `bytes`.
//!
//! Copies: each frame is copied once, into its `bytes`; each reply once, by
//! [`Batch::reply`] framing it into the connection's output (a `bytes` or
//! `bytearray` is read in place, a `memoryview` is copied to `bytes` first).

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView};

use super::call::call_one;
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
                let answer = call_one(callable, &message).and_then(|reply| {
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

/// Hand the bytes of a memoryview, whatever its item type or strides, to `sink`:
/// copied out in C order first (as `socket.send` takes them), by
/// `PyBytes_FromObject`. The extension is built on the stable ABI from 3.9
/// (abi3), where the buffer protocol (`PyObject_GetBuffer`) does not exist until
/// 3.11, so a memoryview costs one copy more than `bytes` or `bytearray`.
fn memoryview_bytes(view: &Bound<'_, PyAny>, sink: impl FnOnce(&[u8])) -> PyResult<()> {
    let py = view.py();
    // SAFETY: `view` is a live object; `PyBytes_FromObject` returns a new
    // reference or NULL with an exception set (a released memoryview's
    // `ValueError`), which `from_owned_ptr_or_err` takes over.
    let bytes =
        unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyBytes_FromObject(view.as_ptr()))? };
    sink(bytes.cast::<PyBytes>()?.as_bytes());
    Ok(())
}
