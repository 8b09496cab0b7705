//! The Windows driver: an I/O completion port (IOCP) driven through `windows-sys`.
//!
//! [`Iocp`] owns one completion port and implements the [`Driver`] of
//! [`crate::contract`] directly on it, since IOCP *is* a completion model:
//!
//! * **Ops are overlapped Winsock calls.** Accept is `AcceptEx` into a socket the
//!   port creates beforehand; then `SO_UPDATE_ACCEPT_CONTEXT`,
//!   `GetAcceptExSockaddrs` for the peer address, and the socket is made
//!   nonblocking (`ioctlsocket(FIONBIO)`). It is created by `socket2`, which
//!   passes `WSA_FLAG_NO_HANDLE_INHERIT`, so it is never inherited by a child.
//!   Recv and send are `WSARecv`/`WSASend` of one buffer; connect is `ConnectEx`
//!   after binding the socket to the wildcard address, then
//!   `SO_UPDATE_CONNECT_CONTEXT`. `AcceptEx` and `ConnectEx` are looked up with
//!   `WSAIoctl(SIO_GET_EXTENSION_FUNCTION_POINTER)`.
//! * **One slot per op, at a stable address.** Each op lives in a boxed slot
//!   whose first field is its `OVERLAPPED` (`#[repr(C)]`), so the pointer a
//!   completion carries leads back to the slot, its token and its buffer. Slots
//!   are pooled; every field is written before the call that starts the op.
//! * **Batches.** A reap dequeues up to [`MAX_BATCH`] completions with one
//!   `GetQueuedCompletionStatusEx`.
//! * **Inline completions.** Sockets are registered with
//!   `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS`: an op that finishes inside its call
//!   queues no packet, so its completion goes to the front's ready queue, which
//!   the next `wait` hands out first. Where that mode cannot be set, the packet comes as
//!   usual and the inline result is ignored. A call that fails at once (not
//!   `WSA_IO_PENDING`) also becomes a completion in the ready queue: one
//!   submission, exactly one completion, always.
//! * **Port-chosen receive memory: zero-byte receives.** A recv whose buffer
//!   has capacity 0 waits as a `WSARecv` of zero bytes, holding no buffer, so
//!   an idle connection costs none. When it completes (data or end of stream
//!   is there; inline or as a packet), a nonblocking `recv` into a buffer
//!   from the port's pool (refilled by `give_buffer`) tells which, and its
//!   result is the op's completion: a `Vec` of exactly the bytes, or an empty
//!   one (end of stream, error, cancellation; the buffer goes back to the
//!   pool). If that `recv` finds nothing (spurious readiness), the zero-byte
//!   recv is posted again in the same slot and the op goes on uncompleted,
//!   unless the socket was cancelled since (then it ends as cancelled); after
//!   `MAX_SPURIOUS` such rounds in a row an ordinary recv into the pooled
//!   buffer is posted instead, so it never spins.
//! * **Cancel and close.** A cancel is `CancelIoEx` on the socket; each
//!   cancelled op still completes (with `ERROR_OPERATION_ABORTED`), and any
//!   error on a closed or cancelled socket is simply that op's completion with
//!   its error (Wine reports a recv on a socket closed under it as
//!   `0x8000000A`). The server waits for all of them before closing a socket.
//!   A port dropped with ops still in flight logs an error and leaks their
//!   slots, buffers and accept sockets rather than free memory the kernel may
//!   still write.
//! * **Waker.** `PostQueuedCompletionStatus` of a packet with no `OVERLAPPED`.
//!   The handle is shared by the port and its wakers through an `Arc`, so a
//!   waker never posts to a closed (or reused) handle; at most one wake packet
//!   is queued at a time.
//!
//! **One port per worker thread.** A socket is associated with one port only,
//! so accept sockets are created unassociated and joined to the port of the
//! worker that adopts them by `register`. Why the server uses one port per
//! worker rather than one port shared by a pool: `docs/architecture.md`,
//! "Threads and the GIL".

mod slots;
mod submit;
mod sys;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io;
use std::mem;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::Domain;
use windows_sys::Win32::Foundation::{
    ERROR_OPERATION_ABORTED, HANDLE, INVALID_HANDLE_VALUE, WAIT_TIMEOUT,
};
use windows_sys::Win32::Networking::WinSock::{SOCKET, WSA_IO_PENDING};
use windows_sys::Win32::Storage::FileSystem::SetFileCompletionNotificationModes;
use windows_sys::Win32::System::IO::{
    CancelIoEx, CreateIoCompletionPort, GetQueuedCompletionStatusEx, PostQueuedCompletionStatus,
    OVERLAPPED_ENTRY,
};

