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
mod config;
mod conn;
mod payload;
mod plain;
mod plan;
mod report;
mod shared;
mod system;
mod tls;
mod tls_session;

pub use config::{
    BenchConfig, BenchError, Limit, MessageFraming, TlsSettings, CONNECT_WINDOW, MAX_SIZE,
};
pub use report::{Latency, Report, Value};
pub use system::{raise_fd_limit, stderr_is_terminal};

use std::io;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::port::BackendChoice;
use plan::ThreadResult;
use shared::Shared;
use tls::TlsClient;

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
        let tls = match &config.tls {
            Some(settings) => Some(TlsClient::load(settings).map_err(BenchError::Config)?),
            None => None,
        };
        let threads = config.threads.min(config.connections);
        let shared = Arc::new(Shared::new(config, backend, tls, threads));
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
                    bench.shared.release_waiters();
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
#[cfg(test)]
mod tls_tests;
