//! Counters kept by each worker and read by `Server::stats` from any thread.

use std::sync::atomic::{AtomicU64, Ordering};

use super::handler_time::{HandlerClock, HandlerTimes};

macro_rules! counters {
    ($(#[doc = $doc:literal] $name:ident,)*) => {
        /// Live counters of one worker, updated with relaxed atomics.
        #[derive(Debug, Default)]
        pub struct WorkerCounters {
            $(#[doc = $doc] pub $name: AtomicU64,)*
            /// How long each handler call took.
            pub handler_time: HandlerClock,
            /// Tests only: the most output one connection had queued or in
            /// flight when it was pumped.
            #[cfg(test)]
            pub(crate) output_peak: AtomicU64,
        }

        /// A snapshot of the counters of one worker, or their sum over all workers.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Stats {
            $(#[doc = $doc] pub $name: u64,)*
            /// How long each handler call took.
            pub handler_time: HandlerTimes,
            /// Tests only: see `WorkerCounters::output_peak` (the largest,
            /// not the sum, over workers).
            #[cfg(test)]
            pub(crate) output_peak: u64,
        }

        impl WorkerCounters {
            /// Read every counter.
            pub fn snapshot(&self) -> Stats {
                Stats {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                    handler_time: self.handler_time.snapshot(),
                    #[cfg(test)]
                    output_peak: self.output_peak.load(Ordering::Relaxed),
                }
            }
        }

        impl Stats {
            /// The names and values of every counter, in declaration order
            /// (the handler-time histogram is not a counter: see `handler_time`).
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name),)*]
            }

            /// Add another snapshot into this one.
            pub fn add(&mut self, other: &Stats) {
                $(self.$name += other.$name;)*
                self.handler_time.add(&other.handler_time);
                #[cfg(test)]
                {
                    self.output_peak = self.output_peak.max(other.output_peak);
                }
            }
        }
    };
}

counters! {
    /// Connections accepted and handed to a worker.
    connections_accepted,
    /// Connections open now.
    connections_open,
    /// Connections closed, for any reason.
    connections_closed,
    /// Connections refused at once because `max_connections` were open.
    connections_rejected,
    /// Connections closed by the idle timeout.
    idle_timeouts,
    /// Failed accepts (out of file descriptors, aborted handshakes ...).
    accept_errors,
    /// Connections closed by a recv or send error (reset, broken pipe ...).
    io_errors,
    /// Connections closed for a bad frame (over `max_frame`, bad prefix, truncated).
    frame_errors,
    /// Connections closed because the handler raised or returned a bad reply.
    handler_errors,
    /// Bytes received from clients.
    bytes_received,
    /// Bytes sent to clients.
    bytes_sent,
    /// Complete frames received.
    frames_received,
    /// Replies queued for sending.
    frames_sent,
    /// Times a connection stopped reading because its output passed the high-water mark.
    backpressure_pauses,
    /// Connections closed because their queued output would have passed `max_output`.
    slow_consumer_closes,
    /// TLS handshakes finished.
    tls_handshakes,
    /// TLS connections closed by a TLS failure (not TLS, a bad record, a refused client certificate, a truncated record) or before their handshake finished (timed out, left, reset).
    tls_errors,
    /// Connections closed for the PROXY protocol (`proxy_protocol`): from a peer outside `trusted_proxies`, or with a header missing, malformed, too long, cut short or not complete within `idle_timeout`.
    proxy_errors,
}

impl WorkerCounters {
    /// Add `n` to a counter.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Tests only: note that a connection had `n` bytes of output.
    #[cfg(test)]
    pub(crate) fn note_output(&self, n: usize) {
        self.output_peak.fetch_max(n as u64, Ordering::Relaxed);
    }

    /// Subtract `n` from a gauge.
    #[inline]
    pub fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Ordering::Relaxed);
    }
}
