//! The Linux fallback driver: epoll readiness turned into completions.
//!
//! Used where io_uring is refused (old kernels, seccomp sandboxes). It keeps the
//! rules of [`crate::contract`] with a reactor underneath:
//!
//! * **Try the syscall first, arm epoll only on `EAGAIN`.** [`Poller`]'s
//!   `start` runs `accept4`, `recv`, `send` or `connect` at once. Any result
//!   other than "would block" (success or error) becomes a completion in the
//!   front's ready queue. On `EAGAIN` the op is *parked* on its
//!   socket: read-side ops (accept, recv) and write-side ops (send, connect) in
//!   two FIFO queues.
//! * **Edge-triggered, registered once.** [`Poller::register`] adds the socket
//!   with `EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET` and nothing is re-armed per
//!   op. That is correct because an op is only parked after its own syscall said
//!   `EAGAIN`, so the next change of readiness is an edge we will see; on each
//!   edge the parked ops of that side are retried in order until one hits
//!   `EAGAIN` again. `EPOLLERR`/`EPOLLHUP` retry both sides, so the syscalls
//!   themselves report the error or end of stream.
//! * **Nothing is asynchronous in the kernel.** The kernel only touches a buffer
//!   during a syscall made here, so a parked op's buffer is ours to return on
//!   cancel or to free on drop.
//! * **No recv that is known to find nothing.** A recv that returned less than
//!   its buffer could hold emptied the socket (the *drained* mark), so the next
//!   recv is parked straight away instead of trying a syscall that would say
//!   `EAGAIN` (an echo's next recv is posted right after its reply, long before
//!   the peer answers). Bytes that arrive after that short read raise a new
//!   edge, which clears the mark.
//! * **Port-chosen receive memory.** A recv whose buffer has capacity 0 parks
//!   holding nothing: each try takes a pooled `Vec` (refilled by
//!   `give_buffer`), receives straight into it, and puts it back on `EAGAIN`,
//!   end of stream or error. So an idle connection costs no buffer, and the
//!   bytes are never copied.
//! * The waker is an `eventfd` in the epoll set under a reserved key.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use sys::{accept, finish_connect, recv, send, start_connect};

use crate::contract::errors::{already_registered, canceled, not_registered};
use crate::contract::{
    whole_millis, BufferPool, Completion, Driver, Op, Outcome, RawSocket, Ready, Token, Waker,
};
use crate::linux::{cvt, EventFd, LINUX_RECV_SIZE};

/// The epoll data of the waker's eventfd; sockets use their fd, which is never negative.
const WAKER_KEY: u64 = u64::MAX;

/// The capacity of a port-chosen recv's buffer: the most one such recv returns.
const RECV_SIZE: usize = LINUX_RECV_SIZE;

/// How many epoll events one `epoll_wait` may return.
const EVENTS_PER_WAIT: usize = 1024;

/// The interest every socket is registered with, once.
const INTEREST: u32 = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;

