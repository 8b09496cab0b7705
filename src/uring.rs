//! The Linux io_uring backend of the completion-port contract ([`crate::port`]).
//!
//! An [`Op`] not served by a multishot (below) becomes one submission queue
//! entry (SQE) whose `user_data` is the key of its slot in a [`Slab`]; the slot owns the op (and so its buffer) until
//! the kernel posts the matching completion queue entry (CQE). Two `user_data`
//! values are reserved: [`WAKE`] for the read that is always posted on the
//! waker's eventfd, and [`CANCEL`] for cancel requests, whose own CQEs are
//! swallowed (the cancelled ops still complete under their own keys). Two tag
//! bits mark the multishot SQEs that serve many ops: `STREAM_TAG` (recvs,
//! `multishot`) and `ACCEPT_TAG` (accepts, `accept_stream`).
//!
//! Ops that cannot be placed in the submission queue (full, and the kernel did
//! not take any entries when asked) wait in a backlog, in order, so nothing is
//! dropped and a cancel never overtakes the ops it targets. Ops found invalid
//! before reaching the kernel complete through a local queue with `EINVAL`.
//!
//! **Port-chosen receive memory.** A recv whose buffer has capacity 0 is posted
//! with `IOSQE_BUFFER_SELECT` on the ring's provided-buffer ring
//! ([`buf_ring`]): it holds no memory while it waits, the kernel picks a buffer
//! (a `Vec` the ring holds) when bytes arrive, and at completion that `Vec`
//! goes to the caller as it is while a pooled one (the pool is refilled by
//! `give_buffer`) takes its place in the ring at once.
//! If the ring is empty at that moment (more recvs finished in one batch than
//! it has buffers), the kernel fails the recv with `ENOBUFS`; the caller never
//! sees that: the op is posted again under the same key, this time into a
//! pooled `Vec` of its own, so it cannot starve or spin. (A cancel requested
//! before such a retry completes the op with `ECANCELED` instead.) Where the
//! kernel has no buffer rings, every port-chosen recv takes a pooled `Vec`.
//!
//! **Multishot.** Port-chosen recvs are served by one multishot recv per
//! socket (`multishot`) and accepts by one multishot accept per listener
//! (`accept_stream`); `IOCP_ECHO_URING_MULTISHOT=0` turns both off (every
//! op is then one SQE), and a kernel that refuses either turns it off alone.
//!
//! The ring is made with `SINGLE_ISSUER | DEFER_TASKRUN` when the kernel takes
//! it (each worker builds and drives its own ring), else `COOP_TASKRUN`, else no
//! flags. Because of `SINGLE_ISSUER` a [`Ring`] is not `Send`: it lives and dies
//! on the thread that made it.

use std::collections::VecDeque;
use std::io;
use std::marker::PhantomData;
use std::mem;
use std::os::unix::io::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use io_uring::types::{CancelBuilder, Fd, SubmitArgs, Timespec};
use io_uring::{opcode, squeue, IoUring};
use slab::Slab;
use socket2::SockAddr;

use crate::port::{Completion, CompletionPort, Op, RawSocket, Token, Waker, MAX_BATCH};
use accept_stream::{AcceptFollow, AcceptStreams, ACCEPT_TAG};
use buf_ring::RecvMemory;
use finish::{finish, recv_sqe};
use multishot::{Follow, Plan, Streams, STREAM_TAG};
pub use setup::probe;
use setup::{build_ring, check_features, EventFd};

mod accept_stream;
mod buf_ring;
mod finish;
mod multishot;
mod setup;
mod teardown;
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

/// An op the kernel (or the backlog) holds, with the memory its SQE points to.
struct Slot {
    token: Token,
    /// Owns the buffer of a recv or send: its heap block never moves while the
    /// slot lives, even when the slab grows.
    op: Op,
    /// The peer address of a connect, at a stable address.
    addr: Option<Box<SockAddr>>,
    /// How a recv's memory was chosen.
    memory: RecvBuf,
}

