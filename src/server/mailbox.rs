//! A worker's mailbox: what other threads hand it between turns (sockets
//! accepted for it, output pushed to its connections, requests to close or abort one),
//! and the ids of its open connections that may be written to.
//!
//! Cost to the worker: one atomic load per turn while the box is empty; the
//! lock is taken only when something was posted.

use std::collections::HashSet;
use std::mem;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use socket2::Socket;

use super::admission::Admission;
use super::event::ConnectionId;
use super::lock::lock;

/// One thing posted to a worker, applied at its next turn in posting order.
pub(crate) enum Letter {
    /// A socket accepted for this worker, already counted under `max_connections`.
    Adopt {
        socket: Socket,
        peer: SocketAddr,
        admission: Admission,
    },
    /// Framed bytes to queue on a connection's output.
    Send { id: ConnectionId, framed: Vec<u8> },
    /// Stop reading a connection, flush its output, close it.
    Close { id: ConnectionId },
    /// Close a connection now, dropping its queued output.
    Abort { id: ConnectionId },
}

#[derive(Default)]
struct Contents {
    letters: Vec<Letter>,
    /// Connections open for writing from outside (only when events are on:
    /// without them no one outside knows an id).
    open: HashSet<ConnectionId>,
    /// The worker has stopped: nothing is accepted any more.
    shut: bool,
}

/// The mailbox of one worker.
#[derive(Default)]
pub(crate) struct Mailbox {
    /// Set when a letter is posted, cleared by the worker before it takes them.
    posted: AtomicBool,
    contents: Mutex<Contents>,
}

impl Mailbox {
    /// Post a letter. Returns whether the worker must be woken (the box was
    /// empty), or `Err` with the letter if the worker has stopped.
    pub(crate) fn post(&self, letter: Letter) -> Result<bool, Letter> {
        {
            let mut contents = lock(&self.contents);
            if contents.shut {
                return Err(letter);
            }
            contents.letters.push(letter);
        }
        Ok(!self.posted.swap(true, Ordering::SeqCst))
    }

    /// Post a letter for connection `id` if it is open (see [`Mailbox::opened`]).
    /// Returns whether the worker must be woken, or `Err` if `id` is not open.
    pub(crate) fn post_to(&self, id: ConnectionId, letter: Letter) -> Result<bool, ()> {
        {
            let mut contents = lock(&self.contents);
            if contents.shut || !contents.open.contains(&id) {
                return Err(());
            }
            contents.letters.push(letter);
        }
        Ok(!self.posted.swap(true, Ordering::SeqCst))
    }

    /// Move every posted letter into `into` (the worker, once per turn).
    #[inline]
    pub(crate) fn take(&self, into: &mut Vec<Letter>) {
        if !self.posted.load(Ordering::SeqCst) {
            return;
        }
        self.posted.store(false, Ordering::SeqCst);
        let mut contents = lock(&self.contents);
        if into.is_empty() {
            mem::swap(into, &mut contents.letters);
        } else {
            into.append(&mut contents.letters);
        }
    }

    /// Connection `id` may now be written to from outside.
    pub(crate) fn opened(&self, id: ConnectionId) {
        lock(&self.contents).open.insert(id);
    }

    /// Connection `id` is closed: letters for it are refused from now on.
    pub(crate) fn closed(&self, id: ConnectionId) {
        lock(&self.contents).open.remove(&id);
    }

    /// The worker stopped: refuse every letter from now on, and drop those
    /// not taken (their sockets close, their admissions are released).
    pub(crate) fn shut(&self) {
        let letters = {
            let mut contents = lock(&self.contents);
            contents.shut = true;
            contents.open.clear();
            mem::take(&mut contents.letters)
        };
        drop(letters);
    }
}
