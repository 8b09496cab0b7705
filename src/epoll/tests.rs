//! The epoll port against real loopback sockets.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, SockRef, Socket, Type};

use super::*;

mod chosen;

/// Wait until `count` completions arrived (panics after 10 s).
#[track_caller]
fn wait_for(poller: &mut Poller, count: usize) -> Vec<Completion> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    while out.len() < count {
        assert!(
            Instant::now() < deadline,
            "timed out: {} of {} completions",
            out.len(),
            count
        );
        poller
            .wait(&mut out, Some(Duration::from_millis(100)))
            .unwrap();
    }
    assert_eq!(out.len(), count, "more completions than expected");
    out
}

/// What a wait that should find nothing finds.
#[track_caller]
fn assert_nothing_ready(poller: &mut Poller) {
    let mut out = Vec::new();
    poller
        .wait(&mut out, Some(Duration::from_millis(20)))
        .unwrap();
    assert!(out.is_empty(), "unexpected completions: {:?}", out);
}

/// A nonblocking listener on 127.0.0.1, any port.
fn listener() -> TcpListener {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    listener
}

/// A connected pair: a std client and its nonblocking server side, registered.
fn registered_pair(poller: &mut Poller) -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    poller.register(server.as_raw_fd()).unwrap();
    (client, server)
}

#[track_caller]
fn received(completion: Completion) -> (Vec<u8>, io::Result<usize>) {
    match completion.outcome {
        Outcome::Received { buf, result } => (buf, result),
        other => panic!("expected Received, got {:?}", other),
    }
}

#[test]
fn wake_from_another_thread_ends_a_blocking_wait() {
    let mut poller = Poller::new().unwrap();
    let waker = poller.waker();
    let started = Instant::now();
    let thread = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        waker.wake().unwrap();
    });
    let mut out = Vec::new();
    poller.wait(&mut out, None).unwrap();
    assert!(out.is_empty());
    assert!(started.elapsed() < Duration::from_secs(5));
    thread.join().unwrap();

    // A wake before the wait makes it return at once; the wake is then consumed.
    poller.waker().wake().unwrap();
    poller.waker().wake().unwrap();
    let started = Instant::now();
    poller.wait(&mut out, Some(Duration::from_secs(5))).unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    let started = Instant::now();
    poller
        .wait(&mut out, Some(Duration::from_millis(30)))
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(30));
}

#[test]
fn waker_outlives_the_poller() {
    let poller = Poller::new().unwrap();
    let waker = poller.waker();
    drop(poller);
    waker.wake().unwrap();
}

#[test]
fn timeout_returns_nothing_and_is_rounded_up() {
    let mut poller = Poller::new().unwrap();
    let mut out = Vec::new();
    let started = Instant::now();
    poller
        .wait(&mut out, Some(Duration::from_millis(30)))
        .unwrap();
    assert!(out.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(30));

    assert_eq!(epoll_timeout(None), -1);
    assert_eq!(epoll_timeout(Some(Duration::ZERO)), 0);
    assert_eq!(epoll_timeout(Some(Duration::from_micros(1))), 1);
    assert_eq!(epoll_timeout(Some(Duration::from_micros(1_001))), 2);
    assert_eq!(epoll_timeout(Some(Duration::from_secs(u64::MAX))), i32::MAX);
}

#[test]
fn parked_accept_completes_when_a_client_connects() {
    let mut poller = Poller::new().unwrap();
    let listener = listener();
    poller.register(listener.as_raw_fd()).unwrap();
    poller.submit(
        7,
        Op::Accept {
            listener: listener.as_raw_fd(),
        },
    );
    assert_eq!(poller.in_flight(), 1);
    assert_nothing_ready(&mut poller);

    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let completion = wait_for(&mut poller, 1).pop().unwrap();
    assert_eq!(completion.token, 7);
    let Outcome::Accepted(Ok((socket, peer))) = completion.outcome else {
        panic!("expected a connection, got {:?}", completion.outcome);
    };
    assert_eq!(peer, client.local_addr().unwrap());
    assert!(socket.nonblocking().unwrap());
    // SAFETY: F_GETFD on an open fd takes no pointer.
    let fd_flags = unsafe { libc::fcntl(socket.as_raw_fd(), libc::F_GETFD) };
    assert_ne!(fd_flags & libc::FD_CLOEXEC, 0);
    assert_eq!(poller.in_flight(), 0);
}

