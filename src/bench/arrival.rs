//! The rendezvous of the client threads once each has connected.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::shared::Shared;

/// Makes sure a thread counts as connected exactly once, even if it fails or
/// panics first, so the other threads never wait for it in vain.
pub(super) struct Arrival<'a> {
    pub(super) shared: &'a Shared,
    pub(super) arrived: bool,
}

impl Arrival<'_> {
    /// Count this thread as connected and wait for the others.
    pub(super) fn wait(&mut self) -> Instant {
        self.arrived = true;
        self.shared.connected_wait()
    }
}

impl Drop for Arrival<'_> {
    fn drop(&mut self) {
        if !self.arrived {
            // The thread failed (or panicked) before connecting: end the run.
            self.shared.stop.store(true, Ordering::SeqCst);
            self.arrived = true;
            self.shared.connected_wait();
        }
    }
}
