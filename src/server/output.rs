//! A connection's output: replies and pushed bytes queued behind the send in
//! flight, the backpressure state they drive and their bound; plus the
//! worker's spare output buffers.
//!
//! **Bound.** Output queued or in flight never passes `max_output` (kept by
//! [`Spares`], which every queuing method is given): bytes that would pass it
//! are dropped with everything queued, and the output is marked overflowed
//! ([`Output::passed`]), so the pump closes the connection as a slow consumer.
//! The check is one comparison per queuing, no allocation. Native echoes,
//! framed straight into [`Output::buffer`], are checked by the pump.
//!
//! **Queue.** In sending order: segments (each a [`SendBuf`]), then the owned
//! tail buffer that replies are framed into. Without a broadcast there are no
//! segments and the tail is sent whole, as one owned buffer, when nothing is
//! in flight. A shared segment (a broadcast framed once for every receiver)
//! is queued by moving the tail, if it holds bytes, into the segments first,
//! so order is kept; its bytes count against the bound like owned ones. With
//! segments queued, the next send gathers them and the tail (up to
//! [`MAX_GATHER`] buffers) into one vectored send, in a [`Gather`] taken from
//! the worker's [`Spares`] and given back there at its completion: many
//! broadcasts queued on a connection cost one send, not one each. The worker
//! reaches the queue only through the methods here.

use std::collections::VecDeque;
use std::mem;
use std::sync::Arc;

use crate::port::{Gather, SendBuf, MAX_GATHER};

/// Spare output buffers kept per worker.
const SPARES_LIMIT: usize = 256;

/// A connection's queued output and backpressure state.
#[derive(Debug, Default)]
pub(crate) struct Output {
    /// Entries queued behind the send in flight, ahead of `queued`.
    segments: VecDeque<SendBuf>,
    /// The bytes of `segments`.
    segments_len: usize,
    /// Bytes queued behind the send in flight and `segments`.
    queued: Vec<u8>,
    /// Whether a send is in flight.
    in_flight: bool,
    /// Bytes of the send in flight not yet confirmed sent.
    sending: usize,
    /// Reading is paused until queued output falls to the low-water mark.
    paused: bool,
    /// Output would have passed `max_output`: what was queued is dropped, and
    /// so is anything queued later; the connection must close.
    overflowed: bool,
}

/// What [`Output::update_pause`] changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pause {
    /// Nothing.
    Same,
    /// Queued output passed the high-water mark: stop reading.
    Paused,
    /// Queued output fell to the low-water mark: read again.
    Resumed,
}

impl Output {
    /// Output queued or in flight, for backpressure.
    pub(crate) fn len(&self) -> usize {
        self.sending + self.segments_len + self.queued.len()
    }

    /// Whether a send is in flight.
    pub(crate) fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// Whether reading is paused by backpressure.
    pub(crate) fn paused(&self) -> bool {
        self.paused
    }