#[test]
fn parked_accepts_complete_in_submission_order() {
    let mut poller = Poller::new().unwrap();
    let listener = listener();
    poller.register(listener.as_raw_fd()).unwrap();
    for token in 1..=3 {
        poller.submit(
            token,
            Op::Accept {
                listener: listener.as_raw_fd(),
            },
        );
    }
    assert_nothing_ready(&mut poller);
    let clients: Vec<_> = (0..3)
        .map(|_| TcpStream::connect(listener.local_addr().unwrap()).unwrap())
        .collect();
    let completions = wait_for(&mut poller, 3);
    let tokens: Vec<_> = completions.iter().map(|c| c.token).collect();
    assert_eq!(tokens, [1, 2, 3]);
    for completion in completions {
        assert!(matches!(completion.outcome, Outcome::Accepted(Ok(_))));
    }
    drop(clients);
}

#[test]
fn accept_on_a_dead_listener_is_an_error_completion_not_a_spin() {
    let mut poller = Poller::new().unwrap();
    let listener = listener();
    poller.register(listener.as_raw_fd()).unwrap();
    poller.submit(
        1,
        Op::Accept {
            listener: listener.as_raw_fd(),
        },
    );
    assert_nothing_ready(&mut poller);
    // Shutting a listener down stops it listening: the parked accept is woken
    // (EPOLLHUP) and accept4 fails, as it would with EMFILE.
    SockRef::from(&listener).shutdown(Shutdown::Both).unwrap();
    let completion = wait_for(&mut poller, 1).pop().unwrap();
    assert!(matches!(completion.outcome, Outcome::Accepted(Err(_))));
    assert_eq!(poller.in_flight(), 0);
    // Submitting again fails at once rather than parking forever.
    poller.submit(
        2,
        Op::Accept {
            listener: listener.as_raw_fd(),
        },
    );
    let completion = wait_for(&mut poller, 1).pop().unwrap();
    assert!(matches!(completion.outcome, Outcome::Accepted(Err(_))));
    assert_nothing_ready(&mut poller);
}

#[test]
fn parked_recv_completes_with_bytes_sent_later() {
    let mut poller = Poller::new().unwrap();
    let (mut client, server) = registered_pair(&mut poller);
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(b">> ");
    poller.submit(
        3,
        Op::Recv {
            socket: server.as_raw_fd(),
            buf,
        },
    );
    assert_eq!(poller.parked, 1);
    assert_nothing_ready(&mut poller);
    client.write_all(b"hello").unwrap();
    let completion = wait_for(&mut poller, 1).pop().unwrap();
    assert_eq!(completion.token, 3);
    let (buf, result) = received(completion);
    assert_eq!(result.unwrap(), 5);
    assert_eq!(buf, b">> hello");
    assert_eq!(buf.capacity(), 64);
}

#[test]
fn recv_of_bytes_already_there_completes_without_parking() {
    let mut poller = Poller::new().unwrap();
    let (mut client, server) = registered_pair(&mut poller);
    client.write_all(b"early").unwrap();
    thread::sleep(Duration::from_millis(20));
    poller.submit(
        1,
        Op::Recv {
            socket: server.as_raw_fd(),
            buf: Vec::with_capacity(16),
        },
    );
    let mut out = Vec::new();
    poller.wait(&mut out, Some(Duration::ZERO)).unwrap();
    let (buf, result) = received(out.pop().unwrap());
    assert_eq!(result.unwrap(), 5);
    assert_eq!(buf, b"early");
}

#[test]
fn bytes_left_behind_by_a_parked_recv_are_not_lost_to_edge_triggering() {
    let mut poller = Poller::new().unwrap();
    let (mut client, server) = registered_pair(&mut poller);
    let recv = |poller: &mut Poller| {
        poller.submit(
            0,
            Op::Recv {
                socket: server.as_raw_fd(),
                buf: Vec::with_capacity(4),
            },
        )
    };
    recv(&mut poller);
    assert_nothing_ready(&mut poller);
    // One edge for ten bytes; the parked recv takes four, later submits the rest.
    client.write_all(b"0123456789").unwrap();
    let mut got = Vec::new();
    while got.len() < 10 {
        let (buf, result) = received(wait_for(&mut poller, 1).pop().unwrap());
        assert_eq!(result.unwrap(), buf.len());
        got.extend_from_slice(&buf);
        recv(&mut poller);
    }
    assert_eq!(got, b"0123456789");
    assert_eq!(poller.parked, 1, "the last recv should wait for more");
}

