//! What is peculiar to the epoll driver: parking, FIFO order per side, edge
//! triggering, the drained mark. The contract itself is checked for every
//! backend by `crate::conformance`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::Duration;

use socket2::SockRef;

use super::*;
use crate::conformance::support::{
    assert_nothing_ready, listener, one, received, registered_pair, sent, wait_for,
};
use crate::contract::CompletionPort;
use crate::front::Front;

mod chosen;

/// An epoll port: the driver behind the shared front.
fn poller() -> Front<Poller> {
    Front::new(Poller::new().unwrap())
}

#[test]
fn epoll_timeouts_are_whole_milliseconds_rounded_up() {
    assert_eq!(epoll_timeout(None), -1);
    assert_eq!(epoll_timeout(Some(Duration::ZERO)), 0);
    assert_eq!(epoll_timeout(Some(Duration::from_micros(1))), 1);
    assert_eq!(epoll_timeout(Some(Duration::from_micros(1_001))), 2);
    assert_eq!(epoll_timeout(Some(Duration::from_secs(u64::MAX))), i32::MAX);
}

#[test]
fn parked_accepts_complete_in_submission_order() {
    let mut poller = poller();
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
    let mut poller = poller();
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
    let completion = one(&mut poller);
    assert!(matches!(completion.outcome, Outcome::Accepted(Err(_))));
    assert_eq!(poller.in_flight(), 0);
    // Submitting again fails at once rather than parking forever.
    poller.submit(
        2,
        Op::Accept {
            listener: listener.as_raw_fd(),
        },
    );
    let completion = one(&mut poller);
    assert!(matches!(completion.outcome, Outcome::Accepted(Err(_))));
    assert_nothing_ready(&mut poller);
}

#[test]
fn recv_of_bytes_already_there_completes_without_parking() {
    let mut poller = poller();
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
    let mut poller = poller();
    let (mut client, server) = registered_pair(&mut poller);
    let recv = |poller: &mut Front<Poller>| {
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
        let (buf, result) = received(one(&mut poller));
        assert_eq!(result.unwrap(), buf.len());
        got.extend_from_slice(&buf);
        recv(&mut poller);
    }
    assert_eq!(got, b"0123456789");
    assert_eq!(
        poller.driver().parked,
        1,
        "the last recv should wait for more"
    );
}

/// A send that finds no room waits for `EPOLLOUT`. (That every byte of a large
/// send arrives: the conformance property
/// `a_large_send_goes_out_byte_exact_through_partial_sends`.)
#[test]
fn a_send_that_would_block_parks_until_the_socket_is_writable() {
    const SIZE: usize = 1 << 20;
    let mut poller = poller();
    let (mut client, server) = registered_pair(&mut poller);
    SockRef::from(&server)
        .set_send_buffer_size(16 * 1024)
        .unwrap();
    let data: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    // Nobody reads: sends fill the socket until one finds no room and parks.
    let (mut buf, mut pos) = (data.clone(), 0);
    let mut token = 0;
    loop {
        poller.submit(
            token,
            Op::Send {
                socket: server.as_raw_fd(),
                buf: buf.into(),
                pos,
            },
        );
        if poller.driver().parked == 1 {
            break;
        }
        let (back, _, result) = sent(one(&mut poller));
        buf = back;
        pos += result.unwrap();
        assert!(pos < SIZE, "the socket took 1 MiB unread");
        token += 1;
    }
    // Room comes back as the peer's buffer takes bytes and as it reads them:
    // then the parked send goes on.
    let mut got = vec![0u8; pos];
    client.read_exact(&mut got).unwrap();
    assert!(got == data[..pos], "bytes differ");
    let completion = one(&mut poller);
    assert_eq!(completion.token, token);
    let (_, at, result) = sent(completion);
    assert_eq!(at, pos);
    assert!(result.unwrap() > 0);
    assert_eq!(poller.driver().parked, 0);
    assert_eq!(poller.in_flight(), 0);
}

#[test]
fn deregister_with_a_parked_op_cancels_it() {
    let mut poller = poller();
    let (_client, server) = registered_pair(&mut poller);
    poller.submit(
        1,
        Op::Recv {
            socket: server.as_raw_fd(),
            buf: Vec::with_capacity(8),
        },
    );
    poller.deregister(server.as_raw_fd()).unwrap();
    let (_, result) = received(one(&mut poller));
    assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::ECANCELED));
    assert_eq!(poller.in_flight(), 0);
    assert!(poller.deregister(server.as_raw_fd()).is_err());
}
