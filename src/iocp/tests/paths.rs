//! The port's less travelled paths: inline completions, batch limits, accepts of
//! connections already waiting, IPv6, and registration after deregistration.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use super::{raw, received, registered_pair, sent, wait_for};
use crate::iocp::Iocp;
use crate::port::{CompletionPort, Op, Outcome, Token, MAX_BATCH};

#[test]
fn registration_turns_on_skip_completion_on_success() {
    let mut port = Iocp::new().unwrap();
    let (_client, server) = registered_pair(&mut port);
    assert!(port.sockets[&raw(&server)].skip_on_success);
}

#[test]
fn a_wait_hands_out_at_most_max_batch_completions() {
    let mut port = Iocp::new().unwrap();
    let stranger = TcpListener::bind("127.0.0.1:0").unwrap();
    let total = MAX_BATCH + 10;
    for token in 0..total {
        port.submit(
            token as Token,
            Op::Accept {
                listener: raw(&stranger),
            },
        );
    }
    let mut out = Vec::new();
    port.wait(&mut out, Some(Duration::ZERO)).unwrap();
    assert_eq!(out.len(), MAX_BATCH);
    assert_eq!(port.in_flight(), 10);
    port.wait(&mut out, Some(Duration::ZERO)).unwrap();
    assert_eq!(out.len(), total);
    let tokens: Vec<Token> = out.iter().map(|c| c.token).collect();
    assert_eq!(tokens, (0..total as Token).collect::<Vec<_>>());
}

#[test]
fn accept_of_a_connection_already_waiting_and_over_ipv6() {
    let mut port = Iocp::new().unwrap();
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
        let (socket, peer) = match wait_for(&mut port, 1).pop().unwrap().outcome {
            Outcome::Accepted(result) => result.unwrap(),
            other => panic!("expected Accepted, got {:?}", other),
        };
        assert_eq!(peer, client.local_addr().unwrap(), "{}", addr);
        drop(socket);
        port.deregister(raw(&listener)).unwrap();
    }
}

#[test]
fn ping_pong_through_inline_and_pending_completions() {
    let mut port = Iocp::new().unwrap();
    let (mut client, server) = registered_pair(&mut port);
    let socket = raw(&server);
    let peer = thread::spawn(move || {
        let mut byte = [0u8; 1];
        for round in 0..500u32 {
            client.write_all(&[round as u8]).unwrap();
            client.read_exact(&mut byte).unwrap();
            assert_eq!(byte[0], round as u8);
        }
    });
    let mut buf = Vec::with_capacity(16);
    for round in 0..500u32 {
        port.submit(1, Op::Recv { socket, buf });
        let (got, result) = received(wait_for(&mut port, 1).pop().unwrap());
        assert_eq!(result.unwrap(), 1, "round {}", round);
        assert_eq!(got, [round as u8]);
        port.submit(
            2,
            Op::Send {
                socket,
                buf: got,
                pos: 0,
            },
        );
        let (mut back, _, result) = sent(wait_for(&mut port, 1).pop().unwrap());
        assert_eq!(result.unwrap(), 1);
        back.clear();
        buf = back;
    }
    peer.join().unwrap();
    assert_eq!(port.in_flight(), 0);
}

#[test]
fn deregister_forgets_the_socket_and_new_sockets_register() {
    let mut port = Iocp::new().unwrap();
    for _ in 0..20 {
        let (mut client, server) = registered_pair(&mut port);
        let socket = raw(&server);
        client.write_all(b"once").unwrap();
        port.submit(
            1,
            Op::Recv {
                socket,
                buf: Vec::with_capacity(8),
            },
        );
        let (buf, result) = received(wait_for(&mut port, 1).pop().unwrap());
        assert_eq!((result.unwrap(), buf.as_slice()), (4, &b"once"[..]));
        port.deregister(socket).unwrap();
        assert!(port.deregister(socket).is_err());
        port.submit(
            2,
            Op::Recv {
                socket,
                buf: Vec::with_capacity(8),
            },
        );
        let (_, result) = received(wait_for(&mut port, 1).pop().unwrap());
        assert!(result.is_err(), "an op on a forgotten socket must fail");
        // Closing frees the handle value, which a later socket may reuse.
        drop(server);
    }
}
