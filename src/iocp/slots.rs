//! The op slots: one boxed [`Slot`] per op in flight, at an address that never
//! changes while the kernel holds its `OVERLAPPED`, pooled for reuse.

use std::cell::UnsafeCell;
use std::mem;

use socket2::Socket;
use windows_sys::Win32::Networking::WinSock::WSABUF;
use windows_sys::Win32::System::IO::OVERLAPPED;

use super::sys::ACCEPT_BUFFER;
use crate::contract::{RawSocket, SendBuf, Token};

/// What an op in flight owns until its completion.
pub(super) enum State {
    /// Not in use.
    Free,
    /// `AcceptEx` on `listener` into the pre-created `accepted` socket.
    Accept {
        /// The listening socket the accept was posted on.
        listener: RawSocket,
        /// The socket the connection is accepted into.
        accepted: Socket,
    },
    /// `WSARecv` into the spare capacity of `buf`.
    Recv {
        /// The buffer the kernel fills.
        buf: Vec<u8>,
        /// Whether `buf` came from the port's pool (a recv with port-chosen
        /// memory): it goes back there if nothing was received.
        pooled: bool,
    },
    /// A zero-byte `WSARecv`, for a recv with port-chosen memory: it ends
    /// when data or the end of stream is there, and holds no buffer meanwhile.
    ZeroRecv {
        /// The socket's cancel count when the op was started: a cancel since
        /// then forbids posting it again.
        cancels: u32,
    },
    /// `WSASend` of the bytes of `buf` from `pos` on.
    Send {
        /// The bytes being sent (a shared buffer: one reference; a gathered
        /// one: its parts and the slice array `WSASend` was given; kept until
        /// the completion).
        buf: SendBuf,
        /// Where sending started.
        pos: usize,
    },
    /// `ConnectEx`.
    Connect,
}

/// One op in flight. `#[repr(C)]` with the `OVERLAPPED` first, so the pointer
/// the kernel hands back in a completion is the slot's own address.
#[repr(C)]
pub(super) struct Slot {
    /// Written by the kernel while the op is in flight: only touched through
    /// raw pointers, never through a Rust reference.
    overlapped: UnsafeCell<OVERLAPPED>,
    /// The slot's index in the pool, to check a completion's pointer.
    pub(super) index: usize,
    /// The caller's token.
    pub(super) token: Token,
    /// The socket the op was issued on (the listener for an accept).
    pub(super) socket: RawSocket,
    /// What the op owns.
    pub(super) state: State,
    /// The buffer description passed to `WSARecv`/`WSASend`.
    pub(super) wsabuf: WSABUF,
    /// The flags `WSARecv` reads and writes.
    pub(super) flags: u32,
    /// Where `AcceptEx` writes the two addresses: inside the boxed slot, so on
    /// the heap and never moved while the kernel writes it.
    pub(super) accept_buffer: [u8; ACCEPT_BUFFER],
}

impl Slot {
    /// The pointer to pass as the op's `OVERLAPPED`.
    pub(super) fn overlapped(&self) -> *mut OVERLAPPED {
        self.overlapped.get()
    }

    /// The status the kernel stored in the `OVERLAPPED` when the op finished.
    ///
    /// Only meaningful once the op's completion has been dequeued.
    pub(super) fn status(&self) -> i32 {
        // SAFETY: the op is complete, so the kernel no longer writes the
        // OVERLAPPED; reading its `Internal` field races with nothing.
        let internal = unsafe { (*self.overlapped.get()).Internal };
        internal as u32 as i32
    }
}

/// The pool of slots: boxed so each stays put when the vector grows.
#[derive(Default)]
pub(super) struct Slots {
    // Boxed on purpose: the kernel holds pointers into slots while the vector grows.
    #[allow(clippy::vec_box)]
    slots: Vec<Box<Slot>>,
    free: Vec<usize>,
    used: usize,
}

impl Slots {
    /// Take a free slot (or make one), fill it for a new op and return its index.
    /// The `OVERLAPPED` is zeroed, as every new op requires.
    pub(super) fn insert(&mut self, token: Token, socket: RawSocket, state: State) -> usize {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                let index = self.slots.len();
                self.slots.push(Box::new(Slot {
                    // SAFETY: OVERLAPPED is plain data for which all-zero is
                    // the documented initial value.
                    overlapped: UnsafeCell::new(unsafe { mem::zeroed() }),
                    index,
                    token: 0,
                    socket: 0,
                    state: State::Free,
                    wsabuf: WSABUF {
                        len: 0,
                        buf: std::ptr::null_mut(),
                    },
                    flags: 0,
                    accept_buffer: [0; ACCEPT_BUFFER],
                }));
                index
            }
        };
        let slot = &mut self.slots[index];
        // SAFETY: the slot is free, so no op uses its OVERLAPPED; all-zero is valid.
        unsafe { *slot.overlapped.get() = mem::zeroed() };
        slot.token = token;
        slot.socket = socket;
        slot.state = state;
        slot.wsabuf = WSABUF {
            len: 0,
            buf: std::ptr::null_mut(),
        };
        slot.flags = 0;
        self.used += 1;
        index
    }

    /// Make the in-use slot at `index` ready to be posted again, owning
    /// `state`: its `OVERLAPPED` zeroed, as every new call requires.
    pub(super) fn rearm(&mut self, index: usize, state: State) {
        let slot = &mut self.slots[index];
        // SAFETY: the slot's op completed (the caller is handling that
        // completion), so no call uses its OVERLAPPED; all-zero is valid.
        unsafe { *slot.overlapped.get() = mem::zeroed() };
        slot.state = state;
        slot.flags = 0;
    }

    /// The slot at `index`.
    pub(super) fn get_mut(&mut self, index: usize) -> &mut Slot {
        &mut self.slots[index]
    }

    /// The index of the in-use slot whose `OVERLAPPED` is `overlapped`, if any.
    pub(super) fn find(&self, overlapped: *mut OVERLAPPED) -> Option<usize> {
        let slot = overlapped as *const Slot;
        // SAFETY: every OVERLAPPED we pass to the kernel is the first field of a
        // live boxed Slot (slots are never freed while the pool lives), so the
        // pointer is a valid Slot; the index is checked against the pool below.
        let index = unsafe { (*slot).index };
        match self.slots.get(index) {
            Some(s) if std::ptr::eq(&**s, slot) && !matches!(s.state, State::Free) => Some(index),
            _ => None,
        }
    }

    /// Free the slot at `index`, returning what its op owned.
    pub(super) fn remove(&mut self, index: usize) -> State {
        let slot = &mut self.slots[index];
        let state = mem::replace(&mut slot.state, State::Free);
        slot.wsabuf.buf = std::ptr::null_mut();
        self.free.push(index);
        self.used -= 1;
        state
    }

    /// Ops in flight (slots in use).
    pub(super) fn used(&self) -> usize {
        self.used
    }

    /// The bytes of receive buffers (their capacity) held by slots in use.
    #[cfg(test)]
    pub(super) fn held_receive_bytes(&self) -> usize {
        self.slots
            .iter()
            .map(|slot| match &slot.state {
                State::Recv { buf, .. } => buf.capacity(),
                _ => 0,
            })
            .sum()
    }

    /// Give up the slots still in use without freeing them: the kernel may
    /// still write into their `OVERLAPPED` and buffers. Free slots are freed.
    pub(super) fn leak_in_use(&mut self) {
        for slot in self.slots.drain(..) {
            if matches!(slot.state, State::Free) {
                drop(slot);
            } else {
                mem::forget(slot);
            }
        }
        self.free.clear();
        self.used = 0;
    }
}
