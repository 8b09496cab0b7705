//! Dropping a [`Ring`]: cancel what is still in flight, wait briefly for those
//! completions, and leak (rather than free) whatever the kernel may still write.
//! Connections that multishot accepts made and nobody claimed are closed.

use std::mem;
use std::time::Instant;

use io_uring::opcode;
use io_uring::types::{CancelBuilder, SubmitArgs, Timespec};

use super::buf_ring;
use super::keys::{Key, CANCEL};
use super::queue::transient;
use super::Ring;
use crate::contract::Ready;

impl Drop for Ring {
    /// Cancel whatever is still in flight and wait briefly for it; ops whose
    /// completion does not arrive leak their buffers, which the kernel may still
    /// write.
    fn drop(&mut self) {
        self.closing = true;
        let mut abandoned = Vec::new();
        self.streams.close(&mut abandoned);
        // Closes the connections queued for accepts nobody will post.
        self.accepts.close(&mut abandoned);
        if !self.slots.is_empty() {
            log::warn!(
                "io_uring ring dropped with {} ops in flight; cancelling them",
                self.slots.len()
            );
        }
        // Backlogged SQEs never reached the kernel: their memory is ours again.
        for sqe in mem::take(&mut self.queues.backlog) {
            match Key::of(sqe.get_user_data()) {
                Key::Wake => self.wake_armed = false,
                Key::Cancel | Key::Stream(_) => {}
                Key::Accept(key) => self.accepts.unposted(key),
                Key::Slot(key) => drop(self.slots.try_remove(key)),
            }
        }
        self.queues.push(
            opcode::AsyncCancel2::new(CancelBuilder::any())
                .build()
                .user_data(CANCEL),
        );
        let deadline = Instant::now() + self.drop_grace;
        let mut finished = Vec::new();
        // A multishot accept still armed points to no memory of ours, but its
        // last CQE may carry a connection to close.
        while self.wake_armed
            || !self.slots.is_empty()
            || self.streams.armed() > 0
            || self.accepts.armed() > 0
        {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let ts = Timespec::from(left);
            let args = SubmitArgs::new().timespec(&ts);
            match self.queues.ring.submitter().submit_with_args(1, &args) {
                Err(e) if !transient(&e) => {
                    log::warn!("io_uring wait while dropping the ring failed: {}", e);
                    break;
                }
                _ => {}
            }
            // The kernel is done with these: dropping them frees their buffers
            // and closes accepted sockets (multishot accepts close theirs).
            let mut ready = Ready::new();
            self.reap_cqes(&mut finished, usize::MAX, &mut ready);
            finished.clear();
        }
        let leaked = !self.slots.is_empty() || self.streams.armed() > 0;
        if leaked {
            log::warn!(
                "io_uring ring dropped: leaking the buffers of {} ops that did not complete",
                self.slots.len()
            );
            for slot in self.slots.drain() {
                mem::forget(slot);
            }
        }
        if self.wake_armed {
            mem::forget(mem::take(&mut self.wake_buf));
        }
        if let Some(buf_ring) = self.memory.ring.take() {
            if !leaked {
                if let Err(e) = self
                    .queues
                    .ring
                    .submitter()
                    .unregister_buf_ring(buf_ring::GROUP)
                {
                    log::debug!("io_uring: unregistering the buffer ring: {}", e);
                }
                drop(buf_ring);
            } else {
                // Recvs that never completed may still be given its buffers.
                mem::forget(buf_ring);
            }
        }
    }
}
