//! The acceptor: worker 0's listener, the accepts kept posted on it,
//! `max_connections` admission, the pause after the process ran out of
//! descriptors, the round-robin choice of the worker for each new socket,
//! and stopping (the backlog taken, so its connections close cleanly).
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
/// At most this many connections are taken from the backlog when accepting stops.
const BACKLOG_TAKEN: usize = 65536;
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
    /// Stopped: the listener stopped listening; accepts are still posted
    /// to collect the connections the port accepted before (each adopted to
    /// be closed cleanly), until one fails.
    stopped: bool,
    /// No accept is posted any more; those in flight were cancelled.
    cancelled: bool,
    /// Stopped, and an accept failed since: nothing accepted is left.
    exhausted: bool,
    /// Stopping listening hands the backlog to a sibling `SO_REUSEPORT`
    /// listener (the socket joined a group and the kernel migrates).
    migrates: bool,
}

impl Acceptor {
    /// Accept on `socket` for `workers` workers, admitting through `gate`;
    /// `reuse_port`: the socket is one of a `SO_REUSEPORT` group.
    pub(crate) fn new(
        socket: Socket,
        gate: Arc<Gate>,
        workers: usize,
        reuse_port: bool,
    ) -> Acceptor {
        Acceptor {
            socket,
            gate,
            in_flight: 0,
            paused_until: None,
            next_worker: 0,
            workers,
            stopped: false,
            cancelled: false,
            exhausted: false,
            migrates: reuse_port && kernel_migrates_backlog(),
        }
    }

    /// Associate the listener with `port`, before the first accept.
    pub(crate) fn register(&self, port: &mut Port) -> io::Result<()> {
        port.register(raw_socket(&self.socket))
    }

    /// An accept completed: the socket to adopt, if it is admitted. While
    /// the server stops it is still adopted (and closed cleanly by the
    /// drain): dropping it with its client's bytes unread would reset it.
    pub(crate) fn on_accept(
        &mut self,
        result: io::Result<(Socket, Address)>,
        stopping: bool,
        counters: &WorkerCounters,
    ) -> Option<Accepted> {
        self.in_flight -= 1;
        let stopping = stopping || self.stopped;
        match result {
            Ok((socket, peer)) => self.admit(socket, peer, counters),
            Err(_) if stopping => {
                // What the port accepted before the listener stopped came first.
                self.exhausted |= self.stopped;
                None
            }
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

    /// Admit an accepted socket under `max_connections` and choose its worker.
    fn admit(
        &mut self,
        socket: Socket,
        peer: Address,
        counters: &WorkerCounters,
    ) -> Option<Accepted> {
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

    /// Keep `ACCEPTS_IN_FLIGHT` accepts posted, unless paused or cancelled
    /// (stopped and exhausted: cancelled now).
    pub(crate) fn post(&mut self, port: &mut Port) {
        if self.exhausted {
            self.cancel(port);
        }
        if self.cancelled {
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

    /// Stop accepting: take the connections already waiting in the
    /// listener's backlog (returned, for the drain to close cleanly: a
    /// listener closed with a backlog resets them), and stop listening at
    /// once (Linux: another `SO_REUSEPORT` listener on the address gets the
    /// next connections). The accepts in flight then collect what the port
    /// itself accepted before (io_uring's multishot accept queues some) until
    /// one fails; where the listener cannot stop listening so, they are
    /// cancelled now (they still complete).
    pub(crate) fn stop(&mut self, port: &mut Port, counters: &WorkerCounters) -> Vec<Accepted> {
        if self.stopped {
            return Vec::new();
        }
        self.stopped = true;
        self.paused_until = None;
        // Migrated, the backlog is served by a sibling (with none left, the
        // kernel resets it); taken, it can only be closed, cleanly.
        let backlog = if self.migrates {
            Vec::new()
        } else {
            self.take_backlog(counters)
        };
        if !self.stop_listening() {
            self.cancel(port);
        }
        backlog
    }

    /// End listening on the socket now, so its accepts fail once what was
    /// accepted is handed out: on Linux, `shutdown` of a TCP listener (its
    /// backlog moves to another listener of the port where
    /// net.ipv4.tcp_migrate_req allows). Returns whether it did.
    fn stop_listening(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            if matches!(self.socket.local_addr(), Ok(a) if a.as_socket().is_some()) {
                return self.socket.shutdown(std::net::Shutdown::Read).is_ok();
            }
        }
        false
    }

    /// Post no more accepts and cancel those in flight (they still complete).
    pub(crate) fn cancel(&mut self, port: &mut Port) {
        if !self.cancelled {
            self.cancelled = true;
            if self.in_flight > 0 {
                port.cancel(raw_socket(&self.socket));
            }
        }
    }

    /// Accept, without waiting, what the listener's backlog holds (at most
    /// [`BACKLOG_TAKEN`]).
    fn take_backlog(&mut self, counters: &WorkerCounters) -> Vec<Accepted> {
        let mut taken = Vec::new();
        if let Err(e) = self.socket.set_nonblocking(true) {
            log::debug!("nonblocking listener: {}", e);
            return taken;
        }
        while taken.len() < BACKLOG_TAKEN {
            let (socket, addr) = match self.socket.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let peer = match Address::from_sock_addr(&addr) {
                Some(peer) => peer,
                None => continue,
            };
            if let Err(e) = socket.set_nonblocking(true) {
                log::debug!("nonblocking socket from {}: {}", peer, e);
                continue;
            }
            taken.extend(self.admit(socket, peer, counters));
        }
        taken
    }

    /// Whether it is cancelled and no accept is in flight any more.
    pub(crate) fn done(&self) -> bool {
        self.cancelled && self.in_flight == 0
    }

    /// Forget the listener (once [`Acceptor::done`]); it closes when dropped.
    pub(crate) fn deregister(self, port: &mut Port) {
        if let Err(e) = port.deregister(raw_socket(&self.socket)) {
            log::debug!("deregister listener: {}", e);
        }
    }
}

/// Whether this network namespace's kernel moves the connections waiting in
/// a closing `SO_REUSEPORT` listener to another of its group
/// (`net.ipv4.tcp_migrate_req`, Linux 5.14+), instead of resetting them.
fn kernel_migrates_backlog() -> bool {
    cfg!(target_os = "linux")
        && matches!(
            std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req"),
            Ok(on) if on.trim() == "1"
        )
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
