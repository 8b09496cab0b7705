//! Values named in text: framings by name, and a host (an IP address or a
//! name to resolve) with a port.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use crate::config::ConfigError;
use crate::framing::{ByteOrder, Framing};

/// The framing names the command lines take (Python also takes `length_prefixed`).
pub const FRAMING_NAMES: &[&str] = &["raw", "lines", "length"];

/// A framing by name: `raw`, `lines` (newline-delimited), `length` or
/// `length_prefixed` (4-byte big-endian prefix).
pub fn framing_by_name(name: &str) -> Result<Framing, ConfigError> {
    match name {
        "raw" => Ok(Framing::raw()),
        "lines" => Ok(Framing::lines(b"\n").expect("newline is a valid delimiter")),
        "length" | "length_prefixed" => {
            Ok(Framing::length_prefixed(4, ByteOrder::Big).expect("4 is a valid width"))
        }
        other => Err(ConfigError {
            name: "framing",
            why: format!(
                "must be one of {}, got {:?}",
                FRAMING_NAMES.join(", "),
                other
            ),
        }),
    }
}

/// The name [`framing_by_name`] takes for this kind of framing.
pub fn framing_name(framing: &Framing) -> &'static str {
    match framing {
        Framing::Raw => "raw",
        Framing::Lines { .. } => "lines",
        Framing::LengthPrefixed { .. } => "length",
    }
}

/// `host` as an IP address, or a name resolved to its first address.
pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, ConfigError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| ConfigError {
            name: "host",
            why: format!("must be an IP address or a resolvable name, got {:?}", host),
        })
}
