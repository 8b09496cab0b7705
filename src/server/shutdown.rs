//! Ending connections on a schedule: the idle timeout, the end of a
//! lingering close, and the TLS handshake
//! timeout (a PROXY protocol header not whole within either, counted as a
//! PROXY failure: the idle clock starts at accept and partial header bytes
//! do not reset it), and the drain of `Server::close` (stop accepting, flush queued
//! replies until the deadline, cancel the rest, wait for every completion).

use std::time::{Duration, Instant};

use super::acceptor::Acceptor;
use super::connection::{Connection, Phase, LINGER_TIMEOUT};
use super::event::CloseReason;
use super::stats::WorkerCounters;
use super::table::Table;
use super::turn::Turn;
use crate::config::Config;
use crate::port::{CompletionPort, Port};
use crate::tls::TlsFailure;

/// How often connections are checked for expiry: a quarter of the shortest
/// timeout (idle, TLS handshake), at most a second; `None`: no timeout.
pub(crate) fn check_every(config: &Config) -> Option<Duration> {
    let handshake = if config.tls.enabled() {
        Some(config.tls.handshake_timeout)
    } else {
        None
    };
    let shortest = match (config.idle_timeout, handshake) {
        (Some(idle), Some(handshake)) => idle.min(handshake),
        (one, other) => one.or(other)?,
    };
    Some((shortest / 4).min(Duration::from_secs(1)))
}

/// Close the connections idle for `idle_timeout`, and the TLS connections
/// whose handshake passed its deadline, checking every [`check_every`];
/// `last_check` is when it last did.
pub(crate) fn close_expired(
    turn: &Turn<'_>,
    table: &mut Table,
    port: &mut Port,
    last_check: &mut Instant,
) {
    let every = match check_every(turn.config) {
        Some(every) => every,
        None => return,
    };
    let now = Instant::now();
    if now.duration_since(*last_check) < every {
        return;
    }
    *last_check = now;
    let idle = turn.config.idle_timeout;
    let expired: Vec<(usize, Expiry)> = table
        .iter()
        .filter(|(_, c)| c.phase() != Phase::Closing)
        .filter_map(|(key, c)| expiry(c, idle, now).map(|why| (key, why)))
        .collect();
    for (key, why) in expired {
        if let Some(conn) = table.get_mut(key) {
            match why {
                Expiry::Idle => {
                    log::debug!("closing idle connection from {}", conn.peer);
                    WorkerCounters::add(&turn.counters.idle_timeouts, 1);
                    conn.abort(CloseReason::IdleTimeout, port);
                }
                Expiry::Header => {
                    log::info!(
                        "closing connection from {}: no complete PROXY protocol header within the timeout",
                        conn.peer
                    );
                    WorkerCounters::add(&turn.counters.proxy_errors, 1);
                    conn.abort(CloseReason::IdleTimeout, port);
                }
                Expiry::Handshake => {
                    log::info!(
                        "closing connection from {}: TLS handshake timed out",
                        conn.peer
                    );
                    conn.abort(CloseReason::Tls(TlsFailure::HandshakeTimeout), port);
                }
            }
        }
        table.touch(key);
    }
}

/// Close the lingering connections whose peer went quiet or that lingered
/// too long (see [`Phase::Lingering`]).
pub(crate) fn close_lingered(turn: &Turn<'_>, table: &mut Table, port: &mut Port) {
    if !table.any_lingering() {
        return;
    }
    let config = turn.config;
    // Served in a drain: at most half of it, so a clean close still fits.
    let served_for = LINGER_TIMEOUT.min(config.drain_timeout / 2);
    for key in table.lingered_out(turn.now, config.linger_timeout, served_for) {
        if let Some(conn) = table.get_mut(key) {
            if conn.phase() == Phase::Open {
                // Served in a drain until its client went quiet.
                conn.flush_then_close(CloseReason::Shutdown);
            } else {
                log::debug!("closing connection from {}: done lingering", conn.peer);
                conn.abort(CloseReason::Shutdown, port);
            }
        }
        table.touch(key);
    }
}

/// Why a connection expired.
#[derive(Clone, Copy)]
enum Expiry {
    Idle,
    /// Waiting for its PROXY header past the idle timeout or the TLS
    /// handshake's deadline.
    Header,
    Handshake,
}

/// Whether `conn` expired at `now`, and why.
fn expiry(conn: &Connection, idle: Option<Duration>, now: Instant) -> Option<Expiry> {
    let idle_expired = matches!(idle, Some(idle) if now.duration_since(conn.last_active) >= idle);
    if conn.proxy.is_some() && (idle_expired || conn.transport.handshake_expired(now)) {
        Some(Expiry::Header)
    } else if idle_expired {
        Some(Expiry::Idle)
    } else if conn.transport.handshake_expired(now) {
        Some(Expiry::Handshake)
    } else {
        None
    }
}

/// The shutdown drain of one worker, step by step.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    started: bool,
}

impl Drain {
    /// One step of shutdown (accepting stopped before the first: the
    /// worker adopts the backlog): let connections flush and linger until
    /// the deadline, then cut the rest. Frees the acceptor once its accepts completed.
    pub(crate) fn step(
        &mut self,
        deadline: Instant,
        table: &mut Table,
        port: &mut Port,
        acceptor: &mut Option<Acceptor>,
        quiet: Duration,
    ) {
        let now = Instant::now();
        if !self.started {
            self.started = true;
            for key in table.keys() {
                if let Some(conn) = table.get_mut(key) {
                    if conn.close_for_drain(quiet) {
                        table.lingers(key, now);
                    }
                }
                table.touch(key);
            }
        }
        if now >= deadline {
            if let Some(acceptor) = acceptor {
                acceptor.cancel(port);
            }
            for key in table.keys() {
                if let Some(conn) = table.get_mut(key) {
                    conn.abort(CloseReason::Shutdown, port);
                    // Past the deadline, whatever `shutdown` did not end is cancelled.
                    conn.cancel_ops(port);
                }
                table.touch(key);
            }
        }
        if matches!(acceptor, Some(a) if a.done()) {
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
