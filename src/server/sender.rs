//! Output to a connection from outside its turn: from another thread, or from a
//! handler about a connection other than the frame's.
//!
//! A [`ConnectionSender`] frames the payload with the server's codec and posts
//! it to the mailbox of the connection's worker (`id % workers`), waking that
//! worker if its box was empty. The worker queues it at its next turn, behind
//! the replies already queued on the connection, in posting order, under the
//! same backpressure accounting as replies. A broadcast is framed once and
//! posted as one letter per worker.

use std::fmt;
use std::sync::Arc;

use super::event::ConnectionId;
use super::mailbox::{Letter, Refused};
use super::shared::Shared;
use crate::framing::FrameError;
use crate::port::Waker;

/// Why [`ConnectionSender::send`], [`ConnectionSender::close`] or
/// [`ConnectionSender::abort`] did nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// No such connection is open: it closed (its `Close` event may not have
    /// been handled yet), it never existed, the server is closing, or the
    /// handler does not take events (then no id is ever open for sending).
    Closed,
    /// The codec cannot frame the payload (a line holding the delimiter, a
    /// length over the prefix).
    Unframable(FrameError),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed => f.write_str("connection closed"),
            SendError::Unframable(e) => write!(f, "cannot frame the payload: {}", e),
        }
    }
}

impl std::error::Error for SendError {}

/// Queues output to, or closes, a server's connections from any thread.
/// Cloneable; never blocks on I/O.
///
/// A connection can be written to from its `Open` event until its `Close`
/// event; bytes posted just as it closes are dropped with it.
#[derive(Clone)]
pub struct ConnectionSender {
    shared: Arc<Shared>,
    wakers: Arc<Vec<Waker>>,
}

impl ConnectionSender {
    pub(crate) fn new(shared: Arc<Shared>, wakers: Vec<Waker>) -> ConnectionSender {
        ConnectionSender {
            shared,
            wakers: Arc::new(wakers),
        }
    }

    /// Queue `payload`, framed by the server's codec, on connection `id`.
    pub fn send(&self, id: ConnectionId, payload: &[u8]) -> Result<(), SendError> {
        let framed = self.frame(payload)?;
        self.post(id, Letter::Send { id, framed })
    }

    /// [`send`](ConnectionSender::send) each `(id, payload)`, in order, with
    /// one mailbox lock and at most one wake per worker for them all (not one
    /// per payload). Returns the index and error of each one refused (empty if
    /// none was); the others are queued.
    pub fn send_each(&self, payloads: &[(ConnectionId, &[u8])]) -> Vec<(usize, SendError)> {
        let mut failed = Vec::new();
        let mut framed = Vec::with_capacity(payloads.len());
        for (index, (id, payload)) in payloads.iter().enumerate() {
            match self.frame(payload) {
                Ok(bytes) => framed.push((index, *id, bytes)),
                Err(e) => failed.push((index, e)),
            }
        }
        self.post_framed(framed, &mut failed);
        failed.sort_by_key(|(index, _)| *index);
        failed
    }

    /// `payload` framed by the server's codec, for [`post_framed`](ConnectionSender::post_framed).
    pub(crate) fn frame(&self, payload: &[u8]) -> Result<Vec<u8>, SendError> {
        let mut framed = Vec::with_capacity(payload.len() + 8);
        self.shared
            .config
            .framing
            .encode_into(payload, &mut framed)
            .map_err(SendError::Unframable)?;
        Ok(framed)
    }

    /// Post framed bytes `(index, id, framed)` to their connections, in order
    /// per connection: one mailbox lock and at most one wake per worker. The
    /// index and error of each one refused is pushed on `failed`.
    pub(crate) fn post_framed(
        &self,
        mut framed: Vec<(usize, ConnectionId, Vec<u8>)>,
        failed: &mut Vec<(usize, SendError)>,
    ) {
        if framed.is_empty() {
            return;
        }
        if self.shared.stopping() || self.wakers.is_empty() {
            failed.extend(
                framed
                    .iter()
                    .map(|(index, _, _)| (*index, SendError::Closed)),
            );
            return;
        }
        let workers = self.wakers.len() as u64;
        if workers > 1 {
            // Stable: each connection's sends keep their order.
            framed.sort_by_key(|(_, id, _)| id % workers);
        }
        let mut refused = Vec::new();
        let mut sends = framed.into_iter().peekable();
        while let Some(&(_, id, _)) = sends.peek() {
            let worker = (id % workers) as usize;
            let mine = std::iter::from_fn(|| match sends.peek() {
                Some((_, id, _)) if (id % workers) as usize == worker => sends.next(),
                _ => None,
            });
            let wake = self.shared.mailboxes[worker].post_sends(mine, &mut refused);
            self.wake(worker, wake);
        }
        failed.extend(
            refused
                .into_iter()
                .map(|(index, _)| (index, SendError::Closed)),
        );
    }

