//! The port's less travelled paths: skip-on-success, accepts of connections
//! already waiting, IPv6.

use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use super::port;
use crate::conformance::support::{one, raw, registered_pair};
use crate::contract::{CompletionPort, Op, Outcome};

#[test]
fn registration_turns_on_skip_completion_on_success() {
    let mut port = port();
    let (_client, server) = registered_pair(&mut port);
    assert!(port.driver().sockets[&raw(&server)].skip_on_success);
}

#[test]
fn accept_of_a_connection_already_waiting_and_over_ipv6() {
    let mut port = port();
    for addr in ["127.0.0.1:0", "[::1]:0"] {
        let listener = match TcpListener::bind(addr) {
            Ok(listener) => listener,
            Err(e) if addr.starts_with('[') => {
                eprintln!("no IPv6 loopback here ({}); skipping it", e);
                continue;
            }
            Err(e) => panic!("bind {}: {}", addr, e),
        };
        listener.set_nonblocking(true).unwrap();
        port.register(raw(&listener)).unwrap();
        // The client connects before any accept is posted.
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        thread::sleep(Duration::from_millis(50));
        port.submit(
            1,
            Op::Accept {
                listener: raw(&listener),
            },
        );
        let (socket, peer) = match one(&mut port).outcome {
            Outcome::Accepted(result) => result.unwrap(),
            other => panic!("expected Accepted, got {:?}", other),
        };
        assert_eq!(peer.inet(), Some(client.local_addr().unwrap()), "{}", addr);
        drop(socket);
        port.deregister(raw(&listener)).unwrap();
    }
}