    /// The queue's buffer: replies are framed straight into it, or it is lent
    /// to the handler's batch (taken, then given back with [`Output::give_back`]).
    /// An idle connection keeps no memory: see [`Output::reserve`].
    #[inline]
    pub(crate) fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.queued
    }

    /// Give an empty queue without memory a spare buffer, so framing into it
    /// does not allocate.
    #[inline]
    pub(crate) fn reserve(&mut self, spares: &mut Spares) {
        if self.queued.capacity() == 0 {
            self.queued = spares.take();
        }
    }

    /// Queue a buffer that was received, to send it back as it is (the native
    /// raw echo), when nothing else is queued or in flight; else `Err` gives
    /// it back.
    #[inline]
    pub(crate) fn adopt(&mut self, buf: Vec<u8>, spares: &mut Spares) -> Result<(), Vec<u8>> {
        if !self.queued.is_empty() || self.in_flight || !self.segments.is_empty() {
            return Err(buf);
        }
        spares.recycle(mem::replace(&mut self.queued, buf));
        Ok(())
    }

    /// Whether output passed `max`: dropped by [`Output::push`] or
    /// [`Output::give_back`], or grown past it by native echoes. The
    /// connection must then close as a slow consumer.
    #[inline]
    pub(crate) fn passed(&self, max: usize) -> bool {
        self.overflowed || self.len() > max
    }

    /// Whether `more` bytes queued now would pass `max` (or output already did).
    #[inline]
    fn would_pass(&self, more: usize, max: usize) -> bool {
        self.overflowed || self.len() + more > max
    }

    /// Output passed the bound: drop what is queued (the send in flight
    /// completes on its own) and everything queued from now on.
    #[cold]
    fn overflow(&mut self, spares: &mut Spares) {
        self.overflowed = true;
        spares.recycle(mem::take(&mut self.queued));
        self.drop_segments();
    }

    /// Drop the queued segments.
    fn drop_segments(&mut self) {
        if !self.segments.is_empty() {
            self.segments = VecDeque::new();
            self.segments_len = 0;
        }
    }

    /// Drop what is queued, and everything queued from now on (a connection
    /// closing as a slow consumer).
    #[cold]
    pub(crate) fn discard(&mut self) {
        self.overflowed = true;
        self.queued = Vec::new();
        self.drop_segments();
    }

    /// Take back a buffer lent to the batch, with the replies framed into it;
    /// dropped, with what is queued, if it would pass the bound.
    pub(crate) fn give_back(&mut self, buf: Vec<u8>, spares: &mut Spares) {
        if self.would_pass(buf.len(), spares.max_output) {
            self.overflow(spares);
            spares.recycle(buf);
            return;
        }
        if self.queued.is_empty() {
            // Its only entry (or the first with anything in it).
            spares.recycle(mem::replace(&mut self.queued, buf));
        } else {
            // A second entry of the same connection this turn (its frames were
            // not adjacent): rare, so copied.
            self.queued.extend_from_slice(&buf);
            spares.recycle(buf);
        }
        if self.queued.is_empty() {
            // An idle connection keeps no output buffer.
            spares.recycle(mem::take(&mut self.queued));
        }
    }

    /// Queue framed bytes pushed from outside the connection's turn; dropped,
    /// with what is queued, if they would pass the bound.
    pub(crate) fn push(&mut self, framed: Vec<u8>, spares: &mut Spares) {
        if self.would_pass(framed.len(), spares.max_output) {
            self.overflow(spares);
            spares.recycle(framed);
            return;
        }
        if self.queued.is_empty() {
            spares.recycle(mem::replace(&mut self.queued, framed));
        } else {
            self.queued.extend_from_slice(&framed);
            spares.recycle(framed);
        }
    }

    /// Queue a segment shared with other connections (a broadcast) behind
    /// everything queued; dropped, with what is queued, if it would pass the
    /// bound. Its bytes are never copied.
    pub(crate) fn push_shared(&mut self, shared: &Arc<[u8]>, spares: &mut Spares) {
        if self.would_pass(shared.len(), spares.max_output) {
            self.overflow(spares);
            return;
        }
        if shared.is_empty() {
            return;
        }
        if !self.queued.is_empty() {
            // The tail goes first: later replies are framed into a new one.
            let tail = mem::take(&mut self.queued);
            self.segments_len += tail.len();
            self.segments.push_back(SendBuf::Owned(tail));
        }
        self.segments_len += shared.len();
        self.segments.push_back(SendBuf::Shared(Arc::clone(shared)));
    }

    /// What to post as the next send, if nothing is in flight and something
    /// is queued (or `force`: the transport has bytes of its own): the tail
    /// buffer when no segment is queued (the usual case, which takes nothing
    /// from `spares`), else the segments and the tail gathered.
    #[inline]
    pub(crate) fn next_send(&mut self, force: bool, spares: &mut Spares) -> Option<SendBuf> {
        if self.in_flight {
            return None;
        }
        let buf = if !self.segments.is_empty() {
            self.gather(spares)
        } else if self.queued.is_empty() && !force {
            return None;
        } else {
            SendBuf::Owned(mem::take(&mut self.queued))
        };
        self.in_flight = true;
        self.sending = buf.len();
        Some(buf)
    }

    /// The queued segments and the tail (up to [`MAX_GATHER`] buffers) as one
    /// send: a lone segment as it is, else gathered.
    fn gather(&mut self, spares: &mut Spares) -> SendBuf {
        if self.segments.len() == 1 && self.queued.is_empty() {
            if let Some(segment) = self.segments.pop_front() {
                self.segments_len = 0;
                return segment;
            }
        }
        let mut gather = spares.take_gather();
        let count = self.segments.len().min(MAX_GATHER);
        for segment in self.segments.drain(..count) {
            self.segments_len -= segment.len();
            // Cannot fail: not full, and segments are never gathered.
            let _ = gather.push(segment);
        }
        if self.segments.is_empty() && !self.queued.is_empty() && !gather.is_full() {
            // Later replies are framed into a new tail.
            let _ = gather.push(SendBuf::Owned(mem::take(&mut self.queued)));
        }
        SendBuf::Gathered(gather)
    }

    /// A send completed with `left` bytes of it still to send (then resent
    /// at once: it stays in flight).
    #[inline]
    pub(crate) fn sent(&mut self, left: usize) {
        self.sending = left;
        self.in_flight = left > 0;
    }

    /// Pause or resume reading by the marks: paused above `high`, resumed at
    /// or below `low`.
    #[inline]
    pub(crate) fn update_pause(&mut self, low: usize, high: usize) -> Pause {
        let queued = self.len();
        if self.paused && queued <= low {
            self.paused = false;
            Pause::Resumed
        } else if !self.paused && queued > high {
            self.paused = true;
            Pause::Paused
        } else {
            Pause::Same
        }
    }
}