use crate::contract::errors::{already_registered, not_registered};
use crate::contract::{
    whole_millis, BufferPool, Completion, Driver, Op, Outcome, RawSocket, Ready, Token, Wake,
    Waker, MAX_BATCH,
};
use slots::{Slots, State};
use sys::{Extensions, PortHandle};

/// The capacity of a port-chosen recv's buffer.
const RECV_SIZE: usize = 64 << 10;

/// How many times in a row a zero-byte recv may report data that a
/// nonblocking recv then does not find before an ordinary recv (holding a
/// buffer) is posted instead.
const MAX_SPURIOUS: u32 = 3;

/// The completion key of every registered socket.
const SOCKET_KEY: usize = 1;
/// The completion key of a wake-up packet (posted with no `OVERLAPPED`).
const WAKE_KEY: usize = 2;

/// `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS | FILE_SKIP_SET_EVENT_ON_HANDLE`: no
/// packet for an op that completes inside its call, and no event signalled.
const SKIP_MODES: u8 = 1 | 2;

/// The largest finite timeout `GetQueuedCompletionStatusEx` takes (`INFINITE`
/// is `u32::MAX`).
const MAX_TIMEOUT_MS: u32 = u32::MAX - 1;

/// One dequeued completion packet: `#[repr(transparent)]` over
/// `OVERLAPPED_ENTRY`, so a slice of them goes straight to
/// `GetQueuedCompletionStatusEx`.
#[repr(transparent)]
struct Entry(OVERLAPPED_ENTRY);

impl Entry {
    fn zeroed() -> Entry {
        Entry(OVERLAPPED_ENTRY {
            lpCompletionKey: 0,
            lpOverlapped: ptr::null_mut(),
            Internal: 0,
            dwNumberOfBytesTransferred: 0,
        })
    }
}

/// A completion port: one per worker thread.
///
/// See the [module documentation](self) for how ops map onto IOCP.
pub struct Iocp {
    /// The port handle, shared with every waker handed out.
    shared: Arc<WakeTarget>,
    /// Registered sockets.
    sockets: HashMap<RawSocket, Registered>,
    /// Ops in flight.
    slots: Slots,
    /// Scratch space for `GetQueuedCompletionStatusEx`.
    entries: Vec<Entry>,
    /// `AcceptEx`, `GetAcceptExSockaddrs` and `ConnectEx`, once looked up.
    extensions: Extensions,
    /// Spare buffers for recvs with port-chosen memory.
    pool: BufferPool,
}

/// What the port knows of a registered socket.
struct Registered {
    /// Whether `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS` is on for it.
    skip_on_success: bool,
    /// Ops in flight on it.
    in_flight: usize,
    /// For a listener: the address family accept sockets are created with.
    domain: Option<Domain>,
    /// How many times it was cancelled (wrapping): a zero-byte recv started
    /// before a cancel is not posted again after it.
    cancels: u32,
}

/// What a waker needs: the port handle and whether a wake packet is queued.
#[derive(Debug)]
struct WakeTarget {
    port: PortHandle,
    /// True while a wake packet is queued and not yet dequeued. A wake racing
    /// with the dequeue of that packet may post nothing: the wait it would
    /// end is returning already, and a waker publishes its state (the server's
    /// inbox) before waking, which the worker reads after every wait.
    queued: AtomicBool,
}

