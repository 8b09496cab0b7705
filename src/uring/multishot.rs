//! Multishot receives: one armed SQE per socket that keeps receiving, fitted to
//! the port's one-completion-per-recv contract.
//!
//! A port-chosen recv (capacity 0) is not posted as an SQE of its own. The
//! socket's *stream* keeps a multishot recv (`IORING_RECV_MULTISHOT`, selecting
//! from the provided-buffer ring) armed in the kernel, so the poll behind it
//! stays registered between messages instead of being set up and torn down for
//! every recv. Each CQE it posts answers the caller's waiting recv if there is
//! one, or is queued for the next recv, which then completes at once.
//!
//! The queue is bounded: once [`QUEUE_LIMIT`] completions wait unclaimed (the
//! caller stopped reading, e.g. for backpressure) the multishot is cancelled,
//! and armed again when a recv finds the queue empty. So a socket holds at most
//! that many received buffers, and the kernel's socket buffer and TCP flow
//! control push back on the peer as before.
//!
//! A multishot ends by itself at end of stream, on an error, or when the
//! provided-buffer ring is empty (`ENOBUFS`). In the last case a waiting recv
//! is posted again as a plain recv into a pooled buffer of its own (the caller
//! sees nothing), like the one-shot path does.
//!
//! Bulk transfers go one-shot: a multishot recv fires as soon as any bytes
//! arrive, so a large message comes in many small pieces (bench/README.md,
//! "Why the port's buffers are sized as they are"). Once a CQE carries
//! [`BULK`] bytes or more, the stream
//! stops its multishot and serves recvs with plain recvs into pooled buffers,
//! until one of those returns less than that with nothing left waiting.
//!
//! Each stream has its own `user_data` (`STREAM_TAG` plus its key), so the
//! CQEs of a multishot still ending after its socket was deregistered (and its
//! descriptor number perhaps reused) never reach the socket's next stream.

use std::collections::{HashMap, VecDeque};
use std::io;

use io_uring::types::Fd;
use io_uring::{cqueue, opcode, squeue};
use slab::Slab;

use super::buf_ring::{RecvMemory, GROUP};
use super::finish::result;
use super::keys::{CANCEL, STREAM_TAG};
use crate::contract::{Completion, Outcome, RawSocket, Token};
/// Completions a stream queues for its caller before it stops receiving.
pub(super) const QUEUE_LIMIT: usize = 2;
/// Bytes in one completion from which a stream counts as a bulk transfer.
pub(super) const BULK: usize = 16 << 10;
/// Small one-shot recvs in a row after which a bulk transfer counts as over.
///
/// Large messages arrive in pieces of every size, so a bulk transfer does not
/// end at its first small recv (which would re-arm and cancel a multishot for
/// nearly every message).
pub(super) const BULK_EXIT: u8 = 4;

/// Where a stream's multishot recv stands in the kernel.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Armed {
    /// Nothing in the kernel.
    No,
    /// Receiving.
    Yes,
    /// Cancelled, or ended in the kernel; its last CQE is still to come.
    Ending,
}

/// One socket's multishot recv and the completions it produced.
struct Stream {
    socket: RawSocket,
    armed: Armed,
    /// Completions not yet claimed by a recv, in arrival order.
    queued: VecDeque<(Vec<u8>, io::Result<usize>)>,
    /// The token of the caller's recv waiting for the next completion.
    waiting: Option<Token>,
    /// The socket was deregistered: the stream goes once its multishot ends.
    orphan: bool,
    /// A bulk transfer: recvs go one-shot.
    bulk: bool,
    /// One-shot recvs in a row that returned less than [`BULK`] bytes with
    /// nothing left waiting (a bulk transfer ends at [`BULK_EXIT`] of them).
    small_run: u8,
}

impl Stream {
    /// Note a CQE of `res` bytes: [`BULK`] or more starts a bulk transfer,
    /// which goes one-shot; true if the armed multishot must be cancelled.
    fn note_bulk(&mut self, res: i32) -> bool {
        if res < BULK as i32 {
            return false;
        }
        self.bulk = true;
        self.armed == Armed::Yes
    }

    /// Hand a received item to the waiting recv (its completion), or queue it.
    fn deliver(&mut self, buf: Vec<u8>, result: io::Result<usize>) -> Option<Completion> {
        match self.waiting.take() {
            Some(token) => Some(received(token, buf, result)),
            None => {
                self.queued.push_back((buf, result));
                None
            }
        }
    }
}

/// How the ring serves an op that a multishot stream answers (a port-chosen
/// recv here, an accept in [`super::accept_stream`]).
pub(super) enum Plan {
    /// Complete it now with this queued completion.
    Ready(Completion),
    /// It waits; post this SQE to arm the stream's multishot.
    Arm(squeue::Entry),
    /// It waits for the multishot already armed (or ending).
    Wait,
    /// Post it as an SQE of its own: a recv into a pooled buffer (a bulk
    /// transfer), or an accept while multishot accepts are off.
    OneShot,
}

