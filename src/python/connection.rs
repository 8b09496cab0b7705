//! `Connection` for Python: one client connection of a protocol server, as
//! its protocol sees it (like asyncio's transport). Sending and closing go
//! through the server's [`ConnectionSender`], so they work from any thread and
//! never block on I/O.
//!
//! `closed` is set as soon as a close is known here: `close()` or `abort()`
//! was called, a send found the connection gone, or its `Close` event reached
//! the protocol handler (just before `connection_lost`).
//!
//! `await drain()` (in `iocp_echo._aio`) waits while the connection is paused
//! (`pause_writing` delivered, `resume_writing` not yet): its waiters are woken
//! by the worker on `ResumeWriting` and on `Close`, under the lock that adds
//! them, so none is missed. Sends the worker has not taken yet may already
//! have passed `high_water` before it pauses: `drain()` then looks again
//! shortly (`_above_high_water`) instead of returning.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyTypeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyWeakrefReference};

use super::errors::{frame_error, ConnectionClosed};
use super::handler::{reply_bytes, Answer};
use super::slot::SenderSlot;
use super::tls_info::PyTlsInfo;
use crate::server::{lock, Address, ConnectionId, SendError};

/// A client connection: `send`, `close`, `abort` from any thread.
#[pyclass(name = "Connection", module = "iocp_echo", frozen)]
pub(crate) struct PyConnection {
    id: ConnectionId,
    peer: Address,
    local: Address,
    /// A weak reference to the Python `Server`: a connection must not keep a
    /// server alive (dropping a server closes it).
    server: Py<PyWeakrefReference>,
    /// The server's sender while it runs.
    sender: Arc<SenderSlot>,
    closed: AtomicBool,
    /// Between `PauseWriting` and `ResumeWriting`, as the protocol was told.
    paused: AtomicBool,
    /// `drain()` callbacks to call once unpaused or closed.
    drain_waiters: Mutex<Vec<Py<PyAny>>>,
    /// What the TLS handshake negotiated; None for plain TCP.
    tls: Option<Py<PyTlsInfo>>,
}

impl PyConnection {
    pub(crate) fn new(
        id: ConnectionId,
        peer: Address,
        local: Address,
        server: Py<PyWeakrefReference>,
        sender: Arc<SenderSlot>,
        tls: Option<Py<PyTlsInfo>>,
    ) -> PyConnection {
        PyConnection {
            id,
            peer,
            local,
            server,
            sender,
            closed: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            drain_waiters: Mutex::new(Vec::new()),
            tls,
        }
    }

