//! A Python protocol factory as the server's [`Handler`]: one protocol object
//! per connection, called in the order the connection's events and frames
//! came, on the connection's worker, attached to the interpreter once per turn.
//!
//! * `Open`: `factory()`, then `protocol.connection_made(conn)`.
//! * A frame: `protocol.message_received(message)`, whose return value
//!   (bytes-like or None) is the reply, converted as the function handler does.
//! * `PauseWriting` / `ResumeWriting`: `protocol.pause_writing()` /
//!   `protocol.resume_writing()` (queued output crossed `high_water` / fell
//!   back to `low_water`).
//! * `Close`: `protocol.connection_lost(exc)`, exactly once, last; `exc` is
//!   the exception a callback raised if one did, else the close reason's
//!   exception ([`close_error`]), None for a clean close.
//!
//! **Async.** A `message_received` that returns an awaitable (an `async def`)
//! gives its connection a lane (`Server._async_lane`, in `iocp_echo._aio`):
//! the awaitable and every later frame of that connection go to the lane,
//! which handles them one at a time, in order, on an asyncio loop (so once a
//! connection is async, all its replies take the push path, in frame order).
//! The worker only hands over; it never waits for the loop. It hands over once
//! per turn (`iocp_echo._aio.hand_over`, one list for all the turn's async
//! frames, first awaitables and closes, in order), not once per frame. Such a
//! connection's `Close` goes to its lane as a `Lost` in that list, after its
//! frames; the lane delivers `connection_lost` on the loop after cancelling
//! what runs, so it is still the last callback.
//!
//! A factory or callback that raises (or a reply of the wrong type) is logged
//! with its traceback on the `iocp_echo` logger and closes only its connection;
//! the connection's later frames are not delivered.
//!
//! **State.** The per-connection Python objects live in one map per worker,
//! keyed by connection id: a connection `id` belongs to worker
//! `id % workers`, and only that worker's turn touches that map, so its lock
//! is never contended; it is taken once per turn. Entries are removed on
//! `Close`, with the interpreter attached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyWeakrefReference};

use super::call::call_method_one;
use super::connection::PyConnection;
use super::errors::close_error;
use super::handler::{attached_scope, log_failure, logger, reply_bytes, Answer};
use super::slot::SenderSlot;
use super::tls_info::PyTlsInfo;
use crate::server::{lock, Batch, CloseReason, ConnectionId, Event, Handler};

/// What a protocol server keeps per open connection.
struct Entry {
    conn: Py<PyConnection>,
    /// None if the factory failed.
    protocol: Option<Py<PyAny>>,
    /// The exception a callback raised: given to `connection_lost`.
    failure: Option<PyErr>,
    /// The connection's async lane, once its `message_received` returned an
    /// awaitable.
    lane: Option<Py<PyAny>>,
}

/// Calls a protocol factory per connection and its callbacks per event and frame.
pub(crate) struct PyProtocolHandler {
    factory: Py<PyAny>,
    server: Py<PyWeakrefReference>,
    logger: Py<PyAny>,
    sender: Arc<SenderSlot>,
    /// One map per worker: connection `id` is in `maps[id % maps.len()]`.
    maps: Vec<Mutex<HashMap<ConnectionId, Entry>>>,
    /// `iocp_echo._aio.hand_over`: gives the async lanes a turn's frames.
    hand_over: Py<PyAny>,
    /// `iocp_echo._aio.Lost`: a lane's close, among its frames.
    lost: Py<PyAny>,
    /// The open connections for `Server.connections()`: a Python dict (id to
    /// `Connection`), changed and read only with the interpreter attached, so
    /// no lock of ours is ever waited for while holding it.
    registry: Py<PyDict>,
}

impl PyProtocolHandler {
    pub(crate) fn new(
        py: Python<'_>,
        factory: Py<PyAny>,
        server: Py<PyWeakrefReference>,
        workers: usize,
        sender: Arc<SenderSlot>,
    ) -> PyResult<PyProtocolHandler> {
        let aio = py.import(intern!(py, "iocp_echo._aio"))?;
        Ok(PyProtocolHandler {
            hand_over: aio.getattr(intern!(py, "hand_over"))?.unbind(),
            lost: aio.getattr(intern!(py, "Lost"))?.unbind(),
            factory,
            server,
            logger: logger(py)?,
            sender,
            maps: (0..workers.max(1)).map(|_| Mutex::default()).collect(),
            registry: PyDict::new(py).unbind(),
        })
    }

