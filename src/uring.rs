//! The Linux io_uring backend of the completion-port contract ([`crate::port`]).
//!
//! Every [`Op`] becomes one submission queue entry (SQE) whose `user_data` is the
//! key of its slot in a [`Slab`]; the slot owns the op (and so its buffer) until
//! the kernel posts the matching completion queue entry (CQE). Two `user_data`
//! values are reserved: [`WAKE`] for the read that is always posted on the
//! waker's eventfd, and [`CANCEL`] for cancel requests, whose own CQEs are
//! swallowed (the cancelled ops still complete under their own keys).
//!
//! Ops that cannot be placed in the submission queue (full, and the kernel did
//! not take any entries when asked) wait in a backlog, in order, so nothing is
//! dropped and a cancel never overtakes the ops it targets. Ops found invalid
//! before reaching the kernel complete through a local queue with `EINVAL`.
//!
//! The ring is made with `SINGLE_ISSUER | DEFER_TASKRUN` when the kernel takes
//! it (each worker builds and drives its own ring), else `COOP_TASKRUN`, else no
//! flags. Because of `SINGLE_ISSUER` a [`Ring`] is not `Send`: it lives and dies
//! on the thread that made it.

use std::collections::VecDeque;
use std::io;
use std::marker::PhantomData;
use std::mem;
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::types::{CancelBuilder, Fd, SubmitArgs, Timespec};
use io_uring::{opcode, squeue, IoUring};
use slab::Slab;
use socket2::{SockAddr, Socket};

use crate::port::{
    Completion, CompletionPort, Op, Outcome, RawSocket, Token, Wake, Waker, MAX_BATCH,
};

#[cfg(test)]
mod tests;

/// Submission queue size.
const SQ_ENTRIES: u32 = 1024;
/// Completion queue size: larger than the SQ because the server keeps one recv
/// posted per connection, and thousands of connections may finish at once.
const CQ_ENTRIES: u32 = 8192;
/// `user_data` of the read posted on the waker's eventfd.
const WAKE: u64 = u64::MAX;
/// `user_data` of cancel requests; their CQEs are swallowed.
const CANCEL: u64 = u64::MAX - 1;
/// How long dropping a ring waits for the completions of the ops it cancels.
const DROP_GRACE: Duration = Duration::from_secs(1);

/// The opcodes this backend posts, with their names for error messages.
const OPCODES: [(u8, &str); 6] = [
    (opcode::Accept::CODE, "Accept"),
    (opcode::Recv::CODE, "Recv"),
    (opcode::Send::CODE, "Send"),
    (opcode::Connect::CODE, "Connect"),
    (opcode::AsyncCancel::CODE, "AsyncCancel"),
    (opcode::Read::CODE, "Read"),
];

/// Check that this kernel (and sandbox) lets us build a ring with every feature
/// and opcode this backend uses.
///
/// Returns the OS error if the ring cannot be made at all (for example `EPERM`
/// when seccomp refuses `io_uring_setup`), or an [`io::ErrorKind::Unsupported`]
/// error naming the missing opcode or feature.
pub fn probe() -> io::Result<()> {
    let (mut ring, _) = build_ring(8, 16)?;
    check_features(&ring)?;
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| unsupported(format!("io_uring opcode probe failed: {}", e)))?;
    for (code, name) in OPCODES {
        if !probe.is_supported(code) {
            return Err(unsupported(format!(
                "io_uring opcode {} is not supported by this kernel",
                name
            )));
        }
    }
    // Cancelling every op on a file descriptor (Linux 5.19) is not visible in the
    // probe: try it on the ring's own fd, where it finds nothing to cancel.
    let fd = ring.as_raw_fd();
    let cancel = opcode::AsyncCancel2::new(CancelBuilder::fd(Fd(fd)).all())
        .build()
        .user_data(CANCEL);
    // SAFETY: a cancel request points to no memory of ours.
    unsafe { ring.submission().push(&cancel) }
        .map_err(|_| io::Error::other("io_uring probe: submission queue full"))?;
    let ts = Timespec::from(Duration::from_secs(1));
    ring.submitter()
        .submit_with_args(1, &SubmitArgs::new().timespec(&ts))?;
    let res = ring
        .completion()
        .next()
        .map(|cqe| cqe.result())
        .ok_or_else(|| io::Error::other("io_uring probe: cancel request did not complete"))?;
    if res >= 0 || res == -libc::ENOENT {
        Ok(())
    } else {
        Err(unsupported(format!(
            "io_uring cannot cancel by file descriptor: {}",
            io::Error::from_raw_os_error(-res)
        )))
    }
}

#[cold]
fn unsupported(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, message)
}

