//! A connection's completions: bytes received (decoded into echoes or batch
//! frames), and sends completed (the rest of a partial send posted at once).
//!
//! Recvs let the port choose their memory (an empty `Vec`), so an idle
//! connection with its recv posted holds no buffer; received buffers go back
//! to the port with `give_buffer` once decoded (for the native raw echo, once
//! sent; with a handler, a buffer holding frames once they are answered, as the
//! batch hands them to the handler without copying them).
//!
//! A TLS connection's recv is decrypted into a spare output buffer, which is
//! decoded (and kept by the batch) in its place; the ciphertext goes back to
//! the port at once. Its `Open` event comes when the handshake finishes,
//! before the frames of the same bytes; its peer's `close_notify` ends its
//! stream as an EOF does.
//!
//! With `proxy_protocol`, a connection's first bytes are its PROXY header
//! (`preamble.rs`), read before anything else: once it is whole the peer
//! becomes the client it names, a plain connection opens (a TLS one still
//! waits for its handshake), and the bytes after it in the same recv go on to
//! TLS or the decoder. A header that is no header, too long or cut short
//! closes the connection, counted in `proxy_errors`; it never opened, so it
//! makes no event.

use std::io;

use super::connection::{Connection, Phase};
use super::decode::decode;
use super::event::CloseReason;
use super::handler::Batch;
use super::letters::opened;
use super::output::Spares;
use super::preamble::Fed;
use super::stats::WorkerCounters;
use super::table::Table;
use super::turn::Turn;
use crate::port::{Address, CompletionPort, Op, Port, SendBuf, Token};
use crate::tls::TlsFailure;

/// Spare output buffers the native raw echo keeps before it hands sent buffers
/// back to the port.
const RAW_OUTPUT_SPARES: usize = 8;

/// A recv of connection `key` completed with `buf`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn on_received(
    turn: &Turn<'_>,
    table: &mut Table,
    port: &mut Port,
    batch: &mut Batch,
    spares: &mut Spares,
    key: usize,
    buf: Vec<u8>,
    result: io::Result<usize>,
) {
    let conn = match table.get_mut(key) {
        Some(c) => c,
        None => return,
    };
    conn.recv_in_flight = false;
    let more = matches!(result, Ok(n) if n > 0);
    if !more {
        conn.peer_finished = true;
    }
    let outcome = match result {
        // Input after the connection stopped reading (while it flushes or
        // lingers) is thrown away; the peer's end closes a lingering one.
        _ if conn.phase() != Phase::Open => {
            if more {
                conn.last_active = turn.now;
            } else if conn.phase() == Phase::Lingering {
                conn.abort(CloseReason::PeerClosed, port);
            }
            Received::Kept(buf)
        }
        Ok(0) if conn.proxy.is_some() => Received::Decoded(buf, Some(header_cut(turn, conn))),
        Ok(0) => match conn.transport.ended() {
            // A TLS stream cut mid-handshake or mid-record.
            Err(failure) => Received::Decoded(buf, Some(tls_failed(&conn.peer, failure))),
            Ok(()) => {
                // The peer finished sending: answer what it sent, then close.
                conn.flush_then_close(CloseReason::PeerClosed);
                let decoded = decode(
                    key,
                    conn,
                    None,
                    turn.mode.echoes(),
                    &turn.config.framing,
                    turn.counters,
                    batch,
                );
                Received::Decoded(buf, decoded.err())
            }
        },
        Ok(n) => {
            WorkerCounters::add(&turn.counters.bytes_received, n as u64);
            if conn.proxy.is_some() {
                received_header(turn, conn, key, buf, batch, spares)
            } else {
                received_bytes(turn, conn, key, buf, batch, spares)
            }
        }
        Err(e) => {
            log::debug!("recv from {}: {}", conn.peer, e);
            WorkerCounters::add(&turn.counters.io_errors, 1);
            Received::Decoded(buf, Some(CloseReason::io(&e)))
        }
    };
    match outcome {
        Received::Echoed => {}
        Received::Kept(buf) => port.give_buffer(buf),
        Received::Decoded(buf, failed) => {
            // A chunk holding frames for the handler stays in the batch until
            // they are answered (then goes back to the port); any other goes
            // back now.
            if let Some(buf) = batch.keep_chunk(buf) {
                port.give_buffer(buf);
            }
            if let Some(reason) = failed {
                if let Some(conn) = table.get_mut(key) {
                    conn.fail(reason, port);
                }
            }
        }
        Received::Decrypted {
            ciphertext,
            plain,
            failed,
        } => {
            port.give_buffer(ciphertext);
            if let Some(plain) = batch.keep_chunk(plain) {
                spares.recycle(plain);
            }
            if let Some(reason) = failed {
                if let Some(conn) = table.get_mut(key) {
                    conn.fail(reason, port);
                }
            }
        }
    }
    table.touch(key);
}

