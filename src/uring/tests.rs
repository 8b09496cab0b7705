//! The io_uring backend against real loopback sockets.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::io::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use super::*;
use crate::port::Outcome;

mod accept_stream;
mod chosen;
mod multishot;

/// How long a test waits for completions before failing.
const PATIENCE: Duration = Duration::from_secs(10);

fn ring() -> Ring {
    Ring::new().expect("io_uring ring")
}

/// A loopback listener on an ephemeral port, nonblocking.
#[track_caller]
fn listener() -> TcpListener {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    listener
}

/// A connected pair: (client, server side), the server side nonblocking.
#[track_caller]
fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    (client, server)
}

/// Wait until `n` completions have arrived.
#[track_caller]
fn collect(ring: &mut Ring, n: usize) -> Vec<Completion> {
    let deadline = Instant::now() + PATIENCE;
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "{} of {} completions",
            out.len(),
            n
        );
        let before = out.len();
        ring.wait(&mut out, Some(Duration::from_millis(100)))
            .unwrap();
        assert!(out.len() - before <= MAX_BATCH);
    }
    assert_eq!(out.len(), n, "more completions than ops");
    out
}

#[track_caller]
fn one(ring: &mut Ring) -> Completion {
    collect(ring, 1).pop().unwrap()
}

#[track_caller]
fn received(completion: Completion) -> (Vec<u8>, io::Result<usize>) {
    match completion.outcome {
        Outcome::Received { buf, result } => (buf, result),
        other => panic!("expected a recv completion, got {:?}", other),
    }
}

fn fd_flags(fd: RawSocket) -> (i32, i32) {
    // SAFETY: fcntl with F_GETFL/F_GETFD only reads flags of a descriptor.
    unsafe {
        (
            libc::fcntl(fd, libc::F_GETFL),
            libc::fcntl(fd, libc::F_GETFD),
        )
    }
}

#[test]
fn probe_accepts_this_kernel() {
    probe().unwrap();
    let ring = ring();
    assert!(!ring.setup_flags().is_empty());
}

#[test]
fn timeout_returns_without_completions() {
    let mut ring = ring();
    let mut out = Vec::new();
    let start = Instant::now();
    ring.wait(&mut out, Some(Duration::from_millis(100)))
        .unwrap();
    assert!(out.is_empty());
    assert!(
        start.elapsed() >= Duration::from_millis(90),
        "{:?}",
        start.elapsed()
    );
    ring.wait(&mut out, Some(Duration::ZERO)).unwrap();
    assert!(out.is_empty());
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn wake_from_another_thread_ends_a_blocking_wait() {
    let mut ring = ring();
    let waker = ring.waker();
    let mut out = Vec::new();
    for _ in 0..3 {
        let waker = waker.clone();
        let start = Instant::now();
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            waker.wake().unwrap();
        });
        ring.wait(&mut out, None).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(40));
        assert!(start.elapsed() < PATIENCE);
        t.join().unwrap();
    }
    // A wake before the wait makes it return at once.
    waker.wake().unwrap();
    waker.wake().unwrap();
    let start = Instant::now();
    ring.wait(&mut out, Some(Duration::from_secs(5))).unwrap();
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(out.is_empty());
    // The waker outlives the ring.
    drop(ring);
    waker.wake().unwrap();
}

#[test]
fn accept_returns_a_nonblocking_cloexec_socket_and_peer() {
    let mut ring = ring();
    let listener = listener();
    ring.register(listener.as_raw_fd()).unwrap();
    ring.submit(
        7,
        Op::Accept {
            listener: listener.as_raw_fd(),
        },
    );
    assert_eq!(ring.in_flight(), 1);
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let completion = one(&mut ring);
    assert_eq!(completion.token, 7);
    let Outcome::Accepted(Ok((socket, peer))) = completion.outcome else {
        panic!("{:?}", completion.outcome);
    };
    assert_eq!(peer, client.local_addr().unwrap());
    let (status, fd) = fd_flags(socket.as_raw_fd());
    assert_ne!(status & libc::O_NONBLOCK, 0);
    assert_ne!(fd & libc::FD_CLOEXEC, 0);
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn recv_appends_to_the_buffer() {
    let mut ring = ring();
    let (mut client, server) = pair();
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(b"ab");
    ring.submit(
        1,
        Op::Recv {
            socket: server.as_raw_fd(),
            buf,
        },
    );
    client.write_all(b"hello").unwrap();
    let completion = one(&mut ring);
    assert_eq!(completion.token, 1);
    let (buf, result) = received(completion);
    assert_eq!(result.unwrap(), 5);
    assert_eq!(buf, b"abhello");
    assert_eq!(buf.capacity(), 64);
}

#[test]
fn recv_at_end_of_stream_is_zero() {
    let mut ring = ring();
    let (client, server) = pair();
    ring.submit(
        1,
        Op::Recv {
            socket: server.as_raw_fd(),
            buf: Vec::with_capacity(16),
        },
    );
    client.shutdown(Shutdown::Write).unwrap();
    let (buf, result) = received(one(&mut ring));
    assert_eq!(result.unwrap(), 0);
    assert!(buf.is_empty());
}

#[test]
fn send_of_one_mebibyte_with_partial_sends() {
    let mut ring = ring();
    let (mut client, server) = pair();
    // Small socket buffers and a late reader, so the kernel sends in pieces.
    socket2::SockRef::from(&server)
        .set_send_buffer_size(16 << 10)
        .unwrap();
    socket2::SockRef::from(&client)
        .set_recv_buffer_size(16 << 10)
        .unwrap();
    let data: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let len = data.len();
    let reader = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        let mut got = vec![0; len];
        client.read_exact(&mut got).unwrap();
        got
    });
    let mut buf = data.clone();
    let mut pos = 0;
    let mut sends = 0;
    while pos < len {
        ring.submit(
            3,
            Op::Send {
                socket: server.as_raw_fd(),
                buf,
                pos,
            },
        );
        sends += 1;
        let completion = one(&mut ring);
        let Outcome::Sent {
            buf: back,
            pos: at,
            result,
        } = completion.outcome
        else {
            panic!("{:?}", completion.outcome);
        };
        assert_eq!(at, pos);
        let n = result.unwrap();
        assert!(n > 0 && n <= len - pos);
        pos += n;
        buf = back;
    }
    assert_eq!(reader.join().unwrap(), data);
    assert_eq!(buf, data);
    assert!(sends > 1, "the kernel took 1 MiB in one send");
}

