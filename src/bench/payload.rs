//! The bytes of each message: a payload cut from a repeating alphabet at an
//! offset that changes from message to message, framed by the run's codec.

use super::config::MessageFraming;
use crate::framing::Framing;

/// Payload bytes cycle through these 64 characters (no `\n`, so any slice is a
/// valid `lines` payload); each message starts at a different offset.
const ALPHABET: &[u8; 64] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz+/";

/// Makes the frames a client thread sends.
pub(super) struct Messages {
    codec: Framing,
    /// `ALPHABET` repeated over `size + 64` bytes: payloads are slices of it.
    pattern: Vec<u8>,
    size: usize,
    frame_len: usize,
}

impl Messages {
    /// Messages of `size` payload bytes framed by `framing`.
    pub(super) fn new(framing: MessageFraming, size: usize) -> Messages {
        let codec = framing.codec();
        Messages {
            pattern: ALPHABET
                .iter()
                .copied()
                .cycle()
                .take(size + ALPHABET.len())
                .collect(),
            size,
            frame_len: size + codec.overhead(),
            codec,
        }
    }

    /// The length of every frame (and of every echo).
    pub(super) fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// Replace `out` with the frame of message number `n` (any number: only
    /// its remainder by 64 matters).
    pub(super) fn frame_into(&self, n: usize, out: &mut Vec<u8>) -> Result<(), String> {
        let shift = n % ALPHABET.len();
        out.clear();
        // Cannot fail: payloads have no delimiter and fit a 4-byte length.
        self.codec
            .encode_into(&self.pattern[shift..shift + self.size], out)
            .map_err(|e| format!("cannot frame the message: {}", e))
    }
}
