//! Accepts served by multishot accepts: connections waiting before any accept,
//! order, the bounded queue and re-arming, cancel, deregister and drop closing
//! what was accepted and not handed out, errors, and the one-shot fallback.

use std::collections::HashSet;
use std::fs;
use std::os::unix::io::IntoRawFd;

use super::*;
use crate::conformance::support::{connected_pair, listener, one, wait_for, PATIENCE};
use crate::uring::accept_stream::{AcceptFollow, AcceptStreams, QUEUE_LIMIT};
use crate::uring::multishot::Plan;

/// Post an accept on `listener`, registering it first if need be.
fn accept(ring: &mut Front<Ring>, token: Token, listener: &TcpListener) {
    let listener = listener.as_raw_fd();
    if !ring.driver().registered.contains(listener) {
        ring.register(listener).unwrap();
    }
    ring.submit(token, Op::Accept { listener });
}

#[track_caller]
fn accepted(completion: Completion) -> (Socket, SocketAddr) {
    match completion.outcome {
        Outcome::Accepted(Ok((socket, peer))) => (socket, peer.inet().expect("an IP peer")),
        other => panic!("expected an accepted connection, got {:?}", other),
    }
}

#[track_caller]
fn accept_error(completion: Completion) -> i32 {
    match completion.outcome {
        Outcome::Accepted(Err(e)) => e.raw_os_error().expect("an OS error"),
        other => panic!("expected an accept error, got {:?}", other),
    }
}

/// Run the ring for a moment; the completions that arrived.
fn settle(ring: &mut Front<Ring>) -> Vec<Completion> {
    let mut out = Vec::new();
    for _ in 0..5 {
        ring.wait(&mut out, Some(Duration::from_millis(20)))
            .unwrap();
    }
    out
}

/// Run the ring for a moment; nothing may complete.
#[track_caller]
fn idle(ring: &mut Front<Ring>) {
    let out = settle(ring);
    assert!(out.is_empty(), "unexpected completions: {:?}", out);
}

/// How many descriptors of this process are TCP sockets whose local port is
/// `port`: the listener and the connections accepted on it still open. (Other
/// tests run in parallel in this process; their sockets use other ports.)
fn open_on_port(port: u16) -> usize {
    let mut inodes = HashSet::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields[1].rsplit(':').next().unwrap();
            if u16::from_str_radix(local_port, 16) == Ok(port) {
                inodes.insert(fields[9].to_string());
            }
        }
    }
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?.to_string();
            let inode = target.strip_prefix("socket:[")?.strip_suffix(']')?;
            Some(inode.to_string())
        })
        .filter(|inode| inodes.contains(inode))
        .count()
}

/// Read from `client` until end of stream or `n` bytes, retrying `EINTR`.
#[track_caller]
fn read_some(client: &mut TcpStream, n: usize) -> Vec<u8> {
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut got = vec![0; n];
    let mut len = 0;
    while len < n {
        match client.read(&mut got[len..]) {
            Ok(0) => break,
            Ok(k) => len += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("read: {}", e),
        }
    }
    got.truncate(len);
    got
}

/// Connect `n` clients to `listener`, running the ring between connects so
/// that each is accepted by itself; the clients, and the completions that
/// arrived meanwhile.
fn connect_one_by_one(
    ring: &mut Front<Ring>,
    listener: &TcpListener,
    n: usize,
) -> (Vec<TcpStream>, Vec<Completion>) {
    let addr = listener.local_addr().unwrap();
    let mut completions = Vec::new();
    let clients = (0..n)
        .map(|_| {
            let client = TcpStream::connect(addr).unwrap();
            completions.extend(settle(ring));
            client
        })
        .collect();
    (clients, completions)
}

/// The one connection handed out while connecting: to `clients[0]`.
#[track_caller]
fn first_of(clients: &[TcpStream], mut completions: Vec<Completion>) -> Socket {
    assert_eq!(completions.len(), 1, "{:?}", completions);
    let (socket, peer) = accepted(completions.pop().unwrap());
    assert_eq!(peer, clients[0].local_addr().unwrap());
    socket
}

