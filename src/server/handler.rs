//! The message handler a server calls, and the batch of frames it is given.
//!
//! A worker collects every frame decoded from one batch of completions, calls
//! [`Handler::handle`] once with all of them (so a Python handler attaches to the
//! interpreter once per batch), then queues the replies in order.
//!
//! **Events.** A handler whose [`Handler::wants_events`] is true also finds in
//! the batch the connections that opened and closed, and those whose reading
//! backpressure paused and resumed ([`Batch::events`]), each placed among the
//! frames: a connection's `Open` comes before its first frame, its `Close`
//! after its last, its `PauseWriting` and `ResumeWriting` alternate (a pause
//! first) after the frames whose replies caused them, and every `Open` gets
//! exactly one `Close` (unless a worker fails, by a panic or a port error, which
//! stops the server); a connection closed while paused gets no `ResumeWriting`.
//! Events of a turn come in the same call as its frames; an event made after
//! that call (an open from the mailbox; a pause, resume or close by the pump) is
//! delivered in a second call before the turn ends. Other handlers pay nothing
//! for them: no event is made.
//!
//! **Copies.** A frame lying whole inside a received chunk is not copied into the
//! batch: the batch keeps that chunk until the turn ends and [`Batch::frame`] is a
//! slice of it. A frame the decoder had to assemble across chunks is taken over
//! when the decoder hands its buffer over (large frames), and copied in only
//! when the decoder keeps its buffer for the next frame (up to 64 KiB). A reply is framed by
//! [`Batch::reply`] straight into its connection's output buffer, which the
//! worker lends the batch for the turn and then sends as it is: the reply's bytes
//! are copied once, into what goes to the socket.

use std::mem;

use super::event::{ConnectionId, Event};
use crate::framing::{Frame, FrameError, Framing};

/// What to do with each frame; implemented by the Python bindings, by tests,
/// and by Rust users. A server without a handler echoes natively.
pub trait Handler: Send + Sync + 'static {
    /// Answer every frame of `batch` with [`Batch::reply`], or [`Batch::fail`] to
    /// close its connection; a frame left alone gets no reply.
    fn handle(&self, batch: &mut Batch);

    /// Whether the batch should also carry connection events ([`Batch::events`]).
    /// Asked once, when the server starts. The default, false, costs nothing.
    fn wants_events(&self) -> bool {
        false
    }

    /// Run a worker's whole loop inside `run`. The default just calls it; the
    /// Python handler uses it to give the worker thread one interpreter thread
    /// state for its life, so each batch attaches cheaply instead of creating
    /// and destroying a thread state.
    fn worker_scope(&self, run: &mut dyn FnMut()) {
        run()
    }
}

/// The answer to one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// No reply.
    Nothing,
    /// The framed reply is `buf[start..end]` of the frame's output.
    Data(usize, usize),
    /// Close the connection.
    Fail,
    /// The reply cannot be framed by the server's codec: close the connection.
    Unframable(FrameError),
}

/// Where a frame's payload lies.
#[derive(Clone, Copy, Debug)]
enum Span {
    /// `chunks[chunk][start..end]`.
    InChunk {
        chunk: usize,
        start: usize,
        end: usize,
    },
    /// `owned[index]`, whole.
    Owned(usize),
    /// `assembled[start..end]`.
    Copied { start: usize, end: usize },
}

/// A connection's output buffer, lent to the batch for the turn: what it had
/// queued, then the framed replies to its frames, in frame order.
#[derive(Debug)]
struct Output {
    owner: (usize, u64),
    buf: Vec<u8>,
    /// The highest frame index whose reply is in `buf`: a reply to a later
    /// frame is appended, one to an earlier frame is inserted in its place.
    last: Option<usize>,
}

/// Frames received in one turn of a worker, with the output their replies go to.
#[derive(Debug)]
pub struct Batch {
    framing: Framing,
    /// Received chunks that frames lie in, kept until the batch is cleared.
    chunks: Vec<Vec<u8>>,
    /// A frame pushed since the last [`Batch::keep_chunk`] lies in the chunk
    /// being decoded, which becomes `chunks[chunks.len()]`.
    chunk_used: bool,
    /// Large payloads the decoder assembled across chunks and handed over.
    owned: Vec<Vec<u8>>,
    /// Other payloads the decoder assembled across chunks, copied.
    assembled: Vec<u8>,
    spans: Vec<Span>,
    /// For each frame, the connection's table key and id.
    pub(crate) owners: Vec<(usize, u64)>,
    /// For each frame, the index of its connection's entry in `outputs`.
    output_of: Vec<usize>,
    outputs: Vec<Output>,
    pub(crate) outcomes: Vec<Reply>,
    /// Where an out-of-order reply is framed before it is inserted.
    scratch: Vec<u8>,
    /// Connection events, each with the number of frames that come before it.
    events: Vec<(usize, Event)>,
}