/// Events after which parked read-side ops (accept, recv) are retried.
const READ_EVENTS: u32 =
    (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;

/// Events after which parked write-side ops (send, connect) are retried.
const WRITE_EVENTS: u32 = (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32;

/// A completion port built on epoll: one per worker thread.
///
/// See the [module documentation](self) for how readiness becomes completions.
pub struct Poller {
    /// The epoll instance; closed on drop.
    epoll: OwnedFd,
    /// Shared with every [`Waker`] handed out, so it outlives the poller if need be.
    waker: Arc<EventFd>,
    /// Registered sockets and the ops parked on each, by fd.
    sockets: HashMap<RawSocket, ParkedOps>,
    /// How many ops are parked over all sockets.
    parked: usize,
    /// Scratch space for `epoll_wait`.
    events: Vec<libc::epoll_event>,
    /// Spare buffers for port-chosen recvs.
    pool: BufferPool,
}

/// The ops of one socket waiting for readiness, each side in submission order.
#[derive(Default)]
struct ParkedOps {
    /// Accepts or recvs, waiting for the socket to become readable.
    reads: VecDeque<Pending>,
    /// Sends or connects, waiting for the socket to become writable.
    writes: VecDeque<Pending>,
    /// The last recv returned less than it had room for, and no read-side
    /// event came since: a recv now would only get `EAGAIN`.
    drained: bool,
    /// The peer closed, or the socket reported a hangup or an error: a short
    /// recv no longer means the next one would block (end of stream or the
    /// error may be waiting behind the bytes, their edge already seen).
    ended: bool,
}

/// A submitted op that has not finished yet.
struct Pending {
    token: Token,
    op: Op,
    /// For a connect: `connect` already returned `EINPROGRESS`, so the retry reads
    /// `SO_ERROR` rather than calling `connect` again.
    connecting: bool,
}

/// What one try of an op's syscall gave.
enum Attempt {
    /// It finished (successfully or not).
    Done(Completion),
    /// It would block: park it until the next edge.
    Blocked(Pending),
}

impl Poller {
    /// Open an epoll instance with its waker.
    pub fn new() -> io::Result<Poller> {
        // SAFETY: epoll_create1 takes no pointers; the flag is a valid constant.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by epoll_create1 and nothing else owns it.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let waker = Arc::new(EventFd::new()?);
        // Level-triggered: `wait` drains the counter each time it is reported.
        epoll_ctl(
            epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            waker.as_raw_fd(),
            libc::EPOLLIN as u32,
            WAKER_KEY,
        )?;
        Ok(Poller {
            epoll,
            waker,
            sockets: HashMap::new(),
            parked: 0,
            events: Vec::with_capacity(EVENTS_PER_WAIT),
            pool: BufferPool::new(RECV_SIZE),
        })
    }

    /// Move every op parked on `ops` into the ready queue, failed with `ECANCELED`.
    fn cancel_parked(&mut self, ops: ParkedOps, ready: &mut Ready) {
        for pending in ops.reads.into_iter().chain(ops.writes) {
            self.parked -= 1;
            ready.push_back(pending.op.fail(pending.token, canceled()));
        }
    }

    /// Retry what is parked on the socket an event names.
    fn on_event(&mut self, key: u64, events: u32, ready: &mut Ready) {
        if key == WAKER_KEY {
            self.waker.drain();
            return;
        }
        let Ok(fd) = RawSocket::try_from(key) else {
            return;
        };
        // Every key but the waker's is a registered fd: `deregister` runs between
        // waits and does EPOLL_CTL_DEL, so no event of a forgotten socket is left.
        let Some(ops) = self.sockets.get_mut(&fd) else {
            return;
        };
        let hangup = events & (libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0;
        if events & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
            ops.ended = true;
        }
        if events & READ_EVENTS != 0 {
            ops.drained = false;
            self.parked -= retry(ops, ready, &mut self.pool, hangup);
        }
        if events & WRITE_EVENTS != 0 {
            let writes = &mut ops.writes;
            self.parked -= retry_side(writes, None, ready, &mut self.pool, hangup);
        }
    }
}

impl Driver for Poller {
    fn register(&mut self, socket: RawSocket) -> io::Result<()> {
        if self.sockets.contains_key(&socket) {
            return Err(already_registered(socket));
        }
        let key = u64::try_from(socket).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
        epoll_ctl(
            self.epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            socket,
            INTEREST,
            key,
        )?;
        self.sockets.insert(socket, ParkedOps::default());
        Ok(())
    }

    fn deregister(&mut self, socket: RawSocket, ready: &mut Ready) -> io::Result<()> {
        let Some(ops) = self.sockets.remove(&socket) else {
            return Err(not_registered(socket));
        };
        // The contract says no op is in flight by now; if one is, it still gets
        // its one completion rather than vanishing with the state.
        self.cancel_parked(ops, ready);
        epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_DEL, socket, 0, 0)
    }

    fn start(&mut self, token: Token, op: Op, ready: &mut Ready) {
        let socket = op.socket();
        let Some(ops) = self.sockets.get_mut(&socket) else {
            ready.push_back(op.fail(token, not_registered(socket)));
            return;
        };
        let is_recv = matches!(op, Op::Recv { .. });
        let drained = &mut ops.drained;
        let queue = match op {
            Op::Accept { .. } | Op::Recv { .. } => &mut ops.reads,
            Op::Send { .. } | Op::Connect { .. } => &mut ops.writes,
        };
        let pending = Pending {
            token,
            op,
            connecting: false,
        };
        if !queue.is_empty() || (is_recv && *drained) {
            // The head of this side got EAGAIN and waits for an edge; trying now would
            // get EAGAIN too, or worse, overtake it (reordering the bytes of two sends).
            // Likewise a recv after a short one: the socket was emptied.
            queue.push_back(pending);
            self.parked += 1;
            return;
        }
        match attempt(pending, &mut self.pool, false) {
            Attempt::Done(completion) => {
                if let Some(drained) = drain_mark(drained, ops.ended).filter(|_| is_recv) {
                    *drained = emptied(&completion);
                }
                ready.push_back(completion)
            }
            Attempt::Blocked(pending) => {
                queue.push_back(pending);
                self.parked += 1;
            }
        }
    }

    fn cancel(&mut self, socket: RawSocket, ready: &mut Ready) {
        if let Some(ops) = self.sockets.get_mut(&socket) {
            let ops = mem::take(ops);
            self.cancel_parked(ops, ready);
        }
    }

    /// Retried ops complete into `ready` (the front hands them out), so
    /// nothing is appended to `out` here.
    fn reap(
        &mut self,
        _out: &mut Vec<Completion>,
        _limit: usize,
        timeout: Option<Duration>,
        ready: &mut Ready,
    ) -> io::Result<()> {
        let timeout_ms = epoll_timeout(timeout);
        self.events.clear();
        let capacity = i32::try_from(self.events.capacity()).unwrap_or(i32::MAX);
        // SAFETY: the pointer and `capacity` describe the vector's allocation, which
        // epoll_wait fills with at most `capacity` events; the epoll fd is open.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                self.events.as_mut_ptr(),
                capacity,
                timeout_ms,
            )
        };
        match cvt(n) {
            Ok(n) => {
                let n = usize::try_from(n).unwrap_or(0);
                // SAFETY: epoll_wait initialised the first `n` events (n <= capacity).
                unsafe { self.events.set_len(n) };
            }
            // A signal ended the wait early: not an error, the caller loops anyway.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        for i in 0..self.events.len() {
            let event = self.events[i];
            self.on_event(event.u64, event.events, ready);
        }
        Ok(())
    }

    fn waker(&self) -> Waker {
        self.waker.clone()
    }

    fn give_buffer(&mut self, buf: Vec<u8>) {
        self.pool.give(buf);
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        // Unlike io_uring or IOCP, epoll never writes into user buffers on its own:
        // the kernel touches a buffer only inside a recv/send made by this poller.
        // So buffers of ops still parked are simply freed with the state.
        if self.parked > 0 {
            log::debug!(
                "epoll port dropped with {} ops parked; freeing their buffers",
                self.parked
            );
        }
    }
}