    /// A connection opened: make its `Connection` and protocol.
    fn open(&self, py: Python<'_>, id: ConnectionId, event: &Event) -> Option<Entry> {
        let (peer, local, tls) = match event {
            Event::Open {
                peer, local, tls, ..
            } => (peer.clone(), local.clone(), tls),
            _ => return None,
        };
        if !self.sender.wait(py) {
            log::error!("connection {}: the server has no sender", id);
            return None;
        }
        let sender = Arc::clone(&self.sender);
        let tls = match tls {
            Some(info) => match Py::new(py, PyTlsInfo::new((**info).clone())) {
                Ok(info) => Some(info),
                Err(err) => {
                    self.fail(py, "could not make a TlsInfo", &err);
                    return None;
                }
            },
            None => None,
        };
        let conn = PyConnection::new(id, peer, local, self.server.clone_ref(py), sender, tls);
        let conn = match Py::new(py, conn) {
            Ok(conn) => conn,
            Err(err) => {
                self.fail(py, "could not make a Connection", &err);
                return None;
            }
        };
        if let Err(err) = self.registry.bind(py).set_item(id, conn.clone_ref(py)) {
            self.fail(py, "could not register a Connection", &err);
        }
        let protocol = match self.factory.bind(py).call0() {
            Ok(protocol) => protocol,
            Err(err) => {
                self.fail(py, "protocol factory failed; closing its connection", &err);
                conn.get().abort_now();
                return Some(Entry {
                    conn,
                    protocol: None,
                    failure: None,
                    lane: None,
                });
            }
        };
        let made = protocol.call_method1(intern!(py, "connection_made"), (conn.clone_ref(py),));
        let failure = match made {
            Ok(_) => None,
            Err(err) => {
                self.fail(py, "connection_made failed; closing its connection", &err);
                conn.get().abort_now();
                Some(err)
            }
        };
        Some(Entry {
            conn,
            protocol: Some(protocol.unbind()),
            failure,
            lane: None,
        })
    }

    /// A connection closed: tell its protocol, once (an async one through
    /// its lane, after its frames of this turn).
    fn close<'py>(
        &self,
        py: Python<'py>,
        id: ConnectionId,
        entry: Entry,
        reason: &CloseReason,
        lanes: &mut Lanes<'py>,
    ) {
        entry.conn.get().closed_by_event(py);
        if let Err(err) = self.registry.bind(py).del_item(id) {
            self.fail(py, "could not unregister a Connection", &err);
        }
        if let Some(protocol) = &entry.protocol {
            let exc = match entry.failure {
                Some(err) => Some(err),
                None => close_error(reason),
            };
            let exc: Py<PyAny> = match exc {
                Some(err) => err.into_value(py).into_any(),
                None => py.None(),
            };
            if let Some(lane) = &entry.lane {
                let told = self
                    .lost
                    .bind(py)
                    .call1((exc,))
                    .and_then(|lost| lanes.push(py, lane.bind(py), &lost));
                if let Err(err) = told {
                    self.fail(py, "could not tell an async lane of its close", &err);
                }
                return;
            }
            if let Err(err) = protocol
                .bind(py)
                .call_method1(intern!(py, "connection_lost"), (exc,))
            {
                self.fail(py, "connection_lost failed", &err);
            }
        }
    }

    #[cold]
    fn fail(&self, py: Python<'_>, message: &str, err: &PyErr) {
        log_failure(&self.logger, py, message, err);
    }
}

impl PyProtocolHandler {
    /// A connection's `message_received` returned `awaitable`: give the
    /// connection a lane that awaits it, and its later frames (see the module
    /// docs). Not on the per-message path of a sync protocol.
    #[cold]
    fn go_async<'py>(
        &self,
        py: Python<'py>,
        entry: &mut Entry,
        protocol: &Bound<'py, PyAny>,
        awaitable: &Bound<'py, PyAny>,
        lanes: &mut Lanes<'py>,
    ) -> PyResult<Answer> {
        let server = match self.server.bind(py).upgrade() {
            Some(server) => server,
            None => return Err(PyRuntimeError::new_err("the server is gone")),
        };
        let lane = server.call_method1(
            intern!(py, "_async_lane"),
            (entry.conn.clone_ref(py), protocol),
        )?;
        lanes.push(py, &lane, awaitable)?;
        entry.lane = Some(lane.unbind());
        Ok(Answer::Nothing)
    }

    /// The registry of open connections (see the field).
    pub(crate) fn registry(&self, py: Python<'_>) -> Py<PyDict> {
        self.registry.clone_ref(py)
    }
}

