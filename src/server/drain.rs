//! Ending connections on a schedule: the idle timeout, and the drain of
//! `Server::close` (stop accepting, flush queued replies until the deadline,
//! cancel the rest, wait for every completion).

use std::time::{Duration, Instant};

use super::connection::Phase;
use super::stats::WorkerCounters;
use super::worker::Worker;
use crate::port::{raw_socket, CompletionPort};

impl Worker {
    pub(super) fn close_idle(&mut self) {
        let idle = match self.shared.config.idle_timeout {
            Some(t) => t,
            None => return,
        };
        let now = Instant::now();
        if now.duration_since(self.last_idle_check) < (idle / 4).min(Duration::from_secs(1)) {
            return;
        }
        self.last_idle_check = now;
        let expired: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.phase != Phase::Closing && now.duration_since(c.last_active) >= idle)
            .map(|(key, _)| key)
            .collect();
        for key in expired {
            log::debug!("closing idle connection from {}", self.conns[key].peer);
            WorkerCounters::add(&self.counters().idle_timeouts, 1);
            self.abort(key);
        }
        self.pump_dirty();
    }

    /// One step of shutdown: stop accepting, let connections flush until the
    /// deadline, then cut the rest.
    pub(super) fn drain(&mut self, deadline: Instant) {
        if !self.draining {
            self.draining = true;
            if let Some(listener) = &self.listener {
                if listener.in_flight > 0 {
                    self.port.cancel(raw_socket(&listener.socket));
                }
            }
            let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
            for key in keys {
                let conn = &mut self.conns[key];
                if conn.phase == Phase::Open {
                    conn.phase = Phase::Flushing;
                    if conn.recv_in_flight && !conn.send_in_flight && conn.pending.is_empty() {
                        self.abort(key);
                    }
                }
                self.touch(key);
            }
        }
        if Instant::now() >= deadline {
            let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
            for key in keys {
                self.abort(key);
                // Past the deadline, whatever `shutdown` did not end is cancelled.
                let conn = &mut self.conns[key];
                if conn.busy() && !conn.cancelled {
                    conn.cancelled = true;
                    self.port.cancel(raw_socket(&conn.socket));
                }
            }
        }
        if let Some(listener) = &self.listener {
            if listener.in_flight == 0 {
                if let Err(e) = self.port.deregister(raw_socket(&listener.socket)) {
                    log::debug!("deregister listener: {}", e);
                }
                self.listener = None;
            }
        }
    }

    /// Whether shutdown is complete: no connection, no listener, nothing in flight.
    pub(super) fn finished(&self) -> bool {
        self.conns.is_empty() && self.listener.is_none() && self.port.in_flight() == 0
    }
}
