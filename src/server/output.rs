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
//! **Queue.** In sending order: segments (owned or shared buffers), then the
//! owned tail buffer that replies are framed into. Without a broadcast there
//! are no segments and the tail is sent whole, as one owned buffer, when
//! nothing is in flight. A shared segment (a broadcast framed once for every
//! receiver) is queued by moving the tail, if it holds bytes, into the
//! segments first, so order is kept; its bytes count against the bound like
//! owned ones. Segments are queued straight into [`Gather`]s of up to
//! `MAX_GATHER` buffers each, taken from the worker's [`Spares`] (so their
//! memory is reused and warm): the next send is the first gather, with the
//! tail behind its segments if it has room, as one vectored send, and the
//! gather goes back to the spares at its completion. Many broadcasts queued
//! on a connection cost one send, not one each; an idle connection holds no
//! gather. The worker reaches the queue only through the methods here.

use std::collections::VecDeque;
use std::mem;
use std::sync::Arc;

use crate::port::{Gather, SendBuf};

/// Spare output buffers kept per worker.
const SPARES_LIMIT: usize = 256;

/// A connection's queued output and backpressure state.
#[derive(Debug, Default)]
pub(crate) struct Output {
    /// The segments sent next, ahead of those in `more` and of `queued`.
    segments: Option<Box<Gather>>,
    /// Gathers of segments behind `segments` (a burst of more than
    /// `MAX_GATHER` segments), in order; segments are added to the last.
    more: VecDeque<Box<Gather>>,
    /// The bytes of `segments` and `more`.
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
        if !self.queued.is_empty() || self.in_flight || self.segments.is_some() {
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
        self.segments = None;
        self.more = VecDeque::new();
        self.segments_len = 0;
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
            self.push_segment(SendBuf::Owned(tail), spares);
        }
        self.push_segment(SendBuf::Shared(Arc::clone(shared)), spares);
    }

    /// Queue `part` behind every segment: into the last gather, or a new
    /// one if that is full.
    #[inline]
    fn push_segment(&mut self, part: SendBuf, spares: &mut Spares) {
        self.segments_len += part.len();
        let last = match self.more.back_mut() {
            Some(last) => last,
            None => self.segments.get_or_insert_with(|| spares.take_gather()),
        };
        if let Err(part) = last.push(part) {
            let mut next = spares.take_gather();
            // Cannot fail: empty, and a segment is never gathered.
            let _ = next.push(part);
            self.more.push_back(next);
        }
    }

    /// What to post as the next send, if nothing is in flight and something
    /// is queued (or `force`: the transport has bytes of its own): the tail
    /// buffer when no segment is queued (the usual case, which takes nothing
    /// from `spares`), else the first gather of segments, with the tail
    /// behind them if it has room.
    #[inline]
    pub(crate) fn next_send(&mut self, force: bool, spares: &mut Spares) -> Option<SendBuf> {
        if self.in_flight {
            return None;
        }
        let buf = match self.segments.take() {
            Some(gather) => self.gathered(gather, spares),
            None if self.queued.is_empty() && !force => return None,
            None => SendBuf::Owned(mem::take(&mut self.queued)),
        };
        self.in_flight = true;
        self.sending = buf.len();
        Some(buf)
    }

    /// The send of `gather`, the first gather of segments (taken out of the
    /// queue): the tail joins it if it was the last and has room; a lone
    /// buffer is sent as it is and the gather kept for later.
    fn gathered(&mut self, mut gather: Box<Gather>, spares: &mut Spares) -> SendBuf {
        self.segments_len -= gather.len();
        self.segments = self.more.pop_front();
        if self.more.is_empty() && self.more.capacity() > 0 {
            // Only a burst made it: an idle connection keeps no memory.
            self.more = VecDeque::new();
        }
        if self.segments.is_none() && !self.queued.is_empty() && !gather.is_full() {
            // Later replies are framed into a new tail.
            let _ = gather.push(SendBuf::Owned(mem::take(&mut self.queued)));
        }
        if gather.part_count() == 1 {
            let lone = gather.drain().next();
            if let Some(lone) = lone {
                spares.keep_gather(gather);
                return lone;
            }
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
    /// Empty gathers of completed sends, to gather the next ones into (at
    /// most `SPARES_LIMIT`, each keeping room for as many parts as it once
    /// held: at most `MAX_GATHER`, about 48 KiB). Boxed as sends carry them
    /// (`SendBuf::Gathered`): kept and handed out without moving them.
    #[allow(clippy::vec_box)]
    gathers: Vec<Box<Gather>>,
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
    pub(crate) fn take_gather(&mut self) -> Box<Gather> {
        self.gathers.pop().unwrap_or_default()
    }

    /// Keep an empty gather, unless there are enough.
    #[inline]
    pub(crate) fn keep_gather(&mut self, gather: Box<Gather>) {
        debug_assert!(gather.part_count() == 0);
        if self.gathers.len() < SPARES_LIMIT {
            self.gathers.push(gather);
        }
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
                self.keep_gather(gather);
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Output, Spares};
    use crate::port::{SendBuf, MAX_GATHER};

    /// Send everything queued, one send at a time (each completing whole);
    /// the bytes in sending order and the number of parts of each send.
    fn flush(output: &mut Output, spares: &mut Spares) -> (Vec<u8>, Vec<usize>) {
        let (mut bytes, mut parts) = (Vec::new(), Vec::new());
        while let Some(buf) = output.next_send(false, spares) {
            assert!(output.next_send(false, spares).is_none(), "one in flight");
            assert!(output.len() >= buf.len(), "in flight bytes count");
            bytes.extend_from_slice(&buf.to_vec());
            parts.push(buf.parts().count());
            output.sent(0);
            spares.recycle_sent(buf);
        }
        assert_eq!(output.len(), 0);
        (bytes, parts)
    }

    fn shared(bytes: &[u8]) -> Arc<[u8]> {
        Arc::from(bytes)
    }

    #[test]
    fn replies_alone_go_as_one_owned_buffer() {
        let (mut output, mut spares) = (Output::default(), Spares::new(64, 1 << 20));
        output.push(b"one".to_vec(), &mut spares);
        output.push(b"two".to_vec(), &mut spares);
        let buf = output.next_send(false, &mut spares).unwrap();
        assert!(matches!(&buf, SendBuf::Owned(b) if b == b"onetwo"));
    }

    #[test]
    fn broadcasts_and_replies_queued_together_go_in_one_send_in_order() {
        let (mut output, mut spares) = (Output::default(), Spares::new(64, 1 << 20));
        let (a, b) = (shared(b"A"), shared(b"B"));
        output.push(b"r1".to_vec(), &mut spares);
        output.push_shared(&a, &mut spares);
        output.push_shared(&b, &mut spares);
        output.push(b"r2".to_vec(), &mut spares);
        assert_eq!(output.len(), 6);
        let (bytes, parts) = flush(&mut output, &mut spares);
        assert_eq!((&bytes[..], parts), (&b"r1ABr2"[..], vec![4]));
        assert_eq!(Arc::strong_count(&a), 1, "the gather let go of its parts");
    }

    #[test]
    fn a_lone_broadcast_is_sent_as_it_is() {
        let (mut output, mut spares) = (Output::default(), Spares::new(64, 1 << 20));
        let a = shared(b"A");
        output.push_shared(&a, &mut spares);
        let buf = output.next_send(false, &mut spares).unwrap();
        assert!(matches!(&buf, SendBuf::Shared(s) if Arc::ptr_eq(s, &a)));
    }

    #[test]
    fn more_segments_than_one_gather_holds_go_in_several_sends_in_order() {
        let (mut output, mut spares) = (Output::default(), Spares::new(64, 1 << 20));
        let pieces: Vec<Arc<[u8]>> = (0..2 * MAX_GATHER + 10)
            .map(|i| shared(format!("{},", i).as_bytes()))
            .collect();
        let mut want = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            output.push_shared(piece, &mut spares);
            want.extend_from_slice(piece);
            if i % 100 == 0 {
                output.push(b"r;".to_vec(), &mut spares);
                want.extend_from_slice(b"r;");
            }
        }
        // Behind a send in flight, more queues up: it goes in a later send.
        let first = output.next_send(false, &mut spares).unwrap();
        assert_eq!(first.parts().count(), MAX_GATHER);
        output.push(b"late".to_vec(), &mut spares);
        want.extend_from_slice(b"late");
        output.sent(0);
        let (rest, parts) = flush(&mut output, &mut spares);
        let mut bytes = first.to_vec();
        bytes.extend_from_slice(&rest);
        assert!(bytes == want, "other bytes or another order");
        assert!(parts.iter().all(|&n| n <= MAX_GATHER), "{:?}", parts);
        spares.recycle_sent(first);
        assert!(pieces.iter().all(|p| Arc::strong_count(p) == 1));
    }
}
