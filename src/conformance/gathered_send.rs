//! Gathered sends: several owned and shared buffers sent as one vectored
//! send, resumed from any byte after a partial send, the shared parts kept
//! alive by the port and the gather handed back in the completion.

use std::io::Read;
use std::net::TcpStream;
use std::sync::{Arc, Weak};
use std::thread;
use std::time::Duration;

use super::support::{one, open, raw, registered_pair};
use crate::port::{Backend, CompletionPort, Gather, Op, Outcome, Port, SendBuf, MAX_GATHER};

/// `len` bytes of a pattern that differs with `seed`, so a misplaced part shows.
fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 7 + seed * 31) % 251) as u8)
        .collect()
}

/// A gather of `parts`, owned and shared in turn; the concatenated bytes; and
/// a weak reference to each shared part.
fn gather_of(parts: Vec<Vec<u8>>) -> (Gather, Vec<u8>, Vec<Weak<[u8]>>) {
    let mut gather = Gather::new();
    let (mut all, mut weaks) = (Vec::new(), Vec::new());
    for (i, part) in parts.into_iter().enumerate() {
        all.extend_from_slice(&part);
        let part = if i % 2 == 0 {
            SendBuf::Owned(part)
        } else {
            let shared: Arc<[u8]> = Arc::from(part);
            weaks.push(Arc::downgrade(&shared));
            SendBuf::Shared(shared)
        };
        gather.push(part).unwrap();
    }
    (gather, all, weaks)
}

/// Read `len` bytes on another thread.
fn read_in_background(mut client: TcpStream, len: usize) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut got = vec![0; len];
        client.read_exact(&mut got).unwrap();
        got
    })
}

/// Send `buf` from `pos` on `socket` until all of it went (partial sends
/// resubmitted from where they stopped). Returns the buffer as it came back
/// and where each send that ended early stopped.
fn send_all(
    port: &mut Port,
    socket: &TcpStream,
    buf: SendBuf,
    pos: usize,
) -> (SendBuf, Vec<usize>) {
    let len = buf.len();
    let (mut buf, mut pos, mut stops) = (buf, pos, Vec::new());
    loop {
        let socket = raw(socket);
        port.submit(7, Op::Send { socket, buf, pos });
        let completion = one(port);
        assert_eq!(completion.token, 7);
        let (back, at, result) = match completion.outcome {
            Outcome::Sent { buf, pos, result } => (buf, pos, result),
            other => panic!("expected Sent, got {:?}", other),
        };
        assert_eq!(at, pos, "the position comes back as submitted");
        let n = result.unwrap();
        assert!(n > 0 && n <= len - pos, "sent {} of {}", n, len - pos);
        buf = back;
        pos += n;
        if pos == len {
            return (buf, stops);
        }
        stops.push(pos);
    }
}

/// A gather of owned and shared parts of many sizes (empty ones too) arrives
/// byte-exact and in order; the gather comes back whole in the completion,
/// and a shared part whose caller dropped its reference right after submitting
/// is kept alive by the gather alone, and freed once the gather lets it go.
pub(super) fn a_gathered_send_arrives_in_order_and_comes_back_whole(backend: Backend) {
    let mut port = open(backend);
    let (client, server) = registered_pair(&mut port);
    let sizes = [1, 0, 4096, 3, 70_000, 0, 17, 1500, 1];
    let parts = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| pattern(n, i))
        .collect();
    let (gather, all, weaks) = gather_of(parts);
    let reader = read_in_background(client, all.len());
    let (back, _) = send_all(&mut port, &server, SendBuf::Gathered(Box::new(gather)), 0);
    assert!(reader.join().unwrap() == all, "bytes differ");
    let mut gather = match back {
        SendBuf::Gathered(gather) => gather,
        other => panic!("expected the gather back, got {:?}", other),
    };
    assert_eq!(
        (gather.part_count(), gather.len()),
        (sizes.len(), all.len())
    );
    for weak in &weaks {
        assert_eq!(
            weak.strong_count(),
            1,
            "only the gather holds a shared part"
        );
    }
    let owned = gather.drain().filter_map(SendBuf::into_owned).count();
    let even = (0..sizes.len()).filter(|i| i % 2 == 0).count();
    assert_eq!(owned, even, "owned parts come back to be reused");
    assert!(
        weaks.iter().all(|w| w.upgrade().is_none()),
        "the port kept a reference"
    );
    assert_eq!(port.in_flight(), 0);
}

