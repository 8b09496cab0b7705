//! Received bytes into frames: queued as native echoes, or collected in the
//! batch for the handler; counted, and a bad frame reported once.

use super::connection::Connection;
use super::handler::Batch;
use super::stats::WorkerCounters;
use super::Shared;
use crate::framing::Frame;

/// Decode the next received bytes of connection `key` (`None`: the peer ended
/// the stream, so a lines decoder yields a last frame without delimiter).
/// Returns how many frames completed; `Err` means a bad frame: the caller
/// closes the connection. With a handler, the caller must then offer the
/// received chunk to [`Batch::keep_chunk`].
pub(super) fn decode(
    key: usize,
    conn: &mut Connection,
    data: Option<&[u8]>,
    shared: &Shared,
    counters: &WorkerCounters,
    batch: &mut Batch,
) -> Result<u64, ()> {
    let owner = (key, conn.id);
    let framing = &shared.config.framing;
    let native = shared.handler.is_none();
    let Connection {
        decoder,
        pending,
        peer,
        ..
    } = conn;
    let mut frames = 0u64;
    let chunk = data.unwrap_or(&[]);
    let mut on_frame = |frame: Frame<'_>| {
        frames += 1;
        if native {
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
    if native {
        WorkerCounters::add(&counters.frames_sent, frames);
    }
    result.map(|()| frames).map_err(|e| {
        log::info!("closing connection from {}: {}", peer, e);
        WorkerCounters::add(&counters.frame_errors, 1);
    })
}
