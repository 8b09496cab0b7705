//! Property checks of `iocp_echo::framing`'s decoders, called by the fuzz targets in
//! `fuzz_targets/` (run by `scripts/fuzz`).
//!
//! A fuzz input is read as a decoder configuration (framing, delimiter or prefix width
//! and byte order, `max_frame`), a way to cut a stream into chunks, and the stream. The
//! decoder is run on the stream fed whole, in those chunks and (short streams) byte by
//! byte, and each run is compared with a naive model of the framing. A violated property
//! panics, which libFuzzer reports as a crash with the input saved. The properties:
//!
//! * the frames and the error are the model's, whatever the chunks: for lines and
//!   length-prefixed, the stream fed in pieces decodes exactly as fed whole (a lines
//!   error's reported size may differ, but lies between the limit and the real length);
//!   for raw, each chunk is its frames, cut at `max_frame`;
//! * each frame, and each error, comes from the earliest call that has the bytes to
//!   decide it (a length prefix claiming more than `max_frame` is refused by the call
//!   that completes the prefix);
//! * no frame is longer than `max_frame`;
//! * the frames, encoded again with the same framing, are the stream's consumed bytes
//!   (the encoder accepts every decoded line);
//! * `buffered()` is the count of bytes since the last frame boundary;
//! * no allocation made while the decoder runs is larger than one frame can need, nor
//!   (bar a 64-byte floor) twice the bytes fed: memory follows the bytes received, never
//!   a claimed length; raw never allocates;
//! * a frame lying whole inside the chunk being fed is a slice of that chunk (no copy);
//! * after an error every call returns it again and nothing is buffered; after a clean
//!   `finish` the decoder decodes the same stream again identically;
//! * an encoded payload decodes back to it alone; the lines encoder refuses a payload
//!   exactly when payload + delimiter would not, the length-prefixed one exactly when
//!   the length does not fit the prefix.
//!
//! The PROXY protocol header parser's checks are in [`proxy`].

pub mod proxy;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use iocp_echo::framing::{ByteOrder, Decoder, FrameError, Framing, MAX_DELIMITER};

/// The allocator of the fuzz binaries: the system's, noting the largest block asked
/// for while [`WATCHING`] is set (only while the decoder itself runs).
struct Watch;

/// Set while a decoder call runs, cleared while its frame callback runs.
static WATCHING: AtomicBool = AtomicBool::new(false);
/// The largest block (allocation or new size of a reallocation) seen while watching.
static LARGEST: AtomicUsize = AtomicUsize::new(0);

fn note(size: usize) {
    if WATCHING.load(Ordering::Relaxed) {
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees are ours; the bookkeeping only reads sizes.
unsafe impl GlobalAlloc for Watch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract for `layout`.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (so from `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: `ptr` came from this allocator (so from `System`) with `layout`, and
        // the caller upholds `realloc`'s contract for `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Watch = Watch;

/// Runs `f` with allocations watched, returning its result.
fn watched<T>(f: impl FnOnce() -> T) -> T {
    WATCHING.store(true, Ordering::Relaxed);
    let out = f();
    WATCHING.store(false, Ordering::Relaxed);
    out
}

/// Runs `f` (a frame callback) with allocations not watched.
fn unwatched<T>(f: impl FnOnce() -> T) -> T {
    let was = WATCHING.swap(false, Ordering::Relaxed);
    let out = f();
    WATCHING.store(was, Ordering::Relaxed);
    out
}

/// Reads a fuzz input front to back; past its end every byte reads as 0.
struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&b, rest)) => {
                self.rest = rest;
                b
            }
            None => 0,
        }
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        head
    }

    /// `max_frame`: small values most often (so limits are hit), any 16-bit value, or
    /// one of the edges (`usize::MAX` and its neighbours, powers of two).
    fn max_frame(&mut self) -> usize {
        const EDGES: [usize; 8] = [
            usize::MAX,
            usize::MAX - 1,
            u32::MAX as usize,
            1 << 20,
            255,
            256,
            65_535,
            65_536,
        ];
        let m = self.byte();
        match m >> 6 {
            0 | 1 => usize::from(m),
            2 => usize::from(u16::from_le_bytes([self.byte(), self.byte()])),
            _ => EDGES[usize::from(m) % EDGES.len()],
        }
    }

    /// The chunk lengths: up to 15 of them, each 0 to 255 bytes; the stream's rest is
    /// one last chunk.
    fn cuts(&mut self) -> Vec<usize> {
        let n = self.byte() % 16;
        (0..n).map(|_| usize::from(self.byte())).collect()
    }
}