#[test]
fn this_kernel_takes_multishot_accepts() {
    let mut ring = ring();
    assert!(ring.driver_mut().accepts.enabled);
    let listener = listener();
    accept(&mut ring, 1, &listener);
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (_, peer) = accepted(one(&mut ring));
    assert_eq!(peer, client.local_addr().unwrap());
    assert!(
        ring.driver_mut().accepts.enabled,
        "the kernel refused multishot accept"
    );
    assert_eq!(
        ring.driver_mut().accepts.armed(),
        1,
        "the multishot stays armed"
    );
    assert!(
        ring.driver_mut().slots.is_empty(),
        "the accept took a one-shot SQE"
    );
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn connections_made_before_any_accept_are_handed_out_once_in_order() {
    let mut ring = ring();
    let listener = listener();
    let addr = listener.local_addr().unwrap();
    let clients: Vec<TcpStream> = (0..2 * QUEUE_LIMIT + 8)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let mut servers = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        accept(&mut ring, i as Token, &listener);
        let completion = one(&mut ring);
        assert_eq!(completion.token, i as Token);
        let (server, peer) = accepted(completion);
        assert_eq!(peer, client.local_addr().unwrap(), "connection {}", i);
        servers.push(server);
    }
    idle(&mut ring);
    assert_eq!(ring.driver_mut().accepts.queued(), 0);
    // Each descriptor is its own connection, in both directions.
    for (i, (server, mut client)) in servers.iter().zip(clients).enumerate() {
        let mut server: &Socket = server;
        server.write_all(&[i as u8; 3]).unwrap();
        assert_eq!(read_some(&mut client, 3), [i as u8; 3]);
        client.write_all(&[!(i as u8)]).unwrap();
        let mut byte = [0u8; 1];
        let deadline = Instant::now() + PATIENCE;
        loop {
            match server.read(&mut byte) {
                Ok(1) => break,
                Ok(k) => panic!("read {} bytes", k),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "no byte on connection {}", i);
                    thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("read: {}", e),
            }
        }
        assert_eq!(byte, [!(i as u8)]);
    }
}

#[test]
fn the_queue_is_bounded_and_the_multishot_is_armed_again_when_it_drains() {
    let mut ring = ring();
    let listener = listener();
    let port = listener.local_addr().unwrap().port();
    accept(&mut ring, 0, &listener);
    let (mut clients, completions) = connect_one_by_one(&mut ring, &listener, 1);
    let first = first_of(&clients, completions);
    // No accept posted: connections are queued up to the limit, then the
    // multishot is cancelled and the rest wait in the kernel's backlog.
    let (more, completions) = connect_one_by_one(&mut ring, &listener, QUEUE_LIMIT + 4);
    assert!(completions.is_empty(), "{:?}", completions);
    clients.extend(more);
    assert_eq!(ring.driver_mut().accepts.queued(), QUEUE_LIMIT);
    assert_eq!(
        ring.driver_mut().accepts.armed(),
        0,
        "still accepting for nobody"
    );
    assert_eq!(ring.in_flight(), 0);
    assert_eq!(open_on_port(port), 2 + QUEUE_LIMIT);
    // Accepting again: the queue first, then the multishot armed anew.
    for (i, client) in clients.iter().enumerate().skip(1) {
        accept(&mut ring, i as Token, &listener);
        let (_, peer) = accepted(one(&mut ring));
        assert_eq!(peer, client.local_addr().unwrap(), "connection {}", i);
    }
    assert_eq!(ring.driver_mut().accepts.armed(), 1);
    assert_eq!(ring.driver_mut().accepts.queued(), 0);
    drop(first);
}

#[test]
fn cancel_ends_the_waiting_accepts_and_accepting_resumes_after() {
    let mut ring = ring();
    let listener = listener();
    for token in 1..=3 {
        accept(&mut ring, token, &listener);
    }
    idle(&mut ring);
    assert_eq!(ring.in_flight(), 3);
    ring.cancel(listener.as_raw_fd());
    let mut tokens: Vec<Token> = wait_for(&mut ring, 3)
        .into_iter()
        .map(|c| {
            let token = c.token;
            assert_eq!(accept_error(c), libc::ECANCELED);
            token
        })
        .collect();
    tokens.sort_unstable();
    assert_eq!(tokens, [1, 2, 3]);
    idle(&mut ring);
    assert_eq!(
        ring.driver_mut().accepts.armed(),
        0,
        "the cancel ended the multishot"
    );
    assert_eq!(ring.in_flight(), 0);
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    accept(&mut ring, 4, &listener);
    let (_, peer) = accepted(one(&mut ring));
    assert_eq!(peer, client.local_addr().unwrap());
}

#[test]
fn cancel_closes_the_queued_connections() {
    let mut ring = ring();
    let listener = listener();
    let port = listener.local_addr().unwrap().port();
    accept(&mut ring, 1, &listener);
    let (mut clients, completions) = connect_one_by_one(&mut ring, &listener, 4);
    let kept = first_of(&clients, completions);
    assert_eq!(ring.driver_mut().accepts.queued(), 3);
    assert_eq!(open_on_port(port), 5);
    ring.cancel(listener.as_raw_fd());
    idle(&mut ring);
    assert_eq!(ring.driver_mut().accepts.queued(), 0);
    assert_eq!(ring.driver_mut().accepts.armed(), 0);
    assert_eq!(open_on_port(port), 2, "queued connections left open");
    for client in &mut clients[1..] {
        assert!(read_some(client, 1).is_empty(), "no end of stream");
    }
    drop(kept);
}

