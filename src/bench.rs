//! `iocp-echo bench`: a closed-loop echo load generator on the same
//! completion-port core as the server.
//!
//! Each client thread owns a [`Port`](crate::port::Port) and a share of the
//! connections. It connects them in batches (a window of connects in flight),
//! then, once every thread is connected, each connection sends one framed
//! message of `size` payload bytes and reads exactly the framed reply length
//! back before it sends the next (closed loop). Every echoed byte is compared
//! with what was sent: a mismatch counts an error and closes that connection.
//! The time from posting a message to its last reply byte goes into an
//! HDR histogram.
//!
//! Sockets, ops and buffers follow the port contract: a connection's send and
//! receive buffers belong to the port while their op is in flight, and a
//! socket is closed only after its last completion (cancelled ops included).
//!
//! * [`Bench`] runs a configured load and hands back a [`Report`]; [`run`] is
//!   the whole of it in one call.
//! * [`cli`] is the `iocp-echo bench` command line.

mod arrival;
pub mod cli;
mod client;
mod plan;
mod report;
mod system;

pub use report::{Latency, Report, Value};
pub use system::{raise_fd_limit, stderr_is_terminal};

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::framing::{ByteOrder, Framing};
use crate::port::{Backend, BackendChoice};
use crate::server::lock;
use plan::ThreadResult;

/// Connects in flight at once, over all threads, while connecting.
pub const CONNECT_WINDOW: usize = 256;

/// The largest message payload, in bytes.
pub const MAX_SIZE: usize = 64 << 20;

/// How messages are framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageFraming {
    /// The payload alone; the server echoes whatever chunks it receives.
    Raw,
    /// The payload, which never contains `\n`, then `\n`.
    Lines,
    /// A 4-byte big-endian payload length, then the payload.
    Length,
}

impl MessageFraming {
    /// Parse `"raw"`, `"lines"` or `"length"`.
    pub fn parse(name: &str) -> Result<MessageFraming, String> {
        match name {
            "raw" => Ok(MessageFraming::Raw),
            "lines" => Ok(MessageFraming::Lines),
            "length" => Ok(MessageFraming::Length),
            other => Err(format!(
                "framing must be raw, lines or length, got {:?}",
                other
            )),
        }
    }

    /// The name [`MessageFraming::parse`] accepts.
    pub fn name(self) -> &'static str {
        match self {
            MessageFraming::Raw => "raw",
            MessageFraming::Lines => "lines",
            MessageFraming::Length => "length",
        }
    }

    /// The server codec that frames messages this way.
    pub fn codec(self) -> Framing {
        match self {
            MessageFraming::Raw => Framing::Raw,
            MessageFraming::Lines => Framing::Lines {
                delimiter: b"\n".to_vec(),
            },
            MessageFraming::Length => Framing::LengthPrefixed {
                width: 4,
                order: ByteOrder::Big,
            },
        }
    }
}

/// When a run ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// After this long (not counting the warm-up); messages still in flight
    /// at the end are abandoned, not counted.
    Duration(Duration),
    /// After this many messages in total (not counting the warm-up).
    Count(u64),
}

/// Everything a load run is configured with.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// The echo server.
    pub addr: SocketAddr,
    /// Connections, all open at once.
    pub connections: usize,
    /// Payload bytes of each message.
    pub size: usize,
    /// When the run ends.
    pub limit: Limit,
    /// How messages are framed.
    pub framing: MessageFraming,
    /// Client threads, each with its own port and a share of the connections.
    pub threads: usize,
    /// Messages run for this long first, measured by nothing.
    pub warmup: Duration,
    /// Which I/O backend the clients use.
    pub backend: BackendChoice,
    /// Connects in flight at once, over all threads.
    pub connect_window: usize,
    /// Print a live progress line on stderr once a second.
    pub progress: bool,
}

impl Default for BenchConfig {
    fn default() -> BenchConfig {
        BenchConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            connections: 50,
            size: 64,
            limit: Limit::Duration(Duration::from_secs(10)),
            framing: MessageFraming::Raw,
            threads: 1,
            warmup: Duration::ZERO,
            backend: BackendChoice::Auto,
            connect_window: CONNECT_WINDOW,
            progress: false,
        }
    }
}

impl BenchConfig {
    /// Check every setting; the error names the bad one and what is allowed.
    pub fn validate(&self) -> Result<(), String> {
        if self.connections == 0 || self.connections > 1_000_000 {
            return Err(format!(
                "connections must be 1..=1000000, got {}",
                self.connections
            ));
        }
        if self.size == 0 || self.size > MAX_SIZE {
            return Err(format!("size must be 1..={}, got {}", MAX_SIZE, self.size));
        }
        match self.limit {
            Limit::Duration(d) if d.is_zero() => {
                return Err("duration must be positive seconds".to_string())
            }
            Limit::Count(0) => return Err("count must be at least 1".to_string()),
            _ => {}
        }
        if self.threads == 0 || self.threads > 1024 {
            return Err(format!("threads must be 1..=1024, got {}", self.threads));
        }
        if self.connect_window == 0 {
            return Err("connect_window must be at least 1".to_string());
        }
        if self.addr.port() == 0 {
            return Err("port must be 1..=65535, got 0".to_string());
        }
        Ok(())
    }
}

