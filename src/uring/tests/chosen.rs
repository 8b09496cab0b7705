//! Recvs that let the io_uring port choose their memory (a buffer of capacity
//! 0): the provided-buffer ring, its empty case, and the pool.

use super::*;
use crate::conformance::support::{
    assert_each_gets_its_own_bytes, assert_nothing_ready, chosen_recv, connected_pair, one,
    received, registered_pair, waiting_chosen_recvs, PATIENCE,
};

#[test]
fn this_kernel_takes_a_buffer_ring() {
    assert!(ring().driver().memory.ring.is_some());
}

#[test]
fn a_thousand_parked_chosen_recvs_hold_no_buffers() {
    let mut ring = ring();
    let mut pairs = waiting_chosen_recvs(&mut ring, 1000);
    assert_eq!(ring.driver_mut().memory.pool.len(), 0);
    // Every buffer of the ring is still offered: the tail is all there is to check
    // from here, so check that each recv owns nothing but its empty Vec.
    for (_, slot) in ring.driver_mut().slots.iter() {
        let Op::Recv { buf, .. } = &slot.op else {
            panic!("not a recv");
        };
        assert_eq!(buf.capacity(), 0);
        assert_eq!(slot.memory, RecvBuf::Selected { cancelled: false });
    }
    assert_each_gets_its_own_bytes(&mut ring, &mut pairs);
}

/// A ring of one buffer: each completion takes the ring's `Vec` and puts a
/// pooled one in its place, so a given buffer comes back two recvs later.
/// (The ring's buffers are the pool's size: the pool keeps no smaller ones.)
#[test]
fn given_buffers_are_reused() {
    let mut ring = Front::new(Ring::with_sizes(64, 256, 1, buf_ring::DIRECT_SIZE).unwrap());
    assert!(ring.driver_mut().memory.ring.is_some());
    let (mut client, server) = registered_pair(&mut ring);
    let mut addresses = Vec::new();
    for (token, word) in [&b"one"[..], b"two", b"six"].iter().enumerate() {
        client.write_all(word).unwrap();
        chosen_recv(&mut ring, token as Token, &server);
        let (buf, result) = received(one(&mut ring));
        assert_eq!(result.unwrap(), 3);
        assert_eq!(buf, *word);
        addresses.push(buf.as_ptr());
        ring.give_buffer(buf);
        assert_eq!(ring.driver_mut().memory.pool.len(), 1);
    }
    assert_eq!(
        addresses[2], addresses[0],
        "a new buffer instead of the given one"
    );
}

