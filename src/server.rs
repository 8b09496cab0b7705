//! The message server: a listener, worker threads each owning a completion
//! port, the connection state machine, limits, stats and shutdown. Nothing here
//! knows which OS or backend runs underneath, nor Python.
//!
//! Shape: worker 0 owns the listener and keeps a few accepts posted on it; each
//! accepted socket is handed, round robin, to a worker (itself included) through
//! that worker's inbox and waker. A connection then lives on one worker for its
//! whole life, so its state needs no lock. This hand-over works the same on
//! every backend, including IOCP where a listening socket can belong to a single
//! port only.

mod accept;
mod connection;
mod decode;
mod drain;
mod handler;
mod stats;
mod worker;

pub use handler::{Batch, Handler};
pub use stats::Stats;

pub use crate::config::{default_workers, Config, ConfigError, DEFAULT_MAX_FRAME};

use std::fmt;
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::port::{Backend, BackendChoice, Waker};
use stats::WorkerCounters;

/// Why a server could not start.
#[derive(Debug)]
pub enum StartError {
    /// A setting is out of range.
    Config(ConfigError),
    /// The backend could not be chosen (e.g. an unknown name in the environment).
    Backend(String),
    /// An OS call failed: bind, listen, opening a port, spawning a thread.
    Io(io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(e) => e.fmt(f),
            StartError::Backend(e) => f.write_str(e),
            StartError::Io(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for StartError {}

impl From<io::Error> for StartError {
    fn from(e: io::Error) -> StartError {
        StartError::Io(e)
    }
}

/// State shared by the server handle and its workers.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) handler: Option<Arc<dyn Handler>>,
    /// Set once by `close`, or by a worker that failed.
    pub(crate) stopping: AtomicBool,
    /// When the drain started; connections still open after `drain_timeout` are cut.
    pub(crate) drain_started: Mutex<Option<Instant>>,
    /// Connections open across all workers (for `max_connections`).
    pub(crate) open_connections: AtomicUsize,
    /// Each worker's waker, filled in before the workers start their loops.
    pub(crate) wakers: Mutex<Vec<Waker>>,
    /// Sockets accepted by worker 0 for each worker.
    pub(crate) inboxes: Vec<Mutex<Vec<(Socket, SocketAddr)>>>,
    pub(crate) counters: Vec<WorkerCounters>,
    /// The first failure of a worker (a panic or a port error), reported by `close`.
    pub(crate) failure: Mutex<Option<String>>,
    /// Workers still running; `wait` sleeps on `finished` until it is 0.
    pub(crate) running: Mutex<usize>,
    pub(crate) finished: Condvar,
}

impl Shared {
    /// Ask every worker to stop (idempotent).
    pub(crate) fn stop(&self) {
        if !self.stopping.swap(true, Ordering::SeqCst) {
            *lock(&self.drain_started) = Some(Instant::now());
        }
        for waker in lock(&self.wakers).iter() {
            if let Err(e) = waker.wake() {
                log::error!("could not wake a worker: {}", e);
            }
        }
    }

    /// Record a worker's failure and stop the server.
    pub(crate) fn fail(&self, why: String) {
        log::error!("{}", why);
        {
            let mut failure = lock(&self.failure);
            if failure.is_none() {
                *failure = Some(why);
            }
        }
        self.stop();
    }
}

/// Lock a mutex, ignoring poisoning: every value behind our mutexes stays valid
/// even if a holder panicked (a worker panic is reported separately).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// A running server. Dropping it closes it.
pub struct Server {
    shared: Arc<Shared>,
    /// Joined (and emptied) by the first `close`.
    threads: Mutex<Vec<JoinHandle<()>>>,
    local_addr: SocketAddr,
    backend: Backend,
}

impl Server {
    /// Bind, open a port per worker and start serving. `handler: None` echoes
    /// every message natively.
    pub fn start(config: Config, handler: Option<Arc<dyn Handler>>) -> Result<Server, StartError> {
        config.validate().map_err(StartError::Config)?;
        let backend = BackendChoice::with_env(config.backend)
            .map_err(StartError::Backend)?
            .resolve()?;
        let listener = bind(&config)?;
        let local_addr = listener
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::new(io::ErrorKind::Other, "listener has no IP address"))?;

        let workers = config.workers;
        let shared = Arc::new(Shared {
            config,
            handler,
            stopping: AtomicBool::new(false),
            drain_started: Mutex::new(None),
            open_connections: AtomicUsize::new(0),
            wakers: Mutex::new(Vec::new()),
            inboxes: (0..workers).map(|_| Mutex::new(Vec::new())).collect(),
            counters: (0..workers).map(|_| WorkerCounters::default()).collect(),
            failure: Mutex::new(None),
            running: Mutex::new(workers),
            finished: Condvar::new(),
        });

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
            local_addr,
            backend,
        })
    }

    /// The address the server listens on, with port 0 resolved.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The backend every worker runs.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The number of worker threads.
    pub fn workers(&self) -> usize {
        self.shared.counters.len()
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

/// Create, bind and listen on the server's socket.
fn bind(config: &Config) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(config.addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    // On Unix SO_REUSEADDR only lets us rebind past TIME_WAIT; on Windows it
    // would let another process steal the port, so it stays off there.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(config.addr))?;
    socket.listen(config.backlog)?;
    Ok(socket)
}

#[cfg(test)]
mod tests;
