//! The IOCP port against real loopback sockets (run under Wine in CI).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::windows::io::AsRawSocket;
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use super::*;

mod chosen;
mod paths;

/// Wait until `count` completions arrived (panics after 20 s: Wine is slow).
#[track_caller]
fn wait_for(port: &mut Iocp, count: usize) -> Vec<Completion> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = Vec::new();
    while out.len() < count {
        assert!(
            Instant::now() < deadline,
            "timed out: {} of {} completions",
            out.len(),
            count
        );
        port.wait(&mut out, Some(Duration::from_millis(100)))
            .unwrap();
    }
    assert_eq!(out.len(), count, "more completions than expected");
    out
}

#[track_caller]
fn assert_nothing_ready(port: &mut Iocp) {
    let mut out = Vec::new();
    port.wait(&mut out, Some(Duration::from_millis(50)))
        .unwrap();
    assert!(out.is_empty(), "unexpected completions: {:?}", out);
}

fn raw(stream: &impl AsRawSocket) -> RawSocket {
    stream.as_raw_socket()
}

/// A connected pair: a std client and its nonblocking server side, registered.
fn registered_pair(port: &mut Iocp) -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    port.register(raw(&server)).unwrap();
    (client, server)
}

#[track_caller]
fn received(completion: Completion) -> (Vec<u8>, io::Result<usize>) {
    match completion.outcome {
        Outcome::Received { buf, result } => (buf, result),
        other => panic!("expected Received, got {:?}", other),
    }
}

#[track_caller]
fn sent(completion: Completion) -> (Vec<u8>, usize, io::Result<usize>) {
    match completion.outcome {
        Outcome::Sent { buf, pos, result } => (buf, pos, result),
        other => panic!("expected Sent, got {:?}", other),
    }
}

#[test]
fn timeouts_round_up_to_whole_milliseconds() {
    assert_eq!(timeout_ms(None), u32::MAX);
    assert_eq!(timeout_ms(Some(Duration::ZERO)), 0);
    assert_eq!(timeout_ms(Some(Duration::from_nanos(1))), 1);
    assert_eq!(timeout_ms(Some(Duration::from_micros(1500))), 2);
    assert_eq!(timeout_ms(Some(Duration::from_millis(7))), 7);
    assert_eq!(
        timeout_ms(Some(Duration::from_secs(u64::MAX))),
        MAX_TIMEOUT_MS
    );
}

#[test]
fn a_posted_wake_ends_a_wait_and_coalesces() {
    let mut port = Iocp::new().unwrap();
    let waker = port.waker();
    for _ in 0..5 {
        waker.wake().unwrap();
    }
    let mut out = Vec::new();
    let started = Instant::now();
    port.wait(&mut out, Some(Duration::from_secs(10))).unwrap();
    assert!(out.is_empty());
    assert!(started.elapsed() < Duration::from_secs(5));
    // The five wakes were one packet: the next wait times out.
    let started = Instant::now();
    port.wait(&mut out, Some(Duration::from_millis(100)))
        .unwrap();
    assert!(out.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(90));
}

#[test]
fn wake_from_another_thread_ends_a_blocking_wait() {
    let mut port = Iocp::new().unwrap();
    let waker = port.waker();
    let started = Instant::now();
    let thread = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        waker.wake().unwrap();
    });
    let mut out = Vec::new();
    port.wait(&mut out, None).unwrap();
    assert!(out.is_empty());
    assert!(started.elapsed() < Duration::from_secs(10));
    thread.join().unwrap();
}

#[test]
fn a_waker_outlives_its_port() {
    let port = Iocp::new().unwrap();
    let waker = port.waker();
    drop(port);
    // The handle is still open (shared with the waker): posting succeeds.
    waker.wake().unwrap();
}

#[test]
fn accept_gives_a_nonblocking_uninheritable_socket_and_the_peer() {
    let mut port = Iocp::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    port.register(raw(&listener)).unwrap();
    port.submit(
        7,
        Op::Accept {
            listener: raw(&listener),
        },
    );
    port.submit(
        8,
        Op::Accept {
            listener: raw(&listener),
        },
    );
    assert_eq!(port.in_flight(), 2);
    assert_nothing_ready(&mut port);

    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let completions = wait_for(&mut port, 1);
    assert_eq!(port.in_flight(), 1);
    let completion = completions.into_iter().next().unwrap();
    assert!(completion.token == 7 || completion.token == 8);
    let (socket, peer) = match completion.outcome {
        Outcome::Accepted(result) => result.unwrap(),
        other => panic!("expected Accepted, got {:?}", other),
    };
    assert_eq!(peer, client.local_addr().unwrap());
    // SO_UPDATE_ACCEPT_CONTEXT makes the accepted socket know its addresses.
    assert_eq!(
        socket.peer_addr().unwrap().as_socket().unwrap(),
        client.local_addr().unwrap()
    );
    // Nonblocking: a read with nothing to read fails at once.
    let mut stream: TcpStream = socket.into();
    let mut byte = [0u8; 1];
    let err = stream.read(&mut byte).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    assert!(!inheritable(&stream));
    client.write_all(b"x").unwrap();
    drop(client);

    // Cancel the other accept: it completes with an error.
    port.cancel(raw(&listener));
    let completion = wait_for(&mut port, 1).pop().unwrap();
    match completion.outcome {
        Outcome::Accepted(Err(_)) => {}
        other => panic!("expected a failed accept, got {:?}", other),
    }
    assert_eq!(port.in_flight(), 0);
}

