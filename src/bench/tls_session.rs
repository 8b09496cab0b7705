//! A message over TLS: one connection's rustls session driven by the port.
//!
//! From the TCP connect on, a port-chosen receive is always in flight (it
//! holds no memory while it waits; spent buffers go back to the port), and at
//! most one send of TLS records, from the connection's `out`. Received bytes
//! go through `read_tls` and `process_new_packets`; the plaintext they give is
//! read into `input` up to the frame's length, and the message is done when
//! the whole echo is there (then compared with the frame sent). A frame is
//! handed to rustls in pieces its buffer limit allows, more after each send.
//!
//! A connection retires by queuing its `close_notify`, shutting down its
//! write side once that is sent, and waiting for the server's end of stream.
//! A TLS error sends rustls's alert (best effort) and fails the connection:
//! during the handshake as a connect failure, afterwards as a message error.

use std::io::{self, Read, Write};
use std::mem;
use std::net::Shutdown;

use rustls::ClientConnection;

use super::conn::{compare, Conn, State, Step};
use super::payload::Messages;
use crate::port::{CompletionPort, Op, Port, Token};

/// One connection's TLS state.
pub(super) struct TlsSession {
    tls: ClientConnection,
    /// The plaintext frame of the current message: written through rustls,
    /// and what the echo must equal.
    frame: Vec<u8>,
    /// Bytes of `frame` handed to rustls so far.
    written: usize,
    /// Bytes of the echo in the connection's `input` so far.
    got: usize,
    /// A send of TLS records is in flight (the connection's `out` is with the port).
    sending: bool,
    /// Retiring: the write side is to be shut down once the `close_notify` is sent.
    closing: bool,
    /// Retiring: the server's end of stream came while a send was in flight.
    ended: bool,
}

impl TlsSession {
    /// The session of a connection whose TCP connect just succeeded.
    pub(super) fn new(tls: ClientConnection) -> TlsSession {
        TlsSession {
            tls,
            frame: Vec::new(),
            written: 0,
            got: 0,
            sending: false,
            closing: false,
            ended: false,
        }
    }

    /// Start the handshake: post the first receive and send the ClientHello.
    pub(super) fn start(&mut self, conn: &mut Conn, port: &mut Port, token: Token) -> Step {
        receive(conn, port, token);
        self.flush(conn, port, token);
        Step::Wait
    }

    /// Send message number `n`; its echo is read as it arrives.
    pub(super) fn begin(
        &mut self,
        conn: &mut Conn,
        port: &mut Port,
        token: Token,
        messages: &Messages,
        n: usize,
    ) -> Step {
        if let Err(why) = messages.frame_into(n, &mut self.frame) {
            return Step::Failed(why);
        }
        // Sized once per connection; the echo is read into it in place.
        conn.input.resize(self.frame.len(), 0);
        self.written = 0;
        self.got = 0;
        self.write_plaintext();
        self.flush(conn, port, token);
        Step::Wait
    }

    /// Queue the `close_notify`; the connection retires once the server has
    /// closed too.
    pub(super) fn retire(&mut self, conn: &mut Conn, port: &mut Port, token: Token) -> Step {
        self.tls.send_close_notify();
        self.closing = true;
        self.flush(conn, port, token);
        Step::Wait
    }

    /// Say `close_notify` straight to the socket, best effort (the run is
    /// ending and the connection is about to be shut down).
    pub(super) fn close_now(&mut self, conn: &Conn) {
        self.tls.send_close_notify();
        self.send_now(conn);
    }

    /// Whether a send of TLS records is in flight (a handshake's last
    /// flight, say: shutting the socket's write side now would lose it).
    pub(super) fn sending(&self) -> bool {
        self.sending
    }

    /// A send of TLS records came back whole (`Ok`), or failed.
    pub(super) fn on_sent(
        &mut self,
        conn: &mut Conn,
        port: &mut Port,
        token: Token,
        sent: Result<(), String>,
    ) -> Step {
        self.sending = false;
        if let Err(why) = sent {
            return broken(conn.state, why);
        }
        if self.ended {
            return Step::Retired;
        }
        if conn.state == State::Busy {
            self.write_plaintext();
        }
        self.flush(conn, port, token);
        if self.closing && !self.sending {
            self.closing = false;
            if let Some(socket) = &conn.socket {
                // If this fails the connection is gone: the receive ends anyway.
                let _ = socket.shutdown(Shutdown::Write);
            }
        }
        Step::Wait
    }

    /// A receive came back with TLS records (in a buffer of the port's).
    pub(super) fn on_received(
        &mut self,
        conn: &mut Conn,
        port: &mut Port,
        token: Token,
        buf: Vec<u8>,
        result: io::Result<usize>,
    ) -> Step {
        let fed = match result {
            Ok(0) => Err(self.end_of_stream(conn)),
            Ok(_) => self.feed(conn, &buf),
            Err(e) => Err(broken(conn.state, format!("recv failed: {}", e))),
        };
        port.give_buffer(buf);
        if let Err(step) = fed {
            return step;
        }
        receive(conn, port, token);
        self.flush(conn, port, token);
        match conn.state {
            State::Handshaking if !self.tls.is_handshaking() => Step::Established,
            State::Busy if self.got == self.frame.len() => compare(&conn.input, &self.frame),
            _ => Step::Wait,
        }
    }

