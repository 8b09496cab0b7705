//! The PROXY protocol (HAProxy's `proxy-protocol.txt`), versions 1 and 2: the
//! header a load balancer sends first on each connection it forwards, naming
//! the client it accepted. Pure functions over bytes; nothing here knows of
//! sockets or the server (`src/server/preamble.rs` feeds it).
//!
//! Rules:
//! * [`parse`] takes every byte received so far and says [`Parse::NeedMore`],
//!   [`Parse::Done`] (the header and how many bytes it took: the bytes after
//!   it belong to the stream) or [`Parse::Invalid`]. It decides as early as
//!   the bytes allow: a first byte that starts neither signature is refused
//!   at once, and so is any prefix no valid header starts with.
//! * Version 1 (text) is at most [`V1_MAX`] = 107 bytes, CRLF included.
//!   Version 2 (binary) is at most [`V2_MAX`] = 4096 bytes: its 16-byte
//!   head, the addresses, and TLVs, which are checked to tile the rest
//!   exactly and are otherwise skipped.
//! * Only `TCP4`/`TCP6` (v1) and `PROXY` over `AF_INET`/`AF_INET6` `STREAM`
//!   (v2) carry addresses; `UNKNOWN` (v1), `LOCAL` (v2) and the other v2
//!   families and transports keep the connection's real peer
//!   ([`Header::addresses`] is `None`).
//! * [`Cidr`] is the trusted-proxies check: an IPv4-mapped IPv6 peer
//!   (`::ffff:127.0.0.1`) matches the IPv4 networks.

mod cidr;
mod header;
mod v1;
mod v2;

#[cfg(test)]
pub(crate) mod tests;

pub use cidr::{Cidr, CidrError};
pub use header::{Addresses, Header, Invalid, Parse, Version};
pub use v1::V1_MAX;
pub use v2::{V2_MAX, V2_SIGNATURE};

/// The header at the start of `received` (every byte of the connection so
/// far), if there are enough bytes to tell.
pub fn parse(received: &[u8]) -> Parse {
    match received.first() {
        None => Parse::NeedMore,
        Some(&b'P') => v1::parse(received),
        Some(&0x0D) => v2::parse(received),
        Some(_) => Parse::Invalid(Invalid::NoHeader),
    }
}

/// The most bytes a header of either version may take: a connection that
/// has buffered this many without a header is refused.
pub const MAX_HEADER: usize = V2_MAX;
