//! Version 1: one line of text, `PROXY TCP4 <src> <dst> <sport> <dport>\r\n`
//! (or `TCP6`, or `UNKNOWN` followed by anything up to the CRLF), single
//! spaces, at most [`V1_MAX`] bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::header::{Addresses, Header, Invalid, Parse, Version};

/// The longest version 1 header, CRLF included (the spec's bound).
pub const V1_MAX: usize = 107;

const PREFIX: &[u8] = b"PROXY ";

/// A version 1 header at the start of `received` (which starts with `P`).
pub(crate) fn parse(received: &[u8]) -> Parse {
    let head = &received[..received.len().min(PREFIX.len())];
    if head != &PREFIX[..head.len()] {
        return Parse::Invalid(Invalid::NoHeader);
    }
    let window = &received[..received.len().min(V1_MAX)];
    let end = match window.iter().position(|&b| b == b'\n') {
        Some(end) => end,
        None => {
            if let Some(bad) = window.iter().position(|&b| !is_text(b)) {
                // A CR may only come last, right before the LF still to come.
                if !(window[bad] == b'\r' && bad + 1 == window.len()) {
                    return invalid("a byte that is not printable ASCII");
                }
            }
            if received.len() >= V1_MAX {
                return Parse::Invalid(Invalid::TooLong);
            }
            return Parse::NeedMore;
        }
    };
    if end == 0 || window[end - 1] != b'\r' {
        return invalid("a line feed without a carriage return");
    }
    let line = &window[..end - 1];
    if line.iter().any(|&b| !is_text(b)) {
        return invalid("a byte that is not printable ASCII");
    }
    // Printable ASCII is UTF-8.
    let line = match std::str::from_utf8(line) {
        Ok(line) => line,
        Err(_) => return invalid("a byte that is not printable ASCII"),
    };
    match line_header(line) {
        Ok(addresses) => Parse::Done(
            Header {
                version: Version::V1,
                addresses,
            },
            end + 1,
        ),
        Err(why) => invalid(why),
    }
}

fn invalid(why: &'static str) -> Parse {
    Parse::Invalid(Invalid::V1(why))
}

fn is_text(b: u8) -> bool {
    (0x20..0x7f).contains(&b)
}

/// The addresses of a line without its CRLF (`None` for `UNKNOWN`).
fn line_header(line: &str) -> Result<Option<Addresses>, &'static str> {
    let rest = &line[PREFIX.len()..];
    if rest == "UNKNOWN" || rest.starts_with("UNKNOWN ") {
        return Ok(None);
    }
    let mut parts = rest.split(' ');
    let family = parts.next().unwrap_or("");
    let fields: Vec<&str> = parts.collect();
    if family != "TCP4" && family != "TCP6" {
        return Err("the protocol must be TCP4, TCP6 or UNKNOWN");
    }
    if fields.len() != 4 {
        return Err("TCP4 and TCP6 take two addresses and two ports, one space apart");
    }
    let (source, destination) = if family == "TCP4" {
        let ip = |s: &str| s.parse::<Ipv4Addr>().map(IpAddr::V4);
        match (ip(fields[0]), ip(fields[1])) {
            (Ok(s), Ok(d)) => (s, d),
            _ => return Err("TCP4 needs two IPv4 addresses"),
        }
    } else {
        let ip = |s: &str| s.parse::<Ipv6Addr>().map(IpAddr::V6);
        match (ip(fields[0]), ip(fields[1])) {
            (Ok(s), Ok(d)) => (s, d),
            _ => return Err("TCP6 needs two IPv6 addresses"),
        }
    };
    let (sport, dport) = match (port(fields[2]), port(fields[3])) {
        (Some(s), Some(d)) => (s, d),
        _ => return Err("a port must be a decimal number from 0 to 65535"),
    };
    Ok(Some(Addresses {
        source: SocketAddr::new(source, sport),
        destination: SocketAddr::new(destination, dport),
    }))
}

/// A port: 1 to 5 decimal digits, no sign, no leading zero, at most 65535.
fn port(text: &str) -> Option<u16> {
    let digits_only =
        !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    text.parse().ok()
}
