//! `Server` for Python: arguments checked and named in errors, the GIL released
//! while waiting, Ctrl-C honoured, and the handler dropped with the interpreter
//! attached.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyWeakrefReference};

use super::errors::{frame_error, os_error, start_error, tls_load_error};
use super::framing::framing_arg;
use super::handler::{reply_bytes, PyHandler};
use super::options::from_python;
use super::protocol::PyProtocolHandler;
use super::slot::SenderSlot;
use super::tls_config::{is_tls_option, PyTlsConfig};
use crate::options::{by_name, Setting};
use crate::port::BackendChoice;
use crate::server::{lock, Address, Config, ConnectionId, Handler, Server, StartError, Stats};
use crate::tls::ServerTls;

/// How long one wait for the workers lasts before signals are checked again.
const SIGNAL_SLICE: Duration = Duration::from_millis(50);

/// A TCP message server: `Server(handler, host, port, ...)` or
/// `Server(protocol=Factory, ...)`; `start()`, `serve_forever()`, `close()`,
/// or use it as a context manager.
#[pyclass(name = "Server", module = "iocp_echo", frozen, weakref, subclass)]
pub(crate) struct PyServer {
    config: Config,
    handler: Option<Py<PyAny>>,
    /// A protocol factory, called once per connection.
    protocol: Option<Py<PyAny>>,
    /// The running protocol server's sender, cleared on close (it holds the
    /// server's state, which holds the handler holding this slot).
    sender: Mutex<Option<Arc<SenderSlot>>>,
    /// The open connections of a protocol server (see
    /// `PyProtocolHandler`'s registry); None before the first start or for a
    /// function handler.
    connections: Mutex<Option<Py<PyDict>>>,
    /// The running server; cloned out of the lock by waiters, so `close`,
    /// `stats` and the getters never wait for a waiting thread.
    running: Mutex<Option<Arc<Server>>>,
    /// The TLS of `config.tls`, loaded at construction (or by the
    /// `TlsConfig` given, shared with other servers); None: plain TCP.
    tls: Option<ServerTls>,
}

#[pymethods]
impl PyServer {
    /// `Server(handler=None, *, protocol=None, **options)`: every option of
    /// `OPTIONS` by its name; `framing` also takes a `Framing`. None leaves an
    /// option at its default (for `idle_timeout`, the default: no timeout).
    /// `tls=` takes a `TlsConfig` (its loaded files are used as they are), or
    /// any object with its attributes (`certfile`, `keyfile`, `cafile`,
    /// `alpn_protocols`, `handshake_timeout`), checked as `TlsConfig(...)`
    /// checks them; with it, a `tls_*` keyword is a `TypeError`. The files of
    /// the `tls_*` keywords are read here (`OSError` naming an unreadable
    /// one, `ValueError` for one that cannot be used), once.
    #[new]
    #[pyo3(signature = (handler = None, *, protocol = None, **options))]
    fn new(
        mut handler: Option<Py<PyAny>>,
        mut protocol: Option<Py<PyAny>>,
        options: Option<&Bound<'_, PyDict>>,
        py: Python<'_>,
    ) -> PyResult<PyServer> {
        for (name, value) in [("handler", &handler), ("protocol", &protocol)] {
            if let Some(h) = value {
                if !h.bind(py).is_callable() {
                    return Err(PyTypeError::new_err(format!(
                        "{} must be callable or None, not {}",
                        name,
                        h.bind(py).get_type().name()?
                    )));
                }
            }
        }
        if handler.is_some() && protocol.is_some() {
            return Err(PyTypeError::new_err(
                "Server() takes a handler or a protocol, not both",
            ));
        }
        if let Some(h) = &handler {
            // An `async def` handler runs as a protocol (iocp_echo._aio): one
            // message at a time per connection, replies in frame order.
            let aio = py.import("iocp_echo._aio")?;
            if aio.call_method1("is_async_callable", (h,))?.is_truthy()? {
                protocol = Some(aio.call_method1("async_handler_protocol", (h,))?.unbind());
                handler = None;
            }
        }
        let mut base = Config::default();
        let mut given = Vec::new();
        let mut tls = None;
        let mut tls_keyword = None;
        for (key, value) in options.into_iter().flat_map(|d| d.iter()) {
            let key: String = key.extract()?;
            if key == "tls" {
                if !value.is_none() {
                    tls = Some(value);
                }
                continue;
            }
            let option = by_name(&key).ok_or_else(|| {
                PyTypeError::new_err(format!(
                    "Server() got an unexpected keyword argument '{}'",
                    key
                ))
            })?;
            if is_tls_option(option) && !value.is_none() {
                tls_keyword = Some(option.name);
            }
            if option.setting == Setting::Framing && !value.is_none() {
                base.framing = framing_arg(&value)?;
            } else {
                given.push((option, from_python(option, &value)?));
            }
        }
        let mut loaded = None;
        if let Some(tls) = tls {
            if let Some(keyword) = tls_keyword {
                return Err(PyTypeError::new_err(format!(
                    "Server() takes tls=TlsConfig(...) or the tls_* keywords, not both \
                     (got tls= and {}=)",
                    keyword
                )));
            }
            // The tls_* keywords left are None: not given.
            given.retain(|(option, _)| !is_tls_option(option));
            let (settings, tls) = PyTlsConfig::of(&tls)?;
            base.tls = settings;
            loaded = Some(tls);
        }
        let config = crate::options::build(base, given.iter().map(|(o, v)| (*o, v)))
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        // The TLS files are read here, once, so a bad one fails the construction.
        if loaded.is_none() {
            loaded = ServerTls::load(&config.tls).map_err(|e| tls_load_error(&e))?;
        }
        Ok(PyServer {
            config,
            handler,
            protocol,
            sender: Mutex::new(None),
            connections: Mutex::new(None),
            running: Mutex::new(None),
            tls: loaded,
        })
    }

