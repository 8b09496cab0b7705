//! The receive memory of a [`super::Ring`]: a provided-buffer ring that the
//! kernel picks from when a recv with port-chosen memory finds data, and the
//! pool of `Vec`s that refills it.
//!
//! The buffer ring (`IORING_REGISTER_PBUF_RING`, Linux 5.19) is an anonymous
//! mapping made once per ring (page-aligned, as the kernel requires) holding
//! the entries the kernel reads; each entry offers the spare capacity of one
//! `Vec` the ring holds. A recv posted with `IOSQE_BUFFER_SELECT` holds no
//! buffer while it waits; the kernel takes one only when it has bytes to put in
//! it, and names it in the CQE. That `Vec` is then handed to the caller as it
//! is (no copy) and a pooled `Vec` is offered in its place at once, so the ring
//! only ever lacks the buffers of completions not yet reaped. Pages of the
//! buffers that no recv has written cost no RSS.
//!
//! A socket whose last recv left bytes waiting (`IORING_CQE_F_SOCK_NONEMPTY`,
//! or a full buffer) is *hot*: its next port-chosen recv receives straight into
//! a pooled `Vec`, which completes at once rather than sit idle holding memory,
//! and leaves the ring's buffers to the sockets that wait.

use std::io;
use std::mem;
use std::ptr;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::{cqueue, IoUring};

use crate::contract::{BufferPool, RawSocket};
use crate::linux::LINUX_RECV_SIZE;

/// The buffer group id of a ring's provided buffers (one group per ring).
pub(super) const GROUP: u16 = 0;
/// Provided buffers per ring.
pub(super) const RING_BUFFERS: u16 = 128;
/// Bytes per provided buffer: the most a port-chosen recv through the ring returns.
pub(super) const BUFFER_SIZE: usize = LINUX_RECV_SIZE;
/// The capacity of pooled buffers: the most a direct port-chosen recv returns.
pub(super) const DIRECT_SIZE: usize = LINUX_RECV_SIZE;

/// An anonymous private mapping, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh anonymous mapping at an address of the kernel's choice;
        // no existing memory is touched. The result is checked below.
        let ptr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `len` describe a mapping made by `Mapping::new`, which
        // nothing references any more (the owner leaks it instead while the
        // kernel may still use it).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A registered provided-buffer ring and its buffers.
pub(super) struct BufRing {
    /// The ring of entries shared with the kernel.
    entries: Mapping,
    /// Buffer `bid`: a `Vec` whose spare capacity the kernel may fill while it
    /// is offered. Its heap block never moves or shrinks while offered (the
    /// `Vec` itself is only moved as a value, and only once taken back).
    buffers: Vec<Vec<u8>>,
    count: u16,
    /// Our copy of the ring's tail: entries before it are the kernel's.
    tail: u16,
}

