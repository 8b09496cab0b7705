//! The ring's queues as the backend uses them: the submission queue with a
//! backlog behind it, entering the kernel, and the completion queue read in
//! batches.
//!
//! Rules: SQEs that find the submission queue full (and the kernel took none
//! when asked) wait in the backlog, in order, so nothing is dropped and a
//! cancel never overtakes the ops it targets. Every SQE given to
//! [`Queues::push`] points only into memory that stays put until its CQE is
//! reaped (or is leaked).

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{squeue, IoUring};

/// How many CQEs are copied out of the completion queue at a time.
pub(super) const CQE_BATCH: usize = 64;

/// One CQE, copied out of the completion queue.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Cqe {
    /// What it answers.
    pub(super) user_data: u64,
    /// The result: a count, a descriptor, or `-errno`.
    pub(super) res: i32,
    /// `IORING_CQE_F_*`.
    pub(super) flags: u32,
}

/// The io_uring instance and the backlog of its submission queue.
pub(super) struct Queues {
    /// Boxed: the queues' bookkeeping is large, and the port holds a ring
    /// inline beside smaller backends.
    pub(super) ring: Box<IoUring>,
    /// SQEs that found the submission queue full, in submission order.
    pub(super) backlog: VecDeque<squeue::Entry>,
}

impl Queues {
    /// The queues of `ring`, with an empty backlog.
    pub(super) fn new(ring: IoUring) -> Queues {
        Queues {
            ring: Box::new(ring),
            backlog: VecDeque::new(),
        }
    }

    /// Queue an SQE behind any backlog, making room in a full queue by
    /// submitting. See the module doc for what the SQE may point to.
    pub(super) fn push(&mut self, sqe: squeue::Entry) {
        if self.backlog.is_empty() {
            if self.try_push(&sqe) {
                return;
            }
            if self.submit_pending() && self.try_push(&sqe) {
                return;
            }
        }
        self.backlog.push_back(sqe);
    }

    fn try_push(&mut self, sqe: &squeue::Entry) -> bool {
        // SAFETY: by the rule of `push`, the memory the SQE names stays valid and
        // unmoved until the kernel posts its CQE.
        unsafe { self.ring.submission().push(sqe) }.is_ok()
    }

    /// Hand the submission queue to the kernel; false if it refused.
    fn submit_pending(&mut self) -> bool {
        match self.ring.submit() {
            Ok(_) => true,
            Err(e) => {
                log::debug!("io_uring submit failed, keeping ops queued: {}", e);
                false
            }
        }
    }

    /// Move backlogged SQEs into the submission queue, submitting as it fills.
    pub(super) fn flush_backlog(&mut self) {
        while let Some(sqe) = self.backlog.pop_front() {
            if self.try_push(&sqe) {
                continue;
            }
            if !(self.submit_pending() && self.try_push(&sqe)) {
                self.backlog.push_front(sqe);
                return;
            }
        }
    }

    /// Submit, then wait up to `timeout` (`None`: no limit) for one CQE.
    pub(super) fn enter(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        // A timeout too large for the kernel's timespec is no limit.
        let entered = match timeout.filter(|t| t.as_secs() < i64::MAX as u64) {
            None => self.ring.submit_and_wait(1),
            Some(timeout) => {
                let ts = Timespec::from(timeout);
                let args = SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        };
        match entered {
            Err(e) if !transient(&e) => Err(e),
            _ => Ok(()),
        }
    }

    /// Enter the kernel to fetch the CQEs it kept aside when the completion
    /// queue was full; false if there are none.
    pub(super) fn flush_overflow(&mut self) -> io::Result<bool> {
        if !self.ring.submission().cq_overflow() {
            return Ok(false);
        }
        match self.ring.submit() {
            Err(e) if !transient(&e) => Err(e),
            _ => Ok(true),
        }
    }

    /// Copy up to `batch.len()` CQEs out of the completion queue; returns how many.
    pub(super) fn take_cqes(&mut self, batch: &mut [Cqe]) -> usize {
        let mut n = 0;
        for (slot, cqe) in batch.iter_mut().zip(self.ring.completion()) {
            *slot = Cqe {
                user_data: cqe.user_data(),
                res: cqe.result(),
                flags: cqe.flags(),
            };
            n += 1;
        }
        n
    }
}

/// Whether an `io_uring_enter` error only means "woken up without completions".
pub(super) fn transient(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
    )
}
