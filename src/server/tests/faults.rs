//! Faults from clients, on every backend compiled in (so under Wine for IOCP
//! too): a client that never reads, resets in the middle of a transfer, and
//! many clients vanishing at once. The Python suite drives the same cases at
//! a larger scale on Linux.

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use socket2::SockRef;

use super::{backends, config, connect, pattern, read_n, start};
use crate::framing::Framing;
use crate::server::Server;

/// Poll `condition` until it holds; `Err` (after logging `what`) once 30 s
/// have passed.
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) -> Result<(), ()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        if Instant::now() > deadline {
            eprintln!("timed out waiting for {}", what);
            return Err(());
        }
        thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// One echo on a fresh connection: the server still serves.
#[track_caller]
fn still_serving(server: &Server, what: &str) {
    let mut probe = connect(server);
    probe.write_all(what.as_bytes()).unwrap();
    assert_eq!(read_n(&mut probe, what.len()), what.as_bytes());
}

/// Send all of `data` on a thread of its own (it blocks while nobody reads).
fn send_in_background(stream: &TcpStream, data: Vec<u8>) -> thread::JoinHandle<()> {
    let mut writer = stream.try_clone().unwrap();
    thread::spawn(move || {
        for chunk in data.chunks(64 << 10) {
            if writer.write_all(chunk).is_err() {
                return;
            }
        }
    })
}

#[test]
fn a_client_that_never_reads_is_paused_then_gets_every_byte() {
    for backend in backends() {
        let mut cfg = config(backend, Framing::raw());
        cfg.high_water = 256 << 10;
        cfg.low_water = 64 << 10;
        let server = start(cfg, None);
        let mut stalled = connect(&server);
        let data = pattern(24 << 20, 5);
        let writer = send_in_background(&stalled, data.clone());
        wait_until("the server to pause the stalled connection", || {
            server.stats().backpressure_pauses > 0
        })
        .unwrap_or_else(|()| panic!("{}: never paused: {:?}", backend, server.stats()));
        // Others are served while it is paused.
        still_serving(&server, "not stalled");
        // Reading again resumes it, with every byte in order.
        let got = read_n(&mut stalled, data.len());
        writer.join().unwrap();
        assert!(
            got == data,
            "{}: the stalled stream arrived altered",
            backend
        );
        server.close().unwrap();
        let stats = server.stats();
        assert_eq!(stats.bytes_received, stats.bytes_sent, "{}", backend);
        assert_eq!(stats.io_errors, 0, "{}", backend);
    }
}

#[test]
fn resets_in_the_middle_of_transfers_free_every_connection() {
    for backend in backends() {
        let server = start(config(backend, Framing::raw()), None);
        let clients: Vec<TcpStream> = (0..20)
            .map(|i| {
                let mut client = connect(&server);
                // Within what the socket buffers take without anyone reading.
                let data = pattern(256 << 10, i);
                client.write_all(&data).unwrap();
                // Replies flow: the server has this connection.
                assert_eq!(read_n(&mut client, 1), data[..1], "{}", backend);
                client
            })
            .collect();
        for client in clients {
            // Linger 0: closing sends a reset, with replies unread and in flight.
            SockRef::from(&client)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(client);
        }
        wait_until("every reset connection to be freed", || {
            let stats = server.stats();
            stats.connections_open == 0 && stats.connections_closed == 20
        })
        .unwrap_or_else(|()| panic!("{}: not freed: {:?}", backend, server.stats()));
        still_serving(&server, "after the resets");
        server.close().unwrap();
        assert_eq!(server.stats().connections_open, 0, "{}", backend);
    }
}