    /// Bind and start the workers; returns at once. Raises `OSError` if the
    /// address cannot be bound, `RuntimeError` if already started.
    fn start(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if lock(&this.running).is_some() {
            return Err(PyRuntimeError::new_err("server already started"));
        }
        let mut slot = None;
        let handler: Option<Arc<dyn Handler>> = match (&this.handler, &this.protocol) {
            (Some(h), _) => Some(Arc::new(PyHandler::new(py, h.clone_ref(py))?)),
            (None, Some(factory)) => {
                let sender = Arc::new(SenderSlot::default());
                slot = Some(Arc::clone(&sender));
                let me = PyWeakrefReference::new(slf)?.unbind();
                let workers = this.config.workers;
                let handler =
                    PyProtocolHandler::new(py, factory.clone_ref(py), me, workers, sender)?;
                *lock(&this.connections) = Some(handler.registry(py));
                Some(Arc::new(handler))
            }
            (None, None) => None,
        };
        let config = this.config.clone();
        let tls = this.tls.clone();
        let addr = match &config.path {
            Some(path) => path.display().to_string(),
            None => config.addr.to_string(),
        };
        let started_slot = slot.clone();
        // The lock is not held while detached: a thread holding the interpreter
        // could otherwise wait for it while this one waits for the interpreter.
        // The sender is set before attaching again, so a connection opening
        // at once (whose `Open` waits for it, detached) is not held up.
        let started = py.detach(move || {
            let server = Server::start_with_tls(config, handler, tls)?;
            if let Some(slot) = started_slot {
                slot.set(Some(server.sender()));
            }
            Ok(server)
        });
        let server = match started {
            Ok(server) => Arc::new(server),
            Err(StartError::Io(e)) => return Err(start_error(&e, &addr)),
            Err(StartError::Config(e)) => return Err(PyValueError::new_err(e.to_string())),
            Err(StartError::Backend(e)) => return Err(PyValueError::new_err(e)),
            Err(StartError::Tls(e)) => return Err(tls_load_error(&e)),
        };
        let raced = {
            let mut running = lock(&this.running);
            if running.is_some() {
                true
            } else {
                *running = Some(Arc::clone(&server));
                false
            }
        };
        if raced {
            let _ = py.detach(|| server.close());
            if let Some(slot) = slot {
                slot.set(None);
            }
            return Err(PyRuntimeError::new_err("server already started"));
        }
        *lock(&this.sender) = slot;
        Ok(())
    }

    /// Serve until `close()` is called from another thread, a worker fails
    /// (`RuntimeError`), or a signal handler raises (Ctrl-C: `KeyboardInterrupt`).
    /// Starts the server first if needed.
    fn serve_forever(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if lock(&this.running).is_none() {
            Self::start(slf)?;
        }
        loop {
            let server = match this.current() {
                None => return Ok(()),
                Some(server) => server,
            };
            refuse_on_worker(&server, "serve_forever")?;
            if py.detach(|| server.wait(SIGNAL_SLICE)) {
                let failure = server.failure();
                drop(server);
                this.close(py)?;
                return match failure {
                    Some(why) => Err(PyRuntimeError::new_err(why)),
                    None => Ok(()),
                };
            }
            drop(server);
            py.check_signals()?;
        }
    }