#[test]
fn recv_after_the_peer_closes_is_end_of_stream() {
    let mut poller = Poller::new().unwrap();
    let (client, server) = registered_pair(&mut poller);
    poller.submit(
        1,
        Op::Recv {
            socket: server.as_raw_fd(),
            buf: Vec::with_capacity(16),
        },
    );
    assert_nothing_ready(&mut poller);
    drop(client);
    let (buf, result) = received(wait_for(&mut poller, 1).pop().unwrap());
    assert_eq!(result.unwrap(), 0);
    assert!(buf.is_empty());
}

#[test]
fn one_mebibyte_goes_out_in_partial_sends_byte_exact() {
    const SIZE: usize = 1 << 20;
    let mut poller = Poller::new().unwrap();
    let (mut client, server) = registered_pair(&mut poller);
    SockRef::from(&server)
        .set_send_buffer_size(16 * 1024)
        .unwrap();
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
    let (mut buf, mut pos, mut sends, mut parked) = (data.clone(), 0, 0, 0);
    while pos < SIZE {
        poller.submit(
            sends,
            Op::Send {
                socket: server.as_raw_fd(),
                buf,
                pos,
            },
        );
        parked += poller.parked;
        let completion = wait_for(&mut poller, 1).pop().unwrap();
        assert_eq!(completion.token, sends);
        let Outcome::Sent {
            buf: back,
            pos: at,
            result,
        } = completion.outcome
        else {
            panic!("expected Sent, got {:?}", completion.outcome);
        };
        assert_eq!(at, pos);
        let n = result.unwrap();
        assert!(n > 0);
        buf = back;
        pos += n;
        sends += 1;
    }
    assert!(sends > 1, "expected partial sends, sent all at once");
    assert!(parked > 0, "expected a send to wait for EPOLLOUT");
    assert_eq!(poller.in_flight(), 0);
    assert!(reader.join().unwrap() == data, "bytes differ");
}

#[test]
fn connect_to_a_listener() {
    let mut poller = Poller::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_nonblocking(true).unwrap();
    poller.register(socket.as_raw_fd()).unwrap();
    poller.submit(
        4,
        Op::Connect {
            socket: socket.as_raw_fd(),
            addr: listener.local_addr().unwrap(),
        },
    );
    let completion = wait_for(&mut poller, 1).pop().unwrap();
    assert_eq!(completion.token, 4);
    assert!(
        matches!(completion.outcome, Outcome::Connected(Ok(()))),
        "{:?}",
        completion.outcome
    );
    let (_, peer) = listener.accept().unwrap();
    let local = socket.local_addr().unwrap().as_socket().unwrap();
    assert_eq!(peer, local);
}

#[test]
fn connect_to_a_closed_port_is_refused() {
    let mut poller = Poller::new().unwrap();
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_nonblocking(true).unwrap();
    poller.register(socket.as_raw_fd()).unwrap();
    poller.submit(
        1,
        Op::Connect {
            socket: socket.as_raw_fd(),
            addr,
        },
    );
    let completion = wait_for(&mut poller, 1).pop().unwrap();
    let Outcome::Connected(Err(error)) = completion.outcome else {
        panic!("expected an error, got {:?}", completion.outcome);
    };
    assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
}

#[test]
fn cancel_of_a_parked_recv_completes_it_once_with_its_buffer() {
    let mut poller = Poller::new().unwrap();
    let (_client, server) = registered_pair(&mut poller);
    poller.submit(
        9,
        Op::Recv {
            socket: server.as_raw_fd(),
            buf: Vec::with_capacity(100),
        },
    );
    assert_nothing_ready(&mut poller);
    assert_eq!(poller.in_flight(), 1);
    poller.cancel(server.as_raw_fd());
    let completion = wait_for(&mut poller, 1).pop().unwrap();
    assert_eq!(completion.token, 9);
    let (buf, result) = received(completion);
    assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::ECANCELED));
    assert_eq!(buf.capacity(), 100);
    assert_eq!(poller.in_flight(), 0);
    assert_nothing_ready(&mut poller);
    poller.deregister(server.as_raw_fd()).unwrap();
}

