//! State shared by the coordinating thread and the client threads of a run.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::config::BenchConfig;
use super::tls::TlsClient;
use crate::port::Backend;
use crate::server::lock;

/// State shared by the coordinating thread and the client threads.
pub(crate) struct Shared {
    pub(crate) config: BenchConfig,
    pub(crate) backend: Backend,
    /// The TLS client configuration, under `--tls`.
    pub(crate) tls: Option<TlsClient>,
    /// Set to end the run early: threads stop sending and close.
    pub(crate) stop: AtomicBool,
    /// Client threads still connecting; the run starts when it reaches 0.
    connecting: Mutex<usize>,
    started: Condvar,
    /// When every thread was connected and messages began (set once).
    start: Mutex<Option<Instant>>,
    /// Live totals for the progress line (published once per batch).
    pub(crate) connected: AtomicUsize,
    pub(crate) connect_errors: AtomicU64,
    pub(crate) messages: AtomicU64,
    pub(crate) errors: AtomicU64,
}

impl Shared {
    /// Called once by each client thread when its connects are done; waits
    /// until every thread is there (or the run is stopped) and returns the
    /// common start of the run.
    pub(crate) fn connected_wait(&self) -> Instant {
        let mut left = lock(&self.connecting);
        *left = left.saturating_sub(1);
        if *left == 0 {
            let now = Instant::now();
            lock(&self.start).get_or_insert(now);
            self.started.notify_all();
        }
        while *left > 0 && !self.stop.load(Ordering::Relaxed) {
            left = match self.started.wait_timeout(left, Duration::from_millis(50)) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        drop(left);
        *lock(&self.start).get_or_insert_with(Instant::now)
    }

    /// The state of a run of `threads` client threads, none connected yet.
    pub(crate) fn new(
        config: BenchConfig,
        backend: Backend,
        tls: Option<TlsClient>,
        threads: usize,
    ) -> Shared {
        Shared {
            backend,
            tls,
            stop: AtomicBool::new(false),
            connecting: Mutex::new(threads),
            started: Condvar::new(),
            start: Mutex::new(None),
            connected: AtomicUsize::new(0),
            connect_errors: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            config,
        }
    }

    /// Let every thread waiting in [`Shared::connected_wait`] go (threads that
    /// were never started will not arrive).
    pub(crate) fn release_waiters(&self) {
        *lock(&self.connecting) = 0;
        self.started.notify_all();
    }

    /// When messages began, once every thread connected.
    pub(crate) fn start_time(&self) -> Option<Instant> {
        *lock(&self.start)
    }
}
