//! The PROXY header parser: every path of both versions, fed whole and byte
//! by byte, and properties over random input.

use std::net::SocketAddr;

use super::{
    parse, Addresses, Cidr, Header, Invalid, Parse, Version, V1_MAX, V2_MAX, V2_SIGNATURE,
};

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn tcp(version: Version, source: &str, destination: &str) -> Header {
    Header {
        version,
        addresses: Some(Addresses {
            source: addr(source),
            destination: addr(destination),
        }),
    }
}

/// `bytes` fed as a stream grows: every proper prefix needs more (or is
/// refused as `whole` is), and the whole says `whole`.
#[track_caller]
fn check(bytes: &[u8], whole: Parse) {
    for end in 0..bytes.len() {
        let got = parse(&bytes[..end]);
        match (got, whole) {
            (Parse::NeedMore, _) => {}
            (Parse::Invalid(_), Parse::Invalid(_)) => {}
            _ => panic!("prefix of {} bytes: {:?}, whole: {:?}", end, got, whole),
        }
    }
    assert_eq!(parse(bytes), whole);
}

/// A version 2 header: command, family/transport, body (also used by the
/// server's PROXY tests).
pub(crate) fn v2(ver_cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(ver_cmd);
    out.push(fam);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn inet_body() -> Vec<u8> {
    let mut body = vec![192, 0, 2, 1, 198, 51, 100, 7];
    body.extend_from_slice(&40000u16.to_be_bytes());
    body.extend_from_slice(&443u16.to_be_bytes());
    body
}

fn inet6_body() -> Vec<u8> {
    let src: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
    let dst: std::net::Ipv6Addr = "2001:db8::2".parse().unwrap();
    let mut body = src.octets().to_vec();
    body.extend_from_slice(&dst.octets());
    body.extend_from_slice(&5555u16.to_be_bytes());
    body.extend_from_slice(&80u16.to_be_bytes());
    body
}

#[test]
fn v1_tcp4() {
    let line = b"PROXY TCP4 192.0.2.1 198.51.100.7 40000 443\r\n";
    let header = tcp(Version::V1, "192.0.2.1:40000", "198.51.100.7:443");
    check(line, Parse::Done(header, line.len()));
    let mut more = line.to_vec();
    more.extend_from_slice(b"hello");
    assert_eq!(parse(&more), Parse::Done(header, line.len()));
}

#[test]
fn v1_tcp6() {
    let line = b"PROXY TCP6 2001:db8::1 2001:db8::2 5555 80\r\n";
    let header = tcp(Version::V1, "[2001:db8::1]:5555", "[2001:db8::2]:80");
    check(line, Parse::Done(header, line.len()));
}

#[test]
fn v1_unknown_keeps_the_peer() {
    let keep = |n| {
        Parse::Done(
            Header {
                version: Version::V1,
                addresses: None,
            },
            n,
        )
    };
    check(b"PROXY UNKNOWN\r\n", keep(15));
    let line = b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n";
    check(line, keep(line.len()));
}

#[test]
fn v1_of_the_longest_length_is_accepted_and_one_more_refused() {
    let mut line = b"PROXY UNKNOWN ".to_vec();
    line.resize(V1_MAX - 2, b'x');
    line.extend_from_slice(b"\r\n");
    assert_eq!(line.len(), V1_MAX);
    assert!(matches!(parse(&line), Parse::Done(_, n) if n == V1_MAX));
    let mut long = line[..V1_MAX - 2].to_vec();
    long.extend_from_slice(b"x\r\n");
    assert_eq!(parse(&long), Parse::Invalid(Invalid::TooLong));
    assert_eq!(parse(&long[..V1_MAX]), Parse::Invalid(Invalid::TooLong));
}

#[test]
fn v1_malformed_lines_are_refused() {
    let bad: &[&[u8]] = &[
        b"PROXY TCP4 192.0.2.1 198.51.100.7 40000 443\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.7 40000 443\rx\n",
        b"PROXY TCP5 192.0.2.1 198.51.100.7 40000 443\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.7 40000\r\n",
        b"PROXY TCP4 192.0.2.1  198.51.100.7 40000 443\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.7 40000 443 \r\n",
        b"PROXY TCP4 2001:db8::1 198.51.100.7 40000 443\r\n",
        b"PROXY TCP6 192.0.2.1 2001:db8::2 40000 443\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.7 65536 443\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.7 +4000 443\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.7 040000 443\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.7 -1 443\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.7 40000 443\x00\r\n",
        b"PROXY  TCP4 192.0.2.1 198.51.100.7 40000 443\r\n",
        b"PROXY\r\n",
        b"PROXY \r\n",
        b"PROXY UNKNOWNX\r\n",
    ];
    for line in bad {
        match parse(line) {
            Parse::Invalid(Invalid::V1(_)) | Parse::Invalid(Invalid::NoHeader) => {}
            other => panic!("{:?}: {:?}", String::from_utf8_lossy(line), other),
        }
        check(line, parse(line));
    }
}

#[test]
fn v1_port_zero_and_the_largest_port() {
    let line = b"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n";
    let header = tcp(Version::V1, "0.0.0.0:0", "255.255.255.255:65535");
    assert_eq!(parse(line), Parse::Done(header, line.len()));
}

#[test]
fn data_that_is_no_header_is_refused_at_its_first_byte() {
    for start in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"hello",
        b"\x16\x03\x01",
        b"\x00",
    ] {
        assert_eq!(parse(&start[..1]), Parse::Invalid(Invalid::NoHeader));
    }
    assert_eq!(parse(b"PRO"), Parse::NeedMore);
    assert_eq!(parse(b"PROXX"), Parse::Invalid(Invalid::NoHeader));
    assert_eq!(parse(b"POST /"), Parse::Invalid(Invalid::NoHeader));
    assert_eq!(
        parse(b"\r\n\r\n\x00\r\nQUIX"),
        Parse::Invalid(Invalid::NoHeader)
    );
    assert_eq!(parse(b"\r\n\r\nx"), Parse::Invalid(Invalid::NoHeader));
    assert_eq!(parse(b""), Parse::NeedMore);
}