fn inheritable(stream: &TcpStream) -> bool {
    use windows_sys::Win32::Foundation::{GetHandleInformation, HANDLE_FLAG_INHERIT};
    let mut flags = 0u32;
    // SAFETY: an open socket handle and a local out-value.
    let ok = unsafe { GetHandleInformation(stream.as_raw_socket() as HANDLE, &mut flags) };
    assert_ne!(
        ok,
        0,
        "GetHandleInformation: {}",
        io::Error::last_os_error()
    );
    flags & HANDLE_FLAG_INHERIT != 0
}

#[test]
fn recv_pending_then_data_arrives() {
    let mut port = Iocp::new().unwrap();
    let (mut client, server) = registered_pair(&mut port);
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(b"ab");
    port.submit(
        1,
        Op::Recv {
            socket: raw(&server),
            buf,
        },
    );
    assert_nothing_ready(&mut port);
    client.write_all(b"hello").unwrap();
    let (buf, result) = received(wait_for(&mut port, 1).pop().unwrap());
    assert_eq!(result.unwrap(), 5);
    assert_eq!(buf, b"abhello");
    assert_eq!(port.in_flight(), 0);
}

#[test]
fn recv_of_data_already_there_and_end_of_stream() {
    let mut port = Iocp::new().unwrap();
    let (mut client, server) = registered_pair(&mut port);
    client.write_all(b"ready").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    thread::sleep(Duration::from_millis(200));
    port.submit(
        1,
        Op::Recv {
            socket: raw(&server),
            buf: Vec::with_capacity(16),
        },
    );
    let (buf, result) = received(wait_for(&mut port, 1).pop().unwrap());
    assert_eq!(result.unwrap(), 5);
    assert_eq!(buf, b"ready");
    port.submit(
        2,
        Op::Recv {
            socket: raw(&server),
            buf: Vec::with_capacity(16),
        },
    );
    let completion = wait_for(&mut port, 1).pop().unwrap();
    assert_eq!(completion.token, 2);
    let (buf, result) = received(completion);
    assert_eq!(result.unwrap(), 0);
    assert!(buf.is_empty());
}

#[test]
fn send_from_a_position_and_a_large_send() {
    let mut port = Iocp::new().unwrap();
    let (mut client, server) = registered_pair(&mut port);
    port.submit(
        3,
        Op::Send {
            socket: raw(&server),
            buf: b"xxhello".to_vec(),
            pos: 2,
        },
    );
    let (buf, pos, result) = sent(wait_for(&mut port, 1).pop().unwrap());
    assert_eq!(
        (buf.as_slice(), pos, result.unwrap()),
        (&b"xxhello"[..], 2, 5)
    );
    let mut got = [0u8; 5];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello");

    // Far more than the socket buffers hold: it completes once the reader drains it.
    let big: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let expected = big.clone();
    let reader = thread::spawn(move || {
        let mut got = vec![0u8; expected.len()];
        client.read_exact(&mut got).unwrap();
        assert!(got == expected, "bytes differ");
    });
    let mut pos = 0;
    let mut buf = big;
    while pos < buf.len() {
        port.submit(
            4,
            Op::Send {
                socket: raw(&server),
                buf,
                pos,
            },
        );
        let (back, at, result) = sent(wait_for(&mut port, 1).pop().unwrap());
        assert_eq!(at, pos);
        pos += result.unwrap();
        buf = back;
    }
    reader.join().unwrap();
}

#[test]
fn connect_then_echo_through_the_port() {
    let mut port = Iocp::new().unwrap();
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
    let (mut accepted, _) = listener.accept().unwrap();
    let completion = wait_for(&mut port, 1).pop().unwrap();
    assert_eq!(completion.token, 5);
    match completion.outcome {
        Outcome::Connected(result) => result.unwrap(),
        other => panic!("expected Connected, got {:?}", other),
    }
    // SO_UPDATE_CONNECT_CONTEXT: the socket knows its peer.
    assert_eq!(socket.peer_addr().unwrap().as_socket().unwrap(), addr);
    port.submit(
        6,
        Op::Send {
            socket: raw(&socket),
            buf: b"ping".to_vec(),
            pos: 0,
        },
    );
    sent(wait_for(&mut port, 1).pop().unwrap()).2.unwrap();
    let mut got = [0u8; 4];
    accepted.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
}