impl BufRing {
    /// Offer `count` (a power of two, at most 32768) buffers of `size` bytes
    /// and register the ring with `ring` under [`GROUP`].
    pub(super) fn register(ring: &IoUring, count: u16, size: usize) -> io::Result<BufRing> {
        if !count.is_power_of_two() || count > 1 << 15 || size == 0 || size > u32::MAX as usize {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let entries = Mapping::new(usize::from(count) * std::mem::size_of::<BufRingEntry>())?;
        let mut buf_ring = BufRing {
            entries,
            buffers: (0..count).map(|_| Vec::with_capacity(size)).collect(),
            count,
            tail: 0,
        };
        for bid in 0..count {
            buf_ring.push(bid);
        }
        buf_ring.publish();
        // SAFETY: the entries mapping is page-aligned, holds `count` entries and
        // lives as long as this `BufRing`, as do the buffers it offers; the ring
        // owner unregisters it, or leaks it while ops may still use it, before it
        // is dropped.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                buf_ring.entries.ptr as u64,
                count,
                GROUP,
                0,
            )
        }?;
        Ok(buf_ring)
    }

    /// Write the entry offering buffer `bid` at our tail (not yet published).
    fn push(&mut self, bid: u16) {
        let index = usize::from(self.tail & (self.count - 1));
        let base = self.entries.ptr.cast::<BufRingEntry>();
        // SAFETY: `index < count`, so the entry is inside the mapping; the kernel
        // reads entries only up to the published tail, and this one is past it.
        // Its `resv` field (the ring's tail when it is entry 0) is left alone.
        let entry = unsafe { &mut *base.add(index) };
        let buf = &mut self.buffers[usize::from(bid)];
        buf.clear();
        let len = u32::try_from(buf.capacity()).unwrap_or(u32::MAX);
        entry.set_addr(buf.as_mut_ptr() as u64);
        entry.set_len(len);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Let the kernel see every entry pushed so far.
    fn publish(&mut self) {
        let base = self.entries.ptr.cast::<BufRingEntry>();
        // SAFETY: the tail is a `u16` inside entry 0 of the mapping, suitably
        // aligned; the kernel reads it concurrently, hence the atomic store, whose
        // release ordering makes the entries written before it visible first.
        unsafe {
            let tail = BufRingEntry::tail(base) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// Take buffer `bid`, into which the kernel received `n` bytes (as a reaped
    /// CQE says), and offer `replacement` (empty, with capacity) in its place.
    fn take(&mut self, bid: u16, n: usize, replacement: Vec<u8>) -> Vec<u8> {
        let slot = &mut self.buffers[usize::from(bid)];
        assert!(n <= slot.capacity(), "recv overran its provided buffer");
        let mut buf = mem::replace(slot, replacement);
        // SAFETY: the kernel wrote `n` bytes at the start of this buffer, whose
        // capacity holds them (checked above), and is done with it: the CQE
        // naming it was reaped and it is not offered again.
        unsafe { buf.set_len(n) };
        self.push(bid);
        self.publish();
        buf
    }

    /// Offer buffer `bid` to the kernel again, unread.
    fn recycle(&mut self, bid: u16) {
        self.push(bid);
        self.publish();
    }
}

/// Where the bytes of port-chosen recvs come from.
pub(super) struct RecvMemory {
    /// The provided-buffer ring, if the kernel took it.
    pub(super) ring: Option<BufRing>,
    /// Spare `Vec`s for received bytes (and for recvs made without the ring).
    pub(super) pool: BufferPool,
    /// By descriptor: whether the socket's last recv left bytes waiting.
    hot: Vec<bool>,
    /// The size of the ring's buffers.
    buffer_size: usize,
}

impl RecvMemory {
    /// Register a ring of `count` buffers of `size` bytes, or go without one if
    /// the kernel refuses (each port-chosen recv then takes a pooled `Vec`).
    pub(super) fn new(ring: &IoUring, count: u16, size: usize) -> RecvMemory {
        let buf_ring = match BufRing::register(ring, count, size) {
            Ok(buf_ring) => Some(buf_ring),
            Err(e) => {
                log::debug!(
                    "io_uring provided-buffer ring refused ({}); recvs take pooled buffers",
                    e
                );
                None
            }
        };
        RecvMemory {
            ring: buf_ring,
            pool: BufferPool::new(DIRECT_SIZE.max(size)),
            hot: Vec::new(),
            buffer_size: size,
        }
    }

    /// The size of the ring's buffers.
    pub(super) fn buffer_size(&self) -> usize {
        self.buffer_size
    }

    /// Whether bytes are known to be waiting on `socket`.
    pub(super) fn is_hot(&self, socket: RawSocket) -> bool {
        let index = usize::try_from(socket).unwrap_or(usize::MAX);
        self.hot.get(index).copied().unwrap_or(false)
    }

    /// Note how a port-chosen recv on `socket` with `room` bytes of buffer
    /// ended (its CQE's `res` and `flags`): hot if it left bytes waiting.
    pub(super) fn note_recv(&mut self, socket: RawSocket, res: i32, flags: u32, room: usize) {
        let more = res > 0 && (cqueue::sock_nonempty(flags) || res as usize >= room);
        if let Ok(index) = usize::try_from(socket) {
            if index >= self.hot.len() {
                if !more {
                    return;
                }
                self.hot.resize(index + 1, false);
            }
            self.hot[index] = more;
        }
    }

    /// Forget what is known of a socket about to be closed.
    pub(super) fn forget(&mut self, socket: RawSocket) {
        if let Some(hot) = usize::try_from(socket)
            .ok()
            .and_then(|i| self.hot.get_mut(i))
        {
            *hot = false;
        }
    }

    /// The provided buffer `bid` into which a recv received `n` bytes, taken
    /// out of the ring (no copy); a pooled buffer is offered in its place.
    pub(super) fn take_selected(&mut self, bid: u16, n: usize) -> Vec<u8> {
        let replacement = self.pool.take();
        match &mut self.ring {
            Some(ring) => ring.take(bid, n, replacement),
            None => replacement,
        }
    }

    /// Offer provided buffer `bid` again without reading it.
    pub(super) fn recycle(&mut self, bid: u16) {
        if let Some(ring) = &mut self.ring {
            ring.recycle(bid);
        }
    }
}

/// Whether this kernel takes a provided-buffer ring (for the probe's report).
pub(super) fn supported(ring: &IoUring) -> bool {
    match BufRing::register(ring, 1, 4096) {
        Ok(buf_ring) => {
            let _ = ring.submitter().unregister_buf_ring(GROUP);
            drop(buf_ring);
            true
        }
        Err(_) => false,
    }
}