#[test]
fn v2_proxy_inet() {
    let bytes = v2(0x21, 0x11, &inet_body());
    let header = tcp(Version::V2, "192.0.2.1:40000", "198.51.100.7:443");
    check(&bytes, Parse::Done(header, 28));
}

#[test]
fn v2_proxy_inet6() {
    let bytes = v2(0x21, 0x21, &inet6_body());
    let header = tcp(Version::V2, "[2001:db8::1]:5555", "[2001:db8::2]:80");
    check(&bytes, Parse::Done(header, 52));
}

#[test]
fn v2_local_keeps_the_peer_whatever_it_carries() {
    let keep = |n| {
        Parse::Done(
            Header {
                version: Version::V2,
                addresses: None,
            },
            n,
        )
    };
    check(&v2(0x20, 0x00, &[]), keep(16));
    // HAProxy's health checks send LOCAL with the addresses of a family.
    check(&v2(0x20, 0x11, &inet_body()), keep(28));
    // Even an empty body under INET: LOCAL ignores it.
    check(&v2(0x20, 0x11, &[]), keep(16));
}

#[test]
fn v2_families_without_a_tcp_peer_keep_it() {
    let keep = |n| {
        Parse::Done(
            Header {
                version: Version::V2,
                addresses: None,
            },
            n,
        )
    };
    check(&v2(0x21, 0x00, &[]), keep(16));
    check(&v2(0x21, 0x31, &[0u8; 216]), keep(232));
    check(&v2(0x21, 0x12, &inet_body()), keep(28));
    check(&v2(0x21, 0x10, &inet_body()), keep(28));
}

#[test]
fn v2_tlvs_are_skipped() {
    let mut body = inet_body();
    // ALPN "h2", a NOOP of 5 bytes, an empty one.
    body.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']);
    body.extend_from_slice(&[0x04, 0x00, 0x05, 0, 0, 0, 0, 0]);
    body.extend_from_slice(&[0x05, 0x00, 0x00]);
    let bytes = v2(0x21, 0x11, &body);
    let header = tcp(Version::V2, "192.0.2.1:40000", "198.51.100.7:443");
    check(&bytes, Parse::Done(header, bytes.len()));
    let mut more = bytes.clone();
    more.extend_from_slice(b"payload");
    assert_eq!(parse(&more), Parse::Done(header, bytes.len()));
}

#[test]
fn v2_a_tlv_past_the_end_is_refused() {
    for tail in [&[0x01][..], &[0x01, 0x00], &[0x01, 0x00, 0x03, b'h', b'2']] {
        let mut body = inet_body();
        body.extend_from_slice(tail);
        let bytes = v2(0x21, 0x11, &body);
        assert!(
            matches!(parse(&bytes), Parse::Invalid(Invalid::V2(_))),
            "{:?}",
            tail
        );
        check(&bytes, parse(&bytes));
    }
}

