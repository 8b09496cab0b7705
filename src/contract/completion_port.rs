//! The [`CompletionPort`] trait every port is used through, and its waker.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use super::op::{Completion, Op, RawSocket, Token};

/// The most completions one call to [`CompletionPort::wait`] appends.
pub const MAX_BATCH: usize = 1024;

/// Makes a blocked [`CompletionPort::wait`] return; usable from any thread.
pub trait Wake: Send + Sync {
    /// Wake the port's waiting thread (or make its next wait return at once).
    fn wake(&self) -> io::Result<()>;
}

/// A shareable handle on a port's wake-up mechanism.
pub type Waker = Arc<dyn Wake>;

/// What a completion-port backend provides. See the module doc for the rules.
pub trait CompletionPort {
    /// Associate a socket with the port; once, before its first op.
    fn register(&mut self, socket: RawSocket) -> io::Result<()>;

    /// Forget a socket (before it is closed), once no op is in flight on it.
    fn deregister(&mut self, socket: RawSocket) -> io::Result<()>;

    /// Post an op. Never loses it: a failure comes back as its completion.
    fn submit(&mut self, token: Token, op: Op);

    /// Ask for every op in flight on `socket` to end soon; each still completes.
    fn cancel(&mut self, socket: RawSocket);

    /// Flush submissions, then wait up to `timeout` (`None`: no limit) until at
    /// least one completion is ready or a waker fires, and append up to
    /// [`MAX_BATCH`] ready completions to `out`. May return with none appended.
    fn wait(&mut self, out: &mut Vec<Completion>, timeout: Option<Duration>) -> io::Result<()>;

    /// A handle that wakes this port from any thread.
    fn waker(&self) -> Waker;

    /// Ops submitted whose completion has not yet been returned by `wait`.
    fn in_flight(&self) -> usize;

    /// Hand a spent buffer back to the port's pool, for the next recv that
    /// lets the port choose its memory. The port may keep it (emptied) or drop
    /// it; any `Vec` is accepted, and by default it is dropped.
    fn give_buffer(&mut self, buf: Vec<u8>) {
        drop(buf);
    }
}