impl Wake for WakeTarget {
    fn wake(&self) -> io::Result<()> {
        if self.queued.swap(true, Ordering::AcqRel) {
            return Ok(()); // a packet is already on its way
        }
        // SAFETY: the handle is a live completion port (kept open by this Arc);
        // a null OVERLAPPED is allowed and marks the packet as a wake-up.
        if unsafe { PostQueuedCompletionStatus(self.port.0, 0, WAKE_KEY, ptr::null()) } == 0 {
            self.queued.store(false, Ordering::Release);
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Iocp {
    /// Create a completion port.
    pub fn new() -> io::Result<Iocp> {
        // SAFETY: creating a new port: no file handle, no existing port; the
        // concurrency value 1 matches the single thread that waits on it.
        let handle = unsafe { CreateIoCompletionPort(INVALID_HANDLE_VALUE, 0, 0, 1) };
        if handle == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Iocp {
            shared: Arc::new(WakeTarget {
                port: PortHandle(handle),
                queued: AtomicBool::new(false),
            }),
            sockets: HashMap::new(),
            slots: Slots::default(),
            entries: (0..MAX_BATCH).map(|_| Entry::zeroed()).collect(),
            extensions: Extensions::default(),
            pool: BufferPool::new(RECV_SIZE),
        })
    }

    /// The address family of a registered listener, asked once and remembered.
    fn listener_domain(&mut self, listener: RawSocket) -> io::Result<Domain> {
        if let Some(domain) = self.sockets.get(&listener).and_then(|r| r.domain) {
            return Ok(domain);
        }
        let domain = submit::listener_domain(listener)?;
        if let Some(registered) = self.sockets.get_mut(&listener) {
            registered.domain = Some(domain);
        }
        Ok(domain)
    }

    fn handle(&self) -> HANDLE {
        self.shared.port.0
    }

    /// Record that the op in slot `index` has started, given what its call
    /// returned: `Ok(bytes)` when it finished inline, else the call's error.
    /// An op that finished (or failed) inside its call completes into `ready`.
    fn started(&mut self, index: usize, inline: io::Result<u32>, ready: &mut Ready) {
        let socket = self.slots.get_mut(index).socket;
        // (`Option::is_some_and` is too new for Rust 1.63.)
        let skip = matches!(self.sockets.get(&socket), Some(r) if r.skip_on_success);
        if let Some(registered) = self.sockets.get_mut(&socket) {
            registered.in_flight += 1;
        }
        match inline {
            // Finished inside the call, and no packet will come: complete now.
            Ok(bytes) if skip => self.complete_into(index, Ok(bytes), ready),
            // Finished, but the packet still comes (skip mode off): wait for it.
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(WSA_IO_PENDING) => {}
            Err(e) => self.complete_into(index, Err(e), ready),
        }
    }

    /// [`Iocp::complete`] into `ready`.
    fn complete_into(&mut self, index: usize, result: io::Result<u32>, ready: &mut Ready) {
        if let Some(completion) = self.complete(index, result) {
            ready.push_back(completion);
        }
    }

    /// The op in slot `index` ended with `result`: its completion, or `None`
    /// when it goes on (a zero-byte recv posted again).
    fn complete(&mut self, index: usize, result: io::Result<u32>) -> Option<Completion> {
        match self.slots.get_mut(index).state {
            State::ZeroRecv { cancels } => self.on_zero_recv(index, cancels, result),
            _ => Some(self.finish(index, result)),
        }
    }

    /// The zero-byte recv in slot `index` (started at cancel count `cancels`)
    /// ended with `result`. An error is the op's completion (an empty `Vec`).
    /// Success means data or the end of stream is there: a nonblocking recv
    /// into a pooled buffer tells which, and is the completion; if it finds
    /// nothing after all, the zero-byte recv is posted again, unless the
    /// socket was cancelled since (then it ends as cancelled). After
    /// [`MAX_SPURIOUS`] such rounds in one go, an ordinary recv into the
    /// pooled buffer is posted instead, so this never spins.
    fn on_zero_recv(
        &mut self,
        index: usize,
        cancels: u32,
        mut result: io::Result<u32>,
    ) -> Option<Completion> {
        let socket = self.slots.get_mut(index).socket;
        let mut rounds = 0;
        loop {
            if result.is_err() {
                return Some(self.finish(index, result)); // with an empty `Vec`
            }
            let mut buf = self.pool.take();
            match sys::recv_now(socket as SOCKET, &mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.pool.give(buf),
                // `finish` adds the bytes to the length; with none (end of
                // stream, error) the buffer goes back to the pool.
                received => {
                    self.slots.rearm(index, State::Recv { buf, pooled: true });
                    return Some(self.finish(index, received.map(|n| n as u32)));
                }
            }
            let (skip, cancelled) = match self.sockets.get(&socket) {
                Some(r) => (r.skip_on_success, r.cancels != cancels),
                None => (false, true),
            };
            if cancelled {
                let aborted = io::Error::from_raw_os_error(ERROR_OPERATION_ABORTED as i32);
                return Some(self.finish(index, Err(aborted)));
            }
            rounds += 1;
            if rounds > MAX_SPURIOUS {
                let buf = self.pool.take();
                self.slots.rearm(index, State::Recv { buf, pooled: true });
                return match submit::post_recv(self.slots.get_mut(index)) {
                    Ok(_) if !skip => None,
                    Err(e) if e.raw_os_error() == Some(WSA_IO_PENDING) => None,
                    inline => Some(self.finish(index, inline)),
                };
            }
            self.slots.rearm(index, State::ZeroRecv { cancels });
            result = match submit::post_recv(self.slots.get_mut(index)) {
                Ok(_) if !skip => return None, // its packet comes
                Err(e) if e.raw_os_error() == Some(WSA_IO_PENDING) => return None,
                inline => inline,
            };
        }
    }

    /// Free slot `index` and turn its op's result into a completion.
    fn finish(&mut self, index: usize, result: io::Result<u32>) -> Completion {
        let slot = self.slots.get_mut(index);
        let token = slot.token;
        let socket = slot.socket;
        let accepted_peer = match (&slot.state, &result) {
            (State::Accept { .. }, Ok(_)) => self
                .extensions
                .get_addresses()
                .ok()
                .and_then(|get| sys::accepted_peer(get, &slot.accept_buffer)),
            _ => None,
        };
        let state = self.slots.remove(index);
        if let Some(registered) = self.sockets.get_mut(&socket) {
            registered.in_flight = registered.in_flight.saturating_sub(1);
        }
        let outcome = match state {
            State::Recv { mut buf, pooled } => {
                let result = result.map(|n| {
                    let n = n as usize;
                    debug_assert!(n <= buf.capacity() - buf.len());
                    // SAFETY: the kernel wrote `n` bytes into the spare capacity
                    // starting at `buf.len()`, which is all it was given.
                    unsafe { buf.set_len(buf.len() + n) };
                    n
                });
                if pooled && buf.is_empty() {
                    // Nothing received: the pooled buffer goes back unused.
                    self.pool.give(mem::take(&mut buf));
                }
                Outcome::Received { buf, result }
            }
            State::Send { buf, pos } => Outcome::Sent {
                buf,
                pos,
                result: result.map(|n| n as usize),
            },
            State::Accept { listener, accepted } => Outcome::Accepted(
                result.and_then(|_| submit::finish_accept(listener, accepted, accepted_peer)),
            ),
            State::Connect => Outcome::Connected(
                result.and_then(|_| sys::update_connect_context(socket as SOCKET)),
            ),
            State::ZeroRecv { .. } => Outcome::Received {
                buf: Vec::new(),
                result: result.map(|_| 0),
            },
            State::Free => unreachable!("a free slot completed"),
        };
        Completion { token, outcome }
    }

    /// Turn a dequeued packet into a completion (`None` for a wake-up).
    fn on_packet(&mut self, entry: &OVERLAPPED_ENTRY) -> Option<Completion> {
        if entry.lpOverlapped.is_null() {
            if entry.lpCompletionKey == WAKE_KEY {
                self.shared.queued.store(false, Ordering::Release);
            }
            return None;
        }
        let index = match self.slots.find(entry.lpOverlapped) {
            Some(index) => index,
            None => {
                log::error!("iocp: a completion for an unknown OVERLAPPED; ignored");
                return None;
            }
        };
        let slot = self.slots.get_mut(index);
        let status = slot.status();
        let result = if status == 0 {
            Ok(entry.dwNumberOfBytesTransferred)
        } else {
            // This op's completion was dequeued: its OVERLAPPED is final.
            Err(sys::op_error(
                slot.socket as SOCKET,
                slot.overlapped(),
                status,
            ))
        };
        self.complete(index, result)
    }
}

/// The `GetQueuedCompletionStatusEx` timeout: whole milliseconds, rounded up
/// ([`whole_millis`]), `INFINITE` for none.
fn timeout_ms(timeout: Option<Duration>) -> u32 {
    match timeout {
        None => u32::MAX, // INFINITE
        Some(t) => u32::try_from(whole_millis(t))
            .unwrap_or(MAX_TIMEOUT_MS)
            .min(MAX_TIMEOUT_MS),
    }
}

impl Driver for Iocp {
    fn register(&mut self, socket: RawSocket) -> io::Result<()> {
        if self.sockets.contains_key(&socket) {
            return Err(already_registered(socket));
        }
        let handle = socket as HANDLE;
        // SAFETY: `socket` is an open socket handle of the caller's; the port
        // handle is live. The key marks packets of sockets.
        if unsafe { CreateIoCompletionPort(handle, self.handle(), SOCKET_KEY, 0) } == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a mode change on an open socket handle.
        let skip_on_success =
            unsafe { SetFileCompletionNotificationModes(handle, SKIP_MODES) } != 0;
        if !skip_on_success {
            log::debug!(
                "socket {}: no skip-completion-on-success ({}); packets for every op",
                socket,
                io::Error::last_os_error()
            );
        }
        self.sockets.insert(
            socket,
            Registered {
                skip_on_success,
                in_flight: 0,
                domain: None,
                cancels: 0,
            },
        );
        Ok(())
    }

    fn deregister(&mut self, socket: RawSocket, _ready: &mut Ready) -> io::Result<()> {
        // A socket stays associated with its port until it is closed; forgetting
        // it here lets a new socket with the same handle value register again.
        match self.sockets.remove(&socket) {
            Some(_) => Ok(()),
            None => Err(not_registered(socket)),
        }
    }

    fn start(&mut self, token: Token, op: Op, ready: &mut Ready) {
        let socket = op.socket();
        let cancels = match self.sockets.get(&socket) {
            Some(registered) => registered.cancels,
            None => return ready.push_back(op.fail(token, not_registered(socket))),
        };
        let started = match op {
            Op::Accept { listener } => {
                let started = self.listener_domain(listener).and_then(|domain| {
                    submit::accept(
                        &mut self.slots,
                        &mut self.extensions,
                        token,
                        listener,
                        domain,
                    )
                });
                match started {
                    Ok(started) => started,
                    Err(e) => return ready.push_back(Op::Accept { listener }.fail(token, e)),
                }
            }
            // Capacity 0: the port chooses the memory, and takes it only
            // once data is there.
            Op::Recv { socket, buf } if buf.capacity() == 0 => {
                submit::zero_recv(&mut self.slots, token, socket, cancels)
            }
            Op::Recv { socket, buf } => submit::recv(&mut self.slots, token, socket, buf, false),
            Op::Send { socket, buf, pos } => submit::send(&mut self.slots, token, socket, buf, pos),
            Op::Connect { socket, addr } => {
                match submit::connect(&mut self.slots, &mut self.extensions, token, socket, addr) {
                    Ok(started) => started,
                    Err(e) => return ready.push_back(Op::Connect { socket, addr }.fail(token, e)),
                }
            }
        };
        self.started(started.index, started.inline, ready);
    }

    fn cancel(&mut self, socket: RawSocket, _ready: &mut Ready) {
        match self.sockets.get_mut(&socket) {
            Some(registered) if registered.in_flight > 0 => {
                registered.cancels = registered.cancels.wrapping_add(1);
            }
            _ => return,
        }
        // SAFETY: `socket` is open (the caller closes it only after its ops
        // completed); a null OVERLAPPED cancels every op on the handle.
        if unsafe { CancelIoEx(socket as HANDLE, ptr::null()) } == 0 {
            // ERROR_NOT_FOUND: every op already finished; its packet is queued.
            log::debug!("CancelIoEx({}): {}", socket, io::Error::last_os_error());
        }
    }

    fn reap(
        &mut self,
        out: &mut Vec<Completion>,
        limit: usize,
        timeout: Option<Duration>,
        _ready: &mut Ready,
    ) -> io::Result<()> {
        let room = limit.min(MAX_BATCH);
        let ms = timeout_ms(timeout);
        let mut removed = 0u32;
        // SAFETY: `entries` has MAX_BATCH initialised entries and `room` is at
        // most that; `Entry` is a transparent OVERLAPPED_ENTRY; not alertable.
        let ok = unsafe {
            GetQueuedCompletionStatusEx(
                self.handle(),
                self.entries.as_mut_ptr().cast::<OVERLAPPED_ENTRY>(),
                room as u32,
                &mut removed,
                ms,
                0,
            )
        };
        if ok == 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(code) if code == WAIT_TIMEOUT as i32 => Ok(()),
                _ => Err(e),
            };
        }
        let entries = mem::take(&mut self.entries);
        for entry in &entries[..removed as usize] {
            if let Some(completion) = self.on_packet(&entry.0) {
                out.push(completion);
            }
        }
        self.entries = entries;
        Ok(())
    }

    fn waker(&self) -> Waker {
        Arc::clone(&self.shared) as Waker
    }

    fn give_buffer(&mut self, buf: Vec<u8>) {
        self.pool.give(buf);
    }
}

impl Drop for Iocp {
    fn drop(&mut self) {
        let pending = self.slots.used();
        if pending > 0 {
            log::error!(
                "iocp: port dropped with {} ops in flight; leaking their buffers",
                pending
            );
            self.slots.leak_in_use();
        }
    }
}

#[cfg(test)]
impl Iocp {
    /// The bytes of receive buffers (their capacity) held by ops in flight.
    fn held_receive_bytes(&self) -> usize {
        self.slots.held_receive_bytes()
    }
}