/// What became of a received buffer.
enum Received {
    /// Queued to be sent back as it is (the native raw echo).
    Echoed,
    /// Not decoded: back to the port.
    Kept(Vec<u8>),
    /// Decoded; the connection must close if a reason is given.
    Decoded(Vec<u8>, Option<CloseReason>),
    /// TLS: the ciphertext is spent, its plaintext decoded (offered to the
    /// batch); the connection must close if a reason is given.
    Decrypted {
        ciphertext: Vec<u8>,
        plain: Vec<u8>,
        failed: Option<CloseReason>,
    },
}

/// Bytes arrived on an open connection: echo the buffer itself (native raw
/// echo with nothing queued), or decode it.
#[inline]
fn received_bytes(
    turn: &Turn<'_>,
    conn: &mut Connection,
    key: usize,
    buf: Vec<u8>,
    batch: &mut Batch,
    spares: &mut Spares,
) -> Received {
    let echo = turn.mode.echoes();
    let buf = if turn.mode.echoes_raw() && conn.transport.is_plain() {
        match conn.output.adopt(buf, spares) {
            Ok(()) => {
                WorkerCounters::add(&turn.counters.frames_received, 1);
                WorkerCounters::add(&turn.counters.frames_sent, 1);
                conn.last_active = turn.now;
                return Received::Echoed;
            }
            Err(buf) => buf,
        }
    } else if !conn.transport.is_plain() {
        return received_tls(turn, conn, key, buf, batch, spares);
    } else {
        buf
    };
    if echo {
        conn.output.reserve(spares);
    }
    let framing = &turn.config.framing;
    match decode(key, conn, Some(&buf), echo, framing, turn.counters, batch) {
        // Only a complete message counts as activity, so a client trickling a
        // frame byte by byte still times out.
        Ok(0) => Received::Decoded(buf, None),
        Ok(_) => {
            conn.last_active = turn.now;
            Received::Decoded(buf, None)
        }
        Err(reason) => Received::Decoded(buf, Some(reason)),
    }
}

/// Bytes arrived on an open TLS connection: decrypt them into a spare
/// buffer, open the connection if its handshake finished, decode the
/// plaintext, and end the stream if the peer sent `close_notify`.
fn received_tls(
    turn: &Turn<'_>,
    conn: &mut Connection,
    key: usize,
    ciphertext: Vec<u8>,
    batch: &mut Batch,
    spares: &mut Spares,
) -> Received {
    let mut plain = spares.take();
    let handshake_done = match conn.transport.incoming(&ciphertext, &mut plain) {
        Ok(done) => done,
        Err(failure) => {
            let failed = Some(tls_failed(&conn.peer, failure));
            return Received::Decrypted {
                ciphertext,
                plain,
                failed,
            };
        }
    };
    if handshake_done {
        WorkerCounters::add(&turn.counters.tls_handshakes, 1);
        if turn.mode.events() {
            let info = conn.transport.info();
            opened(turn, conn, batch, info);
        }
    }
    let echo = turn.mode.echoes();
    if echo && !plain.is_empty() {
        conn.output.reserve(spares);
    }
    let framing = &turn.config.framing;
    let mut failed = None;
    if !plain.is_empty() {
        match decode(key, conn, Some(&plain), echo, framing, turn.counters, batch) {
            Ok(0) => {}
            Ok(_) => conn.last_active = turn.now,
            Err(reason) => failed = Some(reason),
        }
    }
    if failed.is_none() && conn.transport.peer_closed() {
        // The peer's close_notify: answer what it sent, then close.
        conn.flush_then_close(CloseReason::PeerClosed);
        let finished = decode(key, conn, None, echo, framing, turn.counters, batch);
        failed = finished.err();
    }
    Received::Decrypted {
        ciphertext,
        plain,
        failed,
    }
}

