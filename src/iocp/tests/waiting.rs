//! Waiting chosen recvs are zero-byte `WSARecv`s: they hold no buffer, and
//! take one from the pool only once data (or the end of stream) is there.

use std::io::Write;
use std::net::Shutdown;
use std::thread;

use super::*;
use crate::conformance::support::{
    assert_each_gets_its_own_bytes, chosen_recv, raw, received, registered_pair, wait_for,
    waiting_chosen_recvs,
};

/// No buffer is held by `port` for its waiting recvs, and none was taken.
#[track_caller]
fn assert_no_buffer_held(port: &Front<Iocp>) {
    assert_eq!(
        port.driver().held_receive_bytes(),
        0,
        "a slot holds a buffer"
    );
    assert_eq!(port.driver().pool.len(), 0, "the pool was touched");
}

#[test]
fn a_thousand_waiting_chosen_recvs_hold_no_buffer_until_their_data_comes() {
    const N: usize = 1000;
    let mut port = port();
    let mut pairs = waiting_chosen_recvs(&mut port, N);
    assert_no_buffer_held(&port);
    // Each completes with exactly its bytes, in a buffer it then gives back.
    assert_each_gets_its_own_bytes(&mut port, &mut pairs);
    assert_eq!(port.driver().held_receive_bytes(), 0);
}

#[test]
fn end_of_stream_of_a_waiting_chosen_recv_is_zero_and_takes_nothing() {
    let mut port = port();
    let (client, server) = registered_pair(&mut port);
    let mut client = client;
    client.write_all(b"last").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    chosen_recv(&mut port, 1, &server);
    let (buf, result) = received(one(&mut port));
    assert_eq!((buf.as_slice(), result.unwrap()), (&b"last"[..], 4));
    chosen_recv(&mut port, 2, &server);
    let (buf, result) = received(one(&mut port));
    assert_eq!(result.unwrap(), 0);
    assert_eq!(buf.capacity(), 0);
    assert_eq!(port.driver().pool.len(), 1, "the read's buffer went back");
}

#[test]
fn cancel_of_a_waiting_chosen_recv_takes_no_buffer() {
    let mut port = port();
    let (_client, server) = registered_pair(&mut port);
    chosen_recv(&mut port, 3, &server);
    assert_nothing_ready(&mut port);
    port.cancel(raw(&server));
    let completion = one(&mut port);
    assert_eq!(completion.token, 3);
    let (buf, result) = received(completion);
    assert!(result.is_err(), "expected an error, got {:?}", result);
    assert_eq!(buf.capacity(), 0);
    assert_no_buffer_held(&port);
    assert_eq!(port.in_flight(), 0);
}

#[test]
fn a_peer_reset_fails_a_waiting_chosen_recv_with_an_empty_vec() {
    let mut port = port();
    let (client, server) = registered_pair(&mut port);
    chosen_recv(&mut port, 1, &server);
    assert_nothing_ready(&mut port);
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
    let (buf, result) = received(one(&mut port));
    // A reset is an error, or (some stacks) an end of stream.
    assert!(matches!(result, Err(_) | Ok(0)), "got {:?}", result);
    assert_eq!(buf.capacity(), 0);
}

/// More than one buffer holds: several recvs, each at most a buffer, in order.
#[test]
fn data_larger_than_a_buffer_arrives_in_several_chosen_recvs_in_order() {
    const SIZE: usize = 5 * RECV_SIZE / 2;
    let mut port = port();
    let (mut client, server) = registered_pair(&mut port);
    let sent: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let writer = {
        let sent = sent.clone();
        thread::spawn(move || {
            client.write_all(&sent).unwrap();
            client.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut got = Vec::new();
    let mut recvs = 0;
    loop {
        chosen_recv(&mut port, recvs, &server);
        let (buf, result) = received(one(&mut port));
        let n = result.unwrap();
        assert_eq!(n, buf.len());
        assert!(n <= RECV_SIZE, "a recv of {} bytes", n);
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf);
        port.give_buffer(buf);
        recvs += 1;
    }
    writer.join().unwrap();
    assert!(recvs >= 3, "{} bytes in {} recvs", SIZE, recvs);
    assert!(got == sent, "the bytes differ or are out of order");
}

/// Two chosen recvs waiting on one socket: data wakes both, the first takes
/// it all, the second finds nothing (spurious readiness) and waits again,
/// without completing and without a buffer, for the next data.
#[test]
fn a_chosen_recv_that_finds_nothing_waits_again() {
    let mut port = port();
    let (mut client, server) = registered_pair(&mut port);
    chosen_recv(&mut port, 1, &server);
    chosen_recv(&mut port, 2, &server);
    assert_nothing_ready(&mut port);
    client.write_all(b"first").unwrap();
    let first = one(&mut port);
    let other = 3 - first.token;
    let (buf, _) = received(first);
    assert_eq!(buf, b"first");
    port.give_buffer(buf);
    thread::sleep(Duration::from_millis(50));
    assert_nothing_ready(&mut port);
    assert_eq!(port.in_flight(), 1);
    assert_eq!(port.driver().held_receive_bytes(), 0);
    client.write_all(b"second").unwrap();
    let completion = one(&mut port);
    assert_eq!(completion.token, other);
    let (buf, _) = received(completion);
    assert_eq!(buf, b"second");
    // A cancel still ends a recv that waits again.
    chosen_recv(&mut port, 3, &server);
    port.cancel(raw(&server));
    let (buf, result) = received(wait_for(&mut port, 1).remove(0));
    assert!(result.is_err() && buf.is_empty(), "got {:?}", result);
}
