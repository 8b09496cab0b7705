//! A message over plain TCP: the frame is sent from the connection's `out`,
//! and the echo received into `input`, whose capacity is the frame length
//! exactly, so a receive can never read into the next reply. The send and the
//! receive are posted together; the message is done when both have come back,
//! and only then are the bytes compared.

use std::io;

use super::conn::{compare, Conn, Step};
use crate::port::{CompletionPort, Op, Port, Token};

/// Post the send of the frame in `conn.out` and the receive of its echo.
pub(super) fn begin(conn: &mut Conn, port: &mut Port, token: Token, frame_len: usize) {
    if conn.input.capacity() != frame_len {
        conn.input = Vec::with_capacity(frame_len);
    }
    conn.input.clear();
    conn.sent = false;
    conn.received = false;
    conn.ops += 2;
    let socket = conn.raw;
    let buf = std::mem::take(&mut conn.out).into();
    port.submit(
        token,
        Op::Send {
            socket,
            buf,
            pos: 0,
        },
    );
    let buf = std::mem::take(&mut conn.input);
    port.submit(token, Op::Recv { socket, buf });
}

/// The send of the frame came back whole (`Ok`), or failed.
pub(super) fn on_sent(conn: &mut Conn, sent: Result<(), String>) -> Step {
    match sent {
        Ok(()) => {
            conn.sent = true;
            done_if_both(conn)
        }
        Err(why) => Step::Failed(why),
    }
}

/// A receive of the echo came back.
pub(super) fn on_received(
    conn: &mut Conn,
    port: &mut Port,
    token: Token,
    buf: Vec<u8>,
    result: io::Result<usize>,
    frame_len: usize,
) -> Step {
    match result {
        Ok(0) => {
            let got = buf.len();
            conn.input = buf;
            Step::Failed(format!(
                "the server closed the connection after {} of {} reply bytes",
                got, frame_len
            ))
        }
        Ok(_) if buf.len() < frame_len => {
            // Part of the reply: read the rest into the same buffer.
            conn.ops += 1;
            let socket = conn.raw;
            port.submit(token, Op::Recv { socket, buf });
            Step::Wait
        }
        Ok(_) => {
            conn.input = buf;
            conn.received = true;
            done_if_both(conn)
        }
        Err(e) => {
            conn.input = buf;
            Step::Failed(format!("recv failed: {}", e))
        }
    }
}

/// Both halves of a message are back: compare.
fn done_if_both(conn: &Conn) -> Step {
    if conn.sent && conn.received {
        compare(&conn.input, &conn.out)
    } else {
        Step::Wait
    }
}