#[test]
fn connect_to_a_listener() {
    let mut ring = ring();
    let listener = listener();
    let addr = listener.local_addr().unwrap();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_nonblocking(true).unwrap();
    ring.register(socket.as_raw_fd()).unwrap();
    ring.submit(
        9,
        Op::Connect {
            socket: socket.as_raw_fd(),
            addr,
        },
    );
    let completion = one(&mut ring);
    assert_eq!(completion.token, 9);
    let Outcome::Connected(result) = completion.outcome else {
        panic!("{:?}", completion.outcome);
    };
    result.unwrap();
    assert_eq!(socket.peer_addr().unwrap().as_socket(), Some(addr));
    listener.set_nonblocking(false).unwrap();
    let (_, peer) = listener.accept().unwrap();
    assert_eq!(Some(peer), socket.local_addr().unwrap().as_socket());
}

#[test]
fn connect_refused_is_an_error_completion() {
    let mut ring = ring();
    // A port that was just free: nothing listens on it.
    let addr: SocketAddr = listener().local_addr().unwrap();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_nonblocking(true).unwrap();
    ring.submit(
        1,
        Op::Connect {
            socket: socket.as_raw_fd(),
            addr,
        },
    );
    let Outcome::Connected(result) = one(&mut ring).outcome else {
        panic!("not a connect completion");
    };
    assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::ECONNREFUSED));
}

#[test]
fn cancel_of_a_pending_recv_completes_it_once() {
    let mut ring = ring();
    let (_client, server) = pair();
    ring.submit(
        5,
        Op::Recv {
            socket: server.as_raw_fd(),
            buf: Vec::with_capacity(32),
        },
    );
    // Let the recv reach the kernel and park there.
    let mut out = Vec::new();
    ring.wait(&mut out, Some(Duration::from_millis(20)))
        .unwrap();
    assert!(out.is_empty());
    assert_eq!(ring.in_flight(), 1);
    ring.cancel(server.as_raw_fd());
    let completion = one(&mut ring);
    assert_eq!(completion.token, 5);
    let (buf, result) = received(completion);
    assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::ECANCELED));
    assert_eq!(buf.capacity(), 32);
    assert!(buf.is_empty());
    assert_eq!(ring.in_flight(), 0);
    ring.wait(&mut out, Some(Duration::from_millis(50)))
        .unwrap();
    assert!(out.is_empty(), "a second completion: {:?}", out);
}

#[test]
fn cancel_right_after_submit_still_targets_the_op() {
    let mut ring = ring();
    let (_client, server) = pair();
    ring.submit(
        5,
        Op::Recv {
            socket: server.as_raw_fd(),
            buf: Vec::with_capacity(32),
        },
    );
    ring.cancel(server.as_raw_fd());
    let (_, result) = received(one(&mut ring));
    assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::ECANCELED));
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn two_hundred_recvs_in_flight_complete() {
    let mut ring = ring();
    let mut clients = Vec::new();
    let mut servers = Vec::new();
    for token in 0..200u64 {
        let (client, server) = pair();
        ring.submit(
            token,
            Op::Recv {
                socket: server.as_raw_fd(),
                buf: Vec::with_capacity(16),
            },
        );
        clients.push(client);
        servers.push(server);
    }
    let mut out = Vec::new();
    ring.wait(&mut out, Some(Duration::ZERO)).unwrap();
    assert!(out.is_empty());
    assert_eq!(ring.in_flight(), 200);
    for (i, client) in clients.iter_mut().enumerate() {
        client.write_all(format!("{}", i).as_bytes()).unwrap();
    }
    let mut seen = [false; 200];
    for completion in collect(&mut ring, 200) {
        let token = completion.token as usize;
        let (buf, result) = received(completion);
        assert_eq!(result.unwrap(), buf.len());
        assert_eq!(buf, format!("{}", token).as_bytes());
        assert!(!seen[token]);
        seen[token] = true;
    }
    assert_eq!(ring.in_flight(), 0);
}

