//! Port-chosen recvs served by multishot recvs: order, the bounded queue while
//! the caller does not read, cancel, end of stream and deregistering.

use super::*;
use crate::conformance::support::{
    chosen_recv, one, received, registered_pair, wait_for, PATIENCE,
};
use crate::uring::multishot::{BULK_EXIT, QUEUE_LIMIT};

/// Run the ring for a moment with no recv posted; nothing may complete.
/// (Five waits, not `assert_nothing_ready`'s one: a wait may return as soon as
/// it reaps a multishot completion that the driver queues, not hands out.)
#[track_caller]
fn idle(ring: &mut Front<Ring>) {
    let mut out = Vec::new();
    for _ in 0..5 {
        ring.wait(&mut out, Some(Duration::from_millis(20)))
            .unwrap();
    }
    assert!(out.is_empty(), "unexpected completions: {:?}", out);
}

/// Recv until `n` bytes arrived; the bytes.
#[track_caller]
fn recv_bytes(ring: &mut Front<Ring>, socket: &TcpStream, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        chosen_recv(ring, 7, socket);
        let (buf, result) = received(one(ring));
        let k = result.unwrap();
        assert!(k > 0, "end of stream after {} of {} bytes", got.len(), n);
        got.extend_from_slice(&buf);
        ring.give_buffer(buf);
    }
    got
}

#[test]
fn this_kernel_takes_multishot_recvs() {
    let mut ring = ring();
    assert!(ring.driver_mut().streams.enabled);
    let (mut client, server) = registered_pair(&mut ring);
    chosen_recv(&mut ring, 1, &server);
    client.write_all(b"one").unwrap();
    let (buf, result) = received(one(&mut ring));
    assert_eq!((buf.as_slice(), result.unwrap()), (&b"one"[..], 3));
    assert!(
        ring.driver_mut().streams.enabled,
        "the kernel refused multishot recv"
    );
    assert_eq!(
        ring.driver_mut().streams.armed(),
        1,
        "the multishot stays armed"
    );
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn bytes_arriving_between_recvs_are_queued_in_order_and_the_queue_is_bounded() {
    let mut ring = ring();
    let (mut client, server) = registered_pair(&mut ring);
    chosen_recv(&mut ring, 1, &server);
    client.write_all(b"first").unwrap();
    assert_eq!(received(one(&mut ring)).0, b"first");
    // No recv posted: what arrives now is queued, up to the limit; then the
    // multishot is cancelled and the rest waits in the kernel.
    let mut sent = Vec::new();
    for i in 0..QUEUE_LIMIT + 3 {
        let chunk = format!("<{}>", i).into_bytes();
        client.write_all(&chunk).unwrap();
        sent.extend_from_slice(&chunk);
        idle(&mut ring);
    }
    assert_eq!(
        ring.driver_mut().streams.armed(),
        0,
        "still receiving for a caller that stopped"
    );
    assert_eq!(ring.in_flight(), 0);
    assert_eq!(recv_bytes(&mut ring, &server, sent.len()), sent);
    // Receiving again after the queue drained: the multishot was armed anew.
    client.write_all(b"last").unwrap();
    assert_eq!(recv_bytes(&mut ring, &server, 4), b"last");
}

#[test]
fn end_of_stream_reaches_the_waiting_recv_after_the_bytes_before_it() {
    let mut ring = ring();
    let (mut client, server) = registered_pair(&mut ring);
    chosen_recv(&mut ring, 1, &server);
    client.write_all(b"bye").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(received(one(&mut ring)).0, b"bye");
    chosen_recv(&mut ring, 2, &server);
    let (buf, result) = received(one(&mut ring));
    assert_eq!((buf.capacity(), result.unwrap()), (0, 0));
    assert_eq!(ring.driver_mut().streams.armed(), 0);
}

#[test]
fn cancel_ends_the_waiting_recv_and_loses_no_bytes() {
    let mut ring = ring();
    let (mut client, server) = registered_pair(&mut ring);
    chosen_recv(&mut ring, 1, &server);
    idle(&mut ring);
    assert_eq!(ring.driver().streams.waiting(), 1);
    ring.cancel(server.as_raw_fd());
    assert_eq!(ring.driver().streams.waiting(), 0);
    let completion = one(&mut ring);
    assert_eq!(completion.token, 1);
    let error = received(completion).1.unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::ECANCELED));
    idle(&mut ring);
    assert_eq!(
        ring.driver_mut().streams.armed(),
        0,
        "the cancel ended the multishot"
    );
    client.write_all(b"after").unwrap();
    assert_eq!(recv_bytes(&mut ring, &server, 5), b"after");
}