/// Where a recv receives into.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum RecvBuf {
    /// The caller's buffer (and every op other than a recv).
    Caller,
    /// A buffer the kernel selects from the provided-buffer ring; `cancelled`:
    /// a cancel of its socket was requested (so an `ENOBUFS` is not retried).
    Selected { cancelled: bool },
    /// A pooled `Vec` the port put in the op for a port-chosen recv.
    Pooled,
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
    /// The provided-buffer ring and the pool for port-chosen recvs.
    memory: RecvMemory,
    /// The multishot recvs that serve port-chosen recvs (boxed, like `ring`).
    streams: Box<Streams>,
    /// The multishot accepts that serve accepts.
    accepts: Box<AcceptStreams>,
    /// Recvs posted again because the provided-buffer ring was empty.
    starved: u64,
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
        Ring::with_sizes(
            SQ_ENTRIES,
            CQ_ENTRIES,
            buf_ring::RING_BUFFERS,
            buf_ring::BUFFER_SIZE,
        )
    }

    /// [`Ring::new`] with other queue sizes (tests fill small queues).
    #[cfg(test)]
    fn with_entries(sq_entries: u32, cq_entries: u32) -> io::Result<Ring> {
        Ring::with_sizes(
            sq_entries,
            cq_entries,
            buf_ring::RING_BUFFERS,
            buf_ring::BUFFER_SIZE,
        )
    }

    /// [`Ring::new`] with other queue and provided-buffer ring sizes.
    fn with_sizes(
        sq_entries: u32,
        cq_entries: u32,
        ring_buffers: u16,
        buffer_size: usize,
    ) -> io::Result<Ring> {
        let (ring, setup) = build_ring(sq_entries, cq_entries)?;
        check_features(&ring)?;
        log::debug!("io_uring ring built with {}", setup);
        let memory = RecvMemory::new(&ring, ring_buffers, buffer_size);
        let multishot = memory.ring.is_some() && multishot_wanted();
        let mut ring = Ring {
            ring: Box::new(ring),
            slots: Slab::new(),
            backlog: VecDeque::new(),
            ready: VecDeque::new(),
            streams: Box::new(Streams::new(multishot)),
            accepts: Box::new(AcceptStreams::new(multishot_wanted())),
            memory,
            starved: 0,
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
        let mut retries = Vec::new();
        let mut follows = Vec::new();
        let mut accept_follows = Vec::new();
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
                tagged if tagged & STREAM_TAG != 0 => {
                    let key = (tagged & !STREAM_TAG) as usize;
                    let before = out.len();
                    let follow = self.streams.complete(
                        key,
                        cqe.result(),
                        cqe.flags(),
                        &mut self.memory,
                        out,
                    );
                    appended += out.len() - before;
                    follows.push(follow);
                }
                tagged if tagged & ACCEPT_TAG != 0 => {
                    let key = (tagged & !ACCEPT_TAG) as usize;
                    let before = out.len();
                    let follow = self.accepts.complete(key, cqe.result(), cqe.flags(), out);
                    appended += out.len() - before;
                    accept_follows.push(follow);
                }
                key => {
                    let Some(slot) = self.slots.get_mut(key as usize) else {
                        log::error!("io_uring completion for unknown op {}", key);
                        continue;
                    };
                    let starved = cqe.result() == -libc::ENOBUFS
                        && slot.memory == RecvBuf::Selected { cancelled: false }
                        && !self.closing;
                    if starved {
                        // The provided-buffer ring was empty: post the recv again
                        // into a pooled buffer of its own (the caller sees nothing).
                        if let Op::Recv { socket, buf } = &mut slot.op {
                            *buf = self.memory.pool.take();
                            slot.memory = RecvBuf::Pooled;
                            retries.push(recv_sqe(*socket, buf, key));
                            self.starved += 1;
                            continue;
                        }
                    }
                    let slot = self.slots.remove(key as usize);
                    if let Op::Recv { socket, buf } = &slot.op {
                        let room = match slot.memory {
                            RecvBuf::Caller => None,
                            RecvBuf::Selected { .. } => Some(self.memory.buffer_size()),
                            RecvBuf::Pooled => Some(buf.capacity() - buf.len()),
                        };
                        if let Some(room) = room {
                            self.memory
                                .note_recv(*socket, cqe.result(), cqe.flags(), room);
                        }
                        if slot.memory == RecvBuf::Pooled {
                            self.streams
                                .note_one_shot(*socket, cqe.result(), cqe.flags());
                        }
                    }
                    out.push(finish(slot, cqe.result(), cqe.flags(), &mut self.memory));
                    appended += 1;
                }
            }
        }
        drop(cq);
        for sqe in retries {
            self.push(sqe);
        }
        for follow in follows {
            match follow {
                Follow::None => {}
                Follow::Post(sqe) => self.push(sqe),
                Follow::Direct {
                    token,
                    socket,
                    starved,
                } => {
                    self.starved += u64::from(starved);
                    let buf = self.memory.pool.take();
                    self.submit_direct(token, socket, buf);
                }
            }
        }
        for follow in accept_follows {
            match follow {
                AcceptFollow::None => {}
                AcceptFollow::Post(sqe) => self.push(sqe),
                AcceptFollow::OneShot { listener, tokens } => {
                    for token in tokens {
                        self.submit_slot(token, Op::Accept { listener });
                    }
                }
            }
        }
        if rearm && !self.closing {
            self.arm_wake();
        }
        appended
    }

    /// Post `op` as one SQE of its own, in a slot.
    fn submit_slot(&mut self, token: Token, op: Op) {
        let key = self.slots.insert(Slot {
            token,
            op,
            addr: None,
            memory: RecvBuf::Caller,
        });
        debug_assert!(
            (key as u64) < ACCEPT_TAG,
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

    /// Post a one-shot recv of `socket` into the pooled `buf` (which has
    /// spare capacity) for `token`.
    fn submit_direct(&mut self, token: Token, socket: RawSocket, buf: Vec<u8>) {
        let key = self.slots.insert(Slot {
            token,
            op: Op::Recv { socket, buf },
            addr: None,
            memory: RecvBuf::Pooled,
        });
        if let Op::Recv { buf, .. } = &mut self.slots[key].op {
            let sqe = recv_sqe(socket, buf, key as u64);
            self.push(sqe);
        }
    }
}

/// Whether port-chosen recvs and accepts use multishot SQEs: yes, unless
/// `IOCP_ECHO_URING_MULTISHOT=0` asks for one SQE per op (to compare the two).
fn multishot_wanted() -> bool {
    !matches!(std::env::var_os("IOCP_ECHO_URING_MULTISHOT"), Some(v) if v == "0")
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

    /// Drops the socket's multishot state (closing connections a listener
    /// accepted and did not hand out).
    fn deregister(&mut self, socket: RawSocket) -> io::Result<()> {
        self.memory.forget(socket);
        if let Some(sqe) = self.streams.deregister(socket, &mut self.memory) {
            self.push(sqe);
        }
        if let Some(sqe) = self.accepts.deregister(socket, &mut self.ready) {
            self.push(sqe);
        }
        Ok(())
    }

    fn submit(&mut self, token: Token, op: Op) {
        if let Op::Recv { socket, buf } = &op {
            if buf.capacity() == 0 && self.streams.enabled && !self.closing {
                let socket = *socket;
                match self.streams.recv(socket, token) {
                    Plan::Ready(completion) => self.ready.push_back(completion),
                    Plan::Arm(sqe) => self.push(sqe),
                    Plan::Wait => {}
                    Plan::OneShot => {
                        let buf = self.memory.pool.take();
                        self.submit_direct(token, socket, buf);
                    }
                }
                return;
            }
        }
        if let (Op::Accept { listener }, false) = (&op, self.closing) {
            match self.accepts.accept(*listener, token) {
                Plan::Ready(completion) => self.ready.push_back(completion),
                Plan::Arm(sqe) => self.push(sqe),
                Plan::Wait => {}
                Plan::OneShot => self.submit_slot(token, op),
            }
            return;
        }
        self.submit_slot(token, op);
    }

    fn cancel(&mut self, socket: RawSocket) {
        if let Some(completion) = self.streams.cancel(socket) {
            self.ready.push_back(completion);
        }
        self.accepts.cancel(socket, &mut self.ready);
        if self.memory.ring.is_some() {
            // A recv of this socket that fails for want of a provided buffer must
            // not be posted again behind this cancel's back.
            for (_, slot) in self.slots.iter_mut() {
                if let (Op::Recv { socket: s, .. }, RecvBuf::Selected { cancelled }) =
                    (&slot.op, &mut slot.memory)
                {
                    if *s == socket {
                        *cancelled = true;
                    }
                }
            }
        }
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
        self.slots.len() + self.ready.len() + self.streams.waiting() + self.accepts.waiting()
    }

    fn give_buffer(&mut self, buf: Vec<u8>) {
        self.memory.pool.give(buf);
    }
}