#[test]
fn v2_bad_heads_are_refused_as_soon_as_seen() {
    let good = v2(0x21, 0x11, &inet_body());
    let mutate = |at: usize, byte: u8| {
        let mut bytes = good.clone();
        bytes[at] = byte;
        bytes
    };
    // Version 1 in the binary format, version 3, command 2, family 4, transport 3.
    for (at, byte) in [(12, 0x11), (12, 0x31), (12, 0x22), (13, 0x41), (13, 0x13)] {
        let bytes = mutate(at, byte);
        assert!(matches!(
            parse(&bytes[..at + 1]),
            Parse::Invalid(Invalid::V2(_))
        ));
        check(&bytes, parse(&bytes));
    }
    // A length too short for the family's addresses.
    let short = v2(0x21, 0x21, &inet_body());
    assert!(matches!(
        parse(&short[..16]),
        Parse::Invalid(Invalid::V2(_))
    ));
}

#[test]
fn v2_bounded_length() {
    let body = vec![0u8; V2_MAX - 16];
    let longest = v2(0x20, 0x00, &body);
    assert!(matches!(parse(&longest), Parse::Done(_, n) if n == V2_MAX));
    let mut over = v2(0x20, 0x00, &[]);
    over[14..16].copy_from_slice(&((V2_MAX - 15) as u16).to_be_bytes());
    assert_eq!(parse(&over), Parse::Invalid(Invalid::TooLong));
    over[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    assert_eq!(parse(&over), Parse::Invalid(Invalid::TooLong));
}

/// A small xorshift generator: the properties below run on the same inputs
/// every time.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Random bytes, biased toward the shapes of headers.
fn random_input(rng: &mut Rng) -> Vec<u8> {
    let mut bytes = match rng.below(4) {
        0 => b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
        1 => v2(0x21, 0x11, &inet_body()),
        2 => v2(0x21, 0x21, &inet6_body()),
        _ => Vec::new(),
    };
    let flips = rng.below(4);
    for _ in 0..flips {
        if !bytes.is_empty() {
            let at = rng.below(bytes.len());
            bytes[at] = rng.next() as u8;
        }
    }
    let extra = rng.below(40);
    for _ in 0..extra {
        bytes.push(rng.next() as u8);
    }
    bytes
}

#[test]
fn properties_over_random_input() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..20_000 {
        let bytes = random_input(&mut rng);
        let whole = parse(&bytes);
        let mut decided = None;
        for end in 0..=bytes.len() {
            let got = parse(&bytes[..end]);
            match got {
                Parse::NeedMore => assert!(decided.is_none(), "{:?}", bytes),
                Parse::Done(_, n) => {
                    // Decided by the byte that completes it, and kept after.
                    assert!(n <= end && n <= super::MAX_HEADER);
                    assert_eq!(parse(&bytes[..n]), got);
                    if decided.is_none() {
                        assert_eq!(n, end);
                        decided = Some(got);
                    }
                    assert_eq!(Some(got), decided);
                }
                Parse::Invalid(_) => {
                    if decided.is_none() {
                        decided = Some(got);
                    }
                    assert!(matches!(decided, Some(Parse::Invalid(_))));
                }
            }
        }
        assert!(matches!(whole, Parse::NeedMore) || decided.is_some());
    }
}

#[test]
fn cidrs() {
    let net: Cidr = "10.1.0.0/16".parse().unwrap();
    assert!(net.contains("10.1.255.3".parse().unwrap()));
    assert!(!net.contains("10.2.0.1".parse().unwrap()));
    assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
    assert!(!net.contains("2001:db8::1".parse().unwrap()));
    assert_eq!(net.to_string(), "10.1.0.0/16");
    assert_eq!("10.1.2.3/16".parse::<Cidr>().unwrap(), net);
    let all: Cidr = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains("203.0.113.9".parse().unwrap()));
    let one: Cidr = "192.0.2.5".parse().unwrap();
    assert!(one.contains("192.0.2.5".parse().unwrap()));
    assert!(!one.contains("192.0.2.6".parse().unwrap()));
    let v6: Cidr = "2001:db8::/32".parse().unwrap();
    assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
    assert!(!v6.contains("2001:db9::1".parse().unwrap()));
    let loopback = Cidr::loopback();
    for ip in ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"] {
        assert!(
            loopback.iter().any(|c| c.contains(ip.parse().unwrap())),
            "{}",
            ip
        );
    }
    assert!(!loopback
        .iter()
        .any(|c| c.contains("10.0.0.1".parse().unwrap())));
    for bad in [
        "",
        "10.0.0.0/33",
        "::/129",
        "10.0.0.0/",
        "10.0.0.0/+8",
        "x/8",
        "10.0.0/8",
        "10.0.0.0/8/8",
    ] {
        assert!(bad.parse::<Cidr>().is_err(), "{:?}", bad);
    }
}