    /// Whether a close is known.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// The connection is known to be closed.
    pub(crate) fn mark_closed(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Close the connection now, dropping its queued output (also after
    /// `close()`, whose flush it cuts short).
    pub(crate) fn abort_now(&self) {
        self.closed.store(true, Ordering::SeqCst);
        // Err: it closed already; its `Close` event comes or came anyway.
        let _ = self.sender.with(|s| s.map(|s| s.abort(self.id)));
    }

    /// `PauseWriting` (true) or `ResumeWriting` (false) reached the protocol
    /// handler; resuming wakes `drain()`.
    pub(crate) fn set_paused(&self, py: Python<'_>, paused: bool) {
        if paused {
            self.paused.store(true, Ordering::SeqCst);
        } else {
            let waiters = {
                let mut waiters = lock(&self.drain_waiters);
                self.paused.store(false, Ordering::SeqCst);
                std::mem::take(&mut *waiters)
            };
            wake(py, waiters);
        }
    }

    /// The connection's `Close` reached the protocol handler: mark it closed
    /// and wake `drain()`.
    pub(crate) fn closed_by_event(&self, py: Python<'_>) {
        let waiters = {
            let mut waiters = lock(&self.drain_waiters);
            self.mark_closed();
            std::mem::take(&mut *waiters)
        };
        wake(py, waiters);
    }

    fn closed_error(&self) -> PyErr {
        ConnectionClosed::new_err(format!("connection {} is closed", self.id))
    }

    /// The exception for a send refused: closed ones are marked closed.
    fn send_error(&self, why: SendError) -> PyErr {
        match why {
            SendError::Closed => {
                self.mark_closed();
                self.closed_error()
            }
            SendError::Unframable(e) => frame_error(e),
        }
    }
}

/// Framed replies to post: `(index of the pair, connection, bytes)`.
type Framed = Vec<(usize, ConnectionId, Vec<u8>)>;

/// A reply of `Connection._send_each` not queued: the `index`-th pair's.
struct Failure {
    index: usize,
    id: ConnectionId,
    error: PyErr,
}

impl Failure {
    fn new(index: usize, id: ConnectionId, error: PyErr) -> Failure {
        Failure { index, id, error }
    }
}

/// Post the replies `framed` (indexes of pairs in `items`) through `slot`'s
/// sender; those refused are added to `failures`.
fn post(
    items: &Bound<'_, PyList>,
    slot: Arc<SenderSlot>,
    framed: Framed,
    failures: &mut Vec<Failure>,
) -> PyResult<()> {
    let mut refused = Vec::new();
    slot.with(|s| match s {
        Some(sender) => sender.post_framed(framed, &mut refused),
        None => refused.extend(framed.iter().map(|(k, _, _)| (*k, SendError::Closed))),
    });
    for (k, why) in refused {
        let conn = items.get_item(2 * k)?.cast_into::<PyConnection>()?;
        let conn = conn.get();
        failures.push(Failure::new(k, conn.id, conn.send_error(why)));
    }
    Ok(())
}

/// Call `drain()` wake-up callbacks (they only schedule on their loop).
fn wake(py: Python<'_>, waiters: Vec<Py<PyAny>>) {
    for waiter in waiters {
        if let Err(err) = waiter.bind(py).call0() {
            err.print(py);
        }
    }
}

/// An address as asyncio's `get_extra_info("peername"/"sockname")` gives it:
/// `(host, port)` for TCP; for a Unix domain socket its path, `''` if unnamed.
fn address(py: Python<'_>, addr: &Address) -> PyResult<Py<PyAny>> {
    Ok(match addr {
        Address::Inet(addr) => (addr.ip().to_string(), addr.port())
            .into_pyobject(py)?
            .into_any()
            .unbind(),
        Address::Unix(Some(path)) => path.as_os_str().into_pyobject(py)?.into_any().unbind(),
        Address::Unix(None) => PyString::new(py, "").into_any().unbind(),
    })
}

#[pymethods]
impl PyConnection {
    /// The connection's id, unique among the server's connections for its life.
    #[getter]
    fn id(&self) -> ConnectionId {
        self.id
    }

    /// The client's `(host, port)`; on a Unix domain socket the client's
    /// path, `''` for an unnamed client (as asyncio's `peername`).
    #[getter]
    fn peer(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        address(py, &self.peer)
    }

    /// The server's `(host, port)` of this connection; on a Unix domain
    /// socket the server's socket path.
    #[getter]
    fn local(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        address(py, &self.local)
    }

    /// The `Server` this connection belongs to (`RuntimeError` once that
    /// object is gone).
    #[getter]
    fn server<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.server.bind(py).upgrade() {
            Some(server) => Ok(server),
            None => Err(pyo3::exceptions::PyRuntimeError::new_err(
                "the server of this connection is gone",
            )),
        }
    }

    /// What the TLS handshake negotiated (a `TlsInfo`), or None for plain TCP.
    #[getter]
    fn tls(&self, py: Python<'_>) -> Option<Py<PyTlsInfo>> {
        self.tls.as_ref().map(|info| info.clone_ref(py))
    }

    /// Whether the connection is closed or closing: `send` raises `ConnectionClosed`.
    #[getter]
    fn closed(&self) -> bool {
        self.is_closed()
    }

    /// Bytes queued for the client and not yet sent (asyncio's
    /// `get_write_buffer_size()`): pushed and not yet taken by the worker,
    /// plus the output the worker last published (after each of its turns
    /// that touched the connection). 0 once closed.
    #[getter]
    fn write_buffer_size(&self) -> usize {
        self.sender
            .with(|s| s.and_then(|s| s.write_buffer_size(self.id)))
            .unwrap_or(0)
    }

    /// Queue `payload` (bytes-like), framed by the server's codec. From any
    /// thread; never blocks. `ConnectionClosed` once the connection is closed,
    /// `FramingError` if the codec cannot frame it.
    #[pyo3(signature = (payload, /))]
    fn send(&self, payload: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(self.closed_error());
        }
        if payload.is_none() {
            return Err(PyTypeError::new_err(
                "send() takes bytes, bytearray or memoryview, not None",
            ));
        }
        let mut sent = Ok(());
        let answer = reply_bytes(payload, "send() payload", |bytes| {
            sent = self
                .sender
                .with(|s| s.map_or(Err(SendError::Closed), |s| s.send(self.id, bytes)));
        })?;
        debug_assert!(matches!(answer, Answer::Reply));
        sent.map_err(|why| self.send_error(why))
    }

