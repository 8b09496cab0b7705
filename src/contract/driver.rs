//! The narrow interface a backend implements: a [`Driver`].
//!
//! What every backend needs once (the ready queue of completions found
//! without the kernel, handing out at most [`MAX_BATCH`](super::MAX_BATCH) per
//! wait, the buffer checks of an op, in-flight counting) is done by
//! [`crate::front::Front`] over any driver; a driver only starts ops, reaps
//! their completions, cancels, registers and wakes. Rules a driver keeps:
//!
//! * An op given to [`Driver::start`] has passed the front's checks (its
//!   buffer is usable); the driver still answers for registration, with
//!   `errors::not_registered`.
//! * Every started op yields exactly one completion, either appended to `out`
//!   by [`Driver::reap`] or pushed to the front's ready queue (by any method
//!   that is given it): a failure found without the kernel, an op that
//!   finished inside its call, a cancel answered at once.
//! * [`Driver::reap`] appends at most `limit` completions to `out`; it may push
//!   more to the ready queue, which the front hands out first next time.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use super::completion_port::Waker;
use super::op::{Completion, Op, RawSocket, Token};

/// Completions known without waiting for the kernel, in order; the front
/// hands them out before any the driver reaps.
pub type Ready = VecDeque<Completion>;

/// What a backend provides to [`crate::front::Front`]. See the module doc.
pub trait Driver {
    /// Associate a socket with the port; once, before its first op. A second
    /// time fails with `AlreadyExists` (`errors::already_registered`).
    fn register(&mut self, socket: RawSocket) -> io::Result<()>;

    /// Forget a socket (before it is closed). An op still in flight on it
    /// completes into `ready` if the driver ends it here.
    fn deregister(&mut self, socket: RawSocket, ready: &mut Ready) -> io::Result<()>;

    /// Start an op whose buffers the front has checked.
    fn start(&mut self, token: Token, op: Op, ready: &mut Ready);

    /// Ask every op in flight on `socket` to end soon; each still completes.
    fn cancel(&mut self, socket: RawSocket, ready: &mut Ready);

    /// Flush submissions, wait up to `timeout` (`None`: no limit; zero: do
    /// not block) for completions or a wake-up, and append at most `limit`
    /// (at least 1) of them to `out`.
    fn reap(
        &mut self,
        out: &mut Vec<Completion>,
        limit: usize,
        timeout: Option<Duration>,
        ready: &mut Ready,
    ) -> io::Result<()>;

    /// A handle that wakes this driver's `reap` from any thread.
    fn waker(&self) -> Waker;

    /// Take back a spent buffer for a later recv with port-chosen memory.
    fn give_buffer(&mut self, buf: Vec<u8>);
}
