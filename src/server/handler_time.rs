//! The handler-time histogram: how long each call of the handler took, counted
//! in fixed Prometheus-style buckets by each worker.
//!
//! A worker times every [`Handler::handle`](super::handler::Handler::handle)
//! call (one call per turn, carrying every frame and event of the turn) with
//! one clock read before it and one after, and adds the time here: one bucket
//! count and the sum, two relaxed atomic adds, no allocation or lock. The
//! native echo calls no handler and adds nothing.
//!
//! Rules: the buckets' bounds are fixed ([`HANDLER_TIME_BOUNDS_NANOS`]); a call
//! lasting exactly a bound falls into that bucket (Prometheus' `le`). A
//! snapshot's count is the total of its buckets, so count and buckets always
//! agree; the sum is read separately and may be one call ahead or behind.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The buckets' upper bounds, in nanoseconds: 1 µs to 10 s. One more bucket
/// past the last counts the slower calls (Prometheus' `+Inf`).
pub const HANDLER_TIME_BOUNDS_NANOS: [u64; 22] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// The number of buckets: one per bound, and `+Inf`.
pub const HANDLER_TIME_BUCKETS: usize = HANDLER_TIME_BOUNDS_NANOS.len() + 1;

/// One worker's live histogram of handler calls, updated with relaxed atomics.
#[derive(Debug, Default)]
pub struct HandlerClock {
    /// Calls per bucket (not cumulative); the last is `+Inf`.
    counts: [AtomicU64; HANDLER_TIME_BUCKETS],
    sum_nanos: AtomicU64,
}

impl HandlerClock {
    /// Count one handler call that took `elapsed`.
    #[inline]
    pub fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = HANDLER_TIME_BOUNDS_NANOS
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(HANDLER_TIME_BUCKETS - 1);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Read every bucket and the sum.
    pub fn snapshot(&self) -> HandlerTimes {
        let mut counts = [0; HANDLER_TIME_BUCKETS];
        for (count, live) in counts.iter_mut().zip(self.counts.iter()) {
            *count = live.load(Ordering::Relaxed);
        }
        HandlerTimes {
            counts,
            sum_nanos: self.sum_nanos.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of the handler-time histogram of one worker, or its sum over
/// all workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandlerTimes {
    /// Calls per bucket (not cumulative), in the order of
    /// [`HANDLER_TIME_BOUNDS_NANOS`]; the last is `+Inf`.
    pub counts: [u64; HANDLER_TIME_BUCKETS],
    /// The time of every call added up, in nanoseconds.
    pub sum_nanos: u64,
}

impl HandlerTimes {
    /// The number of calls.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The time of every call added up, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos as f64 / 1e9
    }

    /// Each finite bound in seconds with the number of calls that took at
    /// most that long (cumulative, as Prometheus' buckets); the `+Inf`
    /// bucket is [`HandlerTimes::count`].
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        HANDLER_TIME_BOUNDS_NANOS
            .iter()
            .zip(self.counts.iter())
            .scan(0, |total, (&bound, &count)| {
                *total += count;
                Some((bound as f64 / 1e9, *total))
            })
    }

    /// Add another snapshot into this one.
    pub fn add(&mut self, other: &HandlerTimes) {
        for (count, more) in self.counts.iter_mut().zip(other.counts.iter()) {
            *count += more;
        }
        self.sum_nanos += other.sum_nanos;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_of_exactly_a_bound_falls_into_its_bucket() {
        let clock = HandlerClock::default();
        clock.observe(Duration::from_micros(10));
        clock.observe(Duration::from_nanos(10_001));
        clock.observe(Duration::from_nanos(1));
        clock.observe(Duration::from_secs(11));
        let times = clock.snapshot();
        assert_eq!(times.counts[0], 1);
        assert_eq!(times.counts[3], 1);
        assert_eq!(times.counts[4], 1);
        assert_eq!(times.counts[HANDLER_TIME_BUCKETS - 1], 1);
        assert_eq!(times.count(), 4);
        assert_eq!(times.sum_nanos, 10_000 + 10_001 + 1 + 11_000_000_000);
    }

    #[test]
    fn cumulative_counts_rise_to_the_finite_calls() {
        let clock = HandlerClock::default();
        for ms in [1, 3, 3, 200, 20_000] {
            clock.observe(Duration::from_millis(ms));
        }
        let times = clock.snapshot();
        let buckets: Vec<(f64, u64)> = times.cumulative().collect();
        assert_eq!(buckets.len(), HANDLER_TIME_BOUNDS_NANOS.len());
        assert!(buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(buckets.iter().find(|b| b.0 == 0.001).unwrap().1, 1);
        assert_eq!(buckets.iter().find(|b| b.0 == 0.005).unwrap().1, 3);
        assert_eq!(buckets.iter().find(|b| b.0 == 0.25).unwrap().1, 4);
        assert_eq!(buckets.last().unwrap(), &(10.0, 4));
        assert_eq!(times.count(), 5);
        assert!((times.sum_seconds() - 20.207).abs() < 1e-9);
    }

    #[test]
    fn snapshots_add_bucket_by_bucket() {
        let (a, b) = (HandlerClock::default(), HandlerClock::default());
        a.observe(Duration::from_micros(20));
        b.observe(Duration::from_micros(20));
        b.observe(Duration::from_secs(1));
        let mut total = a.snapshot();
        total.add(&b.snapshot());
        assert_eq!(total.counts[4], 2);
        assert_eq!(total.count(), 3);
        assert_eq!(total.sum_nanos, 1_000_040_000);
    }
}