/// `stream` cut by `cuts` (each clamped to what is left), then its rest (maybe empty).
fn chunks<'a>(mut stream: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(cuts.len() + 1);
    for &n in cuts {
        let (head, rest) = stream.split_at(n.min(stream.len()));
        out.push(head);
        stream = rest;
    }
    out.push(stream);
    out
}

/// When the model says a frame or an error is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Due {
    /// Once this many bytes of the stream have been fed.
    At(usize),
    /// At `finish`.
    Finish,
}

/// A frame the model expects.
#[derive(Debug)]
struct Frame {
    payload: Vec<u8>,
    /// Stream offset of the payload's first byte.
    start: usize,
    /// Stream offset just past the frame's last byte (its delimiter included), for
    /// `buffered()`; the stream's length for a final line.
    end: usize,
    due: Due,
    /// Whether an encoding of the payload is a prefix of the stream (false only for
    /// a final line without delimiter, which is the stream's bytes as they are).
    terminated: bool,
}

/// The model's reading of a whole stream.
#[derive(Debug, Default)]
struct Model {
    frames: Vec<Frame>,
    /// The error, when it is due, and (lines) the real length of the refused payload.
    error: Option<(FrameError, Due, u64)>,
}

/// Lines, naively: split at the leftmost delimiter, again and again.
fn model_lines(delim: &[u8], max: usize, stream: &[u8]) -> Model {
    let k = delim.len();
    let mut model = Model::default();
    let mut s = 0;
    loop {
        let rest = &stream[s..];
        match rest.windows(k).position(|w| w == delim) {
            Some(p) if p > max => {
                // Certain once max + k bytes of the line are in: no delimiter starts
                // within its first max + 1 bytes.
                let err = too_large(max);
                model.error = Some((err, Due::At(s + max + k), p as u64));
                return model;
            }
            Some(p) => {
                model.frames.push(Frame {
                    payload: rest[..p].to_vec(),
                    start: s,
                    end: s + p + k,
                    due: Due::At(s + p + k),
                    terminated: true,
                });
                s += p + k;
            }
            None if rest.is_empty() => return model,
            None if rest.len() > max => {
                let due = if rest.len() - max >= k {
                    Due::At(s + max + k)
                } else {
                    Due::Finish
                };
                model.error = Some((too_large(max), due, rest.len() as u64));
                return model;
            }
            None => {
                model.frames.push(Frame {
                    payload: rest.to_vec(),
                    start: s,
                    end: stream.len(),
                    due: Due::Finish,
                    terminated: false,
                });
                return model;
            }
        }
    }
}

/// A `TooLarge` whose size the lines check does not compare exactly.
fn too_large(limit: usize) -> FrameError {
    FrameError::TooLarge { size: 0, limit }
}

/// Length-prefixed, naively: prefix, payload, prefix, payload...
fn model_prefixed(width: usize, order: ByteOrder, max: usize, stream: &[u8]) -> Model {
    let mut model = Model::default();
    let mut s = 0;
    while s < stream.len() {
        let rest = &stream[s..];
        let truncated = FrameError::Truncated {
            buffered: rest.len(),
        };
        if rest.len() < width {
            model.error = Some((truncated, Due::Finish, 0));
            break;
        }
        let mut eight = [0u8; 8];
        let declared = match order {
            ByteOrder::Big => {
                eight[8 - width..].copy_from_slice(&rest[..width]);
                u64::from_be_bytes(eight)
            }
            ByteOrder::Little => {
                eight[..width].copy_from_slice(&rest[..width]);
                u64::from_le_bytes(eight)
            }
        };
        if declared > max as u64 {
            let err = FrameError::TooLarge {
                size: declared,
                limit: max,
            };
            model.error = Some((err, Due::At(s + width), declared));
            break;
        }
        if ((rest.len() - width) as u64) < declared {
            model.error = Some((truncated, Due::Finish, 0));
            break;
        }
        let end = s + width + declared as usize;
        model.frames.push(Frame {
            payload: stream[s + width..end].to_vec(),
            start: s + width,
            end,
            due: Due::At(end),
            terminated: true,
        });
        s = end;
    }
    model
}

