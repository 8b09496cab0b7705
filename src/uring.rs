//! The Linux io_uring driver of the completion-port contract ([`crate::contract`]).
//!
//! An [`Op`] not served by a multishot (below) becomes one submission queue
//! entry (SQE) whose `user_data` is the key of its slot in a [`Slab`]; the slot
//! owns the op (and so its buffer) until the kernel posts the matching
//! completion queue entry (CQE). The `user_data` values are laid out in
//! `keys`; SQEs that find the submission queue full wait in a backlog
//! (`queue`), so nothing is dropped and a cancel never overtakes its ops.
//!
//! **Registration.** io_uring takes any descriptor per op; the ring keeps the
//! set of registered sockets (`fd_set`, one indexed load per op) only so that
//! an op on any other socket fails as it does on every backend.
//!
//! **Port-chosen receive memory.** A recv whose buffer has capacity 0 is posted
//! with `IOSQE_BUFFER_SELECT` on the ring's provided-buffer ring
//! (`buf_ring`): it holds no memory while it waits, the kernel picks a buffer
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
//! on the thread that made it. Dropping it cancels what is in flight, waits
//! briefly for those completions, and leaks (rather than frees) whatever the
//! kernel may still write; connections that multishot accepts made and nobody
//! claimed are closed.

use std::io;
use std::marker::PhantomData;
use std::mem;
use std::os::unix::io::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::opcode;
use io_uring::types::{CancelBuilder, Fd, SubmitArgs, Timespec};
use slab::Slab;

use crate::contract::errors::{already_registered, not_registered};
use crate::contract::{Completion, Driver, Op, RawSocket, Ready, Token, Waker};
use crate::linux::EventFd;
use accept_stream::{AcceptFollow, AcceptStreams};
use buf_ring::RecvMemory;
use fd_set::FdSet;
use finish::{finish, prepare, recv_sqe};
use keys::{Key, ACCEPT_TAG, CANCEL, WAKE};
use multishot::{Follow, Plan, Streams};
use queue::{transient, Cqe, Queues, CQE_BATCH};
pub use setup::probe;
use setup::{build_ring, check_features};
use slot::{RecvBuf, Slot};

mod accept_stream;
mod buf_ring;
mod fd_set;
mod finish;
mod keys;
mod multishot;
mod queue;
mod setup;
mod slot;
#[cfg(test)]
mod tests;

/// Submission queue size.
const SQ_ENTRIES: u32 = 1024;
/// Completion queue size: larger than the SQ because the server keeps one recv
/// posted per connection, and thousands of connections may finish at once.
const CQ_ENTRIES: u32 = 8192;
/// How long dropping a ring waits for the completions of the ops it cancels.
const DROP_GRACE: Duration = Duration::from_secs(1);

