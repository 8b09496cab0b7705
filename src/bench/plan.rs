//! How a run is split over client threads ([`Plan`]), and what each thread
//! hands back ([`ThreadResult`]) for the report.

use std::io;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::config::{BenchConfig, Limit};

/// Latencies above this (in nanoseconds: 100 s) are recorded as this.
const LATENCY_LIMIT_NS: u64 = 100_000_000_000;

/// What one client thread is to do.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// Connections of this thread.
    pub(crate) connections: usize,
    /// The run-wide number of this thread's first connection (varies payloads).
    pub(crate) first: usize,
    /// Messages to measure in count mode (this thread's share).
    pub(crate) quota: Option<u64>,
    /// Connects in flight at once.
    pub(crate) window: usize,
}

/// Split the connections, the message count and the connect window over `threads`.
pub(crate) fn plans(config: &BenchConfig, threads: usize) -> Vec<Plan> {
    let total = config.connections;
    let mut plans = Vec::with_capacity(threads);
    let mut first = 0;
    for t in 0..threads {
        let connections = total / threads + usize::from(t < total % threads);
        plans.push(Plan {
            connections,
            first,
            quota: None,
            window: (config.connect_window / threads).max(1),
        });
        first += connections;
    }
    if let Limit::Count(count) = config.limit {
        // Each thread measures a share of the messages in proportion to its
        // connections; what rounding leaves over goes to the first threads.
        let mut given = 0;
        for plan in &mut plans {
            let share = (u128::from(count) * plan.connections as u128 / total as u128) as u64;
            plan.quota = Some(share);
            given += share;
        }
        for plan in plans.iter_mut().take((count - given) as usize) {
            plan.quota = plan.quota.map(|q| q + 1);
        }
    }
    plans
}

/// What one client thread measured and met.
pub(crate) struct ThreadResult {
    /// Latency of each measured message, in nanoseconds.
    pub(crate) histogram: Histogram<u64>,
    /// Measured messages.
    pub(crate) messages: u64,
    /// Messages that failed: wrong bytes, or the connection broke mid-message.
    pub(crate) errors: u64,
    /// The first such failure, described.
    pub(crate) first_error: Option<String>,
    /// Connections that were established.
    pub(crate) connected: usize,
    /// Connections that could not be established.
    pub(crate) connect_errors: u64,
    /// Of those, how many failed with `EADDRNOTAVAIL` (no local port left).
    pub(crate) addr_not_available: u64,
    /// Of those, how many failed in the TLS handshake.
    pub(crate) tls_errors: u64,
    /// The first connect failure, described.
    pub(crate) first_connect_error: Option<String>,
    /// Connections established (under TLS: handshakes done) within the
    /// measured time: the reconnects of `--messages-per-connection`.
    pub(crate) connects: u64,
    /// How long this thread measured.
    pub(crate) measured: Duration,
    /// A failure of the port itself, which ends the thread's run.
    pub(crate) failure: Option<io::Error>,
}

impl ThreadResult {
    pub(crate) fn new() -> ThreadResult {
        ThreadResult {
            histogram: new_histogram(),
            messages: 0,
            errors: 0,
            first_error: None,
            connected: 0,
            connect_errors: 0,
            addr_not_available: 0,
            tls_errors: 0,
            first_connect_error: None,
            connects: 0,
            measured: Duration::ZERO,
            failure: None,
        }
    }

    /// A measured message posted at `posted` came back right at `now`.
    pub(crate) fn record(&mut self, posted: Instant, now: Instant) {
        let nanos = now.saturating_duration_since(posted).as_nanos();
        self.histogram
            .saturating_record(u64::try_from(nanos).unwrap_or(u64::MAX).max(1));
        self.messages += 1;
    }

    /// A message failed for the reason `why`.
    #[cold]
    pub(crate) fn message_error(&mut self, why: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(why);
        }
    }

    /// A connection could not be established, for the reason `why`.
    #[cold]
    pub(crate) fn connect_error(&mut self, why: String) {
        self.connect_errors += 1;
        if self.first_connect_error.is_none() {
            self.first_connect_error = Some(why);
        }
    }
}

/// An empty latency histogram: nanoseconds, 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_LIMIT_NS, 3).expect("constant histogram bounds are valid")
}
