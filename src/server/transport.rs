//! A connection's transport: what lies between the bytes on the socket and
//! the decoder (in) and the output queue (out).
//!
//! Only `Plain` exists, which passes bytes through at no cost. A TLS transport
//! (rustls) slots in as a second variant: [`Transport::incoming`] takes the
//! ciphertext of a recv completion and yields the plaintext for the decoder,
//! [`Transport::seal`] encrypts queued plaintext into the buffer that is sent,
//! and [`Transport::wants_write`] makes the worker post a send with no frame
//! queued (handshake records, alerts, `close_notify`).

use std::io;

use crate::port::SendBuf;

/// How a connection's bytes are carried.
#[derive(Debug)]
pub(crate) enum Transport {
    /// Plain TCP: the socket's bytes are the frames' bytes.
    Plain,
}

impl Transport {
    /// The bytes for the decoder out of `received` (the bytes of one recv).
    /// `Err`: the peer broke the transport; the connection is closed.
    ///
    /// `Plain` gives `received` itself, so the batch may keep frames by
    /// reference into the received buffer; a transport that yields bytes of
    /// its own must make the worker copy them instead.
    #[inline]
    pub(crate) fn incoming<'a>(&'a mut self, received: &'a [u8]) -> io::Result<&'a [u8]> {
        match self {
            Transport::Plain => Ok(received),
        }
    }

    /// Whether received buffers hold the decoder's bytes as they are (so the
    /// native raw echo may send a received buffer back unchanged).
    #[inline]
    pub(crate) fn is_plain(&self) -> bool {
        matches!(self, Transport::Plain)
    }

    /// The bytes to send for the queued output `plain`, taken as a whole:
    /// one owned buffer, one segment shared by many connections, or several
    /// of those gathered into one send (`SendBuf::Gathered`: read them in
    /// order with `plain.parts()`). A sealing transport reads shared bytes
    /// without writing them, and may encrypt all of `plain` into one owned
    /// buffer. `Plain`: `plain` itself.
    #[inline]
    pub(crate) fn seal(&mut self, plain: SendBuf) -> SendBuf {
        match self {
            Transport::Plain => plain,
        }
    }

    /// Whether the transport has bytes of its own to send even with no output
    /// queued. `Plain`: never.
    #[inline]
    pub(crate) fn wants_write(&self) -> bool {
        match self {
            Transport::Plain => false,
        }
    }
}