/// Bytes arrived on a connection still waiting for its PROXY header: feed
/// them to it; once it is read, take its client as the peer, open a plain
/// connection, and pass on the bytes after the header.
#[cold]
fn received_header(
    turn: &Turn<'_>,
    conn: &mut Connection,
    key: usize,
    mut buf: Vec<u8>,
    batch: &mut Batch,
    spares: &mut Spares,
) -> Received {
    let fed = match conn.proxy.as_mut() {
        Some(preamble) => preamble.feed(&buf),
        None => return received_bytes(turn, conn, key, buf, batch, spares),
    };
    let (header, stream_from) = match fed {
        Fed::NeedMore => return Received::Kept(buf),
        Fed::Invalid(why) => {
            let reason = proxy_failed(turn, &conn.peer, &why);
            return Received::Decoded(buf, Some(reason));
        }
        Fed::Done {
            header,
            stream_from,
        } => (header, stream_from),
    };
    conn.proxy = None;
    if let Some(addresses) = header.addresses {
        log::debug!(
            "connection from {} is from {} (PROXY {:?})",
            conn.peer,
            addresses.source,
            header.version
        );
        conn.peer = Address::Inet(addresses.source);
    }
    // The idle clock starts again for the stream.
    conn.last_active = turn.now;
    if conn.transport.is_plain() && turn.mode.events() {
        opened(turn, conn, batch, None);
    }
    if stream_from == buf.len() {
        return Received::Kept(buf);
    }
    // Once per connection: the stream's bytes moved to the buffer's start.
    buf.drain(..stream_from);
    received_bytes(turn, conn, key, buf, batch, spares)
}

/// The peer ended its stream before its PROXY header was whole: a failure if
/// it sent part of one; a connection that sent nothing (a port probe, a
/// health check that only connects) just closes.
#[cold]
fn header_cut(turn: &Turn<'_>, conn: &Connection) -> CloseReason {
    match &conn.proxy {
        Some(preamble) if preamble.buffered() > 0 => proxy_failed(
            turn,
            &conn.peer,
            &"the connection ended inside the PROXY protocol header",
        ),
        _ => CloseReason::PeerClosed,
    }
}

/// Count and log a connection's PROXY protocol failure; the reason it closes
/// for (which no event carries: the connection never opened).
#[cold]
fn proxy_failed(turn: &Turn<'_>, peer: &Address, why: &dyn std::fmt::Display) -> CloseReason {
    log::info!("closing connection from {}: {}", peer, why);
    WorkerCounters::add(&turn.counters.proxy_errors, 1);
    CloseReason::Io {
        kind: io::ErrorKind::InvalidData,
        code: None,
    }
}

/// Log a connection's TLS failure; the reason it closes for.
#[cold]
fn tls_failed(peer: &Address, failure: TlsFailure) -> CloseReason {
    log::info!("closing connection from {}: {}", peer, failure);
    CloseReason::Tls(failure)
}

/// A send of connection `key` completed: the bytes of `buf` from `pos` on
/// were posted (one buffer, or a gathered send of several: a partial one is
/// posted again from where it stopped, inside whichever part that is).
#[allow(clippy::too_many_arguments)]
pub(crate) fn on_sent(
    turn: &Turn<'_>,
    table: &mut Table,
    port: &mut Port,
    spares: &mut Spares,
    key: usize,
    buf: SendBuf,
    pos: usize,
    result: io::Result<usize>,
) {
    let conn = match table.get_mut(key) {
        Some(c) => c,
        None => return,
    };
    match result {
        Ok(n) if conn.phase() != Phase::Closing => {
            WorkerCounters::add(&turn.counters.bytes_sent, n as u64);
            let pos = pos + n;
            if pos < buf.len() {
                // A partial send: post the rest before anything queued behind it.
                conn.output.sent(buf.len() - pos);
                let socket = conn.raw();
                port.submit(key as Token, Op::Send { socket, buf, pos });
                return;
            }
            // Output counts as activity once a whole send completes, so a
            // reader taking a byte at a time still times out.
            conn.output.sent(0);
            conn.last_active = turn.now;
        }
        Ok(_) => conn.output.sent(0),
        Err(e) => {
            conn.output.sent(0);
            if conn.phase() != Phase::Closing {
                log::debug!("send to {}: {}", conn.peer, e);
                WorkerCounters::add(&turn.counters.io_errors, 1);
                conn.abort(CloseReason::io(&e), port);
            }
        }
    }
    let buf = match buf {
        SendBuf::Owned(buf) => buf,
        other => {
            // A shared segment is dropped (this connection's reference to
            // it); a gather is emptied into the spares.
            spares.recycle_sent(other);
            table.touch(key);
            return;
        }
    };
    if turn.mode.echoes_raw() && spares.len() >= RAW_OUTPUT_SPARES {
        // The native raw echo mostly sends the buffers the port received
        // into: they go back to the port, once the worker keeps a few spares
        // of its own for the output it queues behind a send.
        port.give_buffer(buf);
    } else {
        spares.recycle(buf);
    }
    table.touch(key);
}
