//! The codecs that cut a byte stream into messages (frames) and back: raw, lines and
//! length-prefixed.
//!
//! Pure functions over bytes: no I/O. The server feeds each received chunk to a
//! [`Decoder`] and frames each reply with [`Framing::encode_into`]; the Python bindings
//! expose the same codecs so clients and tests frame exactly as the server does.
//!
//! A [`Decoder`] is zero-copy where it can be: a frame lying wholly inside the chunk being
//! fed is handed out as a slice of that chunk; only an incomplete frame at the end of a
//! chunk is copied, and never more than the frame limit (`max_frame`) allows. A large
//! frame assembled that way is handed over by [`Decoder::feed_frames`] rather than
//! lent ([`Frame::Owned`]), so a caller that keeps it need not copy it again.

use std::error::Error;
use std::fmt;
use std::mem;

/// The longest delimiter [`Framing::lines`] accepts, in bytes.
pub const MAX_DELIMITER: usize = 64;

/// A decoder's buffer keeps its allocation between frames up to this size; a larger one
/// (left by a big frame) is freed, so idle connections do not hold peak memory.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Byte order of a length prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteOrder {
    /// Most significant byte first (network order).
    Big,
    /// Least significant byte first.
    Little,
}

impl ByteOrder {
    /// Parses `"big"` or `"little"` (the names Python's `int.to_bytes` uses).
    pub fn parse(name: &str) -> Result<ByteOrder, ConfigError> {
        match name {
            "big" => Ok(ByteOrder::Big),
            "little" => Ok(ByteOrder::Little),
            _ => Err(ConfigError::BadByteOrder {
                name: name.to_owned(),
            }),
        }
    }

    /// The name [`ByteOrder::parse`] accepts: `"big"` or `"little"`.
    pub fn name(self) -> &'static str {
        match self {
            ByteOrder::Big => "big",
            ByteOrder::Little => "little",
        }
    }
}

/// How a byte stream is cut into messages (frames).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Each received chunk is a message (the seeds' echo).
    Raw,
    /// Messages end with `delimiter` (not part of the payload). Non-empty, at most 64 bytes.
    Lines {
        /// The bytes that end each message.
        delimiter: Vec<u8>,
    },
    /// Each message is preceded by its payload length as an unsigned integer of `width`
    /// (1, 2, 4 or 8) bytes.
    LengthPrefixed {
        /// Size of the prefix in bytes: 1, 2, 4 or 8.
        width: u8,
        /// Byte order of the prefix.
        order: ByteOrder,
    },
}

/// Why a framing could not be built (bad argument): a `ValueError` in Python.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The delimiter of a lines framing is empty.
    EmptyDelimiter,
    /// The delimiter of a lines framing is longer than [`MAX_DELIMITER`] bytes.
    DelimiterTooLong {
        /// The length given.
        len: usize,
    },
    /// The prefix width is not 1, 2, 4 or 8.
    BadWidth {
        /// The width given.
        width: u64,
    },
    /// The byte order is not `"big"` or `"little"`.
    BadByteOrder {
        /// The name given.
        name: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::EmptyDelimiter => write!(
                f,
                "delimiter must be 1 to {MAX_DELIMITER} bytes, got an empty delimiter"
            ),
            ConfigError::DelimiterTooLong { len } => write!(
                f,
                "delimiter must be 1 to {MAX_DELIMITER} bytes, got {len} bytes"
            ),
            ConfigError::BadWidth { width } => {
                write!(f, "width must be 1, 2, 4 or 8, got {width}")
            }
            ConfigError::BadByteOrder { name } => {
                write!(f, "byteorder must be \"big\" or \"little\", got {name:?}")
            }
        }
    }
}

impl Error for ConfigError {}