#[test]
fn deregistering_the_listener_closes_the_queued_connections() {
    let mut ring = ring();
    let listener = listener();
    let port = listener.local_addr().unwrap().port();
    accept(&mut ring, 1, &listener);
    let (mut clients, completions) = connect_one_by_one(&mut ring, &listener, 3);
    let kept = first_of(&clients, completions);
    assert_eq!(ring.driver_mut().accepts.queued(), 2);
    ring.deregister(listener.as_raw_fd()).unwrap();
    let deadline = Instant::now() + PATIENCE;
    while ring.driver_mut().accepts.armed() > 0 {
        assert!(Instant::now() < deadline, "the multishot never ended");
        idle(&mut ring);
    }
    assert_eq!(open_on_port(port), 2, "queued connections left open");
    for client in &mut clients[1..] {
        assert!(read_some(client, 1).is_empty(), "no end of stream");
    }
    drop(listener);
    // The descriptor number comes back for a new listener: it starts clean.
    let listener2 = self::listener();
    accept(&mut ring, 2, &listener2);
    let client2 = TcpStream::connect(listener2.local_addr().unwrap()).unwrap();
    let completion = one(&mut ring);
    assert_eq!(completion.token, 2);
    assert_eq!(accepted(completion).1, client2.local_addr().unwrap());
    drop(kept);
}

#[test]
fn dropping_the_ring_closes_the_queued_connections() {
    let listener = listener();
    let port = listener.local_addr().unwrap().port();
    let (kept, mut clients) = {
        let mut ring = ring();
        accept(&mut ring, 1, &listener);
        let (clients, completions) = connect_one_by_one(&mut ring, &listener, 4);
        let kept = first_of(&clients, completions);
        assert_eq!(ring.driver_mut().accepts.queued(), 3);
        assert_eq!(open_on_port(port), 5);
        (kept, clients)
    };
    assert_eq!(open_on_port(port), 2, "queued connections left open");
    for client in &mut clients[1..] {
        assert!(read_some(client, 1).is_empty(), "no end of stream");
    }
    drop(kept);
}

