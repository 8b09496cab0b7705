//! Pumping the connections touched this turn: close it as a slow consumer if
//! its output passed `max_output`, post its send (sealed by its transport;
//! a TLS connection also sends with no output queued, for its handshake
//! records and alerts), its next recv unless backpressure holds it (with
//! `PauseWriting` / `ResumeWriting` events when that changes), or finish
//! closing it (a clean close of a TLS connection sends `close_notify` first;
//! then it lingers for the peer's end of stream, reading and discarding;
//! free it, release its admission, make its `Close` event, count a TLS
//! failure).

use std::sync::atomic::Ordering;

use super::connection::Phase;
use super::event::{CloseReason, ConnectionId, Event};
use super::handler::Batch;
use super::output::{Pause, Spares};
use super::stats::WorkerCounters;
use super::table::Table;
use super::turn::Turn;
use crate::port::{Address, CompletionPort, Op, Port, Token};

/// Pump every connection touched this turn.
///
/// Pumping can touch connections again (a flushed connection is closed, and
/// its end must be pumped too), so this runs until nothing is left: the next
/// wait may block indefinitely. `keys` is scratch space kept across turns.
pub(crate) fn pump_dirty(
    turn: &Turn<'_>,
    table: &mut Table,
    port: &mut Port,
    batch: &mut Batch,
    spares: &mut Spares,
    keys: &mut Vec<usize>,
) {
    while table.has_dirty() {
        table.take_dirty(keys);
        for key in keys.drain(..) {
            pump(turn, table, port, batch, spares, key);
        }
    }
}

/// Post what a connection needs next: its send (gathered from its queued
/// segments, the gather taken from `spares`), its next recv, or its end.
fn pump(
    turn: &Turn<'_>,
    table: &mut Table,
    port: &mut Port,
    batch: &mut Batch,
    spares: &mut Spares,
    key: usize,
) {
    let conn = match table.get_mut(key) {
        Some(conn) => conn,
        None => return,
    };
    let config = turn.config;
    #[cfg(test)]
    turn.counters.note_output(conn.output.len());
    if conn.output.passed(config.max_output) && conn.close_slow_consumer(port) {
        slow_consumer(turn, conn.id, &conn.peer);
    }
    if conn.phase() == Phase::Closing {
        if !conn.busy() {
            finalize(turn, table, port, batch, key);
        }
        return;
    }
    if conn.phase() == Phase::Lingering {
        // Its sending side is shut: anything queued since cannot leave.
        conn.output.discard();
        if !conn.recv_in_flight {
            conn.recv_in_flight = true;
            let socket = conn.raw();
            port.submit(
                key as Token,
                Op::Recv {
                    socket,
                    buf: Vec::new(),
                },
            );
        }
        return;
    }
    let force = conn.transport.wants_write();
    if let Some(plain) = conn.output.next_send(force, spares) {
        let buf = conn.transport.seal(plain);
        let socket = conn.raw();
        port.submit(
            key as Token,
            Op::Send {
                socket,
                buf,
                pos: 0,
            },
        );
    }
    match conn
        .output
        .update_pause(config.low_water, config.high_water)
    {
        Pause::Same => {}
        Pause::Paused => {
            WorkerCounters::add(&turn.counters.backpressure_pauses, 1);
            if turn.mode.events() {
                batch.push_event(Event::PauseWriting { id: conn.id });
            }
        }
        Pause::Resumed => {
            if turn.mode.events() {
                batch.push_event(Event::ResumeWriting { id: conn.id });
            }
        }
    }
    if let Some(published) = &conn.published {
        published.store(conn.output.len(), Ordering::Relaxed);
    }
    match conn.phase() {
        Phase::Open if !conn.output.paused() && !conn.recv_in_flight => {
            conn.recv_in_flight = true;
            let socket = conn.raw();
            // Capacity 0: the port chooses the memory when bytes arrive.
            let buf = Vec::new();
            port.submit(key as Token, Op::Recv { socket, buf });
        }
        Phase::Flushing if !conn.output.in_flight() => {
            // Flushed: a TLS connection sends its close_notify (pumped again
            // at once), then lingers for the peer's end of stream, or closes.
            if !conn.transport.close_notify() {
                if conn.linger(config.linger_timeout) {
                    table.lingers(key, turn.now);
                } else {
                    conn.abort(CloseReason::Shutdown, port);
                }
            }
            table.touch(key);
        }
        _ => {}
    }
}

/// Count and log a connection closed as a slow consumer.
#[cold]
fn slow_consumer(turn: &Turn<'_>, id: ConnectionId, peer: &Address) {
    log::info!(
        "closing connection {} from {}: slow consumer (queued output passed max_output {})",
        id,
        peer,
        turn.config.max_output
    );
    WorkerCounters::add(&turn.counters.slow_consumer_closes, 1);
}

/// Free a connection whose ops have all completed.
fn finalize(turn: &Turn<'_>, table: &mut Table, port: &mut Port, batch: &mut Batch, key: usize) {
    let mut conn = table.remove(key);
    if let Err(e) = port.deregister(conn.raw()) {
        log::debug!("deregister {}: {}", conn.peer, e);
    }
    if conn.tls_failed() {
        WorkerCounters::add(&turn.counters.tls_errors, 1);
    }
    // A connection that never opened (a TLS one whose handshake failed) has
    // no `Close` event either.
    if turn.mode.events() && conn.published.is_some() {
        turn.mailbox.closed(conn.id);
        let reason = conn.take_reason();
        batch.push_event(Event::Close {
            id: conn.id,
            reason,
        });
    }
    // Closes the socket and releases its admission.
    drop(conn);
    WorkerCounters::sub(&turn.counters.connections_open, 1);
    WorkerCounters::add(&turn.counters.connections_closed, 1);
}
