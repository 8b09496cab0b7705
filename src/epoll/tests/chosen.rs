//! Recvs that let the epoll port choose their memory (a buffer of capacity 0).

use super::*;
use crate::conformance::support::{
    assert_each_gets_its_own_bytes, assert_nothing_ready, chosen_recv, one, received,
    registered_pair, waiting_chosen_recvs,
};

#[test]
fn a_parked_chosen_recv_holds_no_buffer_and_gets_later_data() {
    let mut poller = poller();
    let (mut client, server) = registered_pair(&mut poller);
    chosen_recv(&mut poller, 1, &server);
    assert_nothing_ready(&mut poller);
    assert_eq!(poller.in_flight(), 1);
    // The buffer the first try used went back to the pool.
    assert_eq!(poller.driver().pool.len(), 1);
    client.write_all(b"hello").unwrap();
    let (buf, result) = received(one(&mut poller));
    assert_eq!(result.unwrap(), 5);
    assert_eq!(buf, b"hello");
    assert_eq!(poller.driver().pool.len(), 0);
    assert_eq!(poller.in_flight(), 0);
}

#[test]
fn a_thousand_parked_chosen_recvs_share_one_spare_buffer() {
    const N: usize = 1000;
    let mut poller = poller();
    let mut pairs = waiting_chosen_recvs(&mut poller, N);
    assert_eq!(poller.driver().pool.len(), 1, "parked recvs hold buffers");
    assert_each_gets_its_own_bytes(&mut poller, &mut pairs);
}

#[test]
fn given_buffers_are_reused() {
    let mut poller = poller();
    let (mut client, server) = registered_pair(&mut poller);
    client.write_all(b"one").unwrap();
    chosen_recv(&mut poller, 1, &server);
    let (first, _) = received(one(&mut poller));
    assert_eq!(first, b"one");
    let address = first.as_ptr();
    poller.give_buffer(first);
    assert_eq!(poller.driver().pool.len(), 1);
    client.write_all(b"two").unwrap();
    chosen_recv(&mut poller, 2, &server);
    let (second, _) = received(one(&mut poller));
    assert_eq!(second, b"two");
    assert_eq!(
        second.as_ptr(),
        address,
        "a new buffer instead of the given one"
    );
    // Tiny or empty buffers are not worth keeping.
    poller.give_buffer(Vec::new());
    poller.give_buffer(Vec::with_capacity(8));
    assert_eq!(poller.driver().pool.len(), 0);
}

#[test]
fn a_recv_after_a_short_one_parks_without_trying_the_socket() {
    let mut poller = poller();
    let (mut client, server) = registered_pair(&mut poller);
    client.write_all(b"abc").unwrap();
    thread::sleep(Duration::from_millis(20));
    chosen_recv(&mut poller, 1, &server);
    let (buf, result) = received(one(&mut poller));
    assert_eq!((result.unwrap(), &buf[..]), (3, &b"abc"[..]));
    assert!(poller.driver().sockets[&server.as_raw_fd()].drained);
    // A try would take a pooled buffer and give it back on EAGAIN: the pool
    // staying empty shows that the recv was parked without one.
    assert_eq!(poller.driver().pool.len(), 0);
    chosen_recv(&mut poller, 2, &server);
    assert_eq!(poller.driver().pool.len(), 0, "the socket was tried");
    assert_nothing_ready(&mut poller);
    assert_eq!(poller.in_flight(), 1);
    client.write_all(b"de").unwrap();
    let completion = one(&mut poller);
    assert_eq!(completion.token, 2);
    let (buf, result) = received(completion);
    assert_eq!((result.unwrap(), &buf[..]), (2, &b"de"[..]));
}

#[test]
fn end_of_stream_after_a_short_recv_is_still_reported() {
    let mut poller = poller();
    let (mut client, server) = registered_pair(&mut poller);
    client.write_all(b"last").unwrap();
    thread::sleep(Duration::from_millis(20));
    chosen_recv(&mut poller, 1, &server);
    let (buf, _) = received(one(&mut poller));
    assert_eq!(buf, b"last");
    chosen_recv(&mut poller, 2, &server);
    client.shutdown(Shutdown::Write).unwrap();
    let (_, result) = received(one(&mut poller));
    assert_eq!(result.unwrap(), 0);
    // End of stream does not mark the socket emptied: every later recv says it again.
    chosen_recv(&mut poller, 3, &server);
    let (_, result) = received(one(&mut poller));
    assert_eq!(result.unwrap(), 0);
}

#[test]
fn a_full_recv_leaves_the_socket_to_be_tried_again() {
    let mut poller = poller();
    let (mut client, server) = registered_pair(&mut poller);
    let data: Vec<u8> = (0..RECV_SIZE + 10).map(|i| (i % 251) as u8).collect();
    client.write_all(&data).unwrap();
    thread::sleep(Duration::from_millis(50));
    let mut got = Vec::new();
    for token in 1.. {
        chosen_recv(&mut poller, token, &server);
        let (buf, result) = received(one(&mut poller));
        let n = result.unwrap();
        let full = n == buf.capacity();
        assert_eq!(poller.driver().sockets[&server.as_raw_fd()].drained, !full);
        got.extend_from_slice(&buf);
        if got.len() == data.len() {
            break;
        }
    }
    assert!(got == data, "the bytes arrived altered");
}

#[test]
fn end_of_stream_behind_the_last_bytes_is_reported_after_them() {
    // Bytes and the FIN arrive together: the recv that takes the bytes is short,
    // yet the next one must see the end of stream, whose edge was already seen.
    for settle in [0, 20] {
        let mut poller = poller();
        let (mut client, server) = registered_pair(&mut poller);
        client.write_all(b"bye").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        thread::sleep(Duration::from_millis(settle));
        if settle > 0 {
            // Let the poller see the readiness (and the hangup) first.
            assert_nothing_ready(&mut poller);
        }
        chosen_recv(&mut poller, 1, &server);
        let (buf, _) = received(one(&mut poller));
        assert_eq!(buf, b"bye");
        chosen_recv(&mut poller, 2, &server);
        let (_, result) = received(one(&mut poller));
        assert_eq!(result.unwrap(), 0, "settle {} ms", settle);
    }
}
