//! The output bound (`max_output`) and the backpressure events, on every
//! backend compiled in (so under Wine for IOCP too): a client that never reads
//! is closed as a slow consumer whether pushes or replies fill its output, the
//! worker never queues more than the bound however much is pushed, a client
//! that stops then starts reading gets `PauseWriting` then `ResumeWriting`,
//! and clients that read are unaffected, on several workers.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use super::events::{check_lifecycles, lines, recording, Recorder, Seen};
use super::{backends, closed_by_server, config, connect, read_n, start};
use crate::port::Backend;
use crate::server::{CloseReason, Config, ConnectionId, SendError, Server};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// Lines framing, `workers` workers, reading paused above 64 KiB and resumed
/// at 16 KiB, output bounded by `max_output`.
fn bounded(backend: Backend, workers: usize, max_output: usize) -> Config {
    let mut cfg = config(backend, lines());
    cfg.workers = workers;
    cfg.high_water = 64 * KIB;
    cfg.low_water = 16 * KIB;
    cfg.max_output = max_output;
    cfg
}

/// Push lines of `line` bytes (newline included) to connection `id` until the
/// server refuses them (the connection closed) or `limit` bytes were pushed;
/// returns the bytes pushed.
fn push_until_closed(server: &Server, id: ConnectionId, line: usize, limit: usize) -> usize {
    let sender = server.sender();
    let payload = vec![b'p'; line - 1];
    let mut pushed = 0;
    while pushed < limit {
        match sender.send(id, &payload) {
            Ok(()) => pushed += line,
            Err(SendError::Closed) => return pushed,
            Err(e) => panic!("push to {}: {}", id, e),
        }
    }
    pushed
}

/// Write `lines` lines of `line` bytes from another thread while reading
/// their echoes here; true if every echo came back whole.
fn echoes_while_reading(client: &mut TcpStream, line: usize, lines: usize) -> bool {
    let mut wire = vec![b'e'; line];
    wire[line - 1] = b'\n';
    let mut writer = client.try_clone().unwrap();
    let sent = wire.clone();
    let writing = thread::spawn(move || {
        for _ in 0..lines {
            writer.write_all(&sent).unwrap();
        }
    });
    let got = read_n(client, line * lines);
    writing.join().unwrap();
    got.len() == line * lines && got.chunks(line).all(|chunk| chunk == &wire[..])
}

/// The server closed `client` (connection `id`) as a slow consumer, the one
/// of this server, and never queued more than `max_output` for a connection.
#[track_caller]
pub(super) fn assert_closed_as_slow_consumer(
    server: &Server,
    recorder: &Recorder,
    client: &mut TcpStream,
    id: ConnectionId,
    max_output: usize,
    backend: Backend,
) {
    assert_eq!(
        recorder.reason_of(id),
        CloseReason::SlowConsumer,
        "{}",
        backend
    );
    assert!(closed_by_server(client), "{}", backend);
    let stats = server.stats();
    assert_eq!(stats.slow_consumer_closes, 1, "{}", backend);
    assert!(
        stats.output_peak <= max_output as u64,
        "{}: a worker queued {} bytes for one connection (bound {})",
        backend,
        stats.output_peak,
        max_output
    );
}

/// How many times `event` was seen.
fn count(seen: &[Seen], event: &Seen) -> usize {
    seen.iter().filter(|s| *s == event).count()
}

/// A client whose receive buffer is small and fixed (no autotuning), so the
/// kernel holds little of what it does not read.
pub(super) fn connect_with_small_window(server: &Server) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(64 * KIB).unwrap();
    socket.connect(&server.local_addr().into()).unwrap();
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// The pause and resume events of connection `id`, in order.
fn pauses_of(seen: &[Seen], id: ConnectionId) -> Vec<Seen> {
    seen.iter()
        .filter(|s| matches!(s, Seen::Pause(c) | Seen::Resume(c) if *c == id))
        .cloned()
        .collect()
}

