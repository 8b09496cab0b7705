//! Recvs that let the port choose their memory (a buffer of capacity 0).

use std::io::Write;
use std::net::Shutdown;
use std::thread;
use std::time::Duration;

use super::support::{
    assert_canceled, assert_each_gets_its_own_bytes, assert_nothing_ready, chosen_recv, one, open,
    raw, received, registered_pair, waiting_chosen_recvs,
};
use crate::port::{Backend, CompletionPort};

pub(super) fn a_waiting_chosen_recv_gets_later_data(backend: Backend) {
    let mut port = open(backend);
    let (mut client, server) = registered_pair(&mut port);
    chosen_recv(&mut port, 1, &server);
    assert_nothing_ready(&mut port);
    assert_eq!(port.in_flight(), 1);
    client.write_all(b"hello").unwrap();
    let completion = one(&mut port);
    assert_eq!(completion.token, 1);
    let (buf, result) = received(completion);
    assert_eq!(result.unwrap(), 5);
    assert_eq!(buf, b"hello");
    assert_eq!(port.in_flight(), 0);
}

pub(super) fn a_chosen_recv_with_data_waiting_completes(backend: Backend) {
    let mut port = open(backend);
    let (mut client, server) = registered_pair(&mut port);
    client.write_all(b"ready").unwrap();
    thread::sleep(Duration::from_millis(20));
    chosen_recv(&mut port, 1, &server);
    let (buf, result) = received(one(&mut port));
    assert_eq!(result.unwrap(), 5);
    assert_eq!(buf, b"ready");
}

pub(super) fn a_chosen_recv_at_end_of_stream_is_zero_with_an_empty_vec(backend: Backend) {
    let mut port = open(backend);
    let (client, server) = registered_pair(&mut port);
    chosen_recv(&mut port, 1, &server);
    assert_nothing_ready(&mut port);
    client.shutdown(Shutdown::Write).unwrap();
    let (buf, result) = received(one(&mut port));
    assert_eq!(result.unwrap(), 0);
    assert_eq!(buf.capacity(), 0);
}

pub(super) fn cancel_of_a_waiting_chosen_recv_returns_an_empty_vec(backend: Backend) {
    let mut port = open(backend);
    let (_client, server) = registered_pair(&mut port);
    chosen_recv(&mut port, 5, &server);
    assert_nothing_ready(&mut port);
    port.cancel(raw(&server));
    let completion = one(&mut port);
    assert_eq!(completion.token, 5);
    let (buf, result) = received(completion);
    assert_canceled(result);
    assert_eq!(buf.capacity(), 0);
    assert_eq!(port.in_flight(), 0);
    assert_nothing_ready(&mut port);
}

pub(super) fn many_chosen_recvs_each_get_their_own_bytes(backend: Backend) {
    let mut port = open(backend);
    let mut pairs = waiting_chosen_recvs(&mut port, 100);
    assert_each_gets_its_own_bytes(&mut port, &mut pairs);
}

pub(super) fn a_stream_through_chosen_recvs_arrives_whole_and_in_order(backend: Backend) {
    let mut port = open(backend);
    let (mut client, server) = registered_pair(&mut port);
    let data: Vec<u8> = (0..1 << 20).map(|i| (i * 13 % 251) as u8).collect();
    let expected = data.clone();
    let writer = thread::spawn(move || client.write_all(&data).unwrap());
    let mut got = Vec::new();
    while got.len() < expected.len() {
        chosen_recv(&mut port, 1, &server);
        let (buf, result) = received(one(&mut port));
        let n = result.unwrap();
        assert!(n > 0 && n == buf.len());
        got.extend_from_slice(&buf);
        port.give_buffer(buf);
    }
    writer.join().unwrap();
    assert!(got == expected, "the stream arrived altered");
    assert_eq!(port.in_flight(), 0);
}
