//! Multishot accepts: one armed SQE per listening socket that keeps accepting,
//! fitted to the port's one-completion-per-accept contract.
//!
//! An [`crate::contract::Op::Accept`] is not posted as an SQE of its own. The
//! listener's *stream* keeps a multishot accept (`IORING_ACCEPT_MULTISHOT`,
//! Linux 5.19) armed in the kernel, so the poll behind it stays registered
//! between connections instead of being set up and torn down for every accept.
//! Each CQE it posts (a new descriptor, or an error) answers the oldest waiting
//! accept if there is one, or is queued for the next accept, which then
//! completes at once. The peer address is read with `getpeername` when a
//! connection is handed out, as for a one-shot accept (a multishot accept
//! cannot write addresses).
//!
//! The queue is bounded: once [`QUEUE_LIMIT`] connections wait unclaimed (the
//! caller stopped accepting, e.g. while it backs off) the multishot is
//! cancelled, so further connections stay in the kernel's listen backlog, and
//! it is armed again when an accept finds the queue empty. (What one wake-up of
//! the listener accepts in a burst may pass the limit by that burst.)
//!
//! A multishot ends by itself on an error (`EMFILE`, `ENFILE`, `ENOBUFS`,
//! `ENOMEM`, ...): the error reaches the caller as that accept's result, and the
//! multishot is armed again for the next accept waiting or posted. `EINVAL`
//! before any multishot accept of this ring has succeeded means the kernel does
//! not know the flag: multishot accepts are turned off and waiting accepts are
//! posted one-shot (a one-shot accept reports a genuine `EINVAL`, e.g. a socket
//! that is not listening, to the caller).
//!
//! Connections accepted and not yet handed out are owned (and closed) here:
//! when the listener is cancelled or deregistered, when the ring is dropped,
//! and when they arrive for a listener already cancelled or deregistered.
//!
//! Each stream has its own `user_data` (`ACCEPT_TAG` plus its key), so the
//! CQEs of a multishot still ending after its listener was deregistered (and
//! its descriptor number perhaps reused) never reach the next stream.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::unix::io::FromRawFd;

use io_uring::types::Fd;
use io_uring::{cqueue, opcode, squeue};
use slab::Slab;
use socket2::Socket;

use super::finish::with_peer;
use super::keys::ACCEPT_TAG;
use super::multishot::{cancel_multishot, Armed, Plan};
use crate::contract::{Completion, Outcome, RawSocket, Ready, Token};

/// Connections a stream queues for its caller before it stops accepting.
pub(super) const QUEUE_LIMIT: usize = 16;

/// One listener's multishot accept and the connections it produced.
struct Stream {
    listener: RawSocket,
    armed: Armed,
    /// Accept results not yet claimed, in arrival order; a `Socket` closes
    /// its descriptor when dropped.
    queued: VecDeque<io::Result<Socket>>,
    /// The tokens of the caller's accepts waiting, oldest first.
    waiting: VecDeque<Token>,
    /// The listener was cancelled while the multishot was armed: connections
    /// it still accepts before its last CQE, with no accept waiting, are closed.
    cancelled: bool,
    /// The listener was deregistered: the stream goes once its multishot ends.
    orphan: bool,
}

impl Stream {
    /// Hand an accept result to the oldest waiting accept (its completion),
    /// or queue it; one accepted while the listener's cancel was on its way
    /// is closed.
    fn deliver(&mut self, item: io::Result<Socket>) -> Option<Completion> {
        match self.waiting.pop_front() {
            Some(token) => Some(accepted(token, item)),
            None if self.cancelled => None,
            None => {
                self.queued.push_back(item);
                None
            }
        }
    }
}

/// What a stream's CQE asks of the ring.
pub(super) enum AcceptFollow {
    /// Nothing.
    None,
    /// Post this SQE.
    Post(squeue::Entry),
    /// Post these waiting accepts of `listener` one-shot (the kernel refused
    /// the multishot).
    OneShot {
        /// The listener they accept on.
        listener: RawSocket,
        /// Their tokens, oldest first.
        tokens: Vec<Token>,
    },
}

/// Every accept stream of a ring.
pub(super) struct AcceptStreams {
    streams: Slab<Stream>,
    by_listener: HashMap<RawSocket, usize>,
    /// Accepts waiting in some stream (counted as ops in flight).
    waiting: usize,
    /// False once the kernel refused a multishot accept: accepts go one-shot.
    pub(super) enabled: bool,
    /// A multishot accept of this ring delivered a connection: the kernel
    /// knows the flag, so a later `EINVAL` is the listener's own error.
    proven: bool,
}