/// Raw, naively: each chunk in pieces of `max` bytes; with `max` 0, the first
/// non-empty chunk is refused.
fn model_raw(max: usize, chunks: &[&[u8]]) -> Model {
    let mut model = Model::default();
    let mut offset = 0;
    for chunk in chunks {
        let end = offset + chunk.len();
        if max == 0 && !chunk.is_empty() {
            let err = FrameError::TooLarge {
                size: chunk.len() as u64,
                limit: 0,
            };
            model.error = Some((err, Due::At(end), chunk.len() as u64));
            break;
        }
        let mut start = offset;
        while start < end {
            let stop = end.min(start.saturating_add(max));
            model.frames.push(Frame {
                payload: chunk[start - offset..stop - offset].to_vec(),
                start,
                end: stop,
                due: Due::At(end),
                terminated: true,
            });
            start = stop;
        }
        offset = end;
    }
    model
}

/// What one pass of a decoder over some chunks did.
#[derive(Debug, PartialEq)]
struct Run {
    /// Each frame: payload, the call that delivered it (chunk index; `finish` is
    /// `chunks.len()`), and whether it was a slice of that call's chunk.
    frames: Vec<(Vec<u8>, usize, bool)>,
    /// The first error and the call that returned it.
    error: Option<(FrameError, usize)>,
    /// `buffered()` after each successful call.
    buffered: Vec<usize>,
    /// The largest block allocated while the decoder ran, and the bytes fed by then.
    largest: Vec<(usize, usize)>,
}

/// Feeds `chunks` to `dec`, then finishes it, recording what happens.
fn run(dec: &mut Decoder, chunks: &[&[u8]]) -> Run {
    let mut run = Run {
        frames: Vec::new(),
        error: None,
        buffered: Vec::new(),
        largest: Vec::new(),
    };
    let mut fed = 0;
    for call in 0..=chunks.len() {
        let chunk: &[u8] = chunks.get(call).copied().unwrap_or(&[]);
        let range = chunk.as_ptr_range();
        let frames = &mut run.frames;
        let mut on_frame = |p: &[u8]| {
            unwatched(|| {
                let inside = !chunk.is_empty() && range.contains(&p.as_ptr());
                frames.push((p.to_vec(), call, inside));
            })
        };
        LARGEST.store(0, Ordering::Relaxed);
        let result = watched(|| {
            if call < chunks.len() {
                dec.feed(chunk, &mut on_frame)
            } else {
                dec.finish(&mut on_frame)
            }
        });
        fed += chunk.len();
        run.largest.push((LARGEST.load(Ordering::Relaxed), fed));
        if let Err(err) = result {
            run.error = Some((err, call));
            return run;
        }
        run.buffered.push(dec.buffered());
    }
    run
}

/// The call (chunk index) that first has fed `due` bytes of the stream.
fn call_of(due: Due, chunks: &[&[u8]]) -> usize {
    match due {
        Due::Finish => chunks.len(),
        Due::At(offset) => {
            let mut fed = 0;
            for (call, chunk) in chunks.iter().enumerate() {
                fed += chunk.len();
                if fed >= offset {
                    return call;
                }
            }
            unreachable!("due at {offset} past the stream's end {fed}")
        }
    }
}