/// What a stream's CQE asks of the ring.
pub(super) enum Follow {
    /// Nothing.
    None,
    /// Post this SQE.
    Post(squeue::Entry),
    /// Post a plain recv with pooled memory for this waiting token (the
    /// multishot ran out of provided buffers, or the stream went bulk).
    Direct {
        token: Token,
        socket: RawSocket,
        /// Because the provided-buffer ring was empty.
        starved: bool,
    },
}

/// Every stream of a ring.
pub(super) struct Streams {
    streams: Slab<Stream>,
    by_socket: HashMap<RawSocket, usize>,
    /// Recvs waiting in some stream (counted as ops in flight).
    waiting: usize,
    /// False once the kernel refused a multishot recv: recvs go one-shot.
    pub(super) enabled: bool,
}

impl Streams {
    /// No streams yet; multishot recvs are used when `enabled`.
    pub(super) fn new(enabled: bool) -> Streams {
        Streams {
            streams: Slab::new(),
            by_socket: HashMap::new(),
            waiting: 0,
            enabled,
        }
    }

    /// Recvs waiting for a completion.
    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        self.waiting
    }

    /// Multishot recvs the kernel still holds.
    pub(super) fn armed(&self) -> usize {
        self.streams
            .iter()
            .filter(|(_, s)| s.armed != Armed::No)
            .count()
    }

    /// How to serve a port-chosen recv of `socket` under `token`.
    pub(super) fn recv(&mut self, socket: RawSocket, token: Token) -> Plan {
        let streams = &mut self.streams;
        let key = *self.by_socket.entry(socket).or_insert_with(|| {
            streams.insert(Stream {
                socket,
                armed: Armed::No,
                queued: VecDeque::new(),
                waiting: None,
                orphan: false,
                bulk: false,
                small_run: 0,
            })
        });
        let stream = &mut self.streams[key];
        if let Some((buf, result)) = stream.queued.pop_front() {
            return Plan::Ready(received(token, buf, result));
        }
        if stream.bulk && stream.armed == Armed::No {
            return Plan::OneShot;
        }
        debug_assert!(stream.waiting.is_none(), "two recvs on one socket");
        stream.waiting = Some(token);
        self.waiting += 1;
        match stream.armed {
            Armed::No => {
                stream.armed = Armed::Yes;
                Plan::Arm(arm(socket, key))
            }
            // Armed: its next CQE answers; ending: its last CQE arms it again
            // (or, for a bulk transfer, posts the recv one-shot).
            Armed::Yes | Armed::Ending => Plan::Wait,
        }
    }

    /// Note how a one-shot recv of `socket` ended: a bulk transfer is over
    /// once [`BULK_EXIT`] in a row return less than [`BULK`] bytes and leave
    /// nothing waiting.
    pub(super) fn note_one_shot(&mut self, socket: RawSocket, res: i32, flags: u32) {
        if let Some(&key) = self.by_socket.get(&socket) {
            let stream = &mut self.streams[key];
            if !stream.bulk {
                return;
            }
            if res < BULK as i32 && !cqueue::sock_nonempty(flags) {
                stream.small_run += 1;
                if stream.small_run >= BULK_EXIT {
                    stream.bulk = false;
                    stream.small_run = 0;
                }
            } else {
                stream.small_run = 0;
            }
        }
    }

    /// The CQE of stream `key`'s multishot: a completion for `out` (or the
    /// queue), and what the ring must do next.
    pub(super) fn complete(
        &mut self,
        key: usize,
        res: i32,
        flags: u32,
        memory: &mut RecvMemory,
        out: &mut Vec<Completion>,
    ) -> Follow {
        let Some(stream) = self.streams.get_mut(key) else {
            log::error!("io_uring completion for unknown stream {}", key);
            return Follow::None;
        };
        let more = cqueue::more(flags);
        if !more {
            stream.armed = Armed::No;
        }
        let item = carried(
            res,
            flags,
            memory,
            stream.queued.is_empty(),
            &mut self.enabled,
        );
        if stream.orphan {
            if let Some((buf, _)) = item {
                memory.pool.give(buf);
            }
            if !more {
                self.streams.remove(key);
            }
            return Follow::None;
        }
        let mut stop = stream.note_bulk(res);
        if let Some((buf, result)) = item {
            if let Some(completion) = stream.deliver(buf, result) {
                self.waiting -= 1;
                out.push(completion);
            }
        }
        if stream.armed == Armed::Yes && stream.queued.len() >= QUEUE_LIMIT {
            // The caller is not reading: stop receiving until it does.
            stop = true;
        }
        if stop {
            stream.armed = Armed::Ending;
            return Follow::Post(cancel(key));
        }
        self.follow_up(key, res == -libc::ENOBUFS)
    }

    /// What stream `key`, its multishot ended, does for a recv still waiting:
    /// arm it again, or post the recv one-shot (the multishot ran out of
    /// provided buffers, multishots are off, or the stream went bulk).
    fn follow_up(&mut self, key: usize, starved: bool) -> Follow {
        let stream = &mut self.streams[key];
        match (stream.armed, stream.waiting) {
            (Armed::No, Some(token)) if starved || !self.enabled || stream.bulk => {
                stream.waiting = None;
                self.waiting -= 1;
                Follow::Direct {
                    token,
                    socket: stream.socket,
                    starved,
                }
            }
            (Armed::No, Some(_)) => {
                stream.armed = Armed::Yes;
                Follow::Post(arm(stream.socket, key))
            }
            _ => Follow::None,
        }
    }

    /// Forget `socket`: queued buffers go back to the pool; a multishot still
    /// armed is cancelled, and its stream kept until its last CQE.
    pub(super) fn deregister(
        &mut self,
        socket: RawSocket,
        memory: &mut RecvMemory,
    ) -> Option<squeue::Entry> {
        let key = self.by_socket.remove(&socket)?;
        let stream = &mut self.streams[key];
        for (buf, _) in stream.queued.drain(..) {
            memory.pool.give(buf);
        }
        if stream.waiting.take().is_some() {
            log::error!(
                "io_uring: socket {} deregistered with a recv waiting",
                socket
            );
            self.waiting -= 1;
        }
        match stream.armed {
            Armed::No => {
                self.streams.remove(key);
                None
            }
            Armed::Yes => {
                stream.orphan = true;
                stream.armed = Armed::Ending;
                Some(cancel(key))
            }
            Armed::Ending => {
                stream.orphan = true;
                None
            }
        }
    }

    /// A cancel of `socket`: its waiting recv completes with `ECANCELED` now
    /// (the cancel ends the multishot in the kernel; bytes it still receives
    /// stay queued for a later recv).
    pub(super) fn cancel(&mut self, socket: RawSocket) -> Option<Completion> {
        let key = *self.by_socket.get(&socket)?;
        let token = self.streams[key].waiting.take()?;
        self.waiting -= 1;
        Some(cancelled(token))
    }

    /// End every waiting recv with `ECANCELED` and let no stream arm again
    /// (the ring is closing).
    pub(super) fn close(&mut self, out: &mut Vec<Completion>) {
        for (_, stream) in self.streams.iter_mut() {
            if let Some(token) = stream.waiting.take() {
                out.push(cancelled(token));
            }
            stream.orphan = true;
        }
        self.waiting = 0;
    }
}