/// The io_uring driver of a completion port.
///
/// Not `Send`: the ring may be set up `SINGLE_ISSUER`, so every submission must
/// come from the thread that built it.
pub struct Ring {
    /// The ring and the backlog of its submission queue.
    queues: Queues,
    /// Ops submitted and not yet completed; the SQE `user_data` is the key.
    slots: Slab<Slot>,
    /// Registered sockets.
    registered: FdSet,
    /// The provided-buffer ring and the pool for port-chosen recvs.
    memory: RecvMemory,
    /// The multishot recvs that serve port-chosen recvs (boxed: large).
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
            queues: Queues::new(ring),
            slots: Slab::new(),
            registered: FdSet::default(),
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
            Fd(self.waker.as_raw_fd()),
            self.wake_buf.as_mut_ptr(),
            self.wake_buf.len() as u32,
        )
        .build()
        .user_data(WAKE);
        self.wake_armed = true;
        self.queues.push(read);
    }

    /// Move up to `limit` completions from the completion queue to `out`
    /// (completions decided without the kernel go to `ready`); returns how
    /// many were appended. Each CQE gives at most one completion.
    fn reap_cqes(&mut self, out: &mut Vec<Completion>, limit: usize, ready: &mut Ready) -> usize {
        let mut appended = 0;
        let mut batch = [Cqe::default(); CQE_BATCH];
        while appended < limit {
            let want = (limit - appended).min(CQE_BATCH);
            let n = self.queues.take_cqes(&mut batch[..want]);
            if n == 0 {
                break;
            }
            for cqe in &batch[..n] {
                let before = out.len();
                match Key::of(cqe.user_data) {
                    Key::Wake => self.on_wake(cqe.res),
                    Key::Cancel => {}
                    Key::Stream(key) => self.on_stream(key, cqe, out),
                    Key::Accept(key) => self.on_accept(key, cqe, out, ready),
                    Key::Slot(key) => self.on_slot(key, cqe, out),
                }
                appended += out.len() - before;
            }
        }
        appended
    }

    /// The waker's read completed: post it again (unless closing).
    fn on_wake(&mut self, res: i32) {
        self.wake_armed = false;
        if res < 0 && res != -libc::ECANCELED {
            log::warn!(
                "io_uring waker read failed: {}",
                io::Error::from_raw_os_error(-res)
            );
        }
        if !self.closing {
            self.arm_wake();
        }
    }

    /// A CQE of multishot recv stream `key`.
    fn on_stream(&mut self, key: usize, cqe: &Cqe, out: &mut Vec<Completion>) {
        let follow = self
            .streams
            .complete(key, cqe.res, cqe.flags, &mut self.memory, out);
        match follow {
            Follow::None => {}
            Follow::Post(sqe) => self.queues.push(sqe),
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

    /// A CQE of multishot accept stream `key`.
    fn on_accept(&mut self, key: usize, cqe: &Cqe, out: &mut Vec<Completion>, ready: &mut Ready) {
        match self.accepts.complete(key, cqe.res, cqe.flags, out) {
            AcceptFollow::None => {}
            AcceptFollow::Post(sqe) => self.queues.push(sqe),
            AcceptFollow::OneShot { listener, tokens } => {
                for token in tokens {
                    self.submit_slot(token, Op::Accept { listener }, ready);
                }
            }
        }
    }

    /// The CQE of the op in slot `key`: its completion, or (a recv that found
    /// the provided-buffer ring empty) the same op posted again.
    fn on_slot(&mut self, key: usize, cqe: &Cqe, out: &mut Vec<Completion>) {
        let Some(slot) = self.slots.get_mut(key) else {
            log::error!("io_uring completion for unknown op {}", key);
            return;
        };
        let starved = cqe.res == -libc::ENOBUFS
            && slot.memory == RecvBuf::Selected { cancelled: false }
            && !self.closing;
        if starved {
            // The provided-buffer ring was empty: post the recv again into a
            // pooled buffer of its own (the caller sees nothing).
            if let Op::Recv { socket, buf } = &mut slot.op {
                *buf = self.memory.pool.take();
                slot.memory = RecvBuf::Pooled;
                let sqe = recv_sqe(*socket, buf, key as u64);
                self.starved += 1;
                self.queues.push(sqe);
                return;
            }
        }
        let slot = self.slots.remove(key);
        if let Op::Recv { socket, buf } = &slot.op {
            let room = match slot.memory {
                RecvBuf::Caller => None,
                RecvBuf::Selected { .. } => Some(self.memory.buffer_size()),
                RecvBuf::Pooled => Some(buf.capacity() - buf.len()),
            };
            if let Some(room) = room {
                self.memory.note_recv(*socket, cqe.res, cqe.flags, room);
            }
            if slot.memory == RecvBuf::Pooled {
                self.streams.note_one_shot(*socket, cqe.res, cqe.flags);
            }
        }
        out.push(finish(slot, cqe.res, cqe.flags, &mut self.memory));
    }

    /// Post `op` as one SQE of its own, in a slot.
    fn submit_slot(&mut self, token: Token, op: Op, ready: &mut Ready) {
        let socket = op.socket();
        if !self.registered.contains(socket) {
            ready.push_back(op.fail(token, not_registered(socket)));
            return;
        }
        let key = self.slots.insert(Slot {
            token,
            op,
            addr: None,
            msg: None,
            memory: RecvBuf::Caller,
        });
        debug_assert!(
            (key as u64) < ACCEPT_TAG,
            "slab key collides with a reserved user_data"
        );
        let sqe = prepare(&mut self.slots[key], key, &mut self.memory);
        self.queues.push(sqe);
    }

    /// Post a one-shot recv of `socket` into the pooled `buf` (which has
    /// spare capacity) for `token`.
    fn submit_direct(&mut self, token: Token, socket: RawSocket, buf: Vec<u8>) {
        let key = self.slots.insert(Slot {
            token,
            op: Op::Recv { socket, buf },
            addr: None,
            msg: None,
            memory: RecvBuf::Pooled,
        });
        if let Op::Recv { buf, .. } = &mut self.slots[key].op {
            let sqe = recv_sqe(socket, buf, key as u64);
            self.queues.push(sqe);
        }
    }
}

/// Whether port-chosen recvs and accepts use multishot SQEs: yes, unless
/// `IOCP_ECHO_URING_MULTISHOT=0` asks for one SQE per op (to compare the two).
fn multishot_wanted() -> bool {
    !matches!(std::env::var_os("IOCP_ECHO_URING_MULTISHOT"), Some(v) if v == "0")
}

impl Driver for Ring {
    /// io_uring takes any descriptor per op; the ring only notes the socket,
    /// so that ops on others fail alike on every backend.
    fn register(&mut self, socket: RawSocket) -> io::Result<()> {
        if socket < 0 {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        if !self.registered.insert(socket) {
            return Err(already_registered(socket));
        }
        Ok(())
    }

    /// Drops the socket's multishot state (closing connections a listener
    /// accepted and did not hand out).
    fn deregister(&mut self, socket: RawSocket, ready: &mut Ready) -> io::Result<()> {
        if !self.registered.remove(socket) {
            return Err(not_registered(socket));
        }
        self.memory.forget(socket);
        if let Some(sqe) = self.streams.deregister(socket, &mut self.memory) {
            self.queues.push(sqe);
        }
        if let Some(sqe) = self.accepts.deregister(socket, ready) {
            self.queues.push(sqe);
        }
        Ok(())
    }

    fn start(&mut self, token: Token, op: Op, ready: &mut Ready) {
        if self.closing {
            return self.submit_slot(token, op, ready);
        }
        match &op {
            Op::Recv { socket, buf } if buf.capacity() == 0 && self.streams.enabled => {
                let socket = *socket;
                if !self.registered.contains(socket) {
                    return ready.push_back(op.fail(token, not_registered(socket)));
                }
                match self.streams.recv(socket, token) {
                    Plan::Ready(completion) => ready.push_back(completion),
                    Plan::Arm(sqe) => self.queues.push(sqe),
                    Plan::Wait => {}
                    Plan::OneShot => {
                        let buf = self.memory.pool.take();
                        self.submit_direct(token, socket, buf);
                    }
                }
            }
            Op::Accept { listener } => {
                let listener = *listener;
                if !self.registered.contains(listener) {
                    return ready.push_back(op.fail(token, not_registered(listener)));
                }
                match self.accepts.accept(listener, token) {
                    Plan::Ready(completion) => ready.push_back(completion),
                    Plan::Arm(sqe) => self.queues.push(sqe),
                    Plan::Wait => {}
                    Plan::OneShot => self.submit_slot(token, op, ready),
                }
            }
            _ => self.submit_slot(token, op, ready),
        }
    }

    fn cancel(&mut self, socket: RawSocket, ready: &mut Ready) {
        if let Some(completion) = self.streams.cancel(socket) {
            ready.push_back(completion);
        }
        self.accepts.cancel(socket, ready);
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
        self.queues.push(sqe);
    }

    fn reap(
        &mut self,
        out: &mut Vec<Completion>,
        limit: usize,
        timeout: Option<Duration>,
        ready: &mut Ready,
    ) -> io::Result<()> {
        self.queues.flush_backlog();
        // Do not block while there is something left to submit.
        let timeout = if self.queues.backlog.is_empty() {
            timeout
        } else {
            Some(Duration::ZERO)
        };
        self.queues.enter(timeout)?;
        let mut appended = 0;
        loop {
            appended += self.reap_cqes(out, limit - appended, ready);
            // CQEs the kernel kept aside when the completion queue was full come
            // back only through another enter; fetch them while there is room.
            if appended == limit || !self.queues.flush_overflow()? {
                return Ok(());
            }
        }
    }

    fn waker(&self) -> Waker {
        self.waker.clone()
    }

    fn give_buffer(&mut self, buf: Vec<u8>) {
        self.memory.pool.give(buf);
    }
}

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
