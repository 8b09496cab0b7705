//! The state shared by a server's handle, its senders and its workers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use super::admission::Gate;
use super::lock::lock;
use super::mailbox::Mailbox;
use super::mode::Mode;
use super::stats::WorkerCounters;
use crate::config::Config;
use crate::port::Waker;
use crate::tls::ServerTls;

/// State shared by the server handle and its workers.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) mode: Mode,
    /// The server's TLS, loaded at start; `None`: plain TCP.
    pub(crate) tls: Option<ServerTls>,
    /// Set once by `close`, or by a worker that failed.
    pub(crate) stopping: AtomicBool,
    /// When the drain started; connections still open after `drain_timeout` are cut.
    pub(crate) drain_started: Mutex<Option<Instant>>,
    /// Connections open across all workers, under `max_connections`.
    pub(crate) gate: Arc<Gate>,
    /// Each worker's waker, filled in before the workers start their loops.
    pub(crate) wakers: Mutex<Vec<Waker>>,
    /// Each worker's mailbox.
    pub(crate) mailboxes: Vec<Mailbox>,
    pub(crate) counters: Vec<WorkerCounters>,
    /// The first failure of a worker (a panic or a port error), reported by `close`.
    pub(crate) failure: Mutex<Option<String>>,
    /// Workers still running; `wait` sleeps on `finished` until it is 0.
    pub(crate) running: Mutex<usize>,
    pub(crate) finished: Condvar,
}

impl Shared {
    /// The state of a server with `workers` workers, none started yet.
    pub(crate) fn new(config: Config, mode: Mode, tls: Option<ServerTls>) -> Shared {
        let workers = config.workers;
        let max_output = config.max_output;
        Shared {
            gate: Arc::new(Gate::new(config.max_connections)),
            config,
            mode,
            tls,
            stopping: AtomicBool::new(false),
            drain_started: Mutex::new(None),
            wakers: Mutex::new(Vec::new()),
            mailboxes: (0..workers).map(|_| Mailbox::new(max_output)).collect(),
            counters: (0..workers).map(|_| WorkerCounters::default()).collect(),
            failure: Mutex::new(None),
            running: Mutex::new(workers),
            finished: Condvar::new(),
        }
    }

    /// Whether the server is stopping.
    #[inline]
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

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
