//! Accepting: worker 0 keeps a few accepts posted on the listener, enforces
//! `max_connections`, backs off when the process runs out of descriptors, and
//! hands each new socket to a worker (round robin) through its inbox and waker.

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use socket2::Socket;

use super::connection::Connection;
use super::lock;
use super::stats::WorkerCounters;
use super::worker::Worker;
use crate::port::{raw_socket, CompletionPort, Op, Token};

/// The token of the listener's accepts.
pub(super) const LISTENER: Token = u64::MAX;
/// Accepts kept posted on the listener.
const ACCEPTS_IN_FLIGHT: usize = 4;
/// How long accepting pauses after the process ran out of descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The listening socket, owned by worker 0.
pub(super) struct Listener {
    pub(super) socket: Socket,
    pub(super) in_flight: usize,
    /// Accepting is paused until then (descriptors or memory ran out).
    pub(super) paused_until: Option<Instant>,
}

impl Worker {
    pub(super) fn on_accept(&mut self, result: io::Result<(Socket, SocketAddr)>) {
        let stopping = self.shared.stopping.load(Ordering::SeqCst);
        let counters = &self.shared.counters[self.index];
        let listener = match self.listener.as_mut() {
            Some(l) => l,
            None => return,
        };
        listener.in_flight -= 1;
        match result {
            Ok((socket, peer)) => {
                if stopping {
                    return;
                }
                let open = self.shared.open_connections.fetch_add(1, Ordering::SeqCst);
                if open >= self.shared.config.max_connections {
                    self.shared.open_connections.fetch_sub(1, Ordering::SeqCst);
                    WorkerCounters::add(&counters.connections_rejected, 1);
                    log::debug!("refusing {}: {} connections open", peer, open);
                    return;
                }
                // Small replies should leave at once, not wait for Nagle.
                if let Err(e) = socket.set_nodelay(true) {
                    log::debug!("TCP_NODELAY on {}: {}", peer, e);
                }
                let target = self.next_worker;
                self.next_worker = (self.next_worker + 1) % self.wakers.len();
                if target == self.index {
                    self.add_connection(socket, peer);
                } else {
                    lock(&self.shared.inboxes[target]).push((socket, peer));
                    if let Err(e) = self.wakers[target].wake() {
                        log::error!("could not wake worker {}: {}", target, e);
                    }
                }
            }
            Err(e) => {
                if stopping {
                    return;
                }
                WorkerCounters::add(&counters.accept_errors, 1);
                if out_of_resources(&e) {
                    if listener.paused_until.is_none() {
                        log::warn!(
                            "accept failed ({}); pausing accepts for {:?}",
                            e,
                            ACCEPT_BACKOFF
                        );
                    }
                    listener.paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                } else {
                    log::debug!("accept failed: {}", e);
                }
            }
        }
    }

    /// Keep `ACCEPTS_IN_FLIGHT` accepts posted, unless paused.
    pub(super) fn post_accepts(&mut self) {
        let listener = match self.listener.as_mut() {
            Some(l) => l,
            None => return,
        };
        if let Some(until) = listener.paused_until {
            if Instant::now() < until {
                return;
            }
            listener.paused_until = None;
        }
        while listener.in_flight < ACCEPTS_IN_FLIGHT {
            listener.in_flight += 1;
            self.port.submit(
                LISTENER,
                Op::Accept {
                    listener: raw_socket(&listener.socket),
                },
            );
        }
    }

    /// Adopt sockets that worker 0 accepted for this worker.
    pub(super) fn take_inbox(&mut self) {
        let sockets = mem::take(&mut *lock(&self.shared.inboxes[self.index]));
        for (socket, peer) in sockets {
            if self.shared.stopping.load(Ordering::SeqCst) {
                self.shared.open_connections.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            self.add_connection(socket, peer);
        }
    }

    fn add_connection(&mut self, socket: Socket, peer: SocketAddr) {
        if let Err(e) = self.port.register(raw_socket(&socket)) {
            log::warn!("could not register connection from {}: {}", peer, e);
            self.shared.open_connections.fetch_sub(1, Ordering::SeqCst);
            WorkerCounters::add(&self.counters().io_errors, 1);
            return;
        }
        let id = self.next_id;
        self.next_id += self.wakers.len() as u64;
        let decoder = self
            .shared
            .config
            .framing
            .decoder(self.shared.config.max_frame);
        let key = self
            .conns
            .insert(Connection::new(id, socket, peer, decoder));
        let counters = self.counters();
        WorkerCounters::add(&counters.connections_accepted, 1);
        WorkerCounters::add(&counters.connections_open, 1);
        self.touch(key);
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
