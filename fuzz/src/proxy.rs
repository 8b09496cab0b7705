//! Property checks of `iocp_echo::proxy::parse`, the PROXY protocol header
//! parser, called by `fuzz_targets/proxy_header.rs`.
//!
//! The input is the start of a connection. The parser is run on every prefix
//! of it (so as bytes arrive one at a time) and must:
//!
//! * say `NeedMore` until some prefix decides, then keep that decision for
//!   every longer prefix (a header is decided by the byte that completes it;
//!   an invalid one stays invalid);
//! * never take more than `MAX_HEADER` bytes, nor need more once it has that
//!   many (a connection cannot be made to buffer without bound);
//! * for a header taking `n` bytes, say the same of the first `n` bytes alone;
//! * give addresses only with the family their version says: v1 `TCP4` and
//!   v2 `AF_INET` an IPv4 pair, `TCP6` / `AF_INET6` an IPv6 pair.

use std::net::SocketAddr;

use iocp_echo::proxy::{parse, Parse, MAX_HEADER};

/// Check the parser on `data` fed one byte more at a time.
pub fn header(data: &[u8]) {
    let data = &data[..data.len().min(MAX_HEADER + 64)];
    let mut decided: Option<Parse> = None;
    for end in 0..=data.len() {
        let got = parse(&data[..end]);
        match (got, decided) {
            (Parse::NeedMore, None) => {
                assert!(end < MAX_HEADER, "needs more after {} bytes", end);
            }
            (Parse::NeedMore, Some(d)) => panic!("{:?} after {:?}", got, d),
            (Parse::Done(header, n), None) => {
                assert_eq!(n, end, "decided late");
                assert!(n <= MAX_HEADER);
                assert_eq!(parse(&data[..n]), got);
                if let Some(a) = header.addresses {
                    assert_eq!(is_v4(a.source), is_v4(a.destination));
                }
                decided = Some(got);
            }
            (Parse::Done(..), Some(d)) => assert_eq!(got, d),
            (Parse::Invalid(_), None) => decided = Some(got),
            (Parse::Invalid(_), Some(d)) => {
                assert!(matches!(d, Parse::Invalid(_)), "{:?} after {:?}", got, d)
            }
        }
    }
}

fn is_v4(addr: SocketAddr) -> bool {
    addr.is_ipv4()
}
