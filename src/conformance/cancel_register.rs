//! Cancelling ops, registering sockets, and the caller's mistakes.

use std::io;
use std::net::TcpListener;

use super::support::{
    assert_canceled, assert_nothing_ready, one, open, raw, received, registered_pair, wait_for,
};
use crate::port::{Backend, CompletionPort, Op, Outcome};

pub(super) fn cancel_of_a_waiting_recv_completes_it_once_with_its_buffer(backend: Backend) {
    let mut port = open(backend);
    let (_client, server) = registered_pair(&mut port);
    port.submit(
        9,
        Op::Recv {
            socket: raw(&server),
            buf: Vec::with_capacity(100),
        },
    );
    assert_nothing_ready(&mut port);
    assert_eq!(port.in_flight(), 1);
    port.cancel(raw(&server));
    let completion = one(&mut port);
    assert_eq!(completion.token, 9);
    let (buf, result) = received(completion);
    assert_canceled(result);
    assert_eq!(buf.capacity(), 100);
    assert!(buf.is_empty());
    assert_eq!(port.in_flight(), 0);
    assert_nothing_ready(&mut port);
    // Nothing is in flight any more: a cancel is a no-op.
    port.cancel(raw(&server));
    assert_nothing_ready(&mut port);
    port.deregister(raw(&server)).unwrap();
}

pub(super) fn cancel_right_after_submit_still_targets_the_op(backend: Backend) {
    let mut port = open(backend);
    let (_client, server) = registered_pair(&mut port);
    port.submit(
        5,
        Op::Recv {
            socket: raw(&server),
            buf: Vec::with_capacity(32),
        },
    );
    port.cancel(raw(&server));
    let (buf, result) = received(one(&mut port));
    assert_canceled(result);
    assert_eq!(buf.capacity(), 32);
    assert_eq!(port.in_flight(), 0);
}

pub(super) fn ops_on_an_unregistered_socket_fail_as_completions(backend: Backend) {
    let mut port = open(backend);
    let (_client, server) = registered_pair(&mut port);
    port.deregister(raw(&server)).unwrap();
    let stranger = TcpListener::bind("127.0.0.1:0").unwrap();
    port.submit(
        1,
        Op::Recv {
            socket: raw(&server),
            buf: Vec::with_capacity(10),
        },
    );
    port.submit(
        2,
        Op::Accept {
            listener: raw(&stranger),
        },
    );
    port.submit(
        3,
        Op::Recv {
            socket: raw(&server),
            buf: Vec::new(),
        },
    );
    assert_eq!(port.in_flight(), 3);
    let mut completions = wait_for(&mut port, 3).into_iter();
    let completion = completions.next().unwrap();
    assert_eq!(completion.token, 1);
    let (buf, result) = received(completion);
    assert_eq!(buf.capacity(), 10);
    let error = result.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::NotFound);
    assert!(error.to_string().contains("not registered"), "{}", error);
    let completion = completions.next().unwrap();
    assert_eq!(completion.token, 2);
    match completion.outcome {
        Outcome::Accepted(Err(error)) => assert_eq!(error.kind(), io::ErrorKind::NotFound),
        other => panic!("expected a failed accept, got {:?}", other),
    }
    let (buf, result) = received(completions.next().unwrap());
    assert_eq!(buf.capacity(), 0);
    assert_eq!(result.unwrap_err().kind(), io::ErrorKind::NotFound);
    assert_eq!(port.in_flight(), 0);
}

pub(super) fn registering_twice_is_an_error(backend: Backend) {
    let mut port = open(backend);
    let (_client, server) = registered_pair(&mut port);
    let error = port.register(raw(&server)).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
}

/// Deregistering forgets a socket: a second deregister and any op on it fail,
/// and new sockets (perhaps with the same handle value) register again.
pub(super) fn deregister_forgets_the_socket(backend: Backend) {
    let mut port = open(backend);
    for _ in 0..20 {
        let (mut client, server) = registered_pair(&mut port);
        let socket = raw(&server);
        std::io::Write::write_all(&mut client, b"once").unwrap();
        port.submit(
            1,
            Op::Recv {
                socket,
                buf: Vec::with_capacity(8),
            },
        );
        let (buf, result) = received(one(&mut port));
        assert_eq!((result.unwrap(), buf.as_slice()), (4, &b"once"[..]));
        port.deregister(socket).unwrap();
        let error = port.deregister(socket).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        port.submit(
            2,
            Op::Recv {
                socket,
                buf: Vec::with_capacity(8),
            },
        );
        let (_, result) = received(one(&mut port));
        assert!(result.is_err(), "an op on a forgotten socket must fail");
        // Closing frees the handle value, which a later socket may reuse.
        drop(server);
    }
}

pub(super) fn unusable_buffers_fail_as_completions(backend: Backend) {
    let mut port = open(backend);
    let (_client, server) = registered_pair(&mut port);
    port.submit(
        1,
        Op::Recv {
            socket: raw(&server),
            // Full: no spare capacity (capacity 0 would let the port choose).
            buf: vec![7; 4],
        },
    );
    for (token, pos) in [(2, 3), (3, 4)] {
        port.submit(
            token,
            Op::Send {
                socket: raw(&server),
                buf: b"abc".to_vec().into(),
                pos,
            },
        );
    }
    assert_eq!(port.in_flight(), 3);
    let completions = wait_for(&mut port, 3);
    let tokens: Vec<_> = completions.iter().map(|c| c.token).collect();
    assert_eq!(tokens, [1, 2, 3]);
    for completion in completions {
        let error = match completion.outcome {
            Outcome::Received { result, buf } => {
                assert_eq!(buf, [7; 4]);
                result.unwrap_err()
            }
            Outcome::Sent { result, buf, .. } => {
                assert_eq!(buf.single(), Some(&b"abc"[..]));
                result.unwrap_err()
            }
            other => panic!("unexpected {:?}", other),
        };
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }
    assert_eq!(port.in_flight(), 0);
}