    /// Queue the replies of `items`, a flat list `[conn, payload, conn,
    /// payload, ...]` (a payload bytes-like, or None for no reply), each as
    /// `conn.send(payload)` would, in order; the replies to one server's
    /// connections are posted with one mailbox lock and at most one wake per
    /// worker. Returns `(k, exception)` for each k-th pair not queued:
    /// `ConnectionClosed`, `FramingError`, or `TypeError` for a payload of the
    /// wrong type; that connection's later pairs in `items` are skipped.
    #[staticmethod]
    #[pyo3(signature = (items, /))]
    fn _send_each(items: &Bound<'_, PyList>) -> PyResult<Vec<(usize, Py<PyAny>)>> {
        let py = items.py();
        let mut failures = Vec::new();
        let mut posting: Option<(Arc<SenderSlot>, Framed)> = None;
        for k in 0..items.len() / 2 {
            let conn = items.get_item(2 * k)?.cast_into::<PyConnection>()?;
            let conn = conn.get();
            if failures.iter().any(|f: &Failure| f.id == conn.id) {
                continue;
            }
            if conn.is_closed() {
                failures.push(Failure::new(k, conn.id, conn.closed_error()));
                continue;
            }
            if !matches!(&posting, Some((slot, _)) if Arc::ptr_eq(slot, &conn.sender)) {
                if let Some((slot, framed)) = posting.take() {
                    post(items, slot, framed, &mut failures)?;
                }
                posting = Some((Arc::clone(&conn.sender), Vec::new()));
            }
            let framed = match &mut posting {
                Some((_, framed)) => framed,
                None => continue,
            };
            let mut one = Err(SendError::Closed);
            let payload = items.get_item(2 * k + 1)?;
            match reply_bytes(&payload, "message_received", |bytes| {
                one = conn
                    .sender
                    .with(|s| s.map_or(Err(SendError::Closed), |s| s.frame(bytes)));
            }) {
                Ok(Answer::Nothing) => {}
                Ok(Answer::Reply) => match one {
                    Ok(bytes) => framed.push((k, conn.id, bytes)),
                    Err(e) => failures.push(Failure::new(k, conn.id, conn.send_error(e))),
                },
                Err(err) => failures.push(Failure::new(k, conn.id, err)),
            }
        }
        if let Some((slot, framed)) = posting {
            post(items, slot, framed, &mut failures)?;
        }
        failures.sort_by_key(|f| f.index);
        Ok(failures
            .into_iter()
            .map(|f| (f.index, f.error.into_value(py).into_any()))
            .collect())
    }

    /// Wait until the connection's queued output is not paused (below
    /// `low_water` again after passing `high_water`); `ConnectionClosed` if it
    /// is or gets closed. A coroutine, awaited on an asyncio loop.
    fn drain<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        py.import(intern!(py, "iocp_echo._aio"))?
            .call_method1(intern!(py, "drain"), (slf,))
    }

    /// Whether the output is paused (for `drain()`).
    #[getter]
    fn _paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Whether the queued output is above `high_water` (for `drain()`: sends
    /// its worker has not taken yet may have passed it before it pauses).
    #[getter]
    fn _above_high_water(&self) -> bool {
        self.sender
            .with(|s| s.is_some_and(|s| s.above_high_water(self.id)))
    }

    /// Keep `waiter` to call once unpaused or closed; false (not kept) if the
    /// connection is not paused or already closed.
    fn _add_drain_waiter(&self, waiter: Py<PyAny>) -> bool {
        let mut waiters = lock(&self.drain_waiters);
        if self.is_closed() || !self.paused.load(Ordering::SeqCst) {
            return false;
        }
        waiters.push(waiter);
        true
    }

    /// Stop reading, send what is queued, then close. Idempotent.
    fn close(&self) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            // Err: it closed already; nothing to do.
            let _ = self.sender.with(|s| s.map(|s| s.close(self.id)));
        }
    }

    /// Close now, dropping queued output (also after `close()`). Idempotent.
    fn abort(&self) {
        self.abort_now();
    }

    fn __repr__(&self) -> String {
        format!(
            "<Connection {} peer={} local={}{}>",
            self.id,
            self.peer,
            self.local,
            if self.is_closed() { " closed" } else { "" }
        )
    }
}
