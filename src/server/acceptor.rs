//! The acceptor: worker 0's listener, the accepts kept posted on it,
//! `max_connections` admission, the pause after the process ran out of
//! descriptors, and the round-robin choice of the worker for each new socket.
//!
//! It posts and cancels through the port it is given and says what the worker
//! must do with each accepted socket; it never touches connections.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::Socket;

use super::admission::{Admission, Gate};
use super::stats::WorkerCounters;
use crate::port::{raw_socket, Address, CompletionPort, Op, Port, Token};

/// The token of the listener's accepts.
pub(crate) const LISTENER: Token = u64::MAX;
/// Accepts kept posted on the listener.
const ACCEPTS_IN_FLIGHT: usize = 4;
/// How long accepting pauses after the process ran out of descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A socket accepted and admitted, for worker `worker` to adopt.
pub(crate) struct Accepted {
    pub(crate) worker: usize,
    pub(crate) socket: Socket,
    pub(crate) peer: Address,
    pub(crate) admission: Admission,
}

/// The listening socket and its accepts.
pub(crate) struct Acceptor {
    socket: Socket,
    gate: Arc<Gate>,
    in_flight: usize,
    /// Accepting is paused until then (descriptors or memory ran out).
    paused_until: Option<Instant>,
    /// The worker the next socket goes to.
    next_worker: usize,
    workers: usize,
    /// Stopped: no more accepts are posted, those in flight were cancelled.
    stopped: bool,
}

impl Acceptor {
    /// Accept on `socket` for `workers` workers, admitting through `gate`.
    pub(crate) fn new(socket: Socket, gate: Arc<Gate>, workers: usize) -> Acceptor {
        Acceptor {
            socket,
            gate,
            in_flight: 0,
            paused_until: None,
            next_worker: 0,
            workers,
            stopped: false,
        }
    }

    /// Associate the listener with `port`, before the first accept.
    pub(crate) fn register(&self, port: &mut Port) -> io::Result<()> {
        port.register(raw_socket(&self.socket))
    }

    /// An accept completed: the socket to adopt, if it is admitted (not
    /// while the server is `stopping`).
    pub(crate) fn on_accept(
        &mut self,
        result: io::Result<(Socket, Address)>,
        stopping: bool,
        counters: &WorkerCounters,
    ) -> Option<Accepted> {
        self.in_flight -= 1;
        let stopping = stopping || self.stopped;
        match result {
            Ok(_) if stopping => None,
            Ok((socket, peer)) => {
                let admission = match Gate::admit(&self.gate) {
                    Ok(admission) => admission,
                    Err(open) => {
                        WorkerCounters::add(&counters.connections_rejected, 1);
                        log::debug!("refusing {}: {} connections open", peer, open);
                        return None;
                    }
                };
                // Small replies should leave at once, not wait for Nagle
                // (TCP only: a Unix socket has no Nagle).
                if !peer.is_unix() {
                    if let Err(e) = socket.set_nodelay(true) {
                        log::debug!("TCP_NODELAY on {}: {}", peer, e);
                    }
                }
                let worker = self.next_worker;
                self.next_worker = (self.next_worker + 1) % self.workers;
                Some(Accepted {
                    worker,
                    socket,
                    peer,
                    admission,
                })
            }
            Err(_) if stopping => None,
            Err(e) => {
                WorkerCounters::add(&counters.accept_errors, 1);
                if out_of_resources(&e) {
                    if self.paused_until.is_none() {
                        log::warn!(
                            "accept failed ({}); pausing accepts for {:?}",
                            e,
                            ACCEPT_BACKOFF
                        );
                    }
                    self.paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                } else {
                    log::debug!("accept failed: {}", e);
                }
                None
            }
        }
    }

    /// Keep `ACCEPTS_IN_FLIGHT` accepts posted, unless paused or stopped.
    pub(crate) fn post(&mut self, port: &mut Port) {
        if self.stopped {
            return;
        }
        if let Some(until) = self.paused_until {
            if Instant::now() < until {
                return;
            }
            self.paused_until = None;
        }
        while self.in_flight < ACCEPTS_IN_FLIGHT {
            self.in_flight += 1;
            port.submit(
                LISTENER,
                Op::Accept {
                    listener: raw_socket(&self.socket),
                },
            );
        }
    }

    /// Until when accepting is paused, if it is.
    pub(crate) fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }

    /// Stop accepting: cancel the accepts in flight (they still complete).
    pub(crate) fn stop(&mut self, port: &mut Port) {
        if !self.stopped {
            self.stopped = true;
            if self.in_flight > 0 {
                port.cancel(raw_socket(&self.socket));
            }
        }
    }

    /// Whether no accept is in flight any more.
    pub(crate) fn idle(&self) -> bool {
        self.in_flight == 0
    }

    /// Forget the listener (once stopped and idle); it closes when dropped.
    pub(crate) fn deregister(self, port: &mut Port) {
        if let Err(e) = port.deregister(raw_socket(&self.socket)) {
            log::debug!("deregister listener: {}", e);
        }
    }
}

/// Errors after which accepting again at once would only fail again.
fn out_of_resources(e: &io::Error) -> bool {
    #[cfg(target_os = "linux")]
    let codes = [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM];
    // WSAEMFILE, WSAENOBUFS.
    #[cfg(windows)]
    let codes = [10024, 10055];
    matches!(e.raw_os_error(), Some(code) if codes.contains(&code))
}
