//! A worker's mailbox: what other threads hand it between turns (sockets
//! accepted for it, output pushed to its connections, requests to close or abort one),
//! and the ids of its open connections that may be written to.
//!
//! Cost to the worker: one atomic load per turn while the box is empty; the
//! lock is taken only when something was posted.
//!
//! Bytes pushed to a connection wait here until the worker's next turn; they
//! count against `max_output` already: a connection whose pushed bytes waiting
//! here would pass it is refused further letters and closed as a slow
//! consumer, so a pusher faster than the worker cannot grow the box either.
//!
//! A broadcast is one letter per worker, holding the shared framed bytes and
//! the ids of the connections it was queued to: those open for writing when
//! it was posted, not excluded, and whose pushed bytes stay within the bound
//! with it (it counts for each of them like a push of the same length).

use crate::port::Address;
use std::mem;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use socket2::Socket;

use super::admission::Admission;
use super::event::ConnectionId;
use super::ids::IdMap;
use super::lock::lock;

/// One thing posted to a worker, applied at its next turn in posting order.
pub(crate) enum Letter {
    /// A socket accepted for this worker, already counted under `max_connections`.
    Adopt {
        socket: Socket,
        peer: Address,
        admission: Admission,
    },
    /// Framed bytes to queue on a connection's output.
    Send { id: ConnectionId, framed: Vec<u8> },
    /// Framed bytes shared by every receiver, to queue on the output of each
    /// connection in `ids` still open (a broadcast).
    Broadcast {
        shared: Arc<[u8]>,
        ids: Vec<ConnectionId>,
    },
    /// Stop reading a connection, flush its output, close it.
    Close { id: ConnectionId },
    /// Bytes pushed to a connection passed `max_output` before the worker
    /// took them: close it as a slow consumer.
    Overflow { id: ConnectionId },
    /// Close a connection now, dropping its queued output.
    Abort { id: ConnectionId },
}

/// What the mailbox knows of a connection open for writing.
struct Open {
    /// Bytes of its `Send` letters not yet taken by the worker.
    waiting: usize,
    /// Its output as the worker last published it (queued and in flight).
    output: Arc<AtomicUsize>,
}

#[derive(Default)]
struct Contents {
    letters: Vec<Letter>,
    /// Connections open for writing from outside (only when events are on:
    /// without them no one outside knows an id).
    open: IdMap<Open>,
    /// The worker has stopped: nothing is accepted any more.
    shut: bool,
}

/// Why [`Mailbox::post_to`] refused a letter.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The connection is not open (or the worker stopped).
    Closed,
    /// Its pushed bytes would pass `max_output`: it is being closed as a slow
    /// consumer. `wake`: the worker must be woken to close it.
    Overflowed { wake: bool },
}

/// The mailbox of one worker.
pub(crate) struct Mailbox {
    /// Set when a letter is posted, cleared by the worker before it takes them.
    posted: AtomicBool,
    contents: Mutex<Contents>,
    /// `max_output`: the most bytes pushed to one connection that may wait here.
    max_output: usize,
}

impl Mailbox {
    /// An empty mailbox whose connections may have up to `max_output` pushed
    /// bytes waiting.
    pub(crate) fn new(max_output: usize) -> Mailbox {
        Mailbox {
            posted: AtomicBool::new(false),
            contents: Mutex::default(),
            max_output,
        }
    }

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
    /// Returns whether the worker must be woken, or why the letter was refused.
    pub(crate) fn post_to(&self, id: ConnectionId, letter: Letter) -> Result<bool, Refused> {
        let admitted = {
            let mut contents = lock(&self.contents);
            self.admit(&mut contents, id, letter)
        };
        match admitted {
            Ok(()) => Ok(!self.posted.swap(true, Ordering::SeqCst)),
            Err(Refused::Overflowed { .. }) => Err(Refused::Overflowed {
                wake: !self.posted.swap(true, Ordering::SeqCst),
            }),
            Err(Refused::Closed) => Err(Refused::Closed),
        }
    }

    /// Post framed bytes for several connections under one lock, each as
    /// [`Mailbox::post_to`] would, in order: `(index, id, framed)`, the index
    /// naming the send to the caller. The sends refused are pushed on
    /// `refused` with their index. Returns whether the worker must be woken
    /// (at most one wake, however many were posted).
    pub(crate) fn post_sends(
        &self,
        sends: impl Iterator<Item = (usize, ConnectionId, Vec<u8>)>,
        refused: &mut Vec<(usize, Refused)>,
    ) -> bool {
        let mut posted = false;
        {
            let mut contents = lock(&self.contents);
            for (index, id, framed) in sends {
                match self.admit(&mut contents, id, Letter::Send { id, framed }) {
                    Ok(()) => posted = true,
                    Err(why) => {
                        posted |= matches!(why, Refused::Overflowed { .. });
                        refused.push((index, why));
                    }
                }
            }
        }
        posted && !self.posted.swap(true, Ordering::SeqCst)
    }