/// Retry the read side of a socket (accepts or recvs); see [`retry_side`]. A
/// socket that has ended is never marked emptied.
fn retry(ops: &mut ParkedOps, ready: &mut Ready, pool: &mut BufferPool, hangup: bool) -> usize {
    let drained = drain_mark(&mut ops.drained, ops.ended);
    retry_side(&mut ops.reads, drained, ready, pool, hangup)
}

/// A socket's `drained` mark, unless the socket has ended (then it is never set).
fn drain_mark(drained: &mut bool, ended: bool) -> Option<&mut bool> {
    (!ended).then_some(drained)
}

/// Retry the ops parked on one side of a socket in order, until one would block
/// (or, on the read side, a recv emptied the socket: `drained` is set).
/// Finished ones go to `ready`; returns how many finished.
fn retry_side(
    queue: &mut VecDeque<Pending>,
    mut drained: Option<&mut bool>,
    ready: &mut Ready,
    pool: &mut BufferPool,
    hangup: bool,
) -> usize {
    let mut finished = 0;
    while let Some(pending) = queue.pop_front() {
        let is_recv = matches!(pending.op, Op::Recv { .. });
        match attempt(pending, pool, hangup) {
            Attempt::Done(completion) => {
                let emptied = is_recv && emptied(&completion);
                ready.push_back(completion);
                finished += 1;
                if let Some(drained) = drained.as_deref_mut() {
                    *drained = emptied;
                    if emptied {
                        break;
                    }
                }
            }
            Attempt::Blocked(pending) => {
                queue.push_front(pending);
                break;
            }
        }
    }
    finished
}