#[test]
fn pushing_to_a_client_that_never_reads_closes_it_at_the_bound() {
    for backend in backends() {
        let max_output = MIB;
        let (server, recorder) = recording(bounded(backend, 2, max_output));
        let mut idle = connect(&server);
        let mut reader = connect(&server);
        let id = recorder.id_of(&idle);
        recorder.id_of(&reader);

        // Far more than the bound and the kernel's socket buffers together.
        let limit = 128 * MIB;
        let pushed = push_until_closed(&server, id, 64 * KIB, limit);
        assert!(pushed < limit, "{}: never closed", backend);
        // Refused only once what waited (pushed, queued) would pass the bound.
        assert!(
            pushed + 64 * KIB > max_output,
            "{}: closed after {}",
            backend,
            pushed
        );
        assert_closed_as_slow_consumer(&server, &recorder, &mut idle, id, max_output, backend);

        // The other connection reads and is untouched.
        assert!(echoes_while_reading(&mut reader, 1000, 2000), "{}", backend);
        reader.shutdown(Shutdown::Write).unwrap();
        assert!(closed_by_server(&mut reader), "{}", backend);
        server.close().unwrap();
        assert_eq!(server.stats().slow_consumer_closes, 1, "{}", backend);
        check_lifecycles(&recorder.seen());
    }
}

#[test]
fn replies_to_a_client_that_never_reads_hit_the_bound_too() {
    for backend in backends() {
        let max_output = MIB;
        let (server, recorder) = recording(bounded(backend, 2, max_output));
        let mut idle = connect(&server);
        let mut reader = connect(&server);
        let id = recorder.id_of(&idle);
        let reader_id = recorder.id_of(&reader);

        // Eight replies of half the bound asked for at once: any two of them
        // answered in one turn pass it.
        let ask = format!("big {}\n", max_output / 2);
        idle.write_all(ask.repeat(8).as_bytes()).unwrap();
        assert_closed_as_slow_consumer(&server, &recorder, &mut idle, id, max_output, backend);

        // The same replies, read one by one, go out whole.
        for _ in 0..4 {
            reader.write_all(ask.as_bytes()).unwrap();
            let got = read_n(&mut reader, max_output / 2 + 1);
            assert_eq!(got.len(), max_output / 2 + 1, "{}", backend);
            assert!(got[..max_output / 2].iter().all(|&b| b == b'b'));
        }
        server.close().unwrap();
        assert_eq!(
            recorder.reason_of(reader_id),
            CloseReason::Shutdown,
            "{}",
            backend
        );
        assert_eq!(server.stats().slow_consumer_closes, 1, "{}", backend);
        check_lifecycles(&recorder.seen());
    }
}

#[test]
fn a_client_that_stops_then_starts_reading_gets_pause_then_resume() {
    for backend in backends() {
        // A bound far above what is pushed: only backpressure acts.
        let (server, recorder) = recording(bounded(backend, 2, 1 << 30));
        let mut client = connect_with_small_window(&server);
        let id = recorder.id_of(&client);

        // Far more than the kernel's buffers hold for a client that does not
        // read: the rest stays queued, above high_water.
        let line = 64 * KIB;
        let pushed = 16 * MIB;
        let payload = vec![b'p'; line - 1];
        let sender = server.sender();
        for _ in 0..pushed / line {
            sender.send(id, &payload).unwrap();
        }
        // (A fast pusher may pass high_water for a moment before the kernel's
        // buffers are full: pauses and resumes may come and go until then.)
        recorder.wait_until("reading paused", |seen| {
            pauses_of(seen, id).last() == Some(&Seen::Pause(id))
        });
        let resumes_before = count(&recorder.seen(), &Seen::Resume(id));

        // Read it all: output falls to low_water, reading resumes.
        let got = read_n(&mut client, pushed);
        assert_eq!(got.len(), pushed, "{}", backend);
        assert!(got
            .chunks(line)
            .all(|chunk| chunk[..line - 1].iter().all(|&b| b == b'p') && chunk[line - 1] == b'\n'));
        recorder.wait_until("the resume event", |seen| {
            count(seen, &Seen::Resume(id)) > resumes_before
                && pauses_of(seen, id).last() == Some(&Seen::Resume(id))
        });

        // Still served: a frame after the resume is answered.
        client.write_all(b"after\n").unwrap();
        assert_eq!(read_n(&mut client, 6), b"after\n", "{}", backend);
        client.shutdown(Shutdown::Write).unwrap();
        assert_eq!(
            recorder.reason_of(id),
            CloseReason::PeerClosed,
            "{}",
            backend
        );
        server.close().unwrap();

        let seen = recorder.seen();
        check_lifecycles(&seen);
        // Pause and resume alternate, starting with a pause, ending resumed.
        let pauses = pauses_of(&seen, id);
        assert!(!pauses.is_empty(), "{}", backend);
        for (n, event) in pauses.iter().enumerate() {
            let want = if n % 2 == 0 {
                Seen::Pause(id)
            } else {
                Seen::Resume(id)
            };
            assert_eq!(*event, want, "{}: {:?}", backend, pauses);
        }
        assert_eq!(pauses.last(), Some(&Seen::Resume(id)), "{}", backend);
        // In order with the frames: the resume came before the frame sent after it.
        let resume = seen.iter().position(|s| *s == Seen::Resume(id)).unwrap();
        let after = seen
            .iter()
            .position(|s| *s == Seen::Frame(id, b"after".to_vec()))
            .unwrap();
        assert!(resume < after, "{}: {:?}", backend, seen);
        let stats = server.stats();
        assert!(stats.backpressure_pauses >= 1, "{}", backend);
        assert_eq!(stats.slow_consumer_closes, 0, "{}", backend);
    }
}

