//! A connection's transport: what lies between the bytes on the socket and
//! the decoder (in) and the output queue (out).
//!
//! `Plain` passes bytes through at no cost: the worker decodes a received
//! buffer as it is and sends queued output as it is, and every method here is
//! one match that inlines to nothing. `Tls` is a rustls session
//! (`crate::tls::Session`): [`Transport::incoming`] decrypts the ciphertext of
//! a recv into a buffer of the worker's (so the worker decodes, and the batch
//! keeps, that buffer instead of the received one), [`Transport::seal`]
//! encrypts queued plaintext into the buffer that is sent, and
//! [`Transport::wants_write`] makes the worker post a send with no output
//! queued (handshake records, alerts, `close_notify`).

use std::time::Instant;

use crate::port::SendBuf;
use crate::tls::{Session, TlsFailure, TlsInfo};

/// How a connection's bytes are carried.
#[derive(Debug)]
pub(crate) enum Transport {
    /// Plain TCP: the socket's bytes are the frames' bytes.
    Plain,
    /// TLS: the socket carries records; the frames are their plaintext.
    Tls(Box<Session>),
}

impl Transport {
    /// Whether received buffers hold the decoder's bytes as they are (so the
    /// worker decodes them in place, and the native raw echo may send a
    /// received buffer back unchanged). Else the worker calls
    /// [`Transport::incoming`].
    #[inline]
    pub(crate) fn is_plain(&self) -> bool {
        matches!(self, Transport::Plain)
    }

    /// The plaintext of `received` (the bytes of one recv), appended to
    /// `plain`; returns whether the handshake finished with these bytes.
    /// `Err`: the peer broke TLS; the connection is closed (after any alert
    /// queued for it). `Plain`: the bytes themselves, copied (the worker does
    /// not call it for a plain connection).
    pub(crate) fn incoming(
        &mut self,
        received: &[u8],
        plain: &mut Vec<u8>,
    ) -> Result<bool, TlsFailure> {
        match self {
            Transport::Plain => {
                plain.extend_from_slice(received);
                Ok(false)
            }
            Transport::Tls(session) => session.receive(received, plain),
        }
    }

    /// The peer ended its stream: `Err` if that is a TLS failure (mid-handshake
    /// or mid-record). `Plain`: never.
    #[inline]
    pub(crate) fn ended(&self) -> Result<(), TlsFailure> {
        match self {
            Transport::Plain => Ok(()),
            Transport::Tls(session) => session.end_of_stream(),
        }
    }

    /// Whether the peer closed the session inside the stream (`close_notify`),
    /// which the worker treats as the end of the stream. `Plain`: never.
    #[inline]
    pub(crate) fn peer_closed(&self) -> bool {
        match self {
            Transport::Plain => false,
            Transport::Tls(session) => session.peer_closed(),
        }
    }

    /// The bytes to send for the queued output `plain`, taken as a whole:
    /// one owned buffer, one segment shared by many connections (read, never
    /// written), or several of those gathered into one send
    /// (`SendBuf::Gathered`, read in order with `plain.parts()`). `Plain`:
    /// `plain` itself. `Tls`: the records of all of `plain` behind any
    /// pending handshake records or alerts, in one owned buffer (`plain`'s
    /// own when it is owned).
    #[inline]
    pub(crate) fn seal(&mut self, plain: SendBuf) -> SendBuf {
        match self {
            Transport::Plain => plain,
            Transport::Tls(session) => seal_tls(session, plain),
        }
    }

    /// Whether the transport has bytes of its own to send even with no output
    /// queued. `Plain`: never.
    #[inline]
    pub(crate) fn wants_write(&self) -> bool {
        match self {
            Transport::Plain => false,
            Transport::Tls(session) => session.wants_write(),
        }
    }

    /// Whether the TLS handshake has not finished yet. `Plain`: never.
    #[inline]
    pub(crate) fn handshaking(&self) -> bool {
        match self {
            Transport::Plain => false,
            Transport::Tls(session) => session.is_handshaking(),
        }
    }

    /// Whether the handshake is still going at `now`, past its deadline.
    pub(crate) fn handshake_expired(&self, now: Instant) -> bool {
        match self {
            Transport::Plain => false,
            Transport::Tls(session) => session.handshake_expired(now),
        }
    }

    /// On a clean close, once the output is flushed: queue the transport's
    /// own goodbye (TLS `close_notify`); true if something was queued, to be
    /// sent before the connection closes. `Plain`: nothing.
    #[inline]
    pub(crate) fn close_notify(&mut self) -> bool {
        match self {
            Transport::Plain => false,
            Transport::Tls(session) => session.close_notify(),
        }
    }

    /// What the finished handshake negotiated. `Plain`: none.
    pub(crate) fn info(&self) -> Option<TlsInfo> {
        match self {
            Transport::Plain => None,
            Transport::Tls(session) => Some(session.info()),
        }
    }
}

/// The records of `plain` (and of whatever the session had pending), in
/// `plain`'s buffer when it owns one.
fn seal_tls(session: &mut Session, plain: SendBuf) -> SendBuf {
    let mut out = match plain.single() {
        Some(bytes) => {
            session.encrypt(&[bytes]);
            match plain.into_owned() {
                Some(mut buf) => {
                    buf.clear();
                    buf
                }
                // A shared segment is only read: this connection's reference is dropped.
                None => Vec::new(),
            }
        }
        None => {
            // Gathered (queued broadcasts): joined first, so its many small
            // parts become a few full records rather than one record each;
            // the joined buffer then takes the records.
            let mut joined = plain.to_vec();
            session.encrypt(&[&joined]);
            joined.clear();
            joined
        }
    };
    session.write_records(&mut out);
    SendBuf::Owned(out)
}