#[test]
fn an_error_of_the_multishot_reaches_the_waiting_accept() {
    let mut ring = ring();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    ring.register(udp.as_raw_fd()).unwrap();
    ring.submit(
        1,
        Op::Accept {
            listener: udp.as_raw_fd(),
        },
    );
    let completion = one(&mut ring);
    assert_eq!(completion.token, 1);
    assert_eq!(accept_error(completion), libc::EOPNOTSUPP);
    assert!(ring.driver_mut().accepts.enabled);
    assert_eq!(ring.driver_mut().accepts.armed(), 0);
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn einval_before_any_connection_turns_multishot_off_and_one_shot_answers() {
    let mut ring = ring();
    // Bound, not listening: accept says EINVAL, as an old kernel says to the
    // multishot flag. The port cannot tell them apart before a multishot
    // accept has worked, so it falls back and the one-shot accept answers.
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    ring.register(socket.as_raw_fd()).unwrap();
    ring.submit(
        1,
        Op::Accept {
            listener: socket.as_raw_fd(),
        },
    );
    assert_eq!(accept_error(one(&mut ring)), libc::EINVAL);
    assert!(
        !ring.driver_mut().accepts.enabled,
        "multishot accepts still on"
    );
    // Accepts now go one-shot, and work.
    let listener = listener();
    accept(&mut ring, 2, &listener);
    assert_eq!(ring.driver_mut().slots.len(), 1, "not a one-shot accept");
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    assert_eq!(accepted(one(&mut ring)).1, client.local_addr().unwrap());
    assert_eq!(ring.driver_mut().accepts.armed(), 0);
}

#[test]
fn einval_after_a_multishot_worked_is_the_callers_error() {
    let mut ring = ring();
    let listener = listener();
    accept(&mut ring, 1, &listener);
    let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    accepted(one(&mut ring));
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    ring.register(socket.as_raw_fd()).unwrap();
    ring.submit(
        2,
        Op::Accept {
            listener: socket.as_raw_fd(),
        },
    );
    assert_eq!(accept_error(one(&mut ring)), libc::EINVAL);
    assert!(ring.driver_mut().accepts.enabled);
    assert!(ring.driver_mut().slots.is_empty());
}

#[test]
fn with_multishot_off_each_accept_is_one_sqe() {
    let mut ring = ring();
    ring.driver_mut().accepts.enabled = false;
    let listener = listener();
    accept(&mut ring, 1, &listener);
    accept(&mut ring, 2, &listener);
    assert_eq!(ring.driver_mut().slots.len(), 2);
    assert_eq!(ring.in_flight(), 2);
    let addr = listener.local_addr().unwrap();
    let clients: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut peers: Vec<SocketAddr> = wait_for(&mut ring, 2)
        .into_iter()
        .map(|c| accepted(c).1)
        .collect();
    let mut expected: Vec<SocketAddr> = clients.iter().map(|c| c.local_addr().unwrap()).collect();
    peers.sort_unstable();
    expected.sort_unstable();
    assert_eq!(peers, expected);
    assert_eq!(ring.driver_mut().accepts.armed(), 0);
    assert_eq!(ring.in_flight(), 0);
}

/// A connected socket's descriptor, as a multishot accept CQE would carry it,
/// with its client.
fn fake_accepted() -> (i32, TcpStream) {
    let (client, server) = connected_pair();
    (server.into_raw_fd(), client)
}

#[test]
fn resource_errors_are_answers_and_an_ended_multishot_is_armed_on_the_next_need() {
    const L: RawSocket = 1000;
    /// `IORING_CQE_F_MORE`: the multishot stays armed.
    const MORE: u32 = 1 << 1;
    let mut streams = AcceptStreams::new(true);
    let mut out = Vec::new();
    assert!(matches!(streams.accept(L, 1), Plan::Arm(_)));
    assert!(matches!(streams.accept(L, 2), Plan::Wait));
    // Errors go to the oldest waiting accept; the multishot ended, and the
    // accept still waiting arms it again.
    let follow = streams.complete(0, -libc::EMFILE, 0, &mut out);
    assert!(matches!(follow, AcceptFollow::Post(_)));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].token, 1);
    assert_eq!(accept_error(out.pop().unwrap()), libc::EMFILE);
    let (fd, client) = fake_accepted();
    assert!(matches!(
        streams.complete(0, fd, MORE, &mut out),
        AcceptFollow::None
    ));
    let completion = out.pop().unwrap();
    assert_eq!(completion.token, 2);
    assert_eq!(accepted(completion).1, client.local_addr().unwrap());
    // An error with no accept waiting is queued for the next accept.
    for errno in [libc::ENFILE, libc::ENOBUFS] {
        assert!(matches!(
            streams.complete(0, -errno, 0, &mut out),
            AcceptFollow::None
        ));
        assert!(out.is_empty());
        assert_eq!((streams.armed(), streams.queued()), (0, 1));
        match streams.accept(L, 3) {
            Plan::Ready(completion) => assert_eq!(accept_error(completion), errno),
            _ => panic!("the queued error was not handed out"),
        }
        assert!(matches!(streams.accept(L, 4), Plan::Arm(_)));
        let (fd, client) = fake_accepted();
        // A connection in the multishot's last CQE still counts.
        streams.complete(0, fd, 0, &mut out);
        assert_eq!(accepted(out.pop().unwrap()).1, client.local_addr().unwrap());
        assert_eq!(streams.armed(), 0);
        assert!(matches!(streams.accept(L, 5), Plan::Arm(_)));
        assert!(matches!(
            streams.complete(0, -libc::ENOMEM, 0, &mut out),
            AcceptFollow::None
        ));
        assert_eq!(accept_error(out.pop().unwrap()), libc::ENOMEM);
        // Armed again, with nothing waiting.
        assert!(matches!(streams.accept(L, 6), Plan::Arm(_)));
        let (fd, _client) = fake_accepted();
        streams.complete(0, fd, MORE, &mut out);
        accepted(out.pop().unwrap());
    }
    // The kernel did take the flag: EINVAL is the listener's own error.
    assert!(matches!(streams.accept(L, 7), Plan::Wait));
    streams.complete(0, -libc::EINVAL, 0, &mut out);
    assert_eq!(accept_error(out.pop().unwrap()), libc::EINVAL);
    assert!(streams.enabled);
    assert_eq!(streams.waiting(), 0);
}

#[test]
fn einval_from_a_kernel_without_the_flag_posts_the_waiting_accepts_one_shot() {
    const L: RawSocket = 1000;
    let mut streams = AcceptStreams::new(true);
    let mut out = Vec::new();
    assert!(matches!(streams.accept(L, 1), Plan::Arm(_)));
    assert!(matches!(streams.accept(L, 2), Plan::Wait));
    match streams.complete(0, -libc::EINVAL, 0, &mut out) {
        AcceptFollow::OneShot { listener, tokens } => {
            assert_eq!((listener, tokens), (L, vec![1, 2]));
        }
        _ => panic!("the waiting accepts were not posted one-shot"),
    }
    assert!(out.is_empty());
    assert!(!streams.enabled);
    assert_eq!(streams.waiting(), 0);
    assert!(matches!(streams.accept(L, 3), Plan::OneShot));
}
