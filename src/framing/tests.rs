//! Tests of the codecs: round trips, every split point, limits, poisoning.

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

/// How each payload came out of `feed_frames` / `finish_frames`: its bytes, and
/// whether it was handed over.
fn decode_frames(f: &Framing, chunks: &[&[u8]], finish: bool) -> Vec<(Vec<u8>, bool)> {
    let mut d = f.decoder(1 << 20);
    let mut got = Vec::new();
    let mut on_frame = |frame: Frame<'_>| {
        let owned = matches!(frame, Frame::Owned(_));
        got.push((frame.bytes().to_vec(), owned));
    };
    for chunk in chunks {
        d.feed_frames(chunk, &mut on_frame).unwrap();
    }
    if finish {
        d.finish_frames(&mut on_frame).unwrap();
    }
    got
}

#[test]
fn only_a_large_frame_assembled_across_chunks_is_handed_over() {
    let big = vec![7u8; 100_000];
    let small = vec![8u8; 1000];
    let f = prefixed(4, ByteOrder::Big);
    let wire = encode_all(&f, &[big.clone(), small.clone()]);
    let (a, b) = wire.split_at(50_000);
    let got = decode_frames(&f, &[a, b], false);
    assert_eq!(got, vec![(big.clone(), true), (small.clone(), false)]);
    // Whole in one chunk: lent, never handed over.
    assert_eq!(
        decode_frames(&f, &[&wire], false),
        vec![(big.clone(), false), (small.clone(), false)]
    );
    // A small frame split across chunks is lent from the decoder's buffer.
    let (a, b) = wire.split_at(wire.len() - 10);
    assert_eq!(decode_frames(&f, &[a, b], false)[1], (small.clone(), false));
    // Lines: a large line split across chunks (the delimiter split too), and a
    // large last line without delimiter, buffered until the stream ends.
    let f = lines(b"\r\n");
    let mut wire = big.clone();
    wire.extend_from_slice(b"\r\n");
    wire.extend_from_slice(&big);
    let (a, b) = wire.split_at(big.len() + 1);
    let got = decode_frames(&f, &[&a[..60_000], &a[60_000..], b], true);
    assert_eq!(got, vec![(big.clone(), true), (big, true)]);
}
