//! Received bytes (or, for TLS, their plaintext) into frames: queued as native
//! echoes, or collected in the batch for the handler; counted, and a bad frame
//! reported once.

use super::connection::Connection;
use super::event::CloseReason;
use super::handler::Batch;
use super::stats::WorkerCounters;
use crate::framing::{Frame, Framing};

/// Decode the next bytes of connection `key` (`None`: the peer ended the
/// stream, so a lines decoder yields a last frame without delimiter): the
/// received bytes, or a TLS connection's plaintext of them. `echo`: frames are
/// echoed natively (framed into the connection's output) instead of collected
/// in `batch`.
///
/// Returns how many frames completed; `Err` says why the connection must
/// close. With a handler, the caller must then offer the buffer `data` lies
/// in to [`Batch::keep_chunk`].
pub(super) fn decode(
    key: usize,
    conn: &mut Connection,
    data: Option<&[u8]>,
    echo: bool,
    framing: &Framing,
    counters: &WorkerCounters,
    batch: &mut Batch,
) -> Result<u64, CloseReason> {
    let owner = (key, conn.id);
    let Connection {
        decoder,
        output,
        peer,
        ..
    } = conn;
    let pending = output.buffer();
    let mut frames = 0u64;
    let chunk = data.unwrap_or(&[]);
    let mut on_frame = |frame: Frame<'_>| {
        frames += 1;
        if echo {
            // A decoded payload always fits its own framing.
            let _ = framing.encode_into(frame.bytes(), pending);
        } else {
            // The batch keeps a frame inside `chunk` by reference (the caller
            // then hands it the chunk) and lends itself `pending` for replies.
            batch.push(owner, frame, chunk, pending);
        }
    };
    let result = match data {
        Some(bytes) => decoder.feed_frames(bytes, &mut on_frame),
        None => decoder.finish_frames(&mut on_frame),
    };
    WorkerCounters::add(&counters.frames_received, frames);
    if echo {
        WorkerCounters::add(&counters.frames_sent, frames);
    }
    result.map(|()| frames).map_err(|e| {
        log::info!("closing connection from {}: {}", peer, e);
        WorkerCounters::add(&counters.frame_errors, 1);
        CloseReason::Frame(e)
    })
}
