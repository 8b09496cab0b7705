//! Sending a shared buffer: one reference-counted buffer sent to many sockets
//! at once, kept alive by the port while the kernel reads it.

use std::io::Read;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::support::{open, raw, registered_pair};
use crate::port::{Backend, CompletionPort, Op, Outcome, SendBuf};

/// Sockets the buffer is sent to.
const SOCKETS: usize = 8;
/// Bytes of the buffer: larger than a socket buffer, so sends are partial.
const SIZE: usize = 512 * 1024;

/// One buffer, sent whole to 8 sockets at once (partial sends resubmitted
/// with the same buffer), arrives byte-exact on each; the caller's own
/// reference is dropped right after submitting, so only the port keeps the
/// bytes alive, and it keeps no reference once every send completed.
pub(super) fn a_shared_buffer_sent_to_many_sockets_arrives_byte_exact_on_each(backend: Backend) {
    let mut port = open(backend);
    let data: Vec<u8> = (0..SIZE).map(|i| (i * 7 % 251) as u8).collect();
    let shared: Arc<[u8]> = Arc::from(data.clone());
    let weak = Arc::downgrade(&shared);
    let mut servers = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..SOCKETS {
        let (mut client, server) = registered_pair(&mut port);
        servers.push(server);
        readers.push(thread::spawn(move || {
            let mut got = vec![0; SIZE];
            client.read_exact(&mut got).unwrap();
            got
        }));
    }
    for (i, server) in servers.iter().enumerate() {
        let buf = SendBuf::Shared(Arc::clone(&shared));
        let socket = raw(server);
        port.submit(
            i as u64,
            Op::Send {
                socket,
                buf,
                pos: 0,
            },
        );
    }
    drop(shared);
    let (mut done, mut completions) = (0, Vec::new());
    while done < SOCKETS {
        port.wait(&mut completions, Some(Duration::from_millis(100)))
            .unwrap();
        for completion in completions.drain(..) {
            let i = completion.token as usize;
            let (buf, pos) = match completion.outcome {
                Outcome::Sent { buf, pos, result } => (buf, pos + result.unwrap()),
                other => panic!("expected Sent, got {:?}", other),
            };
            assert!(
                matches!(buf, SendBuf::Shared(_)),
                "the shared buffer came back"
            );
            if pos < SIZE {
                let socket = raw(&servers[i]);
                port.submit(i as u64, Op::Send { socket, buf, pos });
            } else {
                done += 1;
            }
        }
    }
    assert_eq!(port.in_flight(), 0);
    assert!(weak.upgrade().is_none(), "the port kept a reference");
    for reader in readers {
        assert!(reader.join().unwrap() == data, "bytes differ");
    }
}