/// What went wrong with a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A frame's payload (declared by a prefix, or buffered without a delimiter) is over
    /// the limit.
    TooLarge {
        /// The declared size, or (lines) how large the payload is known to be at least.
        size: u64,
        /// The decoder's `max_frame`.
        limit: usize,
    },
    /// A payload contains the delimiter (lines encoding): it cannot be framed.
    DelimiterInPayload,
    /// A payload is longer than the prefix width can express (encoding).
    TooLongForPrefix {
        /// The payload length.
        size: usize,
        /// The prefix width in bytes.
        width: u8,
    },
    /// The stream ended inside a frame (length-prefixed, at [`Decoder::finish`]).
    Truncated {
        /// Bytes of the incomplete frame received, its prefix included.
        buffered: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FrameError::TooLarge { size, limit } => write!(
                f,
                "frame payload of {size} bytes is over the limit of {limit} bytes (max_frame)"
            ),
            FrameError::DelimiterInPayload => {
                f.write_str("payload contains the delimiter, so it cannot be framed as a line")
            }
            FrameError::TooLongForPrefix { size, width } => write!(
                f,
                "payload of {size} bytes is too long for a {width}-byte length prefix (at most {})",
                prefix_max(width)
            ),
            FrameError::Truncated { buffered } => write!(
                f,
                "stream ended inside a frame ({buffered} bytes of it received)"
            ),
        }
    }
}

impl Error for FrameError {}

impl Framing {
    /// Each received chunk is a message.
    pub fn raw() -> Framing {
        Framing::Raw
    }

    /// Messages end with `delimiter`, which must be 1 to [`MAX_DELIMITER`] bytes.
    pub fn lines(delimiter: &[u8]) -> Result<Framing, ConfigError> {
        match delimiter.len() {
            0 => Err(ConfigError::EmptyDelimiter),
            len if len > MAX_DELIMITER => Err(ConfigError::DelimiterTooLong { len }),
            _ => Ok(Framing::Lines {
                delimiter: delimiter.to_vec(),
            }),
        }
    }

    /// Messages preceded by their length in `width` (1, 2, 4 or 8) bytes of `order`.
    pub fn length_prefixed(width: u64, order: ByteOrder) -> Result<Framing, ConfigError> {
        match width {
            1 | 2 | 4 | 8 => Ok(Framing::LengthPrefixed {
                width: width as u8,
                order,
            }),
            _ => Err(ConfigError::BadWidth { width }),
        }
    }

    /// Appends the encoded frame of `payload` to `out` (raw: the payload as is; lines:
    /// payload + delimiter; length-prefixed: prefix + payload). On error `out` is unchanged.
    ///
    /// A lines payload is refused if the delimiter would be found before its end: inside
    /// the payload, or straddling its end (payload `b"ab"` with delimiter `b"abab"`).
    pub fn encode_into(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        match self {
            Framing::Raw => out.extend_from_slice(payload),
            Framing::Lines { delimiter } => {
                let k = delimiter.len();
                let tail = payload.len().saturating_sub(k - 1);
                let straddles = (tail..payload.len()).any(|s| {
                    let (a, b) = delimiter.split_at(payload.len() - s);
                    payload[s..] == *a && delimiter[..b.len()] == *b
                });
                if straddles || find(payload, delimiter).is_some() {
                    return Err(FrameError::DelimiterInPayload);
                }
                out.reserve(payload.len() + k);
                out.extend_from_slice(payload);
                out.extend_from_slice(delimiter);
            }
            &Framing::LengthPrefixed { width, order } => {
                if payload.len() as u64 > prefix_max(width) {
                    return Err(FrameError::TooLongForPrefix {
                        size: payload.len(),
                        width,
                    });
                }
                let width = usize::from(width);
                let len = payload.len() as u64;
                out.reserve(width + payload.len());
                match order {
                    ByteOrder::Big => out.extend_from_slice(&len.to_be_bytes()[8 - width..]),
                    ByteOrder::Little => out.extend_from_slice(&len.to_le_bytes()[..width]),
                }
                out.extend_from_slice(payload);
            }
        }
        Ok(())
    }

