//! A network in CIDR notation (`10.0.0.0/8`, `::1/128`, or a bare address:
//! that address alone), and whether an address lies in it: the `trusted_proxies`
//! check. Parsing and prefix arithmetic are `ipnet`'s; this file adds the bare
//! address form and the IPv4-mapped IPv6 peer.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use ipnet::IpNet;

/// An IPv4 or IPv6 network, host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr(IpNet);

/// Text that is no CIDR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CidrError(pub String);

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a CIDR: {:?}", self.0)
    }
}

impl std::error::Error for CidrError {}

impl Cidr {
    /// The network of `ip` with `prefix` leading bits; `None` if `prefix` is
    /// longer than the address.
    pub fn new(ip: IpAddr, prefix: u8) -> Option<Cidr> {
        IpNet::new(ip, prefix).ok().map(|net| Cidr(net.trunc()))
    }

    /// Whether `ip` lies in this network; an IPv4-mapped IPv6 address is
    /// taken as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&unmapped(ip))
    }

    /// The loopback networks: `127.0.0.0/8` and `::1/128`.
    pub fn loopback() -> Vec<Cidr> {
        vec![
            Cidr::new(IpAddr::from([127, 0, 0, 0]), 8).expect("a /8 fits IPv4"),
            Cidr::new(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]), 128).expect("a /128 fits IPv6"),
        ]
    }
}

/// `ip`, or the IPv4 address of an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`).
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.segments() {
            [0, 0, 0, 0, 0, 0xffff, hi, lo] => {
                IpAddr::V4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)))
            }
            _ => ip,
        },
        IpAddr::V4(_) => ip,
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `ADDRESS/PREFIX` as `ipnet` reads it, or a bare address (all its bits).
    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let net = if text.contains('/') {
            text.parse::<IpNet>().ok()
        } else {
            text.parse::<IpAddr>().ok().map(IpNet::from)
        };
        net.map(|net| Cidr(net.trunc()))
            .ok_or_else(|| CidrError(text.to_string()))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