impl AcceptStreams {
    /// No streams yet; multishot accepts are used when `enabled`.
    pub(super) fn new(enabled: bool) -> AcceptStreams {
        AcceptStreams {
            streams: Slab::new(),
            by_listener: HashMap::new(),
            waiting: 0,
            enabled,
            proven: false,
        }
    }

    /// Accepts waiting for a connection.
    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        self.waiting
    }

    /// Multishot accepts the kernel still holds.
    pub(super) fn armed(&self) -> usize {
        self.streams
            .iter()
            .filter(|(_, s)| s.armed != Armed::No)
            .count()
    }

    /// Connections (and errors) queued, not yet handed out.
    #[cfg(test)]
    pub(super) fn queued(&self) -> usize {
        self.streams.iter().map(|(_, s)| s.queued.len()).sum()
    }

    /// How to serve an accept on `listener` under `token`.
    pub(super) fn accept(&mut self, listener: RawSocket, token: Token) -> Plan {
        if !self.enabled {
            // Turned off: only what a stream queued before is still served here.
            let queued = self
                .by_listener
                .get(&listener)
                .and_then(|&key| self.streams[key].queued.pop_front());
            return match queued {
                Some(item) => Plan::Ready(accepted(token, item)),
                None => Plan::OneShot,
            };
        }
        let streams = &mut self.streams;
        let key = *self.by_listener.entry(listener).or_insert_with(|| {
            streams.insert(Stream {
                listener,
                armed: Armed::No,
                queued: VecDeque::new(),
                waiting: VecDeque::new(),
                cancelled: false,
                orphan: false,
            })
        });
        let stream = &mut self.streams[key];
        if stream.waiting.is_empty() {
            if let Some(item) = stream.queued.pop_front() {
                return Plan::Ready(accepted(token, item));
            }
        }
        stream.waiting.push_back(token);
        self.waiting += 1;
        match stream.armed {
            Armed::No => {
                stream.armed = Armed::Yes;
                Plan::Arm(arm(listener, key))
            }
            // Armed: a coming CQE answers; ending: its last CQE arms it again.
            Armed::Yes | Armed::Ending => Plan::Wait,
        }
    }

    /// The CQE of stream `key`'s multishot: a completion for `out` (or the
    /// queue), and what the ring must do next.
    pub(super) fn complete(
        &mut self,
        key: usize,
        res: i32,
        flags: u32,
        out: &mut Vec<Completion>,
    ) -> AcceptFollow {
        let connection = if res >= 0 {
            // SAFETY: a successful accept CQE carries a new descriptor that
            // nothing else owns; the `Socket` closes it when dropped.
            Some(unsafe { Socket::from_raw_fd(res) })
        } else {
            None
        };
        let Some(stream) = self.streams.get_mut(key) else {
            log::error!("io_uring completion for unknown accept stream {}", key);
            return AcceptFollow::None;
        };
        let more = cqueue::more(flags);
        if !more {
            stream.armed = Armed::No;
        }
        if res >= 0 || more {
            self.proven = true;
        }
        let item = match connection {
            Some(socket) => Some(Ok(socket)),
            None => self.error_item(res),
        };
        let stream = &mut self.streams[key];
        if stream.orphan {
            drop(item);
            if !more {
                self.streams.remove(key);
            }
            return AcceptFollow::None;
        }
        if let Some(completion) = item.and_then(|item| stream.deliver(item)) {
            self.waiting -= 1;
            out.push(completion);
        }
        if !more {
            stream.cancelled = false;
        }
        if stream.armed == Armed::Yes && stream.queued.len() >= QUEUE_LIMIT {
            // The caller is not accepting: leave connections in the kernel's
            // backlog until it does.
            stream.armed = Armed::Ending;
            return AcceptFollow::Post(cancel(key));
        }
        self.follow_up(key)
    }

    /// What a failed CQE (`res < 0`) reports: nothing for a cancel, nothing
    /// either (multishot accepts turned off) for an `EINVAL` before any
    /// multishot accept worked, else the error.
    fn error_item(&mut self, res: i32) -> Option<io::Result<Socket>> {
        match res {
            e if e == -libc::ECANCELED => None,
            e if e == -libc::EINVAL && !self.proven => {
                log::debug!("io_uring refused a multishot accept; accepts go one-shot");
                self.enabled = false;
                None
            }
            e => Some(Err(io::Error::from_raw_os_error(-e))),
        }
    }

    /// What stream `key`, its multishot ended, does for the accepts still
    /// waiting: arm it again, or post them one-shot (multishots are off).
    fn follow_up(&mut self, key: usize) -> AcceptFollow {
        let stream = &mut self.streams[key];
        if stream.armed != Armed::No || stream.waiting.is_empty() {
            return AcceptFollow::None;
        }
        if !self.enabled {
            let tokens: Vec<Token> = stream.waiting.drain(..).collect();
            self.waiting -= tokens.len();
            return AcceptFollow::OneShot {
                listener: stream.listener,
                tokens,
            };
        }
        stream.armed = Armed::Yes;
        AcceptFollow::Post(arm(stream.listener, key))
    }

    /// The arming SQE of stream `key` never reached the kernel (the ring is
    /// being dropped): no CQE will come for it.
    pub(super) fn unposted(&mut self, key: usize) {
        if let Some(stream) = self.streams.get_mut(key) {
            stream.armed = Armed::No;
            if stream.orphan {
                self.streams.remove(key);
            }
        }
    }

    /// A cancel of `listener`: its waiting accepts complete with `ECANCELED`
    /// (into `ready`) and its queued connections are closed. The ring's cancel
    /// by descriptor ends the multishot in the kernel.
    pub(super) fn cancel(&mut self, listener: RawSocket, ready: &mut Ready) {
        let Some(&key) = self.by_listener.get(&listener) else {
            return;
        };
        let stream = &mut self.streams[key];
        self.waiting -= stream.waiting.len();
        ready.extend(stream.waiting.drain(..).map(cancelled));
        stream.queued.clear();
        if stream.armed != Armed::No {
            stream.armed = Armed::Ending;
            stream.cancelled = true;
        }
    }

    /// Forget `listener`: queued connections are closed, waiting accepts (the
    /// caller should have none) complete with `ECANCELED` into `ready`, and a
    /// multishot still armed is cancelled, its stream kept until its last CQE.
    pub(super) fn deregister(
        &mut self,
        listener: RawSocket,
        ready: &mut Ready,
    ) -> Option<squeue::Entry> {
        let key = self.by_listener.remove(&listener)?;
        let stream = &mut self.streams[key];
        stream.queued.clear();
        if !stream.waiting.is_empty() {
            log::error!(
                "io_uring: listener {} deregistered with {} accepts waiting",
                listener,
                stream.waiting.len()
            );
            self.waiting -= stream.waiting.len();
            ready.extend(stream.waiting.drain(..).map(cancelled));
        }
        stream.orphan = true;
        match stream.armed {
            Armed::No => {
                self.streams.remove(key);
                None
            }
            Armed::Yes => {
                stream.armed = Armed::Ending;
                Some(cancel(key))
            }
            Armed::Ending => None,
        }
    }

    /// End every waiting accept with `ECANCELED`, close every queued
    /// connection, and let no stream arm again (the ring is closing).
    pub(super) fn close(&mut self, out: &mut Vec<Completion>) {
        for (_, stream) in self.streams.iter_mut() {
            out.extend(stream.waiting.drain(..).map(cancelled));
            stream.queued.clear();
            stream.orphan = true;
        }
        self.by_listener.clear();
        self.waiting = 0;
    }
}

/// The SQE arming stream `key`'s multishot accept on `listener`.
fn arm(listener: RawSocket, key: usize) -> squeue::Entry {
    opcode::AcceptMulti::new(Fd(listener))
        .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
        .build()
        .user_data(ACCEPT_TAG | key as u64)
}

/// The SQE cancelling stream `key`'s multishot accept.
fn cancel(key: usize) -> squeue::Entry {
    cancel_multishot(ACCEPT_TAG | key as u64)
}

fn cancelled(token: Token) -> Completion {
    let error = io::Error::from_raw_os_error(libc::ECANCELED);
    accepted(token, Err(error))
}

/// The completion handing out `item`, with the peer address read now.
fn accepted(token: Token, item: io::Result<Socket>) -> Completion {
    Completion {
        token,
        outcome: Outcome::Accepted(item.and_then(with_peer)),
    }
}