/// A ring of 4 provided buffers and 64 connections with data waiting: most
/// recvs find the ring empty, and still every byte arrives, in order.
#[test]
fn an_empty_buffer_ring_loses_nothing() {
    const CONNECTIONS: usize = 64;
    const CHUNK: usize = 3000;
    const CHUNKS: usize = 8;
    let mut ring = Front::new(Ring::with_sizes(64, 256, 4, 1024).unwrap());
    assert!(ring.driver_mut().memory.ring.is_some());
    let mut clients = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..CONNECTIONS {
        let (client, server) = registered_pair(&mut ring);
        clients.push(client);
        servers.push(server);
    }
    let stream = |i: usize| -> Vec<u8> {
        (0..CHUNK * CHUNKS)
            .map(|j| ((i * 31 + j * 7) % 251) as u8)
            .collect()
    };
    let writer = thread::spawn(move || {
        for chunk in 0..CHUNKS {
            for (i, client) in clients.iter_mut().enumerate() {
                client
                    .write_all(&stream(i)[chunk * CHUNK..(chunk + 1) * CHUNK])
                    .unwrap();
            }
            if chunk == 0 {
                // The rest after the recvs are posted, so some find data waiting
                // and some wait for it.
                thread::sleep(Duration::from_millis(20));
            }
        }
        clients
    });
    thread::sleep(Duration::from_millis(10));
    let mut got = vec![Vec::new(); CONNECTIONS];
    for (i, server) in servers.iter().enumerate() {
        chosen_recv(&mut ring, i as Token, server);
    }
    let total = CONNECTIONS * CHUNK * CHUNKS;
    let mut received_bytes = 0;
    let deadline = Instant::now() + PATIENCE;
    let mut out = Vec::new();
    while received_bytes < total {
        assert!(
            Instant::now() < deadline,
            "{} of {} bytes",
            received_bytes,
            total
        );
        ring.wait(&mut out, Some(Duration::from_millis(100)))
            .unwrap();
        for completion in out.drain(..) {
            let i = completion.token as usize;
            let (buf, result) = received(completion);
            let n = result.unwrap();
            assert!(n > 0 && n == buf.len() && n <= 1024 * 64);
            got[i].extend_from_slice(&buf);
            received_bytes += n;
            ring.give_buffer(buf);
            if got[i].len() < CHUNK * CHUNKS {
                chosen_recv(&mut ring, i as Token, &servers[i]);
            }
        }
    }
    let _clients = writer.join().unwrap();
    for (i, bytes) in got.iter().enumerate() {
        assert!(
            *bytes == stream(i),
            "connection {} got its bytes altered",
            i
        );
    }
    assert!(ring.driver_mut().starved > 0, "the ring never ran empty");
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn without_a_buffer_ring_chosen_recvs_take_pooled_buffers() {
    // 3 buffers is not a power of two: the ring is refused, as by an old kernel.
    let mut ring = Front::new(Ring::with_sizes(64, 256, 3, 1024).unwrap());
    assert!(ring.driver_mut().memory.ring.is_none());
    let (mut client, server) = registered_pair(&mut ring);
    chosen_recv(&mut ring, 1, &server);
    assert_nothing_ready(&mut ring);
    client.write_all(b"fallback").unwrap();
    let (buf, result) = received(one(&mut ring));
    assert_eq!(result.unwrap(), 8);
    assert_eq!(buf, b"fallback");
    ring.give_buffer(buf);
    chosen_recv(&mut ring, 2, &server);
    assert_nothing_ready(&mut ring);
    ring.cancel(server.as_raw_fd());
    let (buf, result) = received(one(&mut ring));
    assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::ECANCELED));
    assert_eq!(buf.capacity(), 0);
    // The cancelled recv's buffer went back to the pool.
    assert_eq!(ring.driver_mut().memory.pool.len(), 1);
}

#[test]
fn dropping_a_ring_with_chosen_recvs_in_flight_is_safe() {
    let (mut client, server) = connected_pair();
    {
        let mut ring = ring();
        ring.register(server.as_raw_fd()).unwrap();
        chosen_recv(&mut ring, 1, &server);
        assert_nothing_ready(&mut ring);
    }
    client.write_all(b"late").unwrap();
    server.set_nonblocking(false).unwrap();
    let mut got = [0; 4];
    (&server).read_exact(&mut got).unwrap();
    assert_eq!(&got, b"late");
}

/// One-shot recvs (multishot off), a stream larger than the ring's buffers:
/// once bytes are known to be waiting, recvs receive straight into pooled
/// buffers (bigger than the ring's); once the stream has been drained, the
/// next recv waits holding nothing.
#[test]
fn a_stream_goes_direct_while_bytes_wait_then_idles_without_memory() {
    // Small ring buffers: a recv larger than them went direct.
    let mut ring = Front::new(Ring::with_sizes(64, 256, 128, 4096).unwrap());
    ring.driver_mut().streams.enabled = false;
    let (mut client, server) = registered_pair(&mut ring);
    let data: Vec<u8> = (0..4 << 20).map(|i| (i * 13 % 251) as u8).collect();
    let expected = data.clone();
    let writer = thread::spawn(move || {
        client.write_all(&data).unwrap();
        client
    });
    let mut got = Vec::new();
    let mut largest = 0;
    while got.len() < expected.len() {
        chosen_recv(&mut ring, 1, &server);
        let (buf, result) = received(one(&mut ring));
        let n = result.unwrap();
        assert!(n > 0 && n == buf.len());
        largest = largest.max(n);
        got.extend_from_slice(&buf);
        ring.give_buffer(buf);
    }
    let _client = writer.join().unwrap();
    assert!(got == expected, "the stream arrived altered");
    assert!(largest > 4096, "no recv went direct (largest {})", largest);
    chosen_recv(&mut ring, 2, &server);
    assert_nothing_ready(&mut ring);
    let (_, slot) = ring.driver_mut().slots.iter().next().unwrap();
    assert_eq!(slot.memory, RecvBuf::Selected { cancelled: false });
    ring.cancel(server.as_raw_fd());
    let (buf, result) = received(one(&mut ring));
    assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::ECANCELED));
    assert_eq!(buf.capacity(), 0);
}