/// Checks a run of `framing` over `chunks` against `model`.
fn check_run(framing: &Framing, max: usize, chunks: &[&[u8]], model: &Model, run: &Run) {
    // Frames: the model's, from the call due, each as long as allowed, sliced when whole.
    let mut starts = Vec::with_capacity(chunks.len() + 1);
    let mut fed = 0;
    for chunk in chunks {
        starts.push(fed);
        fed += chunk.len();
    }
    starts.push(fed);
    let want: Vec<(&[u8], usize)> = model
        .frames
        .iter()
        .map(|f| (&f.payload[..], call_of(f.due, chunks)))
        .collect();
    let got: Vec<(&[u8], usize)> = run.frames.iter().map(|(p, c, _)| (&p[..], *c)).collect();
    assert_eq!(got, want, "frames (payload, call) differ from the model's");
    for ((payload, call, inside), frame) in run.frames.iter().zip(&model.frames) {
        assert!(
            payload.len() <= max,
            "a frame of {} bytes over max_frame {max}",
            payload.len()
        );
        // A frame lies whole inside its call's chunk when its payload (and, for a
        // line, its delimiter) was all fed by that call.
        let whole = frame.due != Due::Finish && frame.start >= starts[*call] && !payload.is_empty();
        if whole {
            assert!(
                *inside,
                "frame at {} copied though whole in its chunk",
                frame.start
            );
        }
    }

    // The error: the model's, from the call due.
    match (&run.error, &model.error) {
        (None, None) => {}
        (Some((got, call)), Some((want, due, real))) => {
            assert_eq!(
                *call,
                call_of(*due, chunks),
                "error {got:?} returned late or early"
            );
            match (got, want, framing) {
                (
                    FrameError::TooLarge { size, limit },
                    FrameError::TooLarge {
                        limit: want_limit, ..
                    },
                    Framing::Lines { .. },
                ) => {
                    assert_eq!(limit, want_limit);
                    assert!(
                        *size > *limit as u64 && *size <= *real,
                        "line error size {size} not in ({limit}, {real}]"
                    );
                }
                _ => assert_eq!(got, want),
            }
        }
        (got, want) => panic!("error {got:?}, but the model says {want:?}"),
    }

    // `buffered()` after each successful call: bytes since the last frame boundary.
    for (call, &buffered) in run.buffered.iter().enumerate() {
        let fed = starts[(call + 1).min(chunks.len())];
        let boundary = model
            .frames
            .iter()
            .filter(|f| f.due != Due::Finish && f.end <= fed)
            .map(|f| f.end)
            .max()
            .unwrap_or(0);
        let want = match framing {
            Framing::Raw => 0,
            _ if call == chunks.len() => 0,
            _ => fed - boundary,
        };
        assert_eq!(buffered, want, "buffered() after call {call}");
    }

    // Memory: one frame's worth at most, and following the bytes fed.
    let frame_bound = match framing {
        Framing::Raw => 0,
        Framing::Lines { delimiter } => max.saturating_add(delimiter.len() - 1),
        // A prefix split over chunks grows an empty buffer: to 8 bytes, or twice the
        // capacity a frame of under 8 bytes left.
        Framing::LengthPrefixed { .. } => max.max(16),
    };
    for &(largest, fed) in &run.largest {
        let bound = frame_bound.min(fed.saturating_mul(2).max(64));
        assert!(
            largest <= bound,
            "allocated {largest} bytes after {fed} fed (bound {bound}, max_frame {max})"
        );
    }
}

/// Checks that the model's frames, encoded, are the stream's consumed bytes.
fn check_reencoding(framing: &Framing, model: &Model, stream: &[u8]) {
    let mut out = Vec::with_capacity(stream.len());
    for frame in &model.frames {
        if frame.terminated {
            if let Err(err) = framing.encode_into(&frame.payload, &mut out) {
                panic!("a decoded frame does not encode: {err}");
            }
        } else {
            out.extend_from_slice(&frame.payload);
        }
    }
    assert_eq!(
        out,
        &stream[..out.len()],
        "re-encoded frames differ from the stream"
    );
    if model.error.is_none() && !matches!(framing, Framing::Raw) {
        assert_eq!(
            out.len(),
            stream.len(),
            "a clean stream not wholly consumed"
        );
    }
}

