//! Receiving and sending with the caller's buffers.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use super::support::{
    assert_nothing_ready, one, open, raw, received, registered_pair, sent, wait_for,
};
use crate::port::{Backend, CompletionPort, Op, Port, Token};

/// Post a recv into a new buffer of `capacity` bytes.
fn recv(port: &mut Port, token: Token, socket: &TcpStream, capacity: usize) {
    port.submit(
        token,
        Op::Recv {
            socket: raw(socket),
            buf: Vec::with_capacity(capacity),
        },
    );
}

pub(super) fn a_waiting_recv_appends_bytes_sent_later(backend: Backend) {
    let mut port = open(backend);
    let (mut client, server) = registered_pair(&mut port);
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(b">> ");
    port.submit(
        3,
        Op::Recv {
            socket: raw(&server),
            buf,
        },
    );
    assert_nothing_ready(&mut port);
    assert_eq!(port.in_flight(), 1);
    client.write_all(b"hello").unwrap();
    let completion = one(&mut port);
    assert_eq!(completion.token, 3);
    let (buf, result) = received(completion);
    assert_eq!(result.unwrap(), 5);
    assert_eq!(buf, b">> hello");
    assert_eq!(buf.capacity(), 64);
    assert_eq!(port.in_flight(), 0);
}

pub(super) fn recv_of_bytes_already_there_then_end_of_stream(backend: Backend) {
    let mut port = open(backend);
    let (mut client, server) = registered_pair(&mut port);
    client.write_all(b"ready").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    thread::sleep(Duration::from_millis(50));
    recv(&mut port, 1, &server, 16);
    let (buf, result) = received(one(&mut port));
    assert_eq!(result.unwrap(), 5);
    assert_eq!(buf, b"ready");
    recv(&mut port, 2, &server, 16);
    let completion = one(&mut port);
    assert_eq!(completion.token, 2);
    let (buf, result) = received(completion);
    assert_eq!(result.unwrap(), 0);
    assert!(buf.is_empty());
}

pub(super) fn recv_at_end_of_stream_is_zero(backend: Backend) {
    let mut port = open(backend);
    let (client, server) = registered_pair(&mut port);
    recv(&mut port, 1, &server, 16);
    assert_nothing_ready(&mut port);
    drop(client);
    let (buf, result) = received(one(&mut port));
    assert_eq!(result.unwrap(), 0);
    assert!(buf.is_empty());
}

pub(super) fn peer_reset_fails_the_waiting_recv(backend: Backend) {
    let mut port = open(backend);
    let (client, server) = registered_pair(&mut port);
    recv(&mut port, 1, &server, 32);
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
    let (_, result) = received(one(&mut port));
    // A reset is an error, or (some stacks) an end of stream.
    assert!(matches!(result, Err(_) | Ok(0)), "got {:?}", result);
}

/// A send from a position, then far more than the socket buffers hold to a
/// slow reader: resubmitting the rest after each partial send, every byte
/// arrives once, in order. (On Linux the kernel takes it in pieces.)
pub(super) fn a_large_send_goes_out_byte_exact_through_partial_sends(backend: Backend) {
    const SIZE: usize = 1 << 20;
    let mut port = open(backend);
    let (mut client, server) = registered_pair(&mut port);
    port.submit(
        3,
        Op::Send {
            socket: raw(&server),
            buf: b"xxhello".to_vec().into(),
            pos: 2,
        },
    );
    let (buf, pos, result) = sent(one(&mut port));
    assert_eq!((&buf[..], pos, result.unwrap()), (&b"xxhello"[..], 2, 5));
    let mut got = [0u8; 5];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello");

    let sock = socket2::SockRef::from(&server);
    sock.set_send_buffer_size(16 << 10).unwrap();
    let data: Vec<u8> = (0..SIZE).map(|i| (i * 7 + i / 251) as u8).collect();
    let reader = thread::spawn(move || {
        let mut got = Vec::with_capacity(SIZE);
        let mut chunk = [0u8; 16 * 1024];
        while got.len() < SIZE {
            thread::sleep(Duration::from_millis(1));
            let n = client.read(&mut chunk).unwrap();
            assert_ne!(n, 0, "early end of stream");
            got.extend_from_slice(&chunk[..n]);
        }
        got
    });
    let (mut buf, mut pos, mut sends) = (data.clone(), 0, 0);
    while pos < SIZE {
        port.submit(
            sends,
            Op::Send {
                socket: raw(&server),
                buf: buf.into(),
                pos,
            },
        );
        let completion = one(&mut port);
        assert_eq!(completion.token, sends);
        let (back, at, result) = sent(completion);
        assert_eq!(at, pos);
        let n = result.unwrap();
        assert!(n > 0 && n <= SIZE - pos);
        buf = back;
        pos += n;
        sends += 1;
    }
    if cfg!(target_os = "linux") {
        assert!(sends > 1, "the kernel took 1 MiB in one send");
    }
    assert_eq!(port.in_flight(), 0);
    assert!(buf == data, "the buffer came back altered");
    assert!(reader.join().unwrap() == data, "bytes differ");
}