/// Build a ring with the best setup flags the kernel accepts; also returns their name.
fn build_ring(sq_entries: u32, cq_entries: u32) -> io::Result<(IoUring, &'static str)> {
    let mut refused = None;
    for tier in 0..3 {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(cq_entries);
        let name = match tier {
            0 => {
                builder
                    .setup_submit_all()
                    .setup_single_issuer()
                    .setup_defer_taskrun();
                "SUBMIT_ALL|SINGLE_ISSUER|DEFER_TASKRUN"
            }
            1 => {
                builder.setup_submit_all().setup_coop_taskrun();
                "SUBMIT_ALL|COOP_TASKRUN"
            }
            _ => "no flags",
        };
        match builder.build(sq_entries) {
            Ok(ring) => return Ok((ring, name)),
            // EINVAL: an older kernel that does not know a flag; try fewer.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => refused = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(refused.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL)))
}

/// The features `wait` and the completion rules depend on.
fn check_features(ring: &IoUring) -> io::Result<()> {
    let params = ring.params();
    let missing = if !params.is_feature_ext_arg() {
        "EXT_ARG (timeouts on enter, Linux 5.11)"
    } else if !params.is_feature_nodrop() {
        "NODROP (no lost completions, Linux 5.5)"
    } else {
        return Ok(());
    };
    Err(unsupported(format!("io_uring lacks {}", missing)))
}

/// The wake-up half of a [`Ring`]: an eventfd, shared with every [`Waker`]. It
/// owns the fd, so wakers stay valid after the ring is dropped.
struct EventFd(OwnedFd);

impl EventFd {
    fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd takes no pointers; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
}

impl Wake for EventFd {
    fn wake(&self) -> io::Result<()> {
        let one: u64 = 1;
        loop {
            // SAFETY: writes the 8 bytes of a live `u64` to a descriptor we own.
            let n = unsafe {
                libc::write(
                    self.0.as_raw_fd(),
                    (&one as *const u64).cast(),
                    mem::size_of::<u64>(),
                )
            };
            if n >= 0 {
                return Ok(());
            }
            let error = io::Error::last_os_error();
            match error.kind() {
                io::ErrorKind::Interrupted => continue,
                // The counter is saturated: a wake-up is already pending.
                io::ErrorKind::WouldBlock => return Ok(()),
                _ => return Err(error),
            }
        }
    }
}

/// An op the kernel (or the backlog) holds, with the memory its SQE points to.
struct Slot {
    token: Token,
    /// Owns the buffer of a recv or send: its heap block never moves while the
    /// slot lives, even when the slab grows.
    op: Op,
    /// The peer address of a connect, at a stable address.
    addr: Option<Box<SockAddr>>,
}

/// A completion port on Linux io_uring.
///
/// Not `Send`: the ring may be set up `SINGLE_ISSUER`, so every submission must
/// come from the thread that built it.
pub struct Ring {
    /// Boxed: the queues' bookkeeping is large, and [`crate::port::Port`] holds a
    /// `Ring` inline beside smaller backends.
    ring: Box<IoUring>,
    /// Ops submitted and not yet completed; the SQE `user_data` is the key.
    slots: Slab<Slot>,
    /// SQEs that found the submission queue full, in submission order.
    backlog: VecDeque<squeue::Entry>,
    /// Completions decided without the kernel (invalid ops), not yet returned.
    ready: VecDeque<Completion>,
    waker: Arc<EventFd>,
    /// Where the posted eventfd read writes its 8 bytes.
    wake_buf: Vec<u8>,
    /// Whether the eventfd read is posted (in the kernel or the backlog).
    wake_armed: bool,
    /// Set while dropping: the eventfd read is not posted again.
    closing: bool,
    /// How long dropping waits for cancelled ops ([`DROP_GRACE`]; tests shorten it).
    drop_grace: Duration,
    setup: &'static str,
    _not_send: PhantomData<*const ()>,
}

impl Ring {
    /// Build a ring, its waker, and post the waker's read.
    pub fn new() -> io::Result<Ring> {
        Ring::with_entries(SQ_ENTRIES, CQ_ENTRIES)
    }

    /// [`Ring::new`] with other queue sizes (tests fill small queues).
    fn with_entries(sq_entries: u32, cq_entries: u32) -> io::Result<Ring> {
        let (ring, setup) = build_ring(sq_entries, cq_entries)?;
        check_features(&ring)?;
        log::debug!("io_uring ring built with {}", setup);
        let mut ring = Ring {
            ring: Box::new(ring),
            slots: Slab::new(),
            backlog: VecDeque::new(),
            ready: VecDeque::new(),
            waker: Arc::new(EventFd::new()?),
            wake_buf: vec![0; mem::size_of::<u64>()],
            wake_armed: false,
            closing: false,
            drop_grace: DROP_GRACE,
            setup,
            _not_send: PhantomData,
        };
        ring.arm_wake();
        Ok(ring)
    }

    /// The setup flags the kernel accepted for this ring, e.g.
    /// `"SUBMIT_ALL|SINGLE_ISSUER|DEFER_TASKRUN"`.
    pub fn setup_flags(&self) -> &'static str {
        self.setup
    }

    /// Post the read on the waker's eventfd.
    fn arm_wake(&mut self) {
        let read = opcode::Read::new(
            Fd(self.waker.0.as_raw_fd()),
            self.wake_buf.as_mut_ptr(),
            self.wake_buf.len() as u32,
        )
        .build()
        .user_data(WAKE);
        self.wake_armed = true;
        self.push(read);
    }

    /// Queue an SQE behind any backlog, making room in a full queue by
    /// submitting. Every SQE given here points only into a slot of `slots` or
    /// into `wake_buf`, which stay put until its CQE is reaped (or are leaked).
    fn push(&mut self, sqe: squeue::Entry) {
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
    fn flush_backlog(&mut self) {
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

    /// Move up to `limit` completions from the completion queue to `out`;
    /// returns how many were appended.
    fn reap(&mut self, out: &mut Vec<Completion>, limit: usize) -> usize {
        let mut appended = 0;
        let mut rearm = false;
        let mut cq = self.ring.completion();
        while appended < limit {
            let Some(cqe) = cq.next() else { break };
            match cqe.user_data() {
                WAKE => {
                    self.wake_armed = false;
                    rearm = true;
                    let res = cqe.result();
                    if res < 0 && res != -libc::ECANCELED {
                        log::warn!(
                            "io_uring waker read failed: {}",
                            io::Error::from_raw_os_error(-res)
                        );
                    }
                }
                CANCEL => {}
                key => match self.slots.try_remove(key as usize) {
                    Some(slot) => {
                        out.push(finish(slot, cqe.result()));
                        appended += 1;
                    }
                    None => log::error!("io_uring completion for unknown op {}", key),
                },
            }
        }
        drop(cq);
        if rearm && !self.closing {
            self.arm_wake();
        }
        appended
    }

    /// The SQE of an op whose slot is `key`, or why the op is invalid.
    fn prepare(&mut self, key: usize) -> Result<squeue::Entry, io::Error> {
        let slot = &mut self.slots[key];
        let sqe = match &mut slot.op {
            Op::Accept { listener } => {
                opcode::Accept::new(Fd(*listener), std::ptr::null_mut(), std::ptr::null_mut())
                    .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
                    .build()
            }
            Op::Recv { socket, buf } => {
                let spare = buf.spare_capacity_mut();
                if spare.is_empty() {
                    return Err(invalid("recv buffer has no spare capacity"));
                }
                let len = u32::try_from(spare.len()).unwrap_or(u32::MAX);
                opcode::Recv::new(Fd(*socket), spare.as_mut_ptr().cast(), len).build()
            }
            Op::Send { socket, buf, pos } => {
                let rest = buf.get(*pos..).unwrap_or_default();
                if rest.is_empty() {
                    return Err(invalid("send of no bytes"));
                }
                let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
                opcode::Send::new(Fd(*socket), rest.as_ptr(), len)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
            }
            Op::Connect { socket, addr } => {
                let addr = slot.addr.insert(Box::new(SockAddr::from(*addr)));
                opcode::Connect::new(Fd(*socket), addr.as_ptr(), addr.len()).build()
            }
        };
        Ok(sqe.user_data(key as u64))
    }
}

#[cold]
fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// A CQE result as a count, or the error it encodes.
fn result(res: i32) -> io::Result<usize> {
    if res < 0 {
        Err(io::Error::from_raw_os_error(-res))
    } else {
        Ok(res as usize)
    }
}

/// The completion of the op in `slot`, whose CQE carried `res`. The kernel is
/// done with the slot's memory.
fn finish(slot: Slot, res: i32) -> Completion {
    let outcome = match slot.op {
        Op::Accept { .. } => Outcome::Accepted(result(res).and_then(|fd| accepted(fd as i32))),
        Op::Recv { mut buf, .. } => {
            let result = result(res);
            if let Ok(n) = result {
                assert!(n <= buf.capacity() - buf.len(), "recv overran its buffer");
                // SAFETY: the kernel wrote `n` bytes into the spare capacity, which
                // starts at `buf.len()`; `n` fits in it (checked above).
                unsafe { buf.set_len(buf.len() + n) };
            }
            Outcome::Received { buf, result }
        }
        Op::Send { buf, pos, .. } => Outcome::Sent {
            buf,
            pos,
            result: result(res),
        },
        Op::Connect { .. } => Outcome::Connected(result(res).map(drop)),
    };
    Completion {
        token: slot.token,
        outcome,
    }
}

/// Wrap an accepted descriptor and read its peer address.
fn accepted(fd: RawSocket) -> io::Result<(Socket, std::net::SocketAddr)> {
    // SAFETY: a successful accept returns a new descriptor that nothing else owns.
    let socket = unsafe { Socket::from_raw_fd(fd) };
    let peer = socket.peer_addr()?;
    let peer = peer
        .as_socket()
        .ok_or_else(|| io::Error::other("accepted a socket with no IP peer address"))?;
    Ok((socket, peer))
}

/// Whether an `io_uring_enter` error only means "woken up without completions".
fn transient(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
    )
}

impl CompletionPort for Ring {
    /// Nothing to do: io_uring takes any descriptor per op.
    fn register(&mut self, _socket: RawSocket) -> io::Result<()> {
        Ok(())
    }

    /// Nothing to do: io_uring keeps no per-socket state.
    fn deregister(&mut self, _socket: RawSocket) -> io::Result<()> {
        Ok(())
    }

    fn submit(&mut self, token: Token, op: Op) {
        let key = self.slots.insert(Slot {
            token,
            op,
            addr: None,
        });
        debug_assert!(
            (key as u64) < CANCEL,
            "slab key collides with a reserved user_data"
        );
        match self.prepare(key) {
            Ok(sqe) => self.push(sqe),
            Err(error) => {
                let slot = self.slots.remove(key);
                self.ready.push_back(slot.op.fail(token, error));
            }
        }
    }

    fn cancel(&mut self, socket: RawSocket) {
        let sqe = opcode::AsyncCancel2::new(CancelBuilder::fd(Fd(socket)).all())
            .build()
            .user_data(CANCEL);
        self.push(sqe);
    }

    fn wait(&mut self, out: &mut Vec<Completion>, timeout: Option<Duration>) -> io::Result<()> {
        let mut appended = self.ready.len().min(MAX_BATCH);
        out.extend(self.ready.drain(..appended));
        self.flush_backlog();
        // Do not block when there is already something to return or to submit.
        let timeout = if appended > 0 || !self.backlog.is_empty() {
            Some(Duration::ZERO)
        } else {
            // A timeout too large for the kernel's timespec is no limit.
            timeout.filter(|t| t.as_secs() < i64::MAX as u64)
        };
        let entered = match timeout {
            None => self.ring.submit_and_wait(1),
            Some(timeout) => {
                let ts = Timespec::from(timeout);
                let args = SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        };
        match entered {
            Err(e) if !transient(&e) => return Err(e),
            _ => {}
        }
        loop {
            appended += self.reap(out, MAX_BATCH - appended);
            // CQEs the kernel kept aside when the completion queue was full come
            // back only through another enter; fetch them while there is room.
            if appended == MAX_BATCH || !self.ring.submission().cq_overflow() {
                return Ok(());
            }
            match self.ring.submit() {
                Err(e) if !transient(&e) => return Err(e),
                _ => {}
            }
        }
    }

    fn waker(&self) -> Waker {
        self.waker.clone()
    }

    fn in_flight(&self) -> usize {
        self.slots.len() + self.ready.len()
    }
}

impl Drop for Ring {
    /// Cancel whatever is still in flight and wait briefly for it; ops whose
    /// completion does not arrive leak their buffers, which the kernel may still
    /// write.
    fn drop(&mut self) {
        self.closing = true;
        if !self.slots.is_empty() {
            log::warn!(
                "io_uring ring dropped with {} ops in flight; cancelling them",
                self.slots.len()
            );
        }
        // Backlogged SQEs never reached the kernel: their memory is ours again.
        for sqe in mem::take(&mut self.backlog) {
            match sqe.get_user_data() {
                WAKE => self.wake_armed = false,
                CANCEL => {}
                key => drop(self.slots.try_remove(key as usize)),
            }
        }
        self.push(
            opcode::AsyncCancel2::new(CancelBuilder::any())
                .build()
                .user_data(CANCEL),
        );
        let deadline = Instant::now() + self.drop_grace;
        let mut finished = Vec::new();
        while self.wake_armed || !self.slots.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let ts = Timespec::from(left);
            let args = SubmitArgs::new().timespec(&ts);
            match self.ring.submitter().submit_with_args(1, &args) {
                Err(e) if !transient(&e) => {
                    log::warn!("io_uring wait while dropping the ring failed: {}", e);
                    break;
                }
                _ => {}
            }
            // The kernel is done with these: dropping them frees their buffers
            // and closes accepted sockets.
            self.reap(&mut finished, usize::MAX);
            finished.clear();
        }
        if !self.slots.is_empty() {
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
    }
}