    /// Queue `letter` for connection `id` if it is open and its pushed bytes
    /// stay within `max_output`; else refuse it (an overflow queues the
    /// connection's close instead: `Overflowed`, its `wake` to be decided by
    /// the caller). The `posted` flag is the caller's to set.
    fn admit(
        &self,
        contents: &mut Contents,
        id: ConnectionId,
        letter: Letter,
    ) -> Result<(), Refused> {
        if contents.shut {
            return Err(Refused::Closed);
        }
        let waiting = match contents.open.get_mut(&id) {
            Some(open) => &mut open.waiting,
            None => return Err(Refused::Closed),
        };
        if let Letter::Send { framed, .. } = &letter {
            if *waiting + framed.len() > self.max_output {
                contents.open.remove(&id);
                contents.letters.push(Letter::Overflow { id });
                return Err(Refused::Overflowed { wake: false });
            }
            *waiting += framed.len();
        }
        contents.letters.push(letter);
        Ok(())
    }

    /// Post a broadcast of `shared` to every connection open for writing
    /// whose id is not in `exclude` (sorted): one letter, whatever the number
    /// of receivers. A receiver whose pushed bytes would pass `max_output` with
    /// it is closed as a slow consumer instead. Returns the number of
    /// connections it was queued to, and whether the worker must be woken.
    pub(crate) fn post_broadcast(
        &self,
        shared: &Arc<[u8]>,
        exclude: &[ConnectionId],
    ) -> (usize, bool) {
        let len = shared.len();
        let max_output = self.max_output;
        let mut contents = lock(&self.contents);
        if contents.shut {
            return (0, false);
        }
        let Contents { letters, open, .. } = &mut *contents;
        let before = letters.len();
        let mut ids = Vec::with_capacity(open.len());
        open.retain(|id, conn| {
            if exclude.binary_search(id).is_ok() {
                return true;
            }
            if conn.waiting + len > max_output {
                letters.push(Letter::Overflow { id: *id });
                return false;
            }
            conn.waiting += len;
            ids.push(*id);
            true
        });
        let queued = ids.len();
        if queued > 0 {
            let shared = Arc::clone(shared);
            letters.push(Letter::Broadcast { shared, ids });
        }
        let posted = letters.len() > before;
        drop(contents);
        if !posted {
            return (0, false);
        }
        (queued, !self.posted.swap(true, Ordering::SeqCst))
    }

    /// Move every posted letter into `into` (the worker, once per turn).
    #[inline]
    pub(crate) fn take(&self, into: &mut Vec<Letter>) {
        if !self.posted.load(Ordering::SeqCst) {
            return;
        }
        self.posted.store(false, Ordering::SeqCst);
        let mut contents = lock(&self.contents);
        let Contents { letters, open, .. } = &mut *contents;
        for letter in letters.iter() {
            match letter {
                Letter::Send { id, framed } => {
                    if let Some(open) = open.get_mut(id) {
                        open.waiting = open.waiting.saturating_sub(framed.len());
                    }
                }
                Letter::Broadcast { shared, ids } => {
                    for id in ids {
                        if let Some(open) = open.get_mut(id) {
                            open.waiting = open.waiting.saturating_sub(shared.len());
                        }
                    }
                }
                _ => {}
            }
        }
        if into.is_empty() {
            mem::swap(into, letters);
        } else {
            into.append(letters);
        }
    }

    /// Connection `id` may now be written to from outside; the worker
    /// publishes the length of its output in `output`.
    pub(crate) fn opened(&self, id: ConnectionId, output: Arc<AtomicUsize>) {
        let open = Open { waiting: 0, output };
        lock(&self.contents).open.insert(id, open);
    }

    /// The bytes queued for connection `id`: pushed and not yet taken by the
    /// worker, plus its output as the worker last published it; `None` if it
    /// is not open.
    pub(crate) fn buffered(&self, id: ConnectionId) -> Option<usize> {
        let contents = lock(&self.contents);
        let open = contents.open.get(&id)?;
        Some(open.waiting + open.output.load(Ordering::Relaxed))
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Letter, Mailbox, Refused};

    fn send(mailbox: &Mailbox, id: u64, len: usize) -> Result<bool, Refused> {
        let framed = vec![0; len];
        mailbox.post_to(id, Letter::Send { id, framed })
    }

