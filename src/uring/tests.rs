//! What is peculiar to the io_uring driver: the probe, full and tiny queues,
//! drops that leak, the buffer ring and the multishots. The contract itself is
//! checked for every backend by `crate::conformance`.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::io::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use super::*;
use crate::conformance::support::{connected_pair, received, registered_pair, wait_for};
use crate::contract::{CompletionPort, Outcome};
use crate::front::Front;

mod accept_stream;
mod chosen;
mod multishot;

/// An io_uring port: the driver behind the shared front.
fn ring() -> Front<Ring> {
    Front::new(Ring::new().expect("io_uring ring"))
}

#[test]
fn probe_accepts_this_kernel() {
    probe().unwrap();
    let ring = ring();
    assert!(!ring.driver().setup_flags().is_empty());
}

/// More ops than the submission queue holds, and more completions at once than
/// the completion queue holds (the kernel keeps the overflow) and than one
/// `wait` returns.
#[test]
fn ten_thousand_cancelled_recvs_survive_full_queues() {
    const N: u64 = 10_000;
    let mut ring = ring();
    let (_client, server) = registered_pair(&mut ring);
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
    for completion in wait_for(&mut ring, N as usize) {
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
    let mut ring = Front::new(Ring::with_entries(8, 16).unwrap());
    let (_client, server) = registered_pair(&mut ring);
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
    for completion in wait_for(&mut ring, N as usize) {
        let token = completion.token as usize;
        let (_, result) = received(completion);
        assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::ECANCELED));
        assert!(!seen[token]);
        seen[token] = true;
    }
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn dropping_a_ring_with_a_recv_in_flight_is_safe() {
    let (mut client, server) = connected_pair();
    {
        let mut ring = ring();
        ring.register(server.as_raw_fd()).unwrap();
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
    let (mut client, server) = connected_pair();
    {
        let mut ring = ring();
        ring.register(server.as_raw_fd()).unwrap();
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
        ring.driver_mut().drop_grace = Duration::ZERO;
    }
    client.write_all(b"late").unwrap();
    thread::sleep(Duration::from_millis(20));
}