#[test]
fn connect_refused_is_a_completion_with_an_error() {
    let mut port = Iocp::new().unwrap();
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
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
    match wait_for(&mut port, 1).pop().unwrap().outcome {
        Outcome::Connected(Err(_)) => {}
        other => panic!("expected a refused connect, got {:?}", other),
    }
    assert_eq!(port.in_flight(), 0);
}

#[test]
fn cancel_completes_a_pending_recv_with_an_error_and_its_buffer() {
    let mut port = Iocp::new().unwrap();
    let (_client, server) = registered_pair(&mut port);
    port.submit(
        1,
        Op::Recv {
            socket: raw(&server),
            buf: Vec::with_capacity(32),
        },
    );
    assert_nothing_ready(&mut port);
    port.cancel(raw(&server));
    let (buf, result) = received(wait_for(&mut port, 1).pop().unwrap());
    assert!(result.is_err(), "expected an error, got {:?}", result);
    assert_eq!(buf.capacity(), 32);
    assert_eq!(port.in_flight(), 0);
    // Nothing is in flight any more: cancel is a no-op.
    port.cancel(raw(&server));
    assert_nothing_ready(&mut port);
}

#[test]
fn closing_a_socket_with_ops_in_flight_completes_them() {
    let mut port = Iocp::new().unwrap();
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
    let (_, result) = received(wait_for(&mut port, 1).pop().unwrap());
    assert!(result.is_err(), "expected an error, got {:?}", result);
    assert_eq!(port.in_flight(), 0);
    port.deregister(socket).unwrap();
}

#[test]
fn peer_reset_fails_the_pending_recv() {
    let mut port = Iocp::new().unwrap();
    let (client, server) = registered_pair(&mut port);
    port.submit(
        1,
        Op::Recv {
            socket: raw(&server),
            buf: Vec::with_capacity(32),
        },
    );
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
    let (_, result) = received(wait_for(&mut port, 1).pop().unwrap());
    // A reset is an error, or (some stacks) an end of stream.
    assert!(matches!(result, Err(_) | Ok(0)), "got {:?}", result);
}

#[test]
fn ops_on_unregistered_sockets_and_empty_buffers_fail_as_completions() {
    let mut port = Iocp::new().unwrap();
    let (_client, server) = registered_pair(&mut port);
    let stranger = TcpListener::bind("127.0.0.1:0").unwrap();
    port.submit(
        1,
        Op::Accept {
            listener: raw(&stranger),
        },
    );
    port.submit(
        2,
        Op::Recv {
            socket: raw(&server),
            // Full: no spare capacity (capacity 0 would let the port choose).
            buf: vec![7; 4],
        },
    );
    port.submit(
        3,
        Op::Send {
            socket: raw(&server),
            buf: b"ab".to_vec(),
            pos: 2,
        },
    );
    assert_eq!(port.in_flight(), 3);
    let completions = wait_for(&mut port, 3);
    let tokens: Vec<Token> = completions.iter().map(|c| c.token).collect();
    assert_eq!(tokens, vec![1, 2, 3]);
    assert!(matches!(completions[0].outcome, Outcome::Accepted(Err(_))));
    assert_eq!(port.in_flight(), 0);
    assert!(port.register(raw(&server)).is_err(), "registered twice");
}

#[test]
fn many_connections_echo_in_one_batch_loop() {
    let mut port = Iocp::new().unwrap();
    let mut pairs: Vec<(TcpStream, TcpStream)> =
        (0..20).map(|_| registered_pair(&mut port)).collect();
    for (i, (_, server)) in pairs.iter().enumerate() {
        port.submit(
            i as Token,
            Op::Recv {
                socket: raw(server),
                buf: Vec::with_capacity(64),
            },
        );
    }
    for (i, (client, _)) in pairs.iter_mut().enumerate() {
        client.write_all(format!("msg {}", i).as_bytes()).unwrap();
    }
    let completions = wait_for(&mut port, 20);
    for completion in completions {
        let i = completion.token as usize;
        let (buf, result) = received(completion);
        assert_eq!(result.unwrap(), buf.len());
        assert_eq!(buf, format!("msg {}", i).as_bytes());
        port.submit(
            i as Token,
            Op::Send {
                socket: raw(&pairs[i].1),
                buf,
                pos: 0,
            },
        );
    }
    wait_for(&mut port, 20);
    for (i, (client, _)) in pairs.iter_mut().enumerate() {
        let expected = format!("msg {}", i);
        let mut got = vec![0u8; expected.len()];
        client.read_exact(&mut got).unwrap();
        assert_eq!(got, expected.as_bytes());
    }
}

#[test]
fn dropping_a_port_with_ops_in_flight_leaks_them_safely() {
    let mut port = Iocp::new().unwrap();
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