/// A gathered send started inside its first, a middle or its last part (as
/// after a partial send that ended there), or on a boundary, sends exactly
/// the bytes from there on.
pub(super) fn a_gathered_send_resumes_from_inside_any_part(backend: Backend) {
    let mut port = open(backend);
    let sizes = [5, 9, 1, 7];
    let parts: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| pattern(n, i))
        .collect();
    let (gather, all, _) = gather_of(parts);
    let mut buf = SendBuf::Gathered(Box::new(gather));
    // Inside the first, on the first boundary, inside the second, the one-byte
    // third, inside the last, its last byte.
    for &pos in &[0, 2, 5, 9, 14, 17, 20] {
        let (client, server) = registered_pair(&mut port);
        let reader = read_in_background(client, all.len() - pos);
        buf = send_all(&mut port, &server, buf, pos).0;
        assert_eq!(reader.join().unwrap(), &all[pos..], "from {}", pos);
        // Its descriptor may be reused by the next pair.
        port.deregister(raw(&server)).unwrap();
    }
    assert_eq!(buf.len(), all.len(), "the gather came back unchanged");
    assert_eq!(port.in_flight(), 0);
}

/// A gather of [`MAX_GATHER`] parts goes out in one send's worth of
/// buffers, in order.
pub(super) fn a_gather_of_max_gather_parts_arrives_in_order(backend: Backend) {
    let mut port = open(backend);
    let (client, server) = registered_pair(&mut port);
    let parts = (0..MAX_GATHER).map(|i| pattern(1 + i % 5, i)).collect();
    let (gather, all, _) = gather_of(parts);
    assert!(gather.is_full());
    let reader = read_in_background(client, all.len());
    send_all(&mut port, &server, SendBuf::Gathered(Box::new(gather)), 0);
    assert!(reader.join().unwrap() == all, "bytes differ");
    assert_eq!(port.in_flight(), 0);
}

/// Parts larger than a socket's buffers, to a peer that reads slowly: sends
/// end early (on Linux: inside the first part, a middle one and the last),
/// each is resumed from where it stopped, and the bytes arrive byte-exact.
pub(super) fn a_large_gathered_send_goes_out_through_partial_sends(backend: Backend) {
    const PART: usize = 256 * 1024;
    let mut port = open(backend);
    let (mut client, server) = registered_pair(&mut port);
    socket2::SockRef::from(&server)
        .set_send_buffer_size(16 << 10)
        .unwrap();
    socket2::SockRef::from(&client)
        .set_recv_buffer_size(16 << 10)
        .unwrap();
    let sizes = [PART, PART + 1, 3, PART - 1];
    let parts = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| pattern(n, i))
        .collect();
    let (gather, all, _) = gather_of(parts);
    let total = all.len();
    let reader = thread::spawn(move || {
        let mut got = Vec::with_capacity(total);
        let mut chunk = [0u8; 16 * 1024];
        while got.len() < total {
            thread::sleep(Duration::from_millis(1));
            let n = client.read(&mut chunk).unwrap();
            assert_ne!(n, 0, "early end of stream");
            got.extend_from_slice(&chunk[..n]);
        }
        got
    });
    let (_, stops) = send_all(&mut port, &server, SendBuf::Gathered(Box::new(gather)), 0);
    assert!(reader.join().unwrap() == all, "bytes differ");
    if cfg!(target_os = "linux") {
        // Each send moves far less than a part: a stop falls inside each.
        let inside = |from: usize, to: usize| stops.iter().any(|&s| s > from && s < to);
        let second = sizes[0];
        let last = total - sizes[3];
        assert!(
            inside(0, second),
            "no stop inside the first part: {:?}",
            stops
        );
        assert!(
            inside(second, second + sizes[1]),
            "none in a middle one: {:?}",
            stops
        );
        assert!(
            inside(last, total),
            "none inside the last part: {:?}",
            stops
        );
    }
    assert_eq!(port.in_flight(), 0);
}