/// Runs `framing` over the stream whole, in `cuts`, and byte by byte, checking each
/// run (and a second pass after a clean finish) against the model.
fn check(framing: &Framing, max: usize, cuts: &[usize], stream: &[u8]) {
    let whole = [stream];
    let split = chunks(stream, cuts);
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    let mut ways: Vec<&[&[u8]]> = vec![&whole, &split];
    if stream.len() <= 256 {
        ways.push(&bytes);
    }
    let shared = match framing {
        Framing::Raw => None,
        Framing::Lines { delimiter } => Some(model_lines(delimiter, max, stream)),
        &Framing::LengthPrefixed { width, order } => {
            Some(model_prefixed(usize::from(width), order, max, stream))
        }
    };
    for chunks in ways {
        let raw_model;
        let model = match &shared {
            Some(model) => model,
            None => {
                raw_model = model_raw(max, chunks);
                &raw_model
            }
        };
        check_reencoding(framing, model, stream);
        let mut dec = framing.decoder(max);
        let first = run(&mut dec, chunks);
        check_run(framing, max, chunks, model, &first);
        match &first.error {
            Some((err, _)) => {
                // Poisoned: the same error again, nothing delivered, nothing held.
                let again = dec.feed(b"\n\0\0\0\0\0\0\0\x01x", &mut |_| {
                    panic!("frame after error")
                });
                assert_eq!(again.as_ref(), Err(err));
                let again = dec.finish(&mut |_| panic!("frame after error"));
                assert_eq!(again.as_ref(), Err(err));
                assert_eq!(dec.buffered(), 0);
            }
            None => {
                // Back at a boundary: the same stream decodes the same again.
                let second = run(&mut dec, chunks);
                assert_eq!(second.frames, first.frames, "second pass differs");
                assert_eq!(second.error, None);
            }
        }
    }
}

/// Checks the encoder against the decoder for one payload: encoding succeeds exactly
/// when decoding the encoding gives back that payload alone.
fn check_encoding(framing: &Framing, payload: &[u8]) {
    let decoded = |bytes: &[u8]| {
        let mut frames = Vec::new();
        let mut dec = framing.decoder(usize::MAX);
        let fed = dec.feed(bytes, &mut |p| frames.push(p.to_vec()));
        (fed.is_ok(), frames, dec.buffered())
    };
    match framing.encode(payload) {
        Ok(encoded) => {
            assert_eq!(encoded.len(), payload.len() + framing.overhead());
            assert_eq!(decoded(&encoded), (true, vec![payload.to_vec()], 0));
        }
        Err(FrameError::DelimiterInPayload) => {
            let Framing::Lines { delimiter } = framing else {
                panic!("DelimiterInPayload from {framing:?}");
            };
            let stream = [payload, delimiter].concat();
            assert_ne!(
                decoded(&stream),
                (true, vec![payload.to_vec()], 0),
                "a payload refused by the encoder would decode"
            );
        }
        Err(FrameError::TooLongForPrefix { size, width }) => {
            assert_eq!(size, payload.len());
            assert!(width < 8 && size as u64 >= 1 << (8 * u32::from(width)));
        }
        Err(err) => panic!("encoding {} bytes failed: {err}", payload.len()),
    }
}

/// Fuzz target `raw`: input = max_frame, cuts, stream.
pub fn raw(data: &[u8]) {
    let mut input = Input { rest: data };
    let max = input.max_frame();
    let cuts = input.cuts();
    check(&Framing::raw(), max, &cuts, input.rest);
}

/// Fuzz target `lines`: input = delimiter length (1 to 64), delimiter, max_frame,
/// cuts, stream. The stream is also checked as one payload to encode.
pub fn lines(data: &[u8]) {
    let mut input = Input { rest: data };
    let len = 1 + usize::from(input.byte()) % MAX_DELIMITER;
    let delimiter = input.bytes(len);
    let framing = match Framing::lines(delimiter) {
        Ok(framing) => framing,
        Err(_) => return, // the input ended before the delimiter did
    };
    let max = input.max_frame();
    let cuts = input.cuts();
    check_encoding(&framing, input.rest);
    check(&framing, max, &cuts, input.rest);
}

/// Fuzz target `length_prefixed`: input = width and byte order (one byte: bits 0-1 the
/// width 1, 2, 4 or 8, bit 2 little-endian), max_frame, cuts, stream.
pub fn length_prefixed(data: &[u8]) {
    let mut input = Input { rest: data };
    let shape = input.byte();
    let width = [1, 2, 4, 8][usize::from(shape & 3)];
    let order = if shape & 4 == 0 {
        ByteOrder::Big
    } else {
        ByteOrder::Little
    };
    let framing = Framing::length_prefixed(width, order).expect("a valid width");
    let max = input.max_frame();
    let cuts = input.cuts();
    check_encoding(&framing, input.rest);
    check(&framing, max, &cuts, input.rest);
}