/// Why a run could not start or went wrong as a whole.
#[derive(Debug)]
pub enum BenchError {
    /// A setting is out of range (a usage error).
    Config(String),
    /// An OS call failed: opening a port, spawning a thread, waiting on a port.
    Io(io::Error),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Config(why) => f.write_str(why),
            BenchError::Io(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for BenchError {}

/// State shared by the coordinating thread and the client threads.
pub(crate) struct Shared {
    pub(crate) config: BenchConfig,
    pub(crate) backend: Backend,
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

    fn start_time(&self) -> Option<Instant> {
        *lock(&self.start)
    }
}

/// A load run in progress: client threads that report back when they end.
pub struct Bench {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    results: mpsc::Receiver<ThreadResult>,
    collected: Vec<ThreadResult>,
    progress: Option<report::ProgressLine>,
}

impl Bench {
    /// Validate `config`, resolve the backend and start the client threads.
    pub fn start(config: BenchConfig) -> Result<Bench, BenchError> {
        config.validate().map_err(BenchError::Config)?;
        let backend = BackendChoice::with_env(config.backend)
            .map_err(BenchError::Config)?
            .resolve()
            .map_err(BenchError::Io)?;
        let threads = config.threads.min(config.connections);
        let shared = Arc::new(Shared {
            backend,
            stop: AtomicBool::new(false),
            connecting: Mutex::new(threads),
            started: Condvar::new(),
            start: Mutex::new(None),
            connected: AtomicUsize::new(0),
            connect_errors: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            config,
        });
        let (tx, results) = mpsc::channel();
        let mut bench = Bench {
            progress: if shared.config.progress {
                Some(report::ProgressLine::new())
            } else {
                None
            },
            shared,
            threads: Vec::with_capacity(threads),
            results,
            collected: Vec::with_capacity(threads),
        };
        for (index, plan) in plan::plans(&bench.shared.config, threads)
            .into_iter()
            .enumerate()
        {
            let shared = Arc::clone(&bench.shared);
            let tx = tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("iocp-echo-bench-{}", index))
                .spawn(move || client::run(shared, plan, tx));
            match spawned {
                Ok(handle) => bench.threads.push(handle),
                Err(e) => {
                    bench.stop();
                    // The threads not started never arrive; let the others go.
                    *lock(&bench.shared.connecting) = 0;
                    bench.shared.started.notify_all();
                    bench.join();
                    return Err(BenchError::Io(e));
                }
            }
        }
        Ok(bench)
    }

    /// Ask every client thread to stop sending and close its connections.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }

    /// Wait up to `timeout` for the run to end, drawing the progress line when
    /// due; true once every client thread has reported.
    pub fn poll(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.collected.len() < self.threads.len() {
            if let Some(line) = &mut self.progress {
                line.maybe_draw(&self.shared, self.shared.start_time());
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let slice = (deadline - now).min(Duration::from_millis(100));
            match self.results.recv_timeout(slice) {
                Ok(result) => self.collected.push(result),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // Every sender is gone: a thread died without reporting.
                Err(mpsc::RecvTimeoutError::Disconnected) => return true,
            }
        }
        true
    }

    /// Wait for the end of the run (see [`Bench::poll`]) and build its report.
    pub fn finish(mut self) -> Result<Report, BenchError> {
        while !self.poll(Duration::from_secs(1)) {}
        if let Some(line) = &mut self.progress {
            line.clear();
        }
        let panicked = self.join();
        let mut failure = None;
        if panicked || self.collected.len() < self.threads.len() {
            failure = Some(io::Error::new(
                io::ErrorKind::Other,
                "a bench client thread panicked",
            ));
        }
        for result in &mut self.collected {
            if let Some(e) = result.failure.take() {
                failure.get_or_insert(e);
            }
        }
        if let Some(e) = failure {
            return Err(BenchError::Io(e));
        }
        let start = self.shared.start_time();
        Ok(Report::build(&self.shared, start, &self.collected))
    }

    /// Join every thread; true if one panicked.
    fn join(&mut self) -> bool {
        let mut panicked = false;
        for thread in self.threads.drain(..) {
            panicked |= thread.join().is_err();
        }
        panicked
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop();
            self.join();
        }
    }
}

/// Run a load to its end and report it.
pub fn run(config: BenchConfig) -> Result<Report, BenchError> {
    Bench::start(config)?.finish()
}

#[cfg(test)]
mod tests;
