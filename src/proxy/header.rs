//! What a PROXY header says, and the outcome of parsing one.

use std::fmt;
use std::net::SocketAddr;

/// The protocol version of a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// Text: `PROXY TCP4 ... \r\n`.
    V1,
    /// Binary: the 12-byte signature, then a 4-byte head.
    V2,
}

/// The original connection a header describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addresses {
    /// The client's address: the connection's peer from now on.
    pub source: SocketAddr,
    /// The address the client connected to (the load balancer's).
    pub destination: SocketAddr,
}

/// A parsed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Which version it was.
    pub version: Version,
    /// The original connection; `None`: keep the real peer (v1 `UNKNOWN`, v2
    /// `LOCAL`, or a v2 family other than TCP over IPv4/IPv6).
    pub addresses: Option<Addresses>,
}

/// What the bytes received so far make of a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parse {
    /// A valid header may still come: wait for more bytes.
    NeedMore,
    /// A header, and the number of bytes it took (the stream starts after them).
    Done(Header, usize),
    /// No valid header starts with these bytes.
    Invalid(Invalid),
}

/// Why bytes are no PROXY header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// The bytes start neither signature (a client speaking directly).
    NoHeader,
    /// Longer than the version allows (v1: no CRLF within 107 bytes; v2: a
    /// length past the bound).
    TooLong,
    /// A version 1 line that breaks the grammar; says which part.
    V1(&'static str),
    /// A version 2 header that breaks the format; says which part.
    V2(&'static str),
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::NoHeader => f.write_str("no PROXY protocol header"),
            Invalid::TooLong => f.write_str("PROXY protocol header too long"),
            Invalid::V1(why) => write!(f, "bad PROXY protocol v1 header: {}", why),
            Invalid::V2(why) => write!(f, "bad PROXY protocol v2 header: {}", why),
        }
    }
}

impl std::error::Error for Invalid {}
