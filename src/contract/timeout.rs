//! Timeouts in whole milliseconds, for kernels that wait in milliseconds
//! (`epoll_wait`, `GetQueuedCompletionStatusEx`).

use std::time::Duration;

/// `timeout` in whole milliseconds, rounded *up* (saturating at `u64::MAX`).
///
/// Rounding 0.4 ms down to 0 would turn a caller's short wait into a busy
/// loop that polls without sleeping until its deadline passes.
// `u32::div_ceil` needs Rust 1.73; the Windows build uses Rust 1.63.
#[allow(clippy::manual_div_ceil)]
pub fn whole_millis(timeout: Duration) -> u64 {
    let part = u64::from((timeout.subsec_nanos() + 999_999) / 1_000_000);
    timeout.as_secs().saturating_mul(1000).saturating_add(part)
}

#[cfg(test)]
mod tests {
    use super::whole_millis;
    use std::time::Duration;

    #[test]
    fn timeouts_round_up_to_whole_milliseconds() {
        assert_eq!(whole_millis(Duration::ZERO), 0);
        assert_eq!(whole_millis(Duration::from_nanos(1)), 1);
        assert_eq!(whole_millis(Duration::from_micros(1)), 1);
        assert_eq!(whole_millis(Duration::from_micros(1_001)), 2);
        assert_eq!(whole_millis(Duration::from_micros(1_500)), 2);
        assert_eq!(whole_millis(Duration::from_millis(7)), 7);
        assert_eq!(whole_millis(Duration::new(3, 1)), 3_001);
        assert_eq!(whole_millis(Duration::from_secs(u64::MAX)), u64::MAX);
    }
}