/// Whether a finished recv emptied its socket: it received bytes but fewer
/// than its buffer had room for. (End of stream and errors are not: a recv
/// after them must still run to report them again.)
fn emptied(completion: &Completion) -> bool {
    match &completion.outcome {
        Outcome::Received { buf, result: Ok(n) } => *n > 0 && buf.len() < buf.capacity(),
        _ => false,
    }
}

/// Run an op's syscall once (`EINTR` retried), a port-chosen recv with a buffer
/// from `pool`. `hangup`: the socket reported `EPOLLHUP` or `EPOLLERR` (matters
/// to a connect in progress).
fn attempt(pending: Pending, pool: &mut BufferPool, hangup: bool) -> Attempt {
    let Pending {
        token,
        op,
        connecting,
    } = pending;
    let blocked = |op| {
        Attempt::Blocked(Pending {
            token,
            op,
            connecting,
        })
    };
    let outcome = match op {
        Op::Accept { listener } => match accept(listener) {
            Err(e) if would_block(&e) => return blocked(Op::Accept { listener }),
            result => Outcome::Accepted(result),
        },
        Op::Recv { socket, buf } if buf.capacity() == 0 => {
            let mut buf = pool.take();
            let result = recv(socket, &mut buf);
            if !matches!(result, Ok(n) if n > 0) {
                // Nothing received: the buffer goes back; a parked op holds none.
                pool.give(mem::take(&mut buf));
            }
            match result {
                Err(e) if would_block(&e) => return blocked(Op::Recv { socket, buf }),
                result => Outcome::Received { buf, result },
            }
        }
        Op::Recv { socket, mut buf } => match recv(socket, &mut buf) {
            Err(e) if would_block(&e) => return blocked(Op::Recv { socket, buf }),
            result => Outcome::Received { buf, result },
        },
        Op::Send {
            socket,
            mut buf,
            pos,
        } => match send(socket, &mut buf, pos) {
            Err(e) if would_block(&e) => return blocked(Op::Send { socket, buf, pos }),
            result => Outcome::Sent { buf, pos, result },
        },
        Op::Connect { socket, addr } => {
            let result = if connecting {
                finish_connect(socket, hangup)
            } else {
                start_connect(socket, addr)
            };
            match result {
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
                    return Attempt::Blocked(Pending {
                        token,
                        op: Op::Connect { socket, addr },
                        connecting: true,
                    });
                }
                result => Outcome::Connected(result),
            }
        }
    };
    Attempt::Done(Completion { token, outcome })
}

/// `epoll_ctl` with the event mask and data for `op` (ignored by `EPOLL_CTL_DEL`).
fn epoll_ctl(epoll: RawFd, op: libc::c_int, fd: RawFd, events: u32, key: u64) -> io::Result<()> {
    let mut event = libc::epoll_event { events, u64: key };
    // SAFETY: `event` is a valid epoll_event for the duration of the call.
    cvt(unsafe { libc::epoll_ctl(epoll, op, fd, &mut event) }).map(|_| ())
}

/// The `epoll_wait` timeout in milliseconds (rounded up), `-1` for none.
fn epoll_timeout(timeout: Option<Duration>) -> libc::c_int {
    match timeout {
        None => -1,
        Some(timeout) => libc::c_int::try_from(whole_millis(timeout)).unwrap_or(libc::c_int::MAX),
    }
}

/// Whether an error means "try again when ready".
fn would_block(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::WouldBlock
}

mod sys;
#[cfg(test)]
mod tests;
