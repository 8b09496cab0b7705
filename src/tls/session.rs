//! One connection's TLS session: ciphertext from the port in, plaintext for
//! the decoder out; queued plaintext in, records to send out; the handshake's
//! deadline and its end; `close_notify` both ways.
//!
//! Never blocks and never touches a socket. rustls's own buffers hold at most
//! one record in and what the worker has not yet taken out; its send buffer is
//! unbounded here, because the server bounds each connection's output itself
//! (`max_output`) and takes every record out right after it is made.

use std::io::{Read, Write};
use std::time::Instant;

use rustls::ServerConnection;

use super::failure::TlsFailure;
use super::info::TlsInfo;
use super::records::RecordBoundary;

/// A connection's TLS session.
#[derive(Debug)]
pub struct Session {
    conn: ServerConnection,
    records: RecordBoundary,
    /// When the handshake must have finished.
    deadline: Instant,
    /// rustls failed: nothing more is read, no `close_notify` is sent.
    failed: bool,
    /// The peer sent `close_notify`: what follows is ignored.
    peer_closed: bool,
    /// Our `close_notify` is queued: no plaintext is sealed after it.
    close_sent: bool,
}

impl Session {
    pub(crate) fn new(mut conn: ServerConnection, deadline: Instant) -> Session {
        conn.set_buffer_limit(None);
        Session {
            conn,
            records: RecordBoundary::default(),
            deadline,
            failed: false,
            peer_closed: false,
            close_sent: false,
        }
    }

    /// Take in the bytes of one recv: their plaintext is appended to `plain`
    /// (none while handshaking); handshake records and alerts to answer them
    /// are queued ([`Session::wants_write`]). Returns whether the handshake
    /// finished with these bytes. Bytes after the peer's `close_notify` or a
    /// failure are ignored.
    pub fn receive(
        &mut self,
        mut ciphertext: &[u8],
        plain: &mut Vec<u8>,
    ) -> Result<bool, TlsFailure> {
        if self.failed || self.peer_closed {
            return Ok(false);
        }
        let was_handshaking = self.conn.is_handshaking();
        self.records.feed(ciphertext);
        while !ciphertext.is_empty() {
            if let Err(e) = self.conn.read_tls(&mut ciphertext) {
                return Err(self.fail(e.to_string()));
            }
            let state = match self.conn.process_new_packets() {
                Ok(state) => state,
                Err(e) => return Err(self.fail(e.to_string())),
            };
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let start = plain.len();
                plain.resize(start + n, 0);
                if let Err(e) = self.conn.reader().read_exact(&mut plain[start..]) {
                    plain.truncate(start);
                    return Err(self.fail(e.to_string()));
                }
            }
            if state.peer_has_closed() {
                self.peer_closed = true;
                break;
            }
        }
        Ok(was_handshaking && !self.conn.is_handshaking())
    }

    /// The peer ended its TCP stream: `Err` if that cut the handshake short or
    /// a record in two. (A stream ended between records without `close_notify`
    /// is a clean end: many clients close so.)
    pub fn end_of_stream(&self) -> Result<(), TlsFailure> {
        if self.failed || self.peer_closed {
            Ok(())
        } else if self.conn.is_handshaking() {
            Err(TlsFailure::HandshakeUnfinished)
        } else if !self.records.at_boundary() {
            Err(TlsFailure::Truncated)
        } else {
            Ok(())
        }
    }

    /// Encrypt `plain` (the queued output, as a sequence of byte slices; held
    /// until the handshake finishes) and append to `out` every record ready to
    /// send: handshake records, alerts, then the data. Nothing is sealed after
    /// our `close_notify`.
    pub fn seal(&mut self, plain: &[&[u8]], out: &mut Vec<u8>) {
        self.encrypt(plain);
        self.write_records(out);
    }

    /// The first half of [`Session::seal`]: encrypt `plain` into records held
    /// by the session (so the buffer `plain` lies in may then receive them).
    pub fn encrypt(&mut self, plain: &[&[u8]]) {
        if !self.close_sent {
            let mut writer = self.conn.writer();
            for part in plain {
                // The send buffer is unbounded: the whole part is taken.
                let _ = writer.write_all(part);
            }
        }
    }

    /// The second half of [`Session::seal`]: append to `out` every record
    /// ready to send.
    pub fn write_records(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            match self.conn.write_tls(out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Whether records are waiting to be sent (handshake, alert, `close_notify`).
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Whether the handshake has not finished yet.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether the handshake is still going at `now`, past its deadline.
    pub fn handshake_expired(&self, now: Instant) -> bool {
        now >= self.deadline && self.conn.is_handshaking()
    }

    /// Whether the peer sent `close_notify` (it sends nothing more).
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Queue our `close_notify`, on a clean close of an established session
    /// (once): true if it was queued now.
    pub fn close_notify(&mut self) -> bool {
        if self.close_sent || self.failed || self.conn.is_handshaking() {
            return false;
        }
        self.close_sent = true;
        self.conn.send_close_notify();
        true
    }

    /// What the finished handshake negotiated.
    pub fn info(&self) -> TlsInfo {
        TlsInfo::of(&self.conn)
    }

    #[cold]
    fn fail(&mut self, why: String) -> TlsFailure {
        self.failed = true;
        TlsFailure::Protocol(why)
    }
}