/// One byte each way, 500 times: recvs and sends that finish inside their
/// call and ones that wait, alternating.
pub(super) fn ping_pong_through_many_rounds(backend: Backend) {
    let mut port = open(backend);
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
        let (got, result) = received(one(&mut port));
        assert_eq!(result.unwrap(), 1, "round {}", round);
        assert_eq!(got, [round as u8]);
        port.submit(
            2,
            Op::Send {
                socket,
                buf: got.into(),
                pos: 0,
            },
        );
        let (mut back, _, result) = sent(one(&mut port));
        assert_eq!(result.unwrap(), 1);
        back.clear();
        buf = back;
    }
    peer.join().unwrap();
    assert_eq!(port.in_flight(), 0);
}

pub(super) fn many_connections_each_get_their_own_bytes_and_echo(backend: Backend) {
    let count = if cfg!(windows) { 50 } else { 200 };
    let mut port = open(backend);
    let mut pairs: Vec<(TcpStream, TcpStream)> =
        (0..count).map(|_| registered_pair(&mut port)).collect();
    for (i, (_, server)) in pairs.iter().enumerate() {
        recv(&mut port, i as Token, server, 32);
    }
    assert_nothing_ready(&mut port);
    assert_eq!(port.in_flight(), count);
    for (i, (client, _)) in pairs.iter_mut().enumerate() {
        client
            .write_all(format!("message {}", i).as_bytes())
            .unwrap();
    }
    let mut seen = vec![false; count];
    for completion in wait_for(&mut port, count) {
        let i = completion.token as usize;
        let (buf, result) = received(completion);
        assert_eq!(result.unwrap(), buf.len());
        assert_eq!(buf, format!("message {}", i).as_bytes());
        assert!(!seen[i], "token {} completed twice", i);
        seen[i] = true;
        let socket = raw(&pairs[i].1);
        port.submit(
            i as Token,
            Op::Send {
                socket,
                buf: buf.into(),
                pos: 0,
            },
        );
    }
    wait_for(&mut port, count);
    assert_eq!(port.in_flight(), 0);
    for (i, (client, _)) in pairs.iter_mut().enumerate() {
        let expected = format!("message {}", i);
        let mut got = vec![0u8; expected.len()];
        client.read_exact(&mut got).unwrap();
        assert_eq!(got, expected.as_bytes());
    }
}

/// An op the kernel refuses (a send on a socket never connected) is a
/// completion with the kernel's error, and its buffer.
pub(super) fn a_kernel_error_is_an_error_completion(backend: Backend) {
    let mut port = open(backend);
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_nonblocking(true).unwrap();
    port.register(raw(&socket)).unwrap();
    port.submit(
        4,
        Op::Send {
            socket: raw(&socket),
            buf: b"nobody".to_vec().into(),
            pos: 0,
        },
    );
    let completion = one(&mut port);
    assert_eq!(completion.token, 4);
    let (buf, pos, result) = sent(completion);
    assert!(result.is_err(), "got {:?}", result);
    assert_eq!((&buf[..], pos), (&b"nobody"[..], 0));
    assert_eq!(port.in_flight(), 0);
}