    /// The encoded frame of `payload`, in a new vector.
    pub fn encode(&self, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::with_capacity(payload.len() + self.overhead());
        self.encode_into(payload, &mut out)?;
        Ok(out)
    }

    /// Bytes the encoding adds to a payload: 0, the delimiter length, or the prefix width.
    pub fn overhead(&self) -> usize {
        match self {
            Framing::Raw => 0,
            Framing::Lines { delimiter } => delimiter.len(),
            Framing::LengthPrefixed { width, .. } => usize::from(*width),
        }
    }

    /// A decoder for a stream in this framing, refusing payloads over `max_frame` bytes.
    pub fn decoder(&self, max_frame: usize) -> Decoder {
        Decoder {
            framing: self.clone(),
            max_frame,
            buf: Vec::new(),
            declared: None,
            poisoned: None,
        }
    }
}

/// One decoded payload, as [`Decoder::feed_frames`] hands it out.
#[derive(Debug)]
pub enum Frame<'a> {
    /// A slice of the chunk being fed, or of the decoder's buffer (reused later).
    Borrowed(&'a [u8]),
    /// Assembled across chunks in a buffer too large to keep (over 64 KiB) that
    /// the decoder would free now: handed over, so a keeper need not copy it.
    Owned(Vec<u8>),
}

impl Frame<'_> {
    /// The payload's bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Frame::Borrowed(bytes) => bytes,
            Frame::Owned(buf) => buf,
        }
    }
}

/// A streaming decoder: feed it the byte stream in chunks of any size, get whole
/// payloads in order.
#[derive(Clone, Debug)]
pub struct Decoder {
    framing: Framing,
    max_frame: usize,
    /// The incomplete frame at the end of the stream so far. Lines: payload bytes,
    /// possibly ending in part of a delimiter. Length-prefixed: prefix bytes while
    /// `declared` is `None`, then payload bytes.
    buf: Vec<u8>,
    /// Length-prefixed: the payload length read from the current frame's prefix.
    declared: Option<usize>,
    /// The first error; returned again by every later call.
    poisoned: Option<FrameError>,
}

impl Decoder {
    /// Cuts `data` (the next bytes of the stream) into frames, calling `on_frame(payload)`
    /// for each complete one in order.
    ///
    /// Frames completed before an error are still delivered. After an error the decoder
    /// is poisoned: its buffer is freed and every later call returns the same error.
    pub fn feed(&mut self, data: &[u8], on_frame: &mut dyn FnMut(&[u8])) -> Result<(), FrameError> {
        self.feed_frames(data, &mut |frame| on_frame(frame.bytes()))
    }

