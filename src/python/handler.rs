//! A Python callable as the server's [`Handler`]: attached to the interpreter
//! once per batch of frames, each frame given as `bytes`.

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
        let logger = py
            .import("logging")?
            .call_method1("getLogger", ("iocp_echo",))?
            .unbind();
        Ok(PyHandler { callable, logger })
    }
}

/// The worker loop, handed to `Python::detach`, which runs it on the calling
/// thread. `detach` asks for `Send` only so that no Python reference escapes the
/// attached scope; the loop holds none (it attaches by itself, per batch).
struct OnThisThread<'a>(&'a mut dyn FnMut());

// SAFETY: the value never leaves the thread that made it (`detach` calls the
// closure synchronously on the current thread), and it holds no Python object.
unsafe impl Send for OnThisThread<'_> {}

/// What a handler's return value asks for.
enum Answer {
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
                let answer = callable
                    .call1((message,))
                    .and_then(|reply| reply_bytes(&reply, |bytes| batch.reply(i, bytes)));
                match answer {
                    Ok(Answer::Reply) | Ok(Answer::Nothing) => {}
                    Err(err) => {
                        self.log_failure(py, err);
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
        let run = OnThisThread(run);
        Python::attach(|py| {
            py.detach(move || {
                let scope = run;
                (scope.0)()
            })
        });
    }
}

impl PyHandler {
    /// Log a handler's exception with its traceback; the connection is closed.
    #[cold]
    fn log_failure(&self, py: Python<'_>, err: PyErr) {
        let kwargs = PyDict::new(py);
        let logged = kwargs
            .set_item("exc_info", err.into_value(py))
            .and_then(|()| {
                self.logger.bind(py).call_method(
                    "error",
                    ("handler failed; closing its connection",),
                    Some(&kwargs),
                )
            });
        if let Err(e) = logged {
            e.print(py);
        }
    }
}

/// Hand the bytes of a handler's reply to `sink`; `None` means no reply.
fn reply_bytes(reply: &Bound<'_, PyAny>, sink: impl FnOnce(&[u8])) -> PyResult<Answer> {
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
        // Its bytes, whatever its item type or strides (as `socket.send` takes it).
        let bytes = reply.call_method0("tobytes")?;
        sink(bytes.cast::<PyBytes>()?.as_bytes());
        return Ok(Answer::Reply);
    }
    Err(pyo3::exceptions::PyTypeError::new_err(format!(
        "handler must return bytes, bytearray, memoryview or None, not {}",
        reply.get_type().name()?
    )))
}