    /// Wait up to `timeout` seconds (forever if None) for the server to stop;
    /// True if it stopped.
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let limit = timeout.map(|t| seconds("timeout", t)).transpose()?;
        let start = std::time::Instant::now();
        loop {
            let server = match self.current() {
                None => return Ok(true),
                Some(server) => server,
            };
            refuse_on_worker(&server, "wait")?;
            let stopped = py.detach(|| server.wait(SIGNAL_SLICE));
            drop(server);
            if stopped {
                return Ok(true);
            }
            if let Some(limit) = limit {
                if start.elapsed() >= limit {
                    return Ok(false);
                }
            }
            py.check_signals()?;
        }
    }

    /// Stop: finish queued replies (up to `drain_timeout`), cancel every op,
    /// close every socket and join every thread. Idempotent. Raises
    /// `RuntimeError` if a worker had failed.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let server = {
            let mut running = lock(&self.running);
            match running.as_ref() {
                // A handler closing its own server: the stop is asked for; the
                // server stays current until its workers have finished, so
                // `serve_forever` and `wait` return then, and join them.
                Some(server) if server.on_worker_thread() => {
                    let server = Arc::clone(server);
                    drop(running);
                    return server.close().map_err(PyRuntimeError::new_err);
                }
                _ => running.take(),
            }
        };
        if let Some(server) = server {
            let closed = py.detach(|| server.close());
            self.forget_sender();
            // The handler is dropped with the last reference to the server,
            // here or in a waiting thread, in both cases attached.
            drop(server);
            closed.map_err(PyRuntimeError::new_err)?;
        }
        Ok(())
    }

    /// `(host, port)` the server listens on, with port 0 resolved. A server
    /// on a Unix domain socket has none: `RuntimeError` (see `path`).
    #[getter]
    fn address(&self) -> PyResult<(String, u16)> {
        let addr = match self.current() {
            Some(server) => server.address().clone(),
            None => return Err(PyRuntimeError::new_err("server is not running")),
        };
        match addr {
            Address::Inet(addr) => Ok((addr.ip().to_string(), addr.port())),
            Address::Unix(_) => Err(PyRuntimeError::new_err(
                "the server listens on a Unix domain socket: see Server.path",
            )),
        }
    }

    /// The Unix domain socket's path the server is configured with
    /// (`path=`), or None for a TCP server.
    #[getter]
    fn path(&self) -> Option<std::ffi::OsString> {
        self.config.path.clone().map(|path| path.into_os_string())
    }

    /// `"io_uring"`, `"epoll"` or `"iocp"`.
    #[getter]
    fn backend(&self) -> PyResult<&'static str> {
        match self.current() {
            Some(server) => Ok(server.backend().name()),
            None => Err(PyRuntimeError::new_err("server is not running")),
        }
    }

    /// The number of worker threads.
    #[getter]
    fn workers(&self) -> usize {
        self.config.workers
    }

    /// Whether the server is started and not closed.
    #[getter]
    fn running(&self) -> bool {
        lock(&self.running).is_some()
    }

    /// A snapshot of the open connections of a protocol server, as
    /// `Connection` objects (from `connection_made` until `connection_lost`);
    /// always empty for a function handler or the native echo, which make
    /// no `Connection`.
    fn connections<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let registry = lock(&self.connections).as_ref().map(|r| r.clone_ref(py));
        match registry {
            Some(registry) => Ok(registry.bind(py).values()),
            None => Ok(PyList::empty(py)),
        }
    }

    /// Queue `payload`, framed once by the server's codec, on every open
    /// connection except those in `exclude` (a `Connection` or a connection id,
    /// or an iterable of them). The framed bytes are one buffer shared by all
    /// receivers, never copied per connection. Returns the number of
    /// connections it was queued to (0 when not running, or for a function
    /// handler or the native echo, which have no connections to write to).
    #[pyo3(signature = (payload, /, *, exclude = None))]
    fn broadcast(
        &self,
        payload: &Bound<'_, PyAny>,
        exclude: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        if payload.is_none() {
            return Err(PyTypeError::new_err(
                "broadcast() takes bytes, bytearray or memoryview, not None",
            ));
        }
        let exclude = match exclude {
            Some(exclude) => excluded_ids(exclude)?,
            None => Vec::new(),
        };
        let server = self.current();
        let mut queued = Ok(0);
        reply_bytes(payload, "broadcast() payload", |bytes| {
            if let Some(server) = server {
                queued = server.sender().broadcast(bytes, &exclude);
            }
        })?;
        queued.map_err(frame_error)
    }

    /// Counters summed over the workers, the handler-time histogram
    /// (`handler_seconds_*`), `backend`, `workers` and `per_worker` (a list
    /// of each worker's counters and histogram).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        // Cloned out of the lock: building Python objects may run other threads.
        let server = match self.current() {
            Some(server) => server,
            None => return Err(PyRuntimeError::new_err("server is not running")),
        };
        let dict = stats_dict(py, &server.stats())?;
        dict.set_item("backend", server.backend().name())?;
        dict.set_item("workers", server.workers())?;
        let per_worker = PyList::empty(py);
        for stats in server.worker_stats() {
            per_worker.append(stats_dict(py, &stats)?)?;
        }
        dict.set_item("per_worker", per_worker)?;
        Ok(dict)
    }

    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        if lock(&slf.get().running).is_none() {
            Self::start(&slf)?;
        }
        Ok(slf)
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        match self.current() {
            Some(s) => format!(
                "<Server {} backend={} workers={}>",
                s.address(),
                s.backend(),
                s.workers()
            ),
            None => match &self.config.path {
                Some(path) => format!("<Server {} (not running)>", path.display()),
                None => format!("<Server {} (not running)>", self.config.addr),
            },
        }
    }
}

