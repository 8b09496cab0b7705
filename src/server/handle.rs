//! The handle of a running server: start it (bind, one port and thread per
//! worker), read its counters, get a sender, wait for it and close it.

use std::fmt;
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::bind::bind;
use super::handler::Handler;
use super::lock::lock;
use super::mode::Mode;
use super::sender::ConnectionSender;
use super::shared::Shared;
use super::socket_file::SocketFile;
use super::stats::Stats;
use super::worker;
use crate::config::{Config, ConfigError};
use crate::port::{Address, Backend, BackendChoice};
use crate::tls::{LoadError, ServerTls};

/// Why a server could not start.
#[derive(Debug)]
pub enum StartError {
    /// A setting is out of range.
    Config(ConfigError),
    /// The backend could not be chosen (e.g. an unknown name in the environment).
    Backend(String),
    /// An OS call failed: bind, listen, opening a port, spawning a thread.
    Io(io::Error),
    /// A TLS file cannot be read or used (the error names it).
    Tls(LoadError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(e) => e.fmt(f),
            StartError::Backend(e) => f.write_str(e),
            StartError::Io(e) => e.fmt(f),
            StartError::Tls(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for StartError {}

impl From<io::Error> for StartError {
    fn from(e: io::Error) -> StartError {
        StartError::Io(e)
    }
}

/// A running server. Dropping it closes it.
pub struct Server {
    shared: Arc<Shared>,
    /// Joined (and emptied) by the first `close`.
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Where it listens: an IP address and port, or a Unix socket's path.
    address: Address,
    /// The Unix domain socket's file, removed on close; None for TCP.
    socket_file: Mutex<Option<SocketFile>>,
    backend: Backend,
}

impl Server {
    /// Bind, open a port per worker and start serving. `handler: None` echoes
    /// every message natively.
    pub fn start(config: Config, handler: Option<Arc<dyn Handler>>) -> Result<Server, StartError> {
        config.validate().map_err(StartError::Config)?;
        let tls = ServerTls::load(&config.tls).map_err(StartError::Tls)?;
        Server::start_with_tls(config, handler, tls)
    }

    /// [`Server::start`] with the TLS of `config.tls` already loaded
    /// (`ServerTls::load(&config.tls)`): the files are not read again, and
    /// servers may share one loaded configuration. `tls` must be given exactly
    /// when `config.tls` is enabled.
    pub fn start_with_tls(
        config: Config,
        handler: Option<Arc<dyn Handler>>,
        tls: Option<ServerTls>,
    ) -> Result<Server, StartError> {
        config.validate().map_err(StartError::Config)?;
        if tls.is_some() != config.tls.enabled() {
            return Err(StartError::Config(ConfigError {
                name: "tls_cert",
                why: "does not match the loaded TLS given with it".to_string(),
            }));
        }
        let backend = BackendChoice::with_env(config.backend)
            .map_err(StartError::Backend)?
            .resolve()?;
        let (listener, socket_file) = bind(&config)?;
        let address = match &config.path {
            Some(path) => Address::Unix(Some(path.clone())),
            None => Address::from_sock_addr(&listener.local_addr()?).ok_or_else(|| {
                io::Error::new(io::ErrorKind::Other, "listener has no IP address")
            })?,
        };

        let workers = config.workers;
        let mode = Mode::new(handler, &config.framing);
        let shared = Arc::new(Shared::new(config, mode, tls));

        let mut threads = Vec::with_capacity(workers);
        let mut ready = Vec::with_capacity(workers);
        let mut listener = Some(listener);
        let mut spawn_error = None;
        for index in 0..workers {
            let (ready_tx, ready_rx) = mpsc::channel();
            let (go_tx, go_rx) = mpsc::channel();
            let startup = worker::Startup {
                index,
                backend,
                listener: if index == 0 { listener.take() } else { None },
                ready: ready_tx,
                go: go_rx,
            };
            let thread_shared = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("iocp-echo-worker-{}", index))
                .spawn(move || worker::run(thread_shared, startup));
            match spawned {
                Ok(handle) => {
                    threads.push(handle);
                    ready.push((ready_rx, go_tx));
                }
                Err(e) => {
                    spawn_error = Some(e);
                    break;
                }
            }
        }

        // Each worker opens its own port on its own thread (io_uring's
        // single-issuer rings require it) and reports its waker or its error.
        let mut wakers = Vec::with_capacity(workers);
        let mut first_error: Option<io::Error> = spawn_error;
        for (ready_rx, _) in &ready {
            match ready_rx.recv() {
                Ok(Ok(waker)) => wakers.push(waker),
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert_with(|| {
                        io::Error::new(io::ErrorKind::Other, "a worker thread died while starting")
                    });
                }
            }
        }
        *lock(&shared.wakers) = wakers;
        let ok = first_error.is_none();
        if !ok {
            shared.stopping.store(true, Ordering::SeqCst);
        }
        for (_, go_tx) in &ready {
            // A worker that already exited has dropped its receiver; nothing to tell it.
            let _ = go_tx.send(ok);
        }
        if let Some(e) = first_error {
            for thread in threads {
                let _ = thread.join();
            }
            return Err(StartError::Io(e));
        }
        Ok(Server {
            shared,
            threads: Mutex::new(threads),
            address,
            socket_file: Mutex::new(socket_file),
            backend,
        })
    }

    /// The IP address the server listens on, with port 0 resolved; for a
    /// server on a Unix domain socket (which has none), `0.0.0.0:0`: see
    /// [`Server::address`].
    pub fn local_addr(&self) -> SocketAddr {
        self.address
            .inet()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Where the server listens: its IP address and port (port 0
    /// resolved), or its Unix domain socket's path.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The backend every worker runs.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The number of worker threads.
    pub fn workers(&self) -> usize {
        self.shared.counters.len()
    }

    /// A handle that queues output to (or closes) this server's connections
    /// from any thread, by id; see [`ConnectionSender`].
    pub fn sender(&self) -> ConnectionSender {
        ConnectionSender::new(Arc::clone(&self.shared), lock(&self.shared.wakers).clone())
    }

    /// The counters summed over all workers.
    pub fn stats(&self) -> Stats {
        let mut total = Stats::default();
        for c in &self.shared.counters {
            total.add(&c.snapshot());
        }
        total
    }

    /// The counters of each worker.
    pub fn worker_stats(&self) -> Vec<Stats> {
        self.shared.counters.iter().map(|c| c.snapshot()).collect()
    }

    /// The failure that stopped the server, if a worker failed.
    pub fn failure(&self) -> Option<String> {
        lock(&self.shared.failure).clone()
    }

    /// Wait until every worker has stopped or `timeout` passes; true if stopped.
    /// Workers stop after `close`, or by themselves when one fails.
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut running = lock(&self.shared.running);
        while *running > 0 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            running = match self.shared.finished.wait_timeout(running, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }

    /// Stop accepting, let connections send what is queued (up to
    /// `drain_timeout`), cancel every op and wait for its completion, close
    /// every socket and join every thread. Idempotent. Returns the failure of
    /// a worker, if one failed. Callable from any thread, also while another
    /// thread waits in [`Server::wait`].
    ///
    /// Called on one of the server's own workers (by a handler), it only asks
    /// the server to stop, since a thread cannot join itself: the workers
    /// finish by themselves ([`Server::wait`] sees it), and a later `close`
    /// from another thread, or the drop, joins them.
    pub fn close(&self) -> Result<(), String> {
        self.shared.stop();
        if self.on_worker_thread() {
            return match self.failure() {
                Some(why) => Err(why),
                None => Ok(()),
            };
        }
        let threads = mem::take(&mut *lock(&self.threads));
        for thread in threads {
            if thread.join().is_err() {
                let mut failure = lock(&self.shared.failure);
                failure.get_or_insert_with(|| "a worker thread panicked".to_string());
            }
        }
        // The listener is closed: its file goes (if it is still ours).
        if let Some(file) = lock(&self.socket_file).as_mut() {
            file.remove();
        }
        match self.failure() {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }
}

impl Server {
    /// Whether the calling thread is one of this server's workers (not yet joined).
    pub fn on_worker_thread(&self) -> bool {
        let me = std::thread::current().id();
        lock(&self.threads).iter().any(|t| t.thread().id() == me)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Err(why) = self.close() {
            log::error!("server stopped with a failure: {}", why);
        }
    }
}