/// A worker's spare output buffers, and the bound on each of its
/// connections' output. (Received buffers belong to the port's pool: see
/// `give_buffer`.)
#[derive(Debug)]
pub(crate) struct Spares {
    bufs: Vec<Vec<u8>>,
    /// Empty gathers of completed sends, to gather the next ones into.
    gathers: Vec<Gather>,
    /// The usual buffer size: larger ones are not kept past four times it.
    size: usize,
    /// Output a connection may have queued or in flight (`max_output`).
    max_output: usize,
}

impl Spares {
    /// No spares yet; buffers up to `4 * size` are kept; a connection's output
    /// is bounded by `max_output`.
    pub(crate) fn new(size: usize, max_output: usize) -> Spares {
        Spares {
            bufs: Vec::new(),
            gathers: Vec::new(),
            size,
            max_output,
        }
    }

    /// A spare buffer, or an empty one without memory.
    #[inline]
    pub(crate) fn take(&mut self) -> Vec<u8> {
        self.bufs.pop().unwrap_or_default()
    }

    /// A spare buffer, if one is kept.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<Vec<u8>> {
        self.bufs.pop()
    }

    /// Spares kept.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.bufs.len()
    }

    /// An empty gather: a spare one (its memory kept), or a new one.
    #[inline]
    pub(crate) fn take_gather(&mut self) -> Gather {
        self.gathers.pop().unwrap_or_default()
    }

    /// Take back what a completed send held: an owned buffer is kept (see
    /// [`Spares::recycle`]), a shared one dropped (this connection's
    /// reference), a gather emptied (its owned parts kept) and kept.
    pub(crate) fn recycle_sent(&mut self, buf: SendBuf) {
        match buf {
            SendBuf::Owned(buf) => self.recycle(buf),
            SendBuf::Shared(_) => {}
            SendBuf::Gathered(mut gather) => {
                for part in gather.drain() {
                    if let SendBuf::Owned(buf) = part {
                        self.recycle(buf);
                    }
                }
                if self.gathers.len() < SPARES_LIMIT {
                    self.gathers.push(gather);
                }
            }
        }
    }

    /// Keep a buffer (emptied), unless there are enough, it has no memory or
    /// it grew large.
    #[inline]
    pub(crate) fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.bufs.len() < SPARES_LIMIT && buf.capacity() <= 4 * self.size && buf.capacity() > 0 {
            buf.clear();
            self.bufs.push(buf);
        }
    }
}
