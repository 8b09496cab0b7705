//! Version 2: the 12-byte [`V2_SIGNATURE`], a version/command byte (version
//! 2; `LOCAL` or `PROXY`), a family/transport byte, a big-endian length of
//! what follows, then the addresses of the family and TLVs (type, 2-byte
//! length, value), which are skipped once checked to tile the rest exactly.
//! The whole header is at most [`V2_MAX`] bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::header::{Addresses, Header, Invalid, Parse, Version};

/// The first 12 bytes of every version 2 header.
pub const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// The longest version 2 header accepted, head included: room for the
/// addresses of any family and a few KiB of TLVs.
pub const V2_MAX: usize = 4096;

/// Signature, version/command, family/transport, length.
const HEAD: usize = 16;

const CMD_LOCAL: u8 = 0x0;
const CMD_PROXY: u8 = 0x1;
const AF_INET: u8 = 0x1;
const AF_INET6: u8 = 0x2;
const AF_UNIX: u8 = 0x3;
const STREAM: u8 = 0x1;
const DGRAM: u8 = 0x2;

/// A version 2 header at the start of `received` (which starts with CR).
pub(crate) fn parse(received: &[u8]) -> Parse {
    let seen = received.len().min(V2_SIGNATURE.len());
    if received[..seen] != V2_SIGNATURE[..seen] {
        return Parse::Invalid(Invalid::NoHeader);
    }
    if let Some(&ver_cmd) = received.get(12) {
        if ver_cmd >> 4 != 2 {
            return invalid("the version must be 2");
        }
        if ver_cmd & 0xF > CMD_PROXY {
            return invalid("the command must be LOCAL or PROXY");
        }
    }
    if let Some(&fam) = received.get(13) {
        if fam >> 4 > AF_UNIX || fam & 0xF > DGRAM {
            return invalid("an unknown address family or transport");
        }
    }
    if received.len() < HEAD {
        return Parse::NeedMore;
    }
    let length = usize::from(u16::from_be_bytes([received[14], received[15]]));
    let total = HEAD + length;
    if total > V2_MAX {
        return Parse::Invalid(Invalid::TooLong);
    }
    let (ver_cmd, fam) = (received[12], received[13]);
    let family = fam >> 4;
    let needed = match family {
        AF_INET => 12,
        AF_INET6 => 36,
        AF_UNIX => 216,
        _ => 0,
    };
    // A LOCAL header's addresses are ignored, but its length still covers
    // whatever it carries.
    if ver_cmd & 0xF == CMD_PROXY && length < needed {
        return invalid("the length is shorter than the addresses of its family");
    }
    if received.len() < total {
        return Parse::NeedMore;
    }
    let body = &received[HEAD..total];
    let skip = if ver_cmd & 0xF == CMD_PROXY {
        needed
    } else {
        0
    };
    if ver_cmd & 0xF == CMD_PROXY && !tlvs_tile(&body[skip..]) {
        return invalid("a TLV runs past the end of the header");
    }
    let addresses = if ver_cmd & 0xF == CMD_LOCAL || fam & 0xF != STREAM {
        None
    } else {
        match family {
            AF_INET => Some(inet(body)),
            AF_INET6 => Some(inet6(body)),
            // AF_UNSPEC, AF_UNIX: nothing a TCP peer can be.
            _ => None,
        }
    };
    Parse::Done(
        Header {
            version: Version::V2,
            addresses,
        },
        total,
    )
}

fn invalid(why: &'static str) -> Parse {
    Parse::Invalid(Invalid::V2(why))
}

/// Whether `tlvs` is a whole number of TLVs (type, 2-byte length, value).
fn tlvs_tile(mut tlvs: &[u8]) -> bool {
    while !tlvs.is_empty() {
        if tlvs.len() < 3 {
            return false;
        }
        let length = usize::from(u16::from_be_bytes([tlvs[1], tlvs[2]]));
        if tlvs.len() < 3 + length {
            return false;
        }
        tlvs = &tlvs[3 + length..];
    }
    true
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn inet(body: &[u8]) -> Addresses {
    let ip = |b: &[u8]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
    Addresses {
        source: SocketAddr::new(ip(&body[0..4]), be16(&body[8..10])),
        destination: SocketAddr::new(ip(&body[4..8]), be16(&body[10..12])),
    }
}

fn inet6(body: &[u8]) -> Addresses {
    let ip = |b: &[u8]| {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(b);
        IpAddr::V6(Ipv6Addr::from(octets))
    };
    Addresses {
        source: SocketAddr::new(ip(&body[0..16]), be16(&body[32..34])),
        destination: SocketAddr::new(ip(&body[16..32]), be16(&body[34..36])),
    }
}
