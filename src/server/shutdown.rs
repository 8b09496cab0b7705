//! Ending connections on a schedule: the idle timeout, and the drain of
//! `Server::close` (stop accepting, flush queued replies until the deadline,
//! cancel the rest, wait for every completion).

use std::time::{Duration, Instant};

use super::acceptor::Acceptor;
use super::connection::Phase;
use super::event::CloseReason;
use super::stats::WorkerCounters;
use super::table::Table;
use super::turn::Turn;
use crate::port::{CompletionPort, Port};

/// Close the connections idle for `idle_timeout`, checking at most every
/// quarter of it (and at least every second); `last_check` is when it last did.
pub(crate) fn close_idle(
    turn: &Turn<'_>,
    table: &mut Table,
    port: &mut Port,
    last_check: &mut Instant,
) {
    let idle = match turn.config.idle_timeout {
        Some(t) => t,
        None => return,
    };
    let now = Instant::now();
    if now.duration_since(*last_check) < (idle / 4).min(Duration::from_secs(1)) {
        return;
    }
    *last_check = now;
    let expired: Vec<usize> = table
        .iter()
        .filter(|(_, c)| c.phase() != Phase::Closing && now.duration_since(c.last_active) >= idle)
        .map(|(key, _)| key)
        .collect();
    for key in expired {
        if let Some(conn) = table.get_mut(key) {
            log::debug!("closing idle connection from {}", conn.peer);
            WorkerCounters::add(&turn.counters.idle_timeouts, 1);
            conn.abort(CloseReason::IdleTimeout, port);
        }
        table.touch(key);
    }
}

/// The shutdown drain of one worker, step by step.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    started: bool,
}

impl Drain {
    /// One step of shutdown: stop accepting, let connections flush until the
    /// deadline, then cut the rest. Frees the acceptor once its accepts completed.
    pub(crate) fn step(
        &mut self,
        deadline: Instant,
        table: &mut Table,
        port: &mut Port,
        acceptor: &mut Option<Acceptor>,
    ) {
        if !self.started {
            self.started = true;
            if let Some(acceptor) = acceptor {
                acceptor.stop(port);
            }
            for key in table.keys() {
                if let Some(conn) = table.get_mut(key) {
                    conn.flush_then_close(CloseReason::Shutdown);
                }
                table.touch(key);
            }
        }
        if Instant::now() >= deadline {
            for key in table.keys() {
                if let Some(conn) = table.get_mut(key) {
                    conn.abort(CloseReason::Shutdown, port);
                    // Past the deadline, whatever `shutdown` did not end is cancelled.
                    conn.cancel_ops(port);
                }
                table.touch(key);
            }
        }
        if matches!(acceptor, Some(a) if a.idle()) {
            if let Some(acceptor) = acceptor.take() {
                acceptor.deregister(port);
            }
        }
    }
}

/// Whether shutdown is complete: no connection, no listener, nothing in flight.
pub(crate) fn finished(table: &Table, acceptor: &Option<Acceptor>, port: &Port) -> bool {
    table.is_empty() && acceptor.is_none() && port.in_flight() == 0
}
