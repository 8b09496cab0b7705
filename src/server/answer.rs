//! Answering the batch: call the handler once for every frame and event
//! collected this turn, time the call (the handler-time histogram), count the
//! outcomes, give each connection its output back, and close the connections
//! whose frames failed.
//!
//! The handler frames its replies straight into the output buffers of their
//! connections (lent to the batch when their frames were pushed); they are
//! given back here, in order, and sent as they are by the pump.

use std::time::Instant;

use super::connection::Phase;
use super::event::CloseReason;
use super::handler::{Batch, Reply};
use super::output::Spares;
use super::stats::WorkerCounters;
use super::table::Table;
use super::turn::Turn;
use crate::port::{CompletionPort, Port};

/// Call the handler for the batch (if it holds anything) and queue the replies.
pub(crate) fn answer(
    turn: &Turn<'_>,
    table: &mut Table,
    port: &mut Port,
    batch: &mut Batch,
    spares: &mut Spares,
) {
    if batch.is_spent() {
        return;
    }
    batch.provide_buffers(|| spares.pop());
    if let Some(handler) = turn.mode.handler() {
        // One clock read on each side of the call, whatever the batch holds.
        let started = Instant::now();
        handler.handle(batch);
        turn.counters.handler_time.observe(started.elapsed());
    }
    let failed = count_replies(turn.counters, table, batch);
    // A failed connection's replies are never sent: it is aborted below,
    // which closes it without flushing.
    for ((key, id), output) in batch.take_outputs() {
        match table.get_live(key, id) {
            Some(conn) => conn.output.give_back(output, spares),
            None => spares.recycle(output),
        }
    }
    batch.clear(|chunk| port.give_buffer(chunk));
    for key in failed {
        if let Some(conn) = table.get_mut(key) {
            conn.abort(CloseReason::HandlerFailed, port);
        }
        table.touch(key);
    }
}

/// Count the replies of the batch; the keys of connections with a failed
/// frame (each once: a connection's frames are adjacent).
fn count_replies(counters: &WorkerCounters, table: &mut Table, batch: &Batch) -> Vec<usize> {
    let mut failed = Vec::new();
    for i in 0..batch.len() {
        let (key, id) = batch.owners[i];
        let conn = match table.get_live(key, id) {
            Some(c) if c.phase() != Phase::Closing => c,
            _ => continue,
        };
        if failed.last() == Some(&key) {
            continue;
        }
        match &batch.outcomes[i] {
            Reply::Nothing => {}
            Reply::Data(..) => WorkerCounters::add(&counters.frames_sent, 1),
            Reply::Unframable(e) => {
                log::error!("handler reply to {} cannot be framed: {}", conn.peer, e);
                WorkerCounters::add(&counters.handler_errors, 1);
                failed.push(key);
            }
            Reply::Fail => {
                WorkerCounters::add(&counters.handler_errors, 1);
                failed.push(key);
            }
        }
    }
    failed
}
