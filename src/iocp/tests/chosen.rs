//! Recvs that let the IOCP port choose their memory (a buffer of capacity 0):
//! what they do with the port's pool. Their completions are the conformance
//! suite's `chosen` properties.

use std::io::Write;
use std::net::Shutdown;

use super::*;
use crate::conformance::support::{
    assert_each_gets_its_own_bytes, chosen_recv, one, raw, received, registered_pair, wait_for,
    waiting_chosen_recvs,
};

/// A waiting chosen recv holds no buffer; one that ends with no bytes leaves
/// the pool as it was (end of stream: the buffer of its read goes back;
/// cancel: none was taken).
#[test]
fn a_chosen_recv_that_receives_nothing_leaves_the_pool_as_it_was() {
    let mut port = port();
    let pairs = waiting_chosen_recvs(&mut port, 2);
    assert_eq!(port.driver().pool.len(), 0);
    assert_eq!(port.driver().held_receive_bytes(), 0);
    pairs[0].0.shutdown(Shutdown::Write).unwrap();
    port.cancel(raw(&pairs[1].1));
    for completion in wait_for(&mut port, 2) {
        let (buf, _) = received(completion);
        assert_eq!(buf.capacity(), 0);
    }
    assert!(
        port.driver().pool.len() <= 1,
        "more buffers in the pool than the one end of stream read into"
    );
}

/// Each of many chosen recvs takes its own buffer once its data is there,
/// and every one given back is kept.
#[test]
fn given_buffers_of_many_chosen_recvs_all_stay_in_the_pool() {
    const N: usize = 100;
    let mut port = port();
    let mut pairs = waiting_chosen_recvs(&mut port, N);
    assert_each_gets_its_own_bytes(&mut port, &mut pairs);
    assert_eq!(port.driver().pool.len(), N);
}

#[test]
fn given_buffers_are_reused() {
    let mut port = port();
    let (mut client, server) = registered_pair(&mut port);
    client.write_all(b"one").unwrap();
    chosen_recv(&mut port, 1, &server);
    let (first, _) = received(one(&mut port));
    assert_eq!(first, b"one");
    let address = first.as_ptr();
    port.give_buffer(first);
    client.write_all(b"two").unwrap();
    chosen_recv(&mut port, 2, &server);
    let (second, _) = received(one(&mut port));
    assert_eq!(second, b"two");
    assert_eq!(
        second.as_ptr(),
        address,
        "a new buffer instead of the given one"
    );
}