impl Handler for PyProtocolHandler {
    fn handle(&self, batch: &mut Batch) {
        let first = match (batch.events().first(), batch.is_empty()) {
            (Some((_, event)), _) => event.id(),
            (None, false) => batch.connection(0),
            (None, true) => return,
        };
        Python::attach(|py| {
            // Every connection of a batch belongs to this worker: one map.
            let mut map = lock(&self.maps[(first % self.maps.len() as u64) as usize]);
            let mut lanes = Lanes(None);
            let events = batch.events().len();
            let mut next_event = 0;
            for i in 0..=batch.len() {
                while next_event < events && batch.events()[next_event].0 <= i {
                    let event = batch.events()[next_event].1.clone();
                    next_event += 1;
                    self.event(py, &mut map, event, &mut lanes);
                }
                if i == batch.len() {
                    break;
                }
                let id = batch.connection(i);
                let entry = match map.get_mut(&id) {
                    Some(entry) => entry,
                    None => continue,
                };
                let protocol = match (&entry.protocol, &entry.failure) {
                    (Some(protocol), None) => protocol.bind(py).clone(),
                    _ => continue,
                };
                if entry.conn.get().is_closed() {
                    // `abort()` (or a failure): its later frames are not delivered.
                    continue;
                }
                let message = PyBytes::new(py, batch.frame(i));
                if let Some(lane) = &entry.lane {
                    // Async: the lane answers it, after the frames before it.
                    if let Err(err) = lanes.push(py, lane.bind(py), &message) {
                        self.fail(py, "could not queue a message on its async lane", &err);
                        entry.conn.get().abort_now();
                    }
                    continue;
                }
                let answer = call_method_one(&protocol, intern!(py, "message_received"), &message)
                    .and_then(|reply| {
                        match reply_bytes(&reply, "message_received", |bytes| batch.reply(i, bytes))
                        {
                            Err(_) if is_awaitable(&reply) => {
                                self.go_async(py, entry, &protocol, &reply, &mut lanes)
                            }
                            answer => answer,
                        }
                    });
                if let Err(err) = answer {
                    self.fail(py, "message_received failed; closing its connection", &err);
                    entry.conn.get().mark_closed();
                    entry.failure = Some(err);
                    batch.fail(i);
                }
            }
            drop(map);
            if let Some(items) = lanes.0 {
                // One hand-over per turn, whatever the number of frames.
                if let Err(err) = self.hand_over.bind(py).call1((items,)) {
                    self.fail(py, "could not hand frames to the async lanes", &err);
                }
            }
        });
    }

    fn wants_events(&self) -> bool {
        true
    }

    fn worker_scope(&self, run: &mut dyn FnMut()) {
        attached_scope(run)
    }
}

impl PyProtocolHandler {
    /// Apply one event to the worker's map.
    fn event<'py>(
        &self,
        py: Python<'py>,
        map: &mut HashMap<ConnectionId, Entry>,
        event: Event,
        lanes: &mut Lanes<'py>,
    ) {
        match &event {
            Event::Open { id, .. } => {
                if let Some(entry) = self.open(py, *id, &event) {
                    map.insert(*id, entry);
                }
            }
            Event::Close { id, reason } => {
                if let Some(entry) = map.remove(id) {
                    self.close(py, *id, entry, reason, lanes);
                }
            }
            Event::PauseWriting { id } => {
                if let Some(entry) = map.get_mut(id) {
                    entry.conn.get().set_paused(py, true);
                    self.flow(py, entry, intern!(py, "pause_writing"));
                }
            }
            Event::ResumeWriting { id } => {
                if let Some(entry) = map.get_mut(id) {
                    entry.conn.get().set_paused(py, false);
                    self.flow(py, entry, intern!(py, "resume_writing"));
                }
            }
        }
    }

    /// `pause_writing()` or `resume_writing()` of a connection's protocol
    /// (asyncio's flow control): its queued output crossed `high_water`, or
    /// fell back to `low_water`. One that raises closes the connection.
    fn flow(&self, py: Python<'_>, entry: &mut Entry, method: &Bound<'_, pyo3::types::PyString>) {
        let protocol = match (&entry.protocol, &entry.failure) {
            (Some(protocol), None) if !entry.conn.get().is_closed() => protocol.bind(py).clone(),
            _ => return,
        };
        if let Err(err) = protocol.call_method0(method) {
            self.fail(
                py,
                "a flow control callback failed; closing its connection",
                &err,
            );
            entry.conn.get().abort_now();
            entry.failure = Some(err);
        }
    }
}

/// What a turn hands the async lanes, in order: `[lane, item, lane, item,
/// ...]`, an item being a frame (`bytes`), the awaitable of a connection's
/// first async `message_received`, or a `Lost` (its close). Made on the turn's
/// first async item.
struct Lanes<'py>(Option<Bound<'py, PyList>>);

impl<'py> Lanes<'py> {
    fn push(
        &mut self,
        py: Python<'py>,
        lane: &Bound<'py, PyAny>,
        item: &Bound<'py, PyAny>,
    ) -> PyResult<()> {
        let items = self.0.get_or_insert_with(|| PyList::empty(py));
        items.append(lane)?;
        items.append(item)
    }
}

/// Whether `value` can be awaited (a coroutine, or has `__await__`).
fn is_awaitable(value: &Bound<'_, PyAny>) -> bool {
    value
        .hasattr(intern!(value.py(), "__await__"))
        .unwrap_or(false)
}

impl Drop for PyProtocolHandler {
    fn drop(&mut self) {
        // Entries left by a failed worker hold Python objects: drop them attached.
        let left: Vec<HashMap<ConnectionId, Entry>> = self
            .maps
            .iter()
            .map(|m| std::mem::take(&mut *lock(m)))
            .collect();
        if left.iter().any(|m| !m.is_empty()) {
            Python::attach(|_py| drop(left));
        }
    }
}
