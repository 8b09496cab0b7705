//! Accepting and connecting.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};

use socket2::{Domain, Socket, Type};

use super::support::{
    assert_canceled, assert_nothing_ready, inheritable, listener, one, open, raw, sent,
};
use crate::port::{Address, Backend, CompletionPort, Op, Outcome};

pub(super) fn accept_gives_a_nonblocking_uninheritable_socket_and_its_peer(backend: Backend) {
    let mut port = open(backend);
    let listener = listener();
    port.register(raw(&listener)).unwrap();
    for token in [7, 8] {
        port.submit(
            token,
            Op::Accept {
                listener: raw(&listener),
            },
        );
    }
    assert_eq!(port.in_flight(), 2);
    assert_nothing_ready(&mut port);

    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let completion = one(&mut port);
    assert_eq!(port.in_flight(), 1);
    assert!(completion.token == 7 || completion.token == 8);
    let (socket, peer) = match completion.outcome {
        Outcome::Accepted(result) => result.unwrap(),
        other => panic!("expected Accepted, got {:?}", other),
    };
    assert_eq!(peer, Address::Inet(client.local_addr().unwrap()));
    // The accepted socket knows its addresses (IOCP: SO_UPDATE_ACCEPT_CONTEXT).
    assert_eq!(
        socket.peer_addr().unwrap().as_socket().unwrap(),
        client.local_addr().unwrap()
    );
    let mut stream: TcpStream = socket.into();
    assert!(!inheritable(&stream));
    // Nonblocking: a read with nothing to read fails at once.
    let mut byte = [0u8; 1];
    let error = stream.read(&mut byte).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
    client.write_all(b"x").unwrap();
    drop(client);

    // Cancel the other accept: it completes with an error.
    port.cancel(raw(&listener));
    match one(&mut port).outcome {
        Outcome::Accepted(result) => assert_canceled(result),
        other => panic!("expected a failed accept, got {:?}", other),
    }
    assert_eq!(port.in_flight(), 0);
}

pub(super) fn connect_to_a_listener_then_send_through_the_port(backend: Backend) {
    let mut port = open(backend);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_nonblocking(true).unwrap();
    port.register(raw(&socket)).unwrap();
    port.submit(
        5,
        Op::Connect {
            socket: raw(&socket),
            addr,
        },
    );
    let completion = one(&mut port);
    assert_eq!(completion.token, 5);
    match completion.outcome {
        Outcome::Connected(result) => result.unwrap(),
        other => panic!("expected Connected, got {:?}", other),
    }
    // The socket knows its peer (IOCP: SO_UPDATE_CONNECT_CONTEXT).
    assert_eq!(socket.peer_addr().unwrap().as_socket().unwrap(), addr);
    let (mut accepted, peer) = listener.accept().unwrap();
    assert_eq!(Some(peer), socket.local_addr().unwrap().as_socket());
    port.submit(
        6,
        Op::Send {
            socket: raw(&socket),
            buf: b"ping".to_vec().into(),
            pos: 0,
        },
    );
    assert_eq!(sent(one(&mut port)).2.unwrap(), 4);
    let mut got = [0u8; 4];
    accepted.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    assert_eq!(port.in_flight(), 0);
}

pub(super) fn connect_to_a_closed_port_is_refused(backend: Backend) {
    let mut port = open(backend);
    // A port that was just free: nothing listens on it.
    let addr = listener().local_addr().unwrap();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_nonblocking(true).unwrap();
    port.register(raw(&socket)).unwrap();
    port.submit(
        9,
        Op::Connect {
            socket: raw(&socket),
            addr,
        },
    );
    let completion = one(&mut port);
    assert_eq!(completion.token, 9);
    let error = match completion.outcome {
        Outcome::Connected(Err(error)) => error,
        other => panic!("expected a refused connect, got {:?}", other),
    };
    if cfg!(unix) {
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
    }
    assert_eq!(port.in_flight(), 0);
}