impl PyServer {
    /// Drop the protocol handler's sender once the server is closed, so the
    /// server's state (holding the handler holding the sender) can be freed.
    fn forget_sender(&self) {
        if let Some(slot) = lock(&self.sender).take() {
            slot.set(None);
        }
    }

    /// The running server, if any, without holding the lock afterwards.
    fn current(&self) -> Option<Arc<Server>> {
        lock(&self.running).clone()
    }
}

/// The ids named by `broadcast(exclude=...)`: a connection id or an object
/// with an `id` (a `Connection`), or an iterable of them.
fn excluded_ids(exclude: &Bound<'_, PyAny>) -> PyResult<Vec<ConnectionId>> {
    if let Some(id) = one_id(exclude)? {
        return Ok(vec![id]);
    }
    let mut ids = Vec::new();
    let items = exclude.try_iter().map_err(|_| not_excludable(exclude))?;
    for item in items {
        let item = item?;
        ids.push(one_id(&item)?.ok_or_else(|| not_excludable(&item))?);
    }
    Ok(ids)
}

/// The id named by `item`: an int, or the `id` of a `Connection`; `None`
/// for anything else.
fn one_id(item: &Bound<'_, PyAny>) -> PyResult<Option<ConnectionId>> {
    if let Ok(id) = item.extract::<ConnectionId>() {
        return Ok(Some(id));
    }
    if item.is_instance_of::<pyo3::types::PyString>() || !item.hasattr("id")? {
        return Ok(None);
    }
    Ok(item.getattr("id")?.extract::<ConnectionId>().ok())
}

/// The `TypeError` for what `exclude` cannot name.
#[cold]
fn not_excludable(item: &Bound<'_, PyAny>) -> PyErr {
    let name = item
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default();
    PyTypeError::new_err(format!(
        "exclude takes a Connection, a connection id or an iterable of them, not {}",
        name
    ))
}

/// A handler waiting for its own server would wait for itself forever.
fn refuse_on_worker(server: &Server, method: &str) -> PyResult<()> {
    if server.on_worker_thread() {
        return Err(PyRuntimeError::new_err(format!(
            "{}() called from this server's own handler would wait for itself forever; \
             call close() to stop it",
            method
        )));
    }
    Ok(())
}

impl Drop for PyServer {
    fn drop(&mut self) {
        // Closing joins the workers; they may need the interpreter for logging,
        // so wait for them detached from it.
        let server = lock(&self.running).take();
        if let Some(server) = server {
            Python::attach(|py| {
                let _ = py.detach(|| server.close());
                drop(server);
            });
        }
        self.forget_sender();
    }
}

/// The counters as a dict, and the handler-time histogram as
/// `handler_seconds_buckets` (each finite bound in seconds with the calls that
/// took at most that long, cumulative), `handler_seconds_sum` (seconds) and
/// `handler_seconds_count` (every call: the `+Inf` bucket).
fn stats_dict<'py>(py: Python<'py>, stats: &Stats) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (name, value) in stats.fields() {
        dict.set_item(name, value)?;
    }
    let times = &stats.handler_time;
    let buckets: Vec<(f64, u64)> = times.cumulative().collect();
    dict.set_item("handler_seconds_buckets", buckets)?;
    dict.set_item("handler_seconds_sum", times.sum_seconds())?;
    dict.set_item("handler_seconds_count", times.count())?;
    Ok(dict)
}

/// The backend `"auto"` (or `IOCP_ECHO_BACKEND`) resolves to on this machine.
#[pyfunction]
#[pyo3(signature = (backend = "auto"))]
pub(crate) fn resolve_backend(backend: &str) -> PyResult<&'static str> {
    let choice = BackendChoice::parse(backend)
        .and_then(BackendChoice::with_env)
        .map_err(|e| PyValueError::new_err(format!("backend: {}", e)))?;
    choice
        .resolve()
        .map(|b| b.name())
        .map_err(|e| os_error(&e, backend))
}

fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    if !(value.is_finite() && value > 0.0) {
        return Err(PyValueError::new_err(format!(
            "{} must be a positive number of seconds, got {}",
            name, value
        )));
    }
    Ok(Duration::from_secs_f64(value))
}