impl Default for Batch {
    fn default() -> Batch {
        Batch::with_framing(Framing::Raw)
    }
}

impl Batch {
    /// An empty batch whose replies are sent as they are (raw framing).
    pub fn new() -> Batch {
        Batch::default()
    }

    /// An empty batch whose replies are framed by `framing`.
    pub(crate) fn with_framing(framing: Framing) -> Batch {
        Batch {
            framing,
            chunks: Vec::new(),
            chunk_used: false,
            owned: Vec::new(),
            assembled: Vec::new(),
            spans: Vec::new(),
            owners: Vec::new(),
            output_of: Vec::new(),
            outputs: Vec::new(),
            outcomes: Vec::new(),
            scratch: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether the batch holds no frame.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The payload of frame `i`.
    pub fn frame(&self, i: usize) -> &[u8] {
        match self.spans[i] {
            Span::InChunk { chunk, start, end } => &self.chunks[chunk][start..end],
            Span::Owned(index) => &self.owned[index],
            Span::Copied { start, end } => &self.assembled[start..end],
        }
    }

    /// The connection frame `i` came from.
    pub fn connection(&self, i: usize) -> ConnectionId {
        self.owners[i].1
    }

    /// The connection events of this batch, in the order they happened, each
    /// with the number of frames that come before it: event `(n, e)` happened
    /// after frame `n - 1` and before frame `n`. Always empty unless the
    /// handler [wants events](Handler::wants_events).
    pub fn events(&self) -> &[(usize, Event)] {
        &self.events
    }

    /// Add a connection event after the frames pushed so far.
    pub(crate) fn push_event(&mut self, event: Event) {
        self.events.push((self.spans.len(), event));
    }

    /// Whether the batch holds neither frames nor events: the handler need
    /// not be called.
    pub(crate) fn is_spent(&self) -> bool {
        self.spans.is_empty() && self.events.is_empty()
    }

    /// Reply to frame `i` with `payload`, framed by the server's codec. Replies
    /// are sent in frame order whatever the order of the calls; a second reply
    /// to the same frame replaces the first. A payload the codec cannot frame
    /// (a line holding the delimiter, a length over the prefix) closes the
    /// connection, as [`Batch::fail`] does.
    pub fn reply(&mut self, i: usize, payload: &[u8]) {
        if let Reply::Data(..) = self.outcomes[i] {
            self.remove_reply(i);
        }
        let out = &mut self.outputs[self.output_of[i]];
        if !matches!(out.last, Some(last) if last >= i) {
            // The usual case: frames answered in order, framed in place.
            let start = out.buf.len();
            self.outcomes[i] = match self.framing.encode_into(payload, &mut out.buf) {
                Ok(()) => {
                    out.last = Some(i);
                    Reply::Data(start, out.buf.len())
                }
                Err(e) => Reply::Unframable(e),
            };
        } else {
            let mut framed = mem::take(&mut self.scratch);
            framed.clear();
            match self.framing.encode_into(payload, &mut framed) {
                Ok(()) => self.insert_reply(i, &framed),
                Err(e) => self.outcomes[i] = Reply::Unframable(e),
            }
            self.scratch = framed;
        }
    }

    /// Close the connection of frame `i` (its later frames in the batch are dropped).
    pub fn fail(&mut self, i: usize) {
        if let Reply::Data(..) = self.outcomes[i] {
            self.remove_reply(i);
        }
        self.outcomes[i] = Reply::Fail;
    }

    /// Add a frame received on connection `owner`. `chunk` is the received
    /// bytes being decoded (empty when the decoder is finishing): a frame that
    /// lies inside it is kept by reference, provided the caller then hands the
    /// chunk to [`Batch::keep_chunk`]; a frame handed over is kept as it is;
    /// any other is copied. On the first frame of a connection in a row, its
    /// output buffer `output` is lent to the batch (left empty) until
    /// [`Batch::take_outputs`].
    pub(crate) fn push(
        &mut self,
        owner: (usize, u64),
        frame: Frame<'_>,
        chunk: &[u8],
        output: &mut Vec<u8>,
    ) {
        let span = match frame {
            Frame::Owned(buf) => {
                self.owned.push(buf);
                Span::Owned(self.owned.len() - 1)
            }
            Frame::Borrowed(bytes) => match offset_in(bytes, chunk) {
                Some(start) => {
                    self.chunk_used = true;
                    Span::InChunk {
                        chunk: self.chunks.len(),
                        start,
                        end: start + bytes.len(),
                    }
                }
                None => {
                    let start = self.assembled.len();
                    self.assembled.extend_from_slice(bytes);
                    Span::Copied {
                        start,
                        end: self.assembled.len(),
                    }
                }
            },
        };
        if self.outputs.last().map(|o| o.owner) != Some(owner) {
            // A connection seen again after another one's frames gets a second
            // entry (its buffer is empty by now); the worker joins them in order.
            self.outputs.push(Output {
                owner,
                buf: mem::take(output),
                last: None,
            });
        }
        self.spans.push(span);
        self.owners.push(owner);
        self.output_of.push(self.outputs.len() - 1);
        self.outcomes.push(Reply::Nothing);
    }

    /// After the frames of `chunk` were pushed: keep it if a frame lies in it,
    /// else give it back.
    pub(crate) fn keep_chunk(&mut self, chunk: Vec<u8>) -> Option<Vec<u8>> {
        if mem::replace(&mut self.chunk_used, false) {
            self.chunks.push(chunk);
            None
        } else {
            Some(chunk)
        }
    }

    /// Give every lent output buffer that has no memory one from `take`
    /// (a pool), so replies are framed without allocating.
    pub(crate) fn provide_buffers(&mut self, mut take: impl FnMut() -> Option<Vec<u8>>) {
        for out in &mut self.outputs {
            if out.buf.capacity() == 0 {
                if let Some(buf) = take() {
                    out.buf = buf;
                }
            }
        }
    }

    /// The lent output buffers with the replies framed into them, in the order
    /// their connections' frames came (a connection may appear twice).
    pub(crate) fn take_outputs(&mut self) -> impl Iterator<Item = ((usize, u64), Vec<u8>)> + '_ {
        self.outputs.drain(..).map(|out| (out.owner, out.buf))
    }

    /// Empty the batch, keeping its allocations; each kept chunk goes to
    /// `spent`. (Payloads handed over by the decoder are freed, as the decoder
    /// would have freed them.)
    pub(crate) fn clear(&mut self, mut spent: impl FnMut(Vec<u8>)) {
        for chunk in self.chunks.drain(..) {
            spent(chunk);
        }
        self.chunk_used = false;
        self.owned.clear();
        self.assembled.clear();
        self.spans.clear();
        self.owners.clear();
        self.output_of.clear();
        self.outputs.clear();
        self.outcomes.clear();
        self.events.clear();
    }

    /// Take frame `i`'s reply out of its output (a cold path: a frame answered
    /// twice, or failed after a reply).
    #[cold]
    fn remove_reply(&mut self, i: usize) {
        if let Reply::Data(start, end) = self.outcomes[i] {
            let o = self.output_of[i];
            self.outputs[o].buf.drain(start..end);
            self.outcomes[i] = Reply::Nothing;
            self.shift_after(i, start, end, 0);
            let last = (0..self.len())
                .rev()
                .find(|&j| self.output_of[j] == o && matches!(self.outcomes[j], Reply::Data(..)));
            self.outputs[o].last = last;
        }
    }

    /// Insert frame `i`'s framed reply before the replies of its connection's
    /// later frames (a cold path: replies given out of order). Frame `i` has none.
    #[cold]
    fn insert_reply(&mut self, i: usize, framed: &[u8]) {
        let o = self.output_of[i];
        let at = (i + 1..self.len())
            .filter(|&j| self.output_of[j] == o)
            .find_map(|j| match self.outcomes[j] {
                Reply::Data(start, _) => Some(start),
                _ => None,
            })
            .unwrap_or(self.outputs[o].buf.len());
        let buf = &mut self.outputs[o].buf;
        buf.splice(at..at, framed.iter().copied());
        self.shift_after(i, at, at, framed.len());
        self.outcomes[i] = Reply::Data(at, at + framed.len());
    }

    /// Move the replies of frame `i`'s connection after frame `i` by the change
    /// of `buf[start..end]` into `new_len` bytes.
    fn shift_after(&mut self, i: usize, start: usize, end: usize, new_len: usize) {
        let o = self.output_of[i];
        for j in i + 1..self.len() {
            if self.output_of[j] != o {
                continue;
            }
            if let Reply::Data(s, e) = &mut self.outcomes[j] {
                debug_assert!(*s >= end || *e <= start);
                if *s >= end {
                    *s = *s - (end - start) + new_len;
                    *e = *e - (end - start) + new_len;
                }
            }
        }
    }
}

/// Where `frame` starts in `chunk`, if it is not empty and lies wholly inside
/// it. Address arithmetic only: nothing is dereferenced, and live allocations
/// never overlap, so a frame in the decoder's own buffer is never taken for one
/// in the chunk. (An empty frame may point anywhere: it is simply not kept.)
fn offset_in(frame: &[u8], chunk: &[u8]) -> Option<usize> {
    if frame.is_empty() {
        return None;
    }
    let offset = (frame.as_ptr() as usize).wrapping_sub(chunk.as_ptr() as usize);
    if frame.len() <= chunk.len() && offset <= chunk.len() - frame.len() {
        Some(offset)
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