    /// The server closed its side.
    fn end_of_stream(&mut self, conn: &Conn) -> Step {
        match conn.state {
            State::Retiring if self.sending => {
                self.ended = true;
                Step::Wait
            }
            State::Retiring => Step::Retired,
            State::Handshaking => Step::HandshakeFailed(
                "the server closed the connection during the handshake".to_string(),
            ),
            State::Busy => Step::Failed(format!(
                "the server closed the connection after {} of {} reply bytes",
                self.got,
                self.frame.len()
            )),
            _ => Step::Failed("the server closed the connection".to_string()),
        }
    }

    /// Decrypt `data` and read the plaintext it gives.
    fn feed(&mut self, conn: &mut Conn, mut data: &[u8]) -> Result<(), Step> {
        while !data.is_empty() {
            let took = match self.tls.read_tls(&mut data) {
                Ok(took) => took,
                Err(e) => return Err(broken(conn.state, format!("TLS read failed: {}", e))),
            };
            if let Err(e) = self.tls.process_new_packets() {
                self.send_now(conn);
                return Err(tls_error(conn.state, e));
            }
            self.read_plaintext(conn)?;
            if took == 0 {
                // rustls took nothing yet found nothing wrong: never spin on it.
                let why = "rustls took none of the bytes received".to_string();
                return Err(broken(conn.state, why));
            }
        }
        Ok(())
    }

    /// Move decrypted bytes into the echo; any beyond it, or outside a
    /// message, or the server's `close_notify` mid-message, fails.
    fn read_plaintext(&mut self, conn: &mut Conn) -> Result<(), Step> {
        loop {
            let expected = conn.state == State::Busy && self.got < conn.input.len();
            let mut stray = [0u8; 64];
            let read = if expected {
                self.tls.reader().read(&mut conn.input[self.got..])
            } else {
                self.tls.reader().read(&mut stray)
            };
            match read {
                Ok(0) if conn.state == State::Retiring => return Ok(()),
                Ok(0) => {
                    return Err(broken(
                        conn.state,
                        "the server ended the TLS session (close_notify)".to_string(),
                    ))
                }
                Ok(n) if expected => self.got += n,
                Ok(n) => {
                    return Err(Step::Failed(format!(
                        "the server sent {} bytes more than the echo",
                        n
                    )))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(broken(conn.state, format!("TLS read failed: {}", e))),
            }
        }
    }

    /// Hand rustls as much of the frame as its buffer limit takes.
    fn write_plaintext(&mut self) {
        if self.written < self.frame.len() {
            // Writing plaintext only fills rustls's buffer: it cannot fail.
            if let Ok(n) = self.tls.writer().write(&self.frame[self.written..]) {
                self.written += n;
            }
        }
    }

    /// Post a send of every TLS record rustls has queued, unless one is in
    /// flight (its completion flushes again).
    fn flush(&mut self, conn: &mut Conn, port: &mut Port, token: Token) {
        if self.sending || !self.tls.wants_write() {
            return;
        }
        let mut out = mem::take(&mut conn.out);
        out.clear();
        self.drain_records(&mut out);
        self.sending = true;
        conn.ops += 1;
        let socket = conn.raw;
        port.submit(
            token,
            Op::Send {
                socket,
                buf: out.into(),
                pos: 0,
            },
        );
    }

    /// Write what rustls has queued (an alert) straight to the socket, best
    /// effort, unless a send is in flight (the bytes would interleave).
    #[cold]
    fn send_now(&mut self, conn: &Conn) {
        if self.sending {
            return;
        }
        let mut out = Vec::new();
        self.drain_records(&mut out);
        if let Some(socket) = &conn.socket {
            let _ = socket.send(&out);
        }
    }

    fn drain_records(&mut self, out: &mut Vec<u8>) {
        while self.tls.wants_write() {
            // Into a Vec: cannot fail, and takes every record.
            match self.tls.write_tls(out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

/// Post the next port-chosen receive.
fn receive(conn: &mut Conn, port: &mut Port, token: Token) {
    conn.ops += 1;
    let socket = conn.raw;
    port.submit(
        token,
        Op::Recv {
            socket,
            buf: Vec::new(),
        },
    );
}

/// A broken connection: during the handshake a connect failure, afterwards a
/// failed message.
#[cold]
fn broken(state: State, why: String) -> Step {
    if state == State::Handshaking {
        Step::HandshakeFailed(why)
    } else {
        Step::Failed(why)
    }
}

/// A TLS protocol error, with a hint when the server's certificate was refused.
#[cold]
fn tls_error(state: State, e: rustls::Error) -> Step {
    let hint = match e {
        rustls::Error::InvalidCertificate(_) => {
            " (does the server's certificate chain to --tls-ca and name --tls-server-name?)"
        }
        _ => "",
    };
    broken(state, format!("{}{}", e, hint))
}