#[test]
fn clients_that_read_are_unaffected_on_several_workers() {
    for backend in backends() {
        // Native echo and a handler's echo, a bound a few receives above
        // high_water: pipelining clients that read are paused, never closed.
        let handlers: Vec<Option<Arc<Recorder>>> = vec![None, Some(Arc::default())];
        for handler in handlers {
            let cfg = bounded(backend, 3, 512 * KIB);
            let dyn_handler = handler
                .clone()
                .map(|h| h as Arc<dyn crate::server::Handler>);
            let server = start(cfg, dyn_handler);
            let clients: Vec<thread::JoinHandle<bool>> = (0..4)
                .map(|_| {
                    let mut client = connect(&server);
                    thread::spawn(move || echoes_while_reading(&mut client, 1024, 2048))
                })
                .collect();
            for client in clients {
                assert!(client.join().unwrap(), "{}", backend);
            }
            let stats = server.stats();
            assert_eq!(stats.slow_consumer_closes, 0, "{}", backend);
            assert!(stats.output_peak <= 512 * KIB as u64, "{}", backend);
            server.close().unwrap();
            if let Some(recorder) = handler {
                check_lifecycles(&recorder.seen());
            }
        }
    }
}

#[test]
fn clients_that_never_read_are_closed_on_every_worker() {
    for backend in backends() {
        let workers = 3;
        let max_output = 512 * KIB;
        let (server, recorder) = recording(bounded(backend, workers, max_output));
        let clients: Vec<TcpStream> = (0..2 * workers).map(|_| connect(&server)).collect();
        let ids: Vec<ConnectionId> = clients.iter().map(|c| recorder.id_of(c)).collect();
        let mut spread: Vec<u64> = ids.iter().map(|id| id % workers as u64).collect();
        spread.sort_unstable();
        spread.dedup();
        assert_eq!(spread.len(), workers, "{}: {:?}", backend, ids);
        let pushers: Vec<thread::JoinHandle<usize>> = ids
            .iter()
            .map(|&id| {
                let sender = server.sender();
                thread::spawn(move || {
                    let payload = vec![b'q'; 16 * KIB - 1];
                    let mut pushed = 0;
                    while pushed < 128 * MIB {
                        match sender.send(id, &payload) {
                            Ok(()) => pushed += 16 * KIB,
                            Err(_) => break,
                        }
                    }
                    pushed
                })
            })
            .collect();
        for pusher in pushers {
            assert!(pusher.join().unwrap() < 128 * MIB, "{}", backend);
        }
        for &id in &ids {
            assert_eq!(
                recorder.reason_of(id),
                CloseReason::SlowConsumer,
                "{}",
                backend
            );
        }
        let per_worker = server.worker_stats();
        for stats in &per_worker {
            assert_eq!(stats.slow_consumer_closes, 2, "{}", backend);
            assert!(stats.output_peak <= max_output as u64, "{}", backend);
        }
        drop(clients);
        server.close().unwrap();
        check_lifecycles(&recorder.seen());
    }
}