    /// Queue `payload`, framed once by the server's codec, on every connection
    /// open for writing (from its `Open` event until its `Close` event) whose
    /// id is not in `exclude`, on every worker. The framed bytes are one
    /// reference-counted buffer shared by all receivers, never copied per
    /// connection. Returns the number of connections it was queued to;
    /// connections closing meanwhile drop it with the rest of their output.
    /// A receiver whose pushed bytes would pass `max_output` with it is
    /// closed as a slow consumer instead (and not counted).
    pub fn broadcast(&self, payload: &[u8], exclude: &[ConnectionId]) -> Result<usize, FrameError> {
        let mut framed = Vec::with_capacity(payload.len() + 8);
        self.shared
            .config
            .framing
            .encode_into(payload, &mut framed)?;
        if self.shared.stopping() || self.wakers.is_empty() {
            return Ok(0);
        }
        let shared: Arc<[u8]> = Arc::from(framed);
        let mut exclude = exclude.to_vec();
        exclude.sort_unstable();
        let mut queued = 0;
        for (worker, mailbox) in self.shared.mailboxes.iter().enumerate() {
            let (count, wake) = mailbox.post_broadcast(&shared, &exclude);
            queued += count;
            self.wake(worker, wake);
        }
        Ok(queued)
    }

    /// Stop reading connection `id`, send what is queued for it, then close
    /// it (its `Close` event says [`Requested`](super::CloseReason::Requested)).
    pub fn close(&self, id: ConnectionId) -> Result<(), SendError> {
        self.post(id, Letter::Close { id })
    }

    /// Close connection `id` now, dropping what is queued for it (its
    /// `Close` event says [`Requested`](super::CloseReason::Requested)).
    pub fn abort(&self, id: ConnectionId) -> Result<(), SendError> {
        self.post(id, Letter::Abort { id })
    }

    /// The bytes queued for connection `id` and not yet sent (asyncio's
    /// `get_write_buffer_size`): what was pushed and not yet taken by its
    /// worker, plus its output as the worker last published it (at the end of
    /// each of its turns that touched the connection). `None` once closed.
    pub fn write_buffer_size(&self, id: ConnectionId) -> Option<usize> {
        if self.wakers.is_empty() {
            return None;
        }
        let worker = (id % self.wakers.len() as u64) as usize;
        self.shared.mailboxes[worker].buffered(id)
    }

    /// Whether connection `id`'s [`write_buffer_size`](Self::write_buffer_size)
    /// is above `high_water`: what was pushed passed the mark, so its worker
    /// pauses the connection once it takes it, if it has not already.
    pub fn above_high_water(&self, id: ConnectionId) -> bool {
        // Not `Option::is_some_and`: this file builds on Rust 1.63 (the Windows leg).
        matches!(self.write_buffer_size(id), Some(size) if size > self.shared.config.high_water)
    }

    fn post(&self, id: ConnectionId, letter: Letter) -> Result<(), SendError> {
        if self.shared.stopping() || self.wakers.is_empty() {
            return Err(SendError::Closed);
        }
        let worker = (id % self.wakers.len() as u64) as usize;
        match self.shared.mailboxes[worker].post_to(id, letter) {
            Ok(wake) => {
                self.wake(worker, wake);
                Ok(())
            }
            Err(Refused::Overflowed { wake }) => {
                self.wake(worker, wake);
                Err(SendError::Closed)
            }
            Err(Refused::Closed) => Err(SendError::Closed),
        }
    }

    fn wake(&self, worker: usize, wake: bool) {
        if wake {
            if let Err(e) = self.wakers[worker].wake() {
                log::error!("could not wake worker {}: {}", worker, e);
            }
        }
    }
}
