//! What is peculiar to the IOCP driver (run under Wine in CI): timeouts below
//! `INFINITE`, sockets closed under pending ops, drops that leak, the pool,
//! skip-on-success. The contract itself is checked for every backend by
//! `crate::conformance`.

use std::io::Write;
use std::thread;
use std::time::Duration;

use super::*;
use crate::conformance::support::{assert_nothing_ready, one, raw, received, registered_pair};
use crate::contract::CompletionPort;
use crate::front::Front;

mod chosen;
mod idle;
mod paths;
mod waiting;

/// An IOCP port: the driver behind the shared front.
fn port() -> Front<Iocp> {
    Front::new(Iocp::new().unwrap())
}

#[test]
fn timeouts_are_whole_milliseconds_below_infinite() {
    assert_eq!(timeout_ms(None), u32::MAX);
    assert_eq!(timeout_ms(Some(Duration::ZERO)), 0);
    assert_eq!(timeout_ms(Some(Duration::from_micros(1500))), 2);
    assert_eq!(
        timeout_ms(Some(Duration::from_secs(u64::MAX))),
        MAX_TIMEOUT_MS
    );
}

#[test]
fn closing_a_socket_with_ops_in_flight_completes_them() {
    let mut port = port();
    let (_client, server) = registered_pair(&mut port);
    let socket = raw(&server);
    port.submit(
        1,
        Op::Recv {
            socket,
            buf: Vec::with_capacity(32),
        },
    );
    assert_nothing_ready(&mut port);
    // A socket closed under a pending recv (Wine: 0x8000000A) still yields
    // exactly one completion, an error.
    drop(server);
    let (_, result) = received(one(&mut port));
    assert!(result.is_err(), "expected an error, got {:?}", result);
    assert_eq!(port.in_flight(), 0);
    port.deregister(socket).unwrap();
}

#[test]
fn dropping_a_port_with_ops_in_flight_leaks_them_safely() {
    let mut port = port();
    let (mut client, server) = registered_pair(&mut port);
    port.submit(
        1,
        Op::Recv {
            socket: raw(&server),
            buf: Vec::with_capacity(32),
        },
    );
    assert_eq!(port.in_flight(), 1);
    drop(port);
    // The kernel may still complete the recv into the leaked buffer: no crash.
    client.write_all(b"late").unwrap();
    thread::sleep(Duration::from_millis(100));
    drop(server);
}
