//! The message handler a server calls, and the batch of frames it is given.
//!
//! A worker collects every frame decoded from one batch of completions, calls
//! [`Handler::handle`] once with all of them (so a Python handler attaches to the
//! interpreter once per batch), then frames and queues the replies in order.

/// What to do with each frame; implemented by the Python bindings, by tests,
/// and by Rust users. A server without a handler echoes natively.
pub trait Handler: Send + Sync + 'static {
    /// Answer every frame of `batch` with [`Batch::reply`], or [`Batch::fail`] to
    /// close its connection; a frame left alone gets no reply.
    fn handle(&self, batch: &mut Batch);

    /// Run a worker's whole loop inside `run`. The default just calls it; the
    /// Python handler uses it to give the worker thread one interpreter thread
    /// state for its life, so each batch attaches cheaply instead of creating
    /// and destroying a thread state.
    fn worker_scope(&self, run: &mut dyn FnMut()) {
        run()
    }
}

/// The answer to one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// No reply.
    Nothing,
    /// Reply with `replies[start..end]`.
    Data(usize, usize),
    /// Close the connection.
    Fail,
}

/// Frames received in one turn of a worker, with room for their replies.
#[derive(Debug, Default)]
pub struct Batch {
    data: Vec<u8>,
    spans: Vec<(usize, usize)>,
    /// For each frame, the connection's table key and id.
    pub(crate) owners: Vec<(usize, u64)>,
    replies: Vec<u8>,
    pub(crate) outcomes: Vec<Reply>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
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
        let (start, end) = self.spans[i];
        &self.data[start..end]
    }

    /// Reply to frame `i` with `payload` (framed by the server's codec).
    pub fn reply(&mut self, i: usize, payload: &[u8]) {
        let start = self.replies.len();
        self.replies.extend_from_slice(payload);
        self.outcomes[i] = Reply::Data(start, self.replies.len());
    }

    /// Close the connection of frame `i` (its later frames in the batch are dropped).
    pub fn fail(&mut self, i: usize) {
        self.outcomes[i] = Reply::Fail;
    }

    /// Add a frame received on connection `owner`.
    pub(crate) fn push(&mut self, owner: (usize, u64), payload: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(payload);
        self.spans.push((start, self.data.len()));
        self.owners.push(owner);
        self.outcomes.push(Reply::Nothing);
    }

    /// The bytes of a reply recorded by [`Batch::reply`].
    pub(crate) fn reply_bytes(&self, start: usize, end: usize) -> &[u8] {
        &self.replies[start..end]
    }

    /// Empty the batch, keeping its allocations.
    pub(crate) fn clear(&mut self) {
        self.data.clear();
        self.spans.clear();
        self.owners.clear();
        self.replies.clear();
        self.outcomes.clear();
    }
}
