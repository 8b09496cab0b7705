//! Broadcast through the sender, on every backend compiled in (so under Wine
//! for IOCP too): every other client gets it byte-exact on several workers
//! with the right count, `exclude` works, broadcasts while other threads open
//! and close connections, a slow reader gets many broadcasts and pushes
//! queued together (gathered sends, partial ones resumed) in order, and a
//! client that never reads is closed at the bound by broadcasts as by pushes.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::bound::{assert_closed_as_slow_consumer, connect_with_small_window};
use super::events::{check_lifecycles, lines, recording};
use super::{backends, config, connect, read_n};
use crate::port::MAX_GATHER;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// `len` bytes of letters (no newline), varying with `seed`.
fn text(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| b'a' + ((i + seed as usize) % 26) as u8)
        .collect()
}

/// `payload` followed by the line delimiter.
fn line(payload: &[u8]) -> Vec<u8> {
    let mut line = payload.to_vec();
    line.push(b'\n');
    line
}

#[test]
fn a_broadcast_reaches_every_other_client_byte_exact_on_every_worker() {
    for backend in backends() {
        let mut cfg = config(backend, lines());
        cfg.workers = 3;
        let (server, recorder) = recording(cfg);
        let mut clients: Vec<_> = (0..12).map(|_| connect(&server)).collect();
        let ids: Vec<_> = clients.iter().map(|c| recorder.id_of(c)).collect();
        let sender = server.sender();

        // Large enough to take several sends, and to be shared by 11.
        let big = text(300 * KIB, 1);
        assert_eq!(sender.broadcast(&big, &ids[..1]), Ok(11), "{}", backend);
        let small = text(10, 2);
        let two = [ids[1], ids[2], 999_999];
        assert_eq!(sender.broadcast(&small, &two), Ok(10), "{}", backend);
        assert_eq!(sender.broadcast(b"last", &[]), Ok(12), "{}", backend);
        for (i, client) in clients.iter_mut().enumerate() {
            let mut want = Vec::new();
            if i != 0 {
                want.extend_from_slice(&line(&big));
            }
            if i != 1 && i != 2 {
                want.extend_from_slice(&line(&small));
            }
            // Broadcasts arrive in order: the excluded got none before it.
            want.extend_from_slice(b"last\n");
            let got = read_n(client, want.len());
            assert!(got == want, "{}: client {} got other bytes", backend, i);
        }
        // A payload the codec cannot frame is refused, queued nowhere.
        assert!(sender.broadcast(b"two\nlines", &[]).is_err());
        server.close().unwrap();
        assert_eq!(sender.broadcast(b"late", &[]), Ok(0), "{}", backend);
        check_lifecycles(&recorder.seen());
    }
}

#[test]
fn broadcasts_while_other_threads_open_and_close_connections() {
    for backend in backends() {
        let mut cfg = config(backend, lines());
        cfg.workers = 2;
        let (server, recorder) = recording(cfg);
        let mut stable: Vec<_> = (0..4).map(|_| connect(&server)).collect();
        for client in &stable {
            recorder.id_of(client);
        }
        let addr = server.local_addr();
        let stop = Arc::new(AtomicBool::new(false));
        let churners: Vec<_> = (0..3)
            .map(|_| {
                let stop = Arc::clone(&stop);
                thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let mut client = std::net::TcpStream::connect(addr).unwrap();
                        let _ = client.write_all(b"hi\n");
                        drop(client);
                    }
                })
            })
            .collect();
        let sender = server.sender();
        let rounds = 300;
        for round in 0..rounds {
            let payload = format!("round {}", round);
            let count = sender.broadcast(payload.as_bytes(), &[]).unwrap();
            // The stable clients, and whichever churners' connections the
            // server has not seen close yet.
            assert!(count >= 4, "{}: {}", backend, count);
        }
        stop.store(true, Ordering::SeqCst);
        for churner in churners {
            churner.join().unwrap();
        }
        let want: Vec<u8> = (0..rounds)
            .flat_map(|round| format!("round {}\n", round).into_bytes())
            .collect();
        for client in stable.iter_mut() {
            let got = read_n(client, want.len());
            assert!(got == want, "{}: a stable client missed some", backend);
        }
        server.close().unwrap();
        assert_eq!(server.stats().connections_open, 0, "{}", backend);
        check_lifecycles(&recorder.seen());
    }
}

#[test]
fn broadcasts_and_pushes_queued_together_reach_a_slow_reader_in_order() {
    for backend in backends() {
        let (server, recorder) = recording(config(backend, lines()));
        let mut slow = connect_with_small_window(&server);
        let id = recorder.id_of(&slow);
        let sender = server.sender();
        // More broadcasts than one gathered send takes, pushes between them:
        // the worker queues many at once, behind a send the reader holds up.
        let mut want = Vec::new();
        for round in 0..3 * MAX_GATHER {
            let payload = format!("broadcast {} {}", round, "x".repeat(round % 300));
            assert_eq!(sender.broadcast(payload.as_bytes(), &[]), Ok(1));
            want.extend_from_slice(&line(payload.as_bytes()));
            if round % 7 == 0 {
                let push = format!("push {}", round);
                sender.send(id, push.as_bytes()).unwrap();
                want.extend_from_slice(&line(push.as_bytes()));
            }
        }
        let mut got = Vec::with_capacity(want.len());
        let mut chunk = [0u8; 8 * KIB];
        while got.len() < want.len() {
            thread::sleep(Duration::from_micros(200));
            let n = slow.read(&mut chunk).unwrap();
            assert_ne!(n, 0, "{}: early end of stream", backend);
            got.extend_from_slice(&chunk[..n]);
        }
        assert!(got == want, "{}: other bytes or another order", backend);
        server.close().unwrap();
        check_lifecycles(&recorder.seen());
    }
}

#[test]
fn broadcasts_to_a_client_that_never_reads_close_it_at_the_bound() {
    for backend in backends() {
        let max_output = MIB;
        let mut cfg = config(backend, lines());
        cfg.workers = 2;
        cfg.high_water = 64 * KIB;
        cfg.low_water = 16 * KIB;
        cfg.max_output = max_output;
        let (server, recorder) = recording(cfg);
        let mut idle = connect_with_small_window(&server);
        let mut reader = connect(&server);
        let idle_id = recorder.id_of(&idle);
        recorder.id_of(&reader);
        let sender = server.sender();
        let payload = text(64 * KIB - 1, 3);
        let mut sent = 0;
        // Far more than the bound and the kernel's socket buffers together;
        // the reader takes each broadcast before the next.
        while sent < 128 * MIB {
            let count = sender.broadcast(&payload, &[]).unwrap();
            let got = read_n(&mut reader, 64 * KIB);
            assert!(
                got == line(&payload),
                "{}: the reader got other bytes",
                backend
            );
            sent += 64 * KIB;
            if count == 1 {
                break;
            }
            assert_eq!(count, 2, "{}", backend);
        }
        assert!(sent < 128 * MIB, "{}: never closed", backend);
        assert_closed_as_slow_consumer(&server, &recorder, &mut idle, idle_id, max_output, backend);
        server.close().unwrap();
        check_lifecycles(&recorder.seen());
    }
}