    #[test]
    fn pushed_bytes_waiting_count_against_max_output() {
        let mailbox = Mailbox::new(100);
        assert_eq!(send(&mailbox, 7, 10), Err(Refused::Closed), "not open yet");
        mailbox.opened(7, Default::default());
        assert_eq!(send(&mailbox, 7, 60), Ok(true), "the first letter wakes");
        assert_eq!(send(&mailbox, 7, 40), Ok(false));
        // Taken by the worker: the bytes no longer wait here.
        let mut taken = Vec::new();
        mailbox.take(&mut taken);
        assert_eq!(taken.len(), 2);
        assert_eq!(send(&mailbox, 7, 100), Ok(true));
        // 100 waiting, one more byte would pass max_output: refused, and closed.
        assert_eq!(
            send(&mailbox, 7, 1),
            Err(Refused::Overflowed { wake: false })
        );
        assert_eq!(send(&mailbox, 7, 1), Err(Refused::Closed));
        taken.clear();
        mailbox.take(&mut taken);
        assert!(matches!(taken.last(), Some(Letter::Overflow { id: 7 })));
        assert_eq!(taken.len(), 2, "the 100 bytes, then the overflow");
    }

    #[test]
    fn a_broadcast_is_one_letter_counted_for_each_receiver() {
        let mailbox = Mailbox::new(100);
        for id in [1, 2, 3] {
            mailbox.opened(id, Default::default());
        }
        assert_eq!(send(&mailbox, 3, 50), Ok(true));
        let shared: Arc<[u8]> = Arc::from(vec![7u8; 60]);
        // 2 excluded, 3 would pass the bound: closed; only 1 receives it.
        assert_eq!(mailbox.post_broadcast(&shared, &[2]), (1, false));
        assert_eq!(mailbox.buffered(1), Some(60));
        assert_eq!(mailbox.buffered(3), None, "closed as a slow consumer");
        let mut taken = Vec::new();
        mailbox.take(&mut taken);
        assert_eq!(mailbox.buffered(1), Some(0), "taken by the worker");
        let ids: Vec<_> = taken
            .iter()
            .filter_map(|letter| match letter {
                Letter::Broadcast { ids, shared: s } => {
                    assert!(Arc::ptr_eq(s, &shared), "the same bytes, not a copy");
                    Some(ids.clone())
                }
                _ => None,
            })
            .collect();
        assert_eq!(ids, vec![vec![1]]);
        assert!(taken
            .iter()
            .any(|l| matches!(l, Letter::Overflow { id: 3 })));
        // Nobody left to receive it: nothing posted.
        assert_eq!(mailbox.post_broadcast(&shared, &[1, 2]), (0, false));
    }

    #[test]
    fn several_sends_are_posted_under_one_wake_each_as_post_to_would() {
        let mailbox = Mailbox::new(100);
        for id in [1, 2] {
            mailbox.opened(id, Default::default());
        }
        let sends = vec![
            (0, 1, vec![1; 10]),
            (1, 9, vec![9; 10]),
            (2, 2, vec![2; 101]),
            (3, 1, vec![1; 20]),
        ];
        let mut refused = Vec::new();
        assert!(
            mailbox.post_sends(sends.into_iter(), &mut refused),
            "one wake"
        );
        assert_eq!(
            refused,
            vec![
                (1, Refused::Closed),
                (2, Refused::Overflowed { wake: false })
            ]
        );
        assert_eq!(mailbox.buffered(1), Some(30));
        assert_eq!(mailbox.buffered(2), None, "closed as a slow consumer");
        let mut taken = Vec::new();
        mailbox.take(&mut taken);
        let order: Vec<(u64, usize)> = taken
            .iter()
            .map(|letter| match letter {
                Letter::Send { id, framed } => (*id, framed.len()),
                Letter::Overflow { id } => (*id, 0),
                _ => panic!("only sends and an overflow were posted"),
            })
            .collect();
        assert_eq!(order, vec![(1, 10), (2, 0), (1, 20)], "in posting order");
        // Posted to a box not yet taken: no second wake.
        assert!(mailbox.post_sends(vec![(0, 1, vec![0; 1])].into_iter(), &mut refused));
        assert!(!mailbox.post_sends(vec![(0, 1, vec![0; 1])].into_iter(), &mut refused));
        // Nothing posted (all refused): no wake.
        mailbox.take(&mut taken);
        assert!(!mailbox.post_sends(vec![(0, 9, vec![0; 1])].into_iter(), &mut refused));
    }

    #[test]
    fn an_overflow_wakes_an_idle_worker() {
        let mailbox = Mailbox::new(10);
        mailbox.opened(3, Default::default());
        assert_eq!(
            send(&mailbox, 3, 11),
            Err(Refused::Overflowed { wake: true })
        );
    }
}