    /// [`Decoder::feed`], with each payload as a [`Frame`]: a large one
    /// assembled across chunks is handed over rather than lent.
    pub fn feed_frames(
        &mut self,
        data: &[u8],
        on_frame: &mut dyn FnMut(Frame<'_>),
    ) -> Result<(), FrameError> {
        if let Some(err) = &self.poisoned {
            return Err(err.clone());
        }
        let max = self.max_frame;
        let result = match &self.framing {
            Framing::Raw => feed_raw(max, data, on_frame),
            Framing::Lines { delimiter } => {
                feed_lines(delimiter, max, &mut self.buf, data, on_frame)
            }
            &Framing::LengthPrefixed { width, order } => {
                let (buf, declared) = (&mut self.buf, &mut self.declared);
                feed_prefixed(
                    usize::from(width),
                    order,
                    max,
                    buf,
                    declared,
                    data,
                    on_frame,
                )
            }
        };
        result.map_err(|err| self.poison(err))
    }

    /// The stream ended. Lines: the buffered bytes, if any, are a final frame without
    /// delimiter. Length-prefixed: buffered bytes are [`FrameError::Truncated`]. Raw:
    /// nothing. The decoder is then at a frame boundary again.
    pub fn finish(&mut self, on_frame: &mut dyn FnMut(&[u8])) -> Result<(), FrameError> {
        self.finish_frames(&mut |frame| on_frame(frame.bytes()))
    }

    /// [`Decoder::finish`], with the last payload (lines) as a [`Frame`].
    pub fn finish_frames(&mut self, on_frame: &mut dyn FnMut(Frame<'_>)) -> Result<(), FrameError> {
        if let Some(err) = &self.poisoned {
            return Err(err.clone());
        }
        match self.framing {
            Framing::Lines { .. } if !self.buf.is_empty() => {
                if self.buf.len() > self.max_frame {
                    return Err(self.poison(too_large(self.buf.len(), self.max_frame)));
                }
                let len = self.buf.len();
                deliver(&mut self.buf, len, on_frame);
            }
            Framing::LengthPrefixed { .. } if self.buffered() > 0 => {
                let buffered = self.buffered();
                return Err(self.poison(FrameError::Truncated { buffered }));
            }
            _ => {}
        }
        Ok(())
    }

    /// Bytes of the stream received since the last complete frame: 0 exactly at a frame
    /// boundary (length-prefixed counts a prefix already read). 0 once poisoned.
    pub fn buffered(&self) -> usize {
        match (&self.framing, self.declared) {
            (Framing::LengthPrefixed { width, .. }, Some(_)) => {
                usize::from(*width) + self.buf.len()
            }
            _ => self.buf.len(),
        }
    }

    /// The payload limit this decoder was built with.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    #[cold]
    fn poison(&mut self, err: FrameError) -> FrameError {
        self.buf = Vec::new();
        self.declared = None;
        self.poisoned = Some(err.clone());
        err
    }
}

fn feed_raw(
    max: usize,
    data: &[u8],
    on_frame: &mut dyn FnMut(Frame<'_>),
) -> Result<(), FrameError> {
    if max == 0 {
        // No non-empty chunk fits; `chunks(0)` would panic.
        return match data.len() {
            0 => Ok(()),
            n => Err(too_large(n, 0)),
        };
    }
    for chunk in data.chunks(max) {
        on_frame(Frame::Borrowed(chunk));
    }
    Ok(())
}

/// Lines. Invariant between calls: no delimiter starts in `buf[..buf.len() - (k - 1)]`
/// (saturating), so a resumed search looks only at the last `k - 1` buffered bytes, which
/// may begin a delimiter that `data` completes: a line arriving byte by byte costs
/// O(k) per byte, never a rescan of the whole buffer.
fn feed_lines(
    delim: &[u8],
    max: usize,
    buf: &mut Vec<u8>,
    mut data: &[u8],
    on_frame: &mut dyn FnMut(Frame<'_>),
) -> Result<(), FrameError> {
    let k = delim.len();
    if !buf.is_empty() {
        let old = buf.len();
        // A delimiter starting at `s` in the buffer needs `k - (old - s)` bytes of `data`;
        // that need grows with `s`, so stop at the first start `data` cannot complete.
        let straddle = (old.saturating_sub(k - 1)..old)
            .take_while(|&s| k - (old - s) <= data.len())
            .find(|&s| {
                let (a, b) = delim.split_at(old - s);
                buf[s..] == *a && data[..b.len()] == *b
            });
        if let Some(s) = straddle {
            if s > max {
                return Err(too_large(s, max));
            }
            deliver(buf, s, on_frame);
            data = &data[k - (old - s)..];
        } else if let Some(p) = find(data, delim) {
            if old + p > max {
                return Err(too_large(old + p, max));
            }
            append(buf, &data[..p], max);
            let len = buf.len();
            deliver(buf, len, on_frame);
            data = &data[p + k..];
        } else {
            let known = (old + data.len()).saturating_sub(k - 1);
            if known > max {
                return Err(too_large(known, max));
            }
            append(buf, data, max.saturating_add(k - 1));
            return Ok(());
        }
    }
    while let Some(p) = find(data, delim) {
        if p > max {
            return Err(too_large(p, max));
        }
        on_frame(Frame::Borrowed(&data[..p]));
        data = &data[p + k..];
    }
    let known = data.len().saturating_sub(k - 1);
    if known > max {
        return Err(too_large(known, max));
    }
    append(buf, data, max.saturating_add(k - 1));
    Ok(())
}

fn feed_prefixed(
    width: usize,
    order: ByteOrder,
    max: usize,
    buf: &mut Vec<u8>,
    declared: &mut Option<usize>,
    mut data: &[u8],
    on_frame: &mut dyn FnMut(Frame<'_>),
) -> Result<(), FrameError> {
    loop {
        let len = match *declared {
            Some(len) => len,
            None => {
                let size = if buf.is_empty() && data.len() >= width {
                    let (prefix, rest) = data.split_at(width);
                    data = rest;
                    read_prefix(prefix, order)
                } else {
                    let take = (width - buf.len()).min(data.len());
                    buf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if buf.len() < width {
                        return Ok(());
                    }
                    let size = read_prefix(buf, order);
                    buf.clear();
                    size
                };
                // Checked before anything is reserved: a huge claim costs nothing.
                if size > max as u64 {
                    return Err(FrameError::TooLarge { size, limit: max });
                }
                *declared = Some(size as usize);
                size as usize
            }
        };
        if buf.is_empty() && data.len() >= len {
            on_frame(Frame::Borrowed(&data[..len]));
            data = &data[len..];
        } else {
            let take = (len - buf.len()).min(data.len());
            append(buf, &data[..take], len);
            data = &data[take..];
            if buf.len() < len {
                return Ok(());
            }
            deliver(buf, len, on_frame);
        }
        *declared = None;
    }
}

/// Appends `bytes` to `buf`, growing it geometrically but never past `ceiling` (the most
/// the current frame can need), so memory follows the bytes received, not a claim.
fn append(buf: &mut Vec<u8>, bytes: &[u8], ceiling: usize) {
    let needed = buf.len() + bytes.len();
    if needed > buf.capacity() {
        let target = needed
            .max(buf.capacity().saturating_mul(2))
            .max(64)
            .min(ceiling.max(needed));
        buf.reserve_exact(target - buf.len());
    }
    buf.extend_from_slice(bytes);
}

/// Hands out the frame `buf[..len]` (the rest, if any, is part of a delimiter),
/// then empties `buf`: a buffer too large to keep goes with the frame.
fn deliver(buf: &mut Vec<u8>, len: usize, on_frame: &mut dyn FnMut(Frame<'_>)) {
    if buf.capacity() > KEEP_CAPACITY {
        buf.truncate(len);
        on_frame(Frame::Owned(mem::take(buf)));
    } else {
        on_frame(Frame::Borrowed(&buf[..len]));
        buf.clear();
    }
}

/// The first position of `needle` (non-empty) in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let last_start = hay.len().checked_sub(needle.len())?;
    let mut from = 0;
    while from <= last_start {
        let p = from + hay[from..=last_start].iter().position(|&b| b == first)?;
        if hay[p + 1..p + needle.len()] == *rest {
            return Some(p);
        }
        from = p + 1;
    }
    None
}

fn read_prefix(bytes: &[u8], order: ByteOrder) -> u64 {
    let push = |acc: u64, &b: &u8| acc << 8 | u64::from(b);
    match order {
        ByteOrder::Big => bytes.iter().fold(0, push),
        ByteOrder::Little => bytes.iter().rev().fold(0, push),
    }
}

/// The largest payload length a `width`-byte prefix can express.
fn prefix_max(width: u8) -> u64 {
    match width {
        8 => u64::MAX,
        w => (1u64 << (8 * u32::from(w))) - 1,
    }
}

#[cold]
fn too_large(size: usize, limit: usize) -> FrameError {
    FrameError::TooLarge {
        size: size as u64,
        limit,
    }
}

#[cfg(test)]
mod tests;