/// What a multishot recv's CQE carries for the caller: bytes in the buffer
/// the kernel selected (taken out of the ring), an error, or nothing (the
/// multishot ended by a cancel, for want of buffers, or because the kernel
/// refuses multishot recvs: then `enabled` is cleared). A selected buffer that
/// received nothing goes back to the ring.
fn carried(
    res: i32,
    flags: u32,
    memory: &mut RecvMemory,
    nothing_queued: bool,
    enabled: &mut bool,
) -> Option<(Vec<u8>, io::Result<usize>)> {
    let selected = cqueue::buffer_select(flags);
    if let Some(bid) = selected.filter(|_| res <= 0) {
        memory.recycle(bid);
    }
    match (res, selected) {
        (n, Some(bid)) if n > 0 => Some((memory.take_selected(bid, n as usize), Ok(n as usize))),
        (n, None) if n > 0 => {
            log::error!("io_uring multishot recv of {} bytes named no buffer", n);
            Some((Vec::new(), Err(io::Error::from_raw_os_error(libc::EIO))))
        }
        // Ended by our own cancel, or out of provided buffers: nothing to report.
        (e, _) if e == -libc::ECANCELED || e == -libc::ENOBUFS => None,
        (e, _) if e == -libc::EINVAL && nothing_queued => {
            log::debug!("io_uring refused a multishot recv; recvs go one-shot");
            *enabled = false;
            None
        }
        (res, _) => Some((Vec::new(), result(res))),
    }
}

/// The SQE arming stream `key`'s multishot recv on `socket`.
fn arm(socket: RawSocket, key: usize) -> squeue::Entry {
    opcode::RecvMulti::new(Fd(socket), GROUP)
        .build()
        .user_data(STREAM_TAG | key as u64)
}

/// The SQE cancelling stream `key`'s multishot recv.
fn cancel(key: usize) -> squeue::Entry {
    cancel_multishot(STREAM_TAG | key as u64)
}

/// The SQE cancelling the multishot posted with `user_data` (its completion
/// is the ring's `CANCEL`, which nothing waits for).
pub(super) fn cancel_multishot(user_data: u64) -> squeue::Entry {
    opcode::AsyncCancel::new(user_data)
        .build()
        .user_data(CANCEL)
}

fn cancelled(token: Token) -> Completion {
    let error = io::Error::from_raw_os_error(libc::ECANCELED);
    received(token, Vec::new(), Err(error))
}

fn received(token: Token, buf: Vec<u8>, result: io::Result<usize>) -> Completion {
    Completion {
        token,
        outcome: Outcome::Received { buf, result },
    }
}