/// More ops than the submission queue holds, and more completions at once than
/// the completion queue holds (the kernel keeps the overflow) and than one
/// `wait` returns.
#[test]
fn ten_thousand_cancelled_recvs_survive_full_queues() {
    const N: u64 = 10_000;
    let mut ring = ring();
    let (_client, server) = pair();
    for token in 0..N {
        ring.submit(
            token,
            Op::Recv {
                socket: server.as_raw_fd(),
                buf: Vec::with_capacity(8),
            },
        );
    }
    assert_eq!(ring.in_flight(), N as usize);
    let mut out = Vec::new();
    ring.wait(&mut out, Some(Duration::ZERO)).unwrap();
    assert!(out.is_empty());
    ring.cancel(server.as_raw_fd());
    let mut seen = vec![false; N as usize];
    for completion in collect(&mut ring, N as usize) {
        let token = completion.token as usize;
        let (_, result) = received(completion);
        assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::ECANCELED));
        assert!(!seen[token]);
        seen[token] = true;
    }
    assert_eq!(ring.in_flight(), 0);
}

/// Tiny queues: the submission queue fills on submit, and completions overflow
/// the completion queue into the kernel's list, which `wait` must flush.
#[test]
fn tiny_queues_lose_nothing() {
    const N: u64 = 1000;
    let mut ring = Ring::with_entries(8, 16).unwrap();
    let (_client, server) = pair();
    for token in 0..N {
        ring.submit(
            token,
            Op::Recv {
                socket: server.as_raw_fd(),
                buf: Vec::with_capacity(8),
            },
        );
    }
    ring.cancel(server.as_raw_fd());
    let mut seen = vec![false; N as usize];
    for completion in collect(&mut ring, N as usize) {
        let token = completion.token as usize;
        let (_, result) = received(completion);
        assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::ECANCELED));
        assert!(!seen[token]);
        seen[token] = true;
    }
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn invalid_ops_fail_through_wait() {
    let mut ring = ring();
    let (_client, server) = pair();
    ring.submit(
        1,
        Op::Recv {
            socket: server.as_raw_fd(),
            // Full: no spare capacity (capacity 0 would let the port choose).
            buf: vec![7; 4],
        },
    );
    ring.submit(
        2,
        Op::Send {
            socket: server.as_raw_fd(),
            buf: b"abc".to_vec(),
            pos: 3,
        },
    );
    assert_eq!(ring.in_flight(), 2);
    let out = collect(&mut ring, 2);
    for completion in out {
        let error = match completion.outcome {
            Outcome::Received { result, .. } => result.unwrap_err(),
            Outcome::Sent { result, buf, pos } => {
                assert_eq!((buf.as_slice(), pos), (&b"abc"[..], 3));
                result.unwrap_err()
            }
            other => panic!("{:?}", other),
        };
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn bad_descriptor_is_an_error_completion() {
    let mut ring = ring();
    ring.submit(
        4,
        Op::Recv {
            socket: -1,
            buf: Vec::with_capacity(8),
        },
    );
    let completion = one(&mut ring);
    assert_eq!(completion.token, 4);
    let (_, result) = received(completion);
    assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::EBADF));
}

#[test]
fn dropping_a_ring_with_a_recv_in_flight_is_safe() {
    let (mut client, server) = pair();
    {
        let mut ring = ring();
        ring.submit(
            1,
            Op::Recv {
                socket: server.as_raw_fd(),
                buf: Vec::with_capacity(64),
            },
        );
        let mut out = Vec::new();
        ring.wait(&mut out, Some(Duration::ZERO)).unwrap();
        assert_eq!(ring.in_flight(), 1);
    }
    // The drop cancelled the recv: bytes sent afterwards stay in the socket.
    client.write_all(b"late").unwrap();
    server.set_nonblocking(false).unwrap();
    let mut got = [0; 4];
    (&server).read_exact(&mut got).unwrap();
    assert_eq!(&got, b"late");
}

#[test]
fn a_drop_that_cannot_reap_leaks_instead_of_freeing() {
    let (mut client, server) = pair();
    {
        let mut ring = ring();
        ring.submit(
            1,
            Op::Recv {
                socket: server.as_raw_fd(),
                buf: Vec::with_capacity(64),
            },
        );
        let mut out = Vec::new();
        ring.wait(&mut out, Some(Duration::ZERO)).unwrap();
        // No time to reap: the recv and the waker read are leaked, not freed.
        ring.drop_grace = Duration::ZERO;
    }
    client.write_all(b"late").unwrap();
    thread::sleep(Duration::from_millis(20));
}