#[test]
fn deregister_with_a_parked_op_cancels_it() {
    let mut poller = Poller::new().unwrap();
    let (_client, server) = registered_pair(&mut poller);
    poller.submit(
        1,
        Op::Recv {
            socket: server.as_raw_fd(),
            buf: Vec::with_capacity(8),
        },
    );
    poller.deregister(server.as_raw_fd()).unwrap();
    let (_, result) = received(wait_for(&mut poller, 1).pop().unwrap());
    assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::ECANCELED));
    assert_eq!(poller.in_flight(), 0);
    assert!(poller.deregister(server.as_raw_fd()).is_err());
}

#[test]
fn two_hundred_connections_each_with_a_parked_recv() {
    const COUNT: usize = 200;
    let mut poller = Poller::new().unwrap();
    let pairs: Vec<_> = (0..COUNT).map(|_| registered_pair(&mut poller)).collect();
    for (i, (_, server)) in pairs.iter().enumerate() {
        poller.submit(
            i as Token,
            Op::Recv {
                socket: server.as_raw_fd(),
                buf: Vec::with_capacity(32),
            },
        );
    }
    assert_nothing_ready(&mut poller);
    assert_eq!(poller.in_flight(), COUNT);
    for (i, (client, _)) in pairs.iter().enumerate() {
        (&*client)
            .write_all(format!("message {}", i).as_bytes())
            .unwrap();
    }
    let mut seen = [false; COUNT];
    for completion in wait_for(&mut poller, COUNT) {
        let i = completion.token as usize;
        let (buf, result) = received(completion);
        assert_eq!(result.unwrap(), buf.len());
        assert_eq!(buf, format!("message {}", i).as_bytes());
        assert!(!seen[i], "token {} completed twice", i);
        seen[i] = true;
    }
    assert_eq!(poller.in_flight(), 0);
}

#[test]
fn ops_on_an_unregistered_socket_fail_as_completions() {
    let mut poller = Poller::new().unwrap();
    let (_client, server) = registered_pair(&mut poller);
    poller.deregister(server.as_raw_fd()).unwrap();
    poller.submit(
        1,
        Op::Recv {
            socket: server.as_raw_fd(),
            buf: Vec::with_capacity(10),
        },
    );
    poller.submit(
        2,
        Op::Accept {
            listener: server.as_raw_fd(),
        },
    );
    assert_eq!(poller.in_flight(), 2);
    let mut completions = wait_for(&mut poller, 2).into_iter();
    let (buf, result) = received(completions.next().unwrap());
    assert_eq!(buf.capacity(), 10);
    let error = result.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    assert!(error.to_string().contains("not registered"), "{}", error);
    let completion = completions.next().unwrap();
    assert_eq!(completion.token, 2);
    assert!(matches!(completion.outcome, Outcome::Accepted(Err(_))));
}

#[test]
fn unusable_buffers_fail_as_completions() {
    let mut poller = Poller::new().unwrap();
    let (_client, server) = registered_pair(&mut poller);
    poller.submit(
        1,
        Op::Recv {
            socket: server.as_raw_fd(),
            // Full: no spare capacity (capacity 0 would let the port choose).
            buf: vec![7; 4],
        },
    );
    poller.submit(
        2,
        Op::Send {
            socket: server.as_raw_fd(),
            buf: b"abc".to_vec(),
            pos: 4,
        },
    );
    for completion in wait_for(&mut poller, 2) {
        let error = match completion.outcome {
            Outcome::Received { result, .. } | Outcome::Sent { result, .. } => result.unwrap_err(),
            other => panic!("unexpected {:?}", other),
        };
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }
}

#[test]
fn registering_twice_is_an_error() {
    let mut poller = Poller::new().unwrap();
    let (_client, server) = registered_pair(&mut poller);
    let error = poller.register(server.as_raw_fd()).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
}
