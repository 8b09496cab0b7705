//! A connection's PROXY protocol preamble (`proxy_protocol`): the bytes of
//! its header as they arrive, until [`crate::proxy::parse`] decides.
//!
//! A header lying whole in the first recv (the usual case: a load balancer
//! writes it at once) is parsed in the received buffer itself; only a header
//! split over recvs is copied here, at most [`MAX_HEADER`] bytes. The
//! connection drops its preamble once the header is read; the worker's steps
//! (`receive.rs`) apply the result: the peer, the `Open` event, the bytes
//! after the header passed on to TLS or the decoder.

use crate::proxy::{parse, Header, Invalid, Parse, MAX_HEADER};

/// The header bytes a connection received so far.
#[derive(Debug, Default)]
pub(crate) struct Preamble {
    buffered: Vec<u8>,
}

/// What one recv's bytes made of the header.
#[derive(Debug)]
pub(crate) enum Fed {
    /// Not complete yet; the bytes are kept here.
    NeedMore,
    /// The header, and where the stream starts in the bytes just fed.
    Done {
        /// The header read.
        header: Header,
        /// The offset of the first byte after the header in the bytes fed.
        stream_from: usize,
    },
    /// The bytes are no valid header.
    Invalid(Invalid),
}

impl Preamble {
    /// How many header bytes arrived before, in earlier recvs.
    pub(crate) fn buffered(&self) -> usize {
        self.buffered.len()
    }

    /// The bytes of one recv, in order after the earlier ones.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Fed {
        let before = self.buffered.len();
        if before == 0 {
            return match parse(bytes) {
                Parse::NeedMore => {
                    self.buffered.extend_from_slice(bytes);
                    Fed::NeedMore
                }
                Parse::Done(header, n) => Fed::Done {
                    header,
                    stream_from: n,
                },
                Parse::Invalid(why) => Fed::Invalid(why),
            };
        }
        // `parse` decides within MAX_HEADER bytes, so no more are ever kept.
        let take = bytes.len().min(MAX_HEADER.saturating_sub(before));
        self.buffered.extend_from_slice(&bytes[..take]);
        match parse(&self.buffered) {
            Parse::NeedMore if self.buffered.len() >= MAX_HEADER => Fed::Invalid(Invalid::TooLong),
            Parse::NeedMore => Fed::NeedMore,
            Parse::Done(header, n) => Fed::Done {
                header,
                stream_from: n - before,
            },
            Parse::Invalid(why) => Fed::Invalid(why),
        }
    }
}
