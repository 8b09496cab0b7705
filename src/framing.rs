//! The codecs that cut a byte stream into messages (frames) and back: raw, lines and
//! length-prefixed.
//!
//! Pure functions over bytes: no I/O. The server feeds each received chunk to a
//! [`Decoder`] and frames each reply with [`Framing::encode_into`]; the Python bindings
//! expose the same codecs so clients and tests frame exactly as the server does.
//!
//! A [`Decoder`] is zero-copy where it can be: a frame lying wholly inside the chunk being
//! fed is handed out as a slice of that chunk; only an incomplete frame at the end of a
//! chunk is copied, and never more than the frame limit (`max_frame`) allows.

use std::error::Error;
use std::fmt;

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
        if let Some(err) = &self.poisoned {
            return Err(err.clone());
        }
        match self.framing {
            Framing::Lines { .. } if !self.buf.is_empty() => {
                if self.buf.len() > self.max_frame {
                    return Err(self.poison(too_large(self.buf.len(), self.max_frame)));
                }
                on_frame(&self.buf);
                release(&mut self.buf);
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

fn feed_raw(max: usize, data: &[u8], on_frame: &mut dyn FnMut(&[u8])) -> Result<(), FrameError> {
    if max == 0 {
        // No non-empty chunk fits; `chunks(0)` would panic.
        return match data.len() {
            0 => Ok(()),
            n => Err(too_large(n, 0)),
        };
    }
    for chunk in data.chunks(max) {
        on_frame(chunk);
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
    on_frame: &mut dyn FnMut(&[u8]),
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
            on_frame(&buf[..s]);
            release(buf);
            data = &data[k - (old - s)..];
        } else if let Some(p) = find(data, delim) {
            if old + p > max {
                return Err(too_large(old + p, max));
            }
            append(buf, &data[..p], max);
            on_frame(buf);
            release(buf);
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
        on_frame(&data[..p]);
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
    on_frame: &mut dyn FnMut(&[u8]),
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
            on_frame(&data[..len]);
            data = &data[len..];
        } else {
            let take = (len - buf.len()).min(data.len());
            append(buf, &data[..take], len);
            data = &data[take..];
            if buf.len() < len {
                return Ok(());
            }
            on_frame(buf);
            release(buf);
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

/// Empties `buf` after its frame was delivered, freeing a large allocation.
fn release(buf: &mut Vec<u8>) {
    buf.clear();
    if buf.capacity() > KEEP_CAPACITY {
        *buf = Vec::new();
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
mod tests {
    use super::*;

    fn lines(delim: &[u8]) -> Framing {
        Framing::lines(delim).unwrap()
    }

    fn prefixed(width: u64, order: ByteOrder) -> Framing {
        Framing::length_prefixed(width, order).unwrap()
    }

    /// Feeds `chunks` then finishes, collecting the payloads.
    fn decode(f: &Framing, max: usize, chunks: &[&[u8]]) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut dec = f.decoder(max);
        let mut out = Vec::new();
        for chunk in chunks {
            dec.feed(chunk, &mut |p| out.push(p.to_vec()))?;
        }
        dec.finish(&mut |p| out.push(p.to_vec()))?;
        assert_eq!(dec.buffered(), 0);
        Ok(out)
    }

    fn encode_all(f: &Framing, payloads: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            f.encode_into(p, &mut out).unwrap();
        }
        out
    }

    /// xorshift64: deterministic randomness without a dependency.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    fn all_framings() -> Vec<Framing> {
        let mut v = vec![lines(b"\n"), lines(b"\r\n"), lines(b"aab"), lines(b"abab")];
        for w in [1, 2, 4, 8] {
            v.push(prefixed(w, ByteOrder::Big));
            v.push(prefixed(w, ByteOrder::Little));
        }
        v
    }

    /// Payloads that `f` can encode: empty ones, and ones holding parts of the delimiter.
    fn sample_payloads(f: &Framing) -> Vec<Vec<u8>> {
        let candidates: [&[u8]; 7] = [b"hello", b"", b"a\rb", b"ab", b"xaa", b"", b"\r"];
        let ok = candidates.iter().filter(|p| f.encode(p).is_ok());
        ok.map(|p| p.to_vec()).collect()
    }

    #[test]
    fn config_errors_name_the_argument_and_allowed_values() {
        assert_eq!(Framing::lines(b""), Err(ConfigError::EmptyDelimiter));
        assert_eq!(
            Framing::lines(&[b'x'; 65]),
            Err(ConfigError::DelimiterTooLong { len: 65 })
        );
        assert!(Framing::lines(&[b'x'; 64]).is_ok());
        for w in [0, 3, 5, 16, u64::MAX] {
            let err = Framing::length_prefixed(w, ByteOrder::Big).unwrap_err();
            assert_eq!(err, ConfigError::BadWidth { width: w });
        }
        let err = Framing::length_prefixed(3, ByteOrder::Big).unwrap_err();
        assert_eq!(err.to_string(), "width must be 1, 2, 4 or 8, got 3");
        let err = ByteOrder::parse("middle").unwrap_err();
        assert_eq!(
            err.to_string(),
            "byteorder must be \"big\" or \"little\", got \"middle\""
        );
        assert!(ConfigError::EmptyDelimiter
            .to_string()
            .contains("delimiter"));
        assert_eq!(
            ByteOrder::parse("Big"),
            Err(ConfigError::BadByteOrder { name: "Big".into() })
        );
        for order in [ByteOrder::Big, ByteOrder::Little] {
            assert_eq!(ByteOrder::parse(order.name()), Ok(order));
        }
    }

    #[test]
    fn encodes_each_framing() {
        assert_eq!(Framing::raw().encode(b"abc").unwrap(), b"abc");
        assert_eq!(lines(b"\r\n").encode(b"abc").unwrap(), b"abc\r\n");
        assert_eq!(lines(b"\n").encode(b"").unwrap(), b"\n");
        assert_eq!(
            prefixed(2, ByteOrder::Big).encode(b"ab").unwrap(),
            b"\0\x02ab"
        );
        let overheads: Vec<usize> = [Framing::raw(), lines(b"\r\n"), prefixed(4, ByteOrder::Big)]
            .iter()
            .map(Framing::overhead)
            .collect();
        assert_eq!(overheads, [0, 2, 4]);
    }

    #[test]
    fn prefixes_in_both_byte_orders_for_every_width() {
        let payload = vec![7u8; 0x0102];
        for width in [1u8, 2, 4, 8] {
            let payload = if width == 1 {
                &payload[..5]
            } else {
                &payload[..]
            };
            let len = payload.len() as u64;
            for order in [ByteOrder::Big, ByteOrder::Little] {
                let f = prefixed(u64::from(width), order);
                let enc = f.encode(payload).unwrap();
                let w = usize::from(width);
                let want = match order {
                    ByteOrder::Big => len.to_be_bytes()[8 - w..].to_vec(),
                    ByteOrder::Little => len.to_le_bytes()[..w].to_vec(),
                };
                assert_eq!(enc[..w], want[..], "{width} {order:?}");
                assert_eq!(enc[w..], *payload);
                assert_eq!(decode(&f, 1 << 20, &[&enc]).unwrap(), [payload.to_vec()]);
            }
        }
        let f = prefixed(4, ByteOrder::Little);
        assert_eq!(decode(&f, 9, &[b"\x01\0\0\0x"]).unwrap(), [b"x".to_vec()]);
        let f = prefixed(4, ByteOrder::Big);
        assert_eq!(decode(&f, 9, &[b"\0\0\0\x01x"]).unwrap(), [b"x".to_vec()]);
    }

    #[test]
    fn encode_errors_leave_the_output_unchanged() {
        let mut out = b"kept".to_vec();
        let f = lines(b"\r\n");
        assert_eq!(
            f.encode_into(b"a\r\nb", &mut out),
            Err(FrameError::DelimiterInPayload)
        );
        // "ab" + "abab" would be decoded as an empty line: the delimiter straddles.
        let err = lines(b"abab").encode_into(b"ab", &mut out);
        assert_eq!(err, Err(FrameError::DelimiterInPayload));
        assert!(lines(b"abab").encode(b"ba").is_ok());
        let err = prefixed(1, ByteOrder::Big).encode_into(&[0; 300], &mut out);
        assert_eq!(
            err,
            Err(FrameError::TooLongForPrefix {
                size: 300,
                width: 1
            })
        );
        assert_eq!(out, b"kept");
        assert!(prefixed(1, ByteOrder::Big).encode(&[0; 255]).is_ok());
        assert!(prefixed(2, ByteOrder::Big).encode(&[0; 65535]).is_ok());
        let err = prefixed(2, ByteOrder::Little)
            .encode(&[0; 65536])
            .unwrap_err();
        assert!(err.to_string().contains("65535"), "{err}");
    }

    #[test]
    fn every_split_of_a_small_stream_decodes_the_same() {
        for f in all_framings() {
            let payloads = sample_payloads(&f);
            let stream = encode_all(&f, &payloads);
            assert_eq!(decode(&f, 64, &[&stream]).unwrap(), payloads, "{f:?}");
            for i in 0..=stream.len() {
                for j in i..=stream.len() {
                    let chunks = [&stream[..i], &stream[i..j], &stream[j..]];
                    assert_eq!(decode(&f, 64, &chunks).unwrap(), payloads, "{f:?} {i} {j}");
                }
            }
            let bytes: Vec<&[u8]> = stream.chunks(1).collect();
            assert_eq!(decode(&f, 64, &bytes).unwrap(), payloads, "{f:?}");
        }
    }

    #[test]
    fn random_payloads_in_random_chunks_round_trip() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for f in all_framings() {
            for _ in 0..20 {
                let payloads: Vec<Vec<u8>> = (0..rng.below(12))
                    .map(|_| {
                        (0..rng.below(300))
                            .map(|_| b"abc\r\n"[rng.below(5)])
                            .collect()
                    })
                    .filter(|p: &Vec<u8>| f.encode(p).is_ok())
                    .collect();
                let stream = encode_all(&f, &payloads);
                let mut chunks = Vec::new();
                let mut rest = &stream[..];
                while !rest.is_empty() {
                    let (chunk, tail) = rest.split_at(rng.below(rest.len().min(40)) + 1);
                    chunks.push(chunk);
                    rest = tail;
                }
                assert_eq!(decode(&f, 300, &chunks).unwrap(), payloads, "{f:?}");
            }
        }
    }

    #[test]
    fn lines_agree_with_a_naive_splitter_on_arbitrary_streams() {
        let mut rng = Rng(42);
        for delim in [&b"ab"[..], b"aab", b"abab", b"aba"] {
            for _ in 0..300 {
                let stream: Vec<u8> = (0..rng.below(40)).map(|_| b"ab"[rng.below(2)]).collect();
                let (mut want, mut rest) = (Vec::new(), &stream[..]);
                while let Some(p) = rest.windows(delim.len()).position(|w| w == delim) {
                    want.push(rest[..p].to_vec());
                    rest = &rest[p + delim.len()..];
                }
                if !rest.is_empty() {
                    want.push(rest.to_vec());
                }
                let cut = rng.below(stream.len() + 1);
                let chunks: Vec<&[u8]> = stream[cut..].chunks(rng.below(4) + 1).collect();
                let chunks = [&[&stream[..cut]], &chunks[..]].concat();
                assert_eq!(decode(&lines(delim), 64, &chunks).unwrap(), want);
            }
        }
    }

    #[test]
    fn multi_byte_delimiter_split_across_chunks() {
        let f = lines(b"\r\n");
        let got = decode(&f, 16, &[b"a\r", b"\nb\r", b"\r", b"\n", b"c\rd\n"]).unwrap();
        assert_eq!(got, [&b"a"[..], b"b\r", b"c\rd\n"]);
        let f = lines(b"aab");
        assert_eq!(
            decode(&f, 16, &[b"xa", b"a", b"ab"]).unwrap(),
            [b"xa".to_vec()]
        );
        assert_eq!(
            decode(&f, 16, &[b"xaa", b"aaab!"]).unwrap(),
            [&b"xaaa"[..], b"!"]
        );
    }

    #[test]
    fn lines_empty_frames_and_final_frame_without_delimiter() {
        let got = decode(&lines(b"\n"), 8, &[b"\n\nab\n", b"tail"]).unwrap();
        assert_eq!(got, [&b""[..], b"", b"ab", b"tail"]);
        let got = decode(&lines(b"\r\n"), 8, &[b"x\r"]).unwrap();
        assert_eq!(got, [b"x\r".to_vec()]);
    }

    #[test]
    fn frames_inside_a_chunk_are_not_copied() {
        for f in [lines(b"\r\n"), prefixed(2, ByteOrder::Big)] {
            let stream = encode_all(&f, &[b"one".to_vec(), b"two".to_vec()]);
            let range = stream.as_ptr_range();
            let mut dec = f.decoder(64);
            let mut inside = Vec::new();
            dec.feed(&stream, &mut |p| inside.push(range.contains(&p.as_ptr())))
                .unwrap();
            assert_eq!(inside, [true, true]);
        }
    }

    #[test]
    fn raw_splits_long_chunks_and_ignores_empty_ones() {
        let got = decode(&Framing::raw(), 4, &[b"abcdefghij", b"", b"k"]).unwrap();
        assert_eq!(got, [&b"abcd"[..], b"efgh", b"ij", b"k"]);
        let err = decode(&Framing::raw(), 0, &[b"a"]).unwrap_err();
        assert_eq!(err, FrameError::TooLarge { size: 1, limit: 0 });
    }

    #[test]
    fn huge_declared_length_is_refused_without_allocating() {
        let mut dec = prefixed(4, ByteOrder::Big).decoder(1 << 20);
        let err = dec.feed(b"\xff\xff", &mut |_| panic!()).and_then(|_| {
            assert_eq!(dec.buffered(), 2);
            dec.feed(b"\xff\xffpayload", &mut |_| panic!())
        });
        let want = FrameError::TooLarge {
            size: 0xFFFF_FFFF,
            limit: 1 << 20,
        };
        assert_eq!(err, Err(want.clone()));
        assert_eq!(dec.buffered(), 0);
        assert!(dec.buf.capacity() <= 64);
        assert_eq!(
            decode(&prefixed(8, ByteOrder::Little), 10, &[&[0xff; 8]]),
            Err(FrameError::TooLarge {
                size: u64::MAX,
                limit: 10
            })
        );
        // A legitimate large frame arriving slowly reserves only what has arrived.
        let mut dec = prefixed(4, ByteOrder::Big).decoder(1 << 20);
        dec.feed(&[0, 0x10, 0, 0, 1, 2, 3], &mut |_| panic!())
            .unwrap();
        assert!(dec.buf.capacity() <= 64 && dec.buffered() == 7);
    }

    #[test]
    fn limits_are_exact() {
        let f = prefixed(1, ByteOrder::Big);
        assert_eq!(decode(&f, 3, &[b"\x03abc"]).unwrap(), [b"abc".to_vec()]);
        let err = decode(&f, 3, &[b"\x04"]).unwrap_err();
        assert_eq!(err, FrameError::TooLarge { size: 4, limit: 3 });
        let f = lines(b"\r\n");
        assert_eq!(decode(&f, 3, &[b"abc\r\n"]).unwrap(), [b"abc".to_vec()]);
        assert_eq!(
            decode(&f, 3, &[b"ab", b"c\r", b"\n"]).unwrap(),
            [b"abc".to_vec()]
        );
        assert!(decode(&f, 3, &[b"abcd\r\n"]).is_err());
        assert!(decode(&f, 3, &[b"ab", b"cd\r\n"]).is_err());
        assert!(decode(&f, 3, &[b"abc\r", b"\r\n"]).is_err());
        // A delimiter straddling two chunks may end a payload that is over the limit.
        let f3 = lines(b"xyz");
        assert_eq!(
            decode(&f3, 3, &[b"abcxy", b"z"]).unwrap(),
            [b"abc".to_vec()]
        );
        let err = decode(&f3, 3, &[b"abcdx", b"yz"]).unwrap_err();
        assert_eq!(err, FrameError::TooLarge { size: 4, limit: 3 });
        // Without a delimiter: refused once the payload must exceed the limit.
        let mut dec = f.decoder(3);
        dec.feed(b"abc\r", &mut |_| panic!()).unwrap();
        let err = dec.feed(b"x", &mut |_| panic!()).unwrap_err();
        assert_eq!(err, FrameError::TooLarge { size: 4, limit: 3 });
        // ...and at `finish`, where the buffered bytes are the payload.
        assert!(decode(&f, 3, &[b"abc\r"]).is_err());
    }

    #[test]
    fn long_line_in_one_byte_chunks_is_linear() {
        // `a{63}b` is the worst case for a search that restarts on each byte.
        let worst: Vec<u8> = [[b'a'; 63].as_slice(), b"b"].concat();
        for delim in [&b"\n"[..], b"\r\n", &worst] {
            let mut dec = lines(delim).decoder(1 << 20);
            let mut frames = Vec::new();
            let line = vec![b'a'; 1 << 20];
            for byte in line.chunks(1).chain(delim.chunks(1)) {
                dec.feed(byte, &mut |p| frames.push(p.len())).unwrap();
            }
            assert_eq!((frames, dec.buffered()), (vec![1 << 20], 0));
        }
    }

    #[test]
    fn truncated_stream_and_poisoning() {
        let f = prefixed(2, ByteOrder::Big);
        for (stream, buffered) in [(&b"\0"[..], 1), (b"\0\x05", 2), (b"\0\x05ab", 4)] {
            let err = decode(&f, 64, &[stream]).unwrap_err();
            assert_eq!(err, FrameError::Truncated { buffered });
        }
        assert_eq!(
            decode(&f, 64, &[b"\0\0", b"\0\x01x"]).unwrap(),
            [&b""[..], b"x"]
        );
        assert!(decode(&Framing::raw(), 64, &[]).unwrap().is_empty());

        let mut dec = lines(b"\n").decoder(2);
        let mut frames = Vec::new();
        let err = dec.feed(b"ok\ntoo long\nok\n", &mut |p| frames.push(p.to_vec()));
        assert_eq!(frames, [b"ok".to_vec()]);
        let err = err.unwrap_err();
        assert_eq!(
            err.to_string(),
            "frame payload of 8 bytes is over the limit of 2 bytes (max_frame)"
        );
        assert_eq!(dec.feed(b"a\n", &mut |_| panic!()), Err(err.clone()));
        assert_eq!(dec.finish(&mut |_| panic!()), Err(err));
        assert_eq!((dec.buffered(), dec.max_frame()), (0, 2));
    }
}