#[test]
fn a_deregistered_socket_leaves_no_stream_behind() {
    let mut ring = ring();
    let (mut client, server) = registered_pair(&mut ring);
    chosen_recv(&mut ring, 1, &server);
    client.write_all(b"x").unwrap();
    assert_eq!(received(one(&mut ring)).0, b"x");
    // Bytes arrive with no recv posted, then the socket goes.
    client.write_all(b"unclaimed").unwrap();
    idle(&mut ring);
    ring.deregister(server.as_raw_fd()).unwrap();
    drop(server);
    let deadline = Instant::now() + PATIENCE;
    while ring.driver_mut().streams.armed() > 0 {
        assert!(Instant::now() < deadline, "the multishot never ended");
        idle(&mut ring);
    }
    // The descriptor number comes back for a new socket: it starts clean.
    let (mut client2, server2) = registered_pair(&mut ring);
    chosen_recv(&mut ring, 2, &server2);
    client2.write_all(b"fresh").unwrap();
    let completion = one(&mut ring);
    assert_eq!(completion.token, 2);
    assert_eq!(received(completion).0, b"fresh");
    drop(client);
}

#[test]
fn many_sockets_each_get_their_own_bytes() {
    let mut ring = ring();
    let pairs: Vec<(TcpStream, TcpStream)> = (0..64).map(|_| registered_pair(&mut ring)).collect();
    for round in 0..20u32 {
        for (i, (client, server)) in pairs.iter().enumerate() {
            chosen_recv(&mut ring, i as Token, server);
            (&*client).write_all(&[i as u8, round as u8]).unwrap();
        }
        let mut seen = vec![false; pairs.len()];
        for completion in wait_for(&mut ring, pairs.len()) {
            let token = completion.token as usize;
            let (buf, result) = received(completion);
            assert_eq!(result.unwrap(), 2);
            assert_eq!(buf, [token as u8, round as u8]);
            assert!(!std::mem::replace(&mut seen[token], true));
            ring.give_buffer(buf);
        }
    }
}

#[test]
fn a_bulk_transfer_goes_one_shot_and_small_messages_go_back_to_multishot() {
    let mut ring = ring();
    let (client, server) = registered_pair(&mut ring);
    let data: Vec<u8> = (0..8 << 20).map(|i| (i * 7 % 253) as u8).collect();
    let expected = data.clone();
    let writer = thread::spawn(move || {
        (&client).write_all(&data).unwrap();
        client
    });
    let mut got = Vec::new();
    let mut one_shot = 0;
    while got.len() < expected.len() {
        chosen_recv(&mut ring, 1, &server);
        one_shot += ring
            .driver()
            .slots
            .iter()
            .filter(|(_, s)| s.memory == RecvBuf::Pooled)
            .count();
        let (buf, result) = received(one(&mut ring));
        assert!(result.unwrap() > 0);
        got.extend_from_slice(&buf);
        ring.give_buffer(buf);
    }
    let mut client = writer.join().unwrap();
    assert!(got == expected, "the stream arrived altered");
    assert!(one_shot > 0, "the bulk transfer never went one-shot");
    // Small messages, each read before the next is sent: back to multishot
    // after `BULK_EXIT` of them in a row, not at the first.
    for i in 0..BULK_EXIT {
        client.write_all(&[i; 10]).unwrap();
        thread::sleep(Duration::from_millis(20));
        assert_eq!(recv_bytes(&mut ring, &server, 10), [i; 10]);
        if i + 1 < BULK_EXIT {
            assert_eq!(
                ring.driver_mut().streams.armed(),
                0,
                "left bulk after {} small recvs",
                i + 1
            );
        }
    }
    chosen_recv(&mut ring, 2, &server);
    idle(&mut ring);
    assert_eq!(
        ring.driver_mut().streams.armed(),
        1,
        "small messages stayed one-shot"
    );
    assert!(ring.driver_mut().slots.is_empty());
}
