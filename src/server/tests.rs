//! The server over real loopback sockets, on every backend compiled in: echo in
//! each framing, a Rust handler, limits, and shutdown with connections open.
//! Plain `std::net` clients; these also run under Wine for IOCP.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use super::{Batch, Config, Handler, Server};
use crate::framing::{ByteOrder, Framing};
use crate::port::{Backend, BackendChoice};

mod bound;
mod broadcast;
mod closing;
mod events;
mod faults;
mod proxy;
mod tls;
mod tls_broadcast;
mod tls_faults;
#[cfg(target_os = "linux")]
mod unix;

fn backends() -> Vec<Backend> {
    let all = [Backend::IoUring, Backend::Epoll, Backend::Iocp];
    all.iter()
        .copied()
        .filter(|b| b.compiled_in() && BackendChoice::Forced(*b).resolve().is_ok())
        .collect()
}

fn config(backend: Backend, framing: Framing) -> Config {
    Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        framing,
        workers: 2,
        backend: BackendChoice::Forced(backend),
        ..Config::default()
    }
}

#[track_caller]
fn start(config: Config, handler: Option<Arc<dyn Handler>>) -> Server {
    match Server::start(config, handler) {
        Ok(server) => server,
        Err(e) => panic!("server did not start: {}", e),
    }
}

fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.local_addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// Read until `n` bytes arrived (or EOF/timeout: then fewer).
fn read_n(stream: &mut impl Read, n: usize) -> Vec<u8> {
    let mut got = vec![0; n];
    let mut filled = 0;
    while filled < n {
        match stream.read(&mut got[filled..]) {
            Ok(0) => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
            Ok(k) => filled += k,
        }
    }
    got.truncate(filled);
    got
}

/// Whether the server closed the connection (EOF, reset, or over TLS an
/// alert) within the read timeout, reading and dropping what comes before.
fn closed_by_server(stream: &mut impl Read) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return e.kind() != ErrorKind::WouldBlock && e.kind() != ErrorKind::TimedOut,
        }
    }
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x % 251) as u8
        })
        .collect()
}

#[test]
fn raw_echo_many_clients_byte_exact() {
    for backend in backends() {
        let server = start(config(backend, Framing::raw()), None);
        let addr = server.local_addr();
        let clients: Vec<_> = (0..20)
            .map(|i| {
                std::thread::spawn(move || {
                    let mut stream = TcpStream::connect(addr).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(20)))
                        .unwrap();
                    let data = pattern(100_000 + i * 997, i as u32);
                    let reader = stream.try_clone().unwrap();
                    let expected = data.len();
                    let read = std::thread::spawn(move || {
                        let mut reader = reader;
                        read_n(&mut reader, expected)
                    });
                    for chunk in data.chunks(7_001) {
                        stream.write_all(chunk).unwrap();
                    }
                    assert_eq!(read.join().unwrap(), data);
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        // Send completions may be counted just after the client saw the bytes:
        // the counters are final once the server is closed.
        server.close().unwrap();
        let stats = server.stats();
        assert_eq!(stats.connections_accepted, 20, "{}", backend);
        assert_eq!(stats.bytes_received, stats.bytes_sent, "{}", backend);
    }
}

#[test]
fn lines_and_length_prefixed_echo() {
    let framings = vec![
        Framing::lines(b"\r\n").unwrap(),
        Framing::length_prefixed(2, ByteOrder::Little).unwrap(),
        Framing::length_prefixed(4, ByteOrder::Big).unwrap(),
    ];
    for backend in backends() {
        for framing in &framings {
            let server = start(config(backend, framing.clone()), None);
            let mut stream = connect(&server);
            let mut wire = Vec::new();
            for i in 0..50 {
                let payload = format!("message {} {}", i, "x".repeat(i * 13));
                framing.encode_into(payload.as_bytes(), &mut wire).unwrap();
            }
            // Sent in odd-sized chunks so frames straddle reads.
            for chunk in wire.chunks(37) {
                stream.write_all(chunk).unwrap();
            }
            let got = read_n(&mut stream, wire.len());
            assert_eq!(
                got.len(),
                wire.len(),
                "{} {:?} {:?}",
                backend,
                framing,
                server.stats()
            );
            assert!(got == wire, "{} {:?}", backend, framing);
            assert_eq!(server.stats().frames_received, 50);
            server.close().unwrap();
        }
    }
}

struct Upper;

impl Handler for Upper {
    fn handle(&self, batch: &mut Batch) {
        for i in 0..batch.len() {
            let frame = batch.frame(i).to_ascii_uppercase();
            if frame == b"FAIL" {
                batch.fail(i);
            } else if frame != b"QUIET" {
                batch.reply(i, &frame);
            }
        }
    }
}

#[test]
fn handler_replies_in_order_and_fails_only_its_connection() {
    for backend in backends() {
        let framing = Framing::lines(b"\n").unwrap();
        let server = start(config(backend, framing), Some(Arc::new(Upper)));
        let mut good = connect(&server);
        let mut bad = connect(&server);
        good.write_all(b"one\nquiet\ntwo\n").unwrap();
        assert_eq!(read_n(&mut good, 8), b"ONE\nTWO\n");
        bad.write_all(b"fail\n").unwrap();
        assert!(closed_by_server(&mut bad), "{}", backend);
        good.write_all(b"three\n").unwrap();
        assert_eq!(read_n(&mut good, 6), b"THREE\n");
        assert_eq!(server.stats().handler_errors, 1);
        server.close().unwrap();
    }
}

/// Counts its calls; answers like `Upper`.
#[derive(Default)]
struct CountedUpper(std::sync::atomic::AtomicU64);

impl Handler for CountedUpper {
    fn handle(&self, batch: &mut Batch) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Upper.handle(batch);
    }
}

#[test]
fn every_handler_call_is_timed_and_the_native_echo_times_none() {
    for backend in backends() {
        let framing = Framing::lines(b"\n").unwrap();
        let counted = Arc::new(CountedUpper::default());
        let server = start(config(backend, framing.clone()), Some(counted.clone()));
        let mut client = connect(&server);
        // One frame at a time: every call carries one frame.
        for _ in 0..20 {
            client.write_all(b"ping\n").unwrap();
            assert_eq!(read_n(&mut client, 5), b"PING\n");
        }
        client.write_all(b"a\nb\nc\n").unwrap();
        assert_eq!(read_n(&mut client, 6), b"A\nB\nC\n");
        server.close().unwrap();
        let times = server.stats().handler_time;
        let calls = counted.0.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(times.count(), calls, "{}", backend);
        assert!((21..=23).contains(&calls), "{}: {} calls", backend, calls);
        let per_worker: u64 = server
            .worker_stats()
            .iter()
            .map(|s| s.handler_time.count())
            .sum();
        assert_eq!(per_worker, calls, "{}", backend);

        let echo = start(config(backend, framing), None);
        let mut client = connect(&echo);
        client.write_all(b"ping\n").unwrap();
        assert_eq!(read_n(&mut client, 5), b"ping\n");
        echo.close().unwrap();
        assert_eq!(echo.stats().handler_time.count(), 0, "{}", backend);
    }
}

#[test]
fn oversized_frame_closes_only_its_connection() {
    for backend in backends() {
        let framing = Framing::length_prefixed(4, ByteOrder::Big).unwrap();
        let mut cfg = config(backend, framing.clone());
        cfg.max_frame = 1024;
        let server = start(cfg, None);
        let mut good = connect(&server);
        let mut bad = connect(&server);
        bad.write_all(&[0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3]).unwrap();
        assert!(closed_by_server(&mut bad), "{}", backend);
        let frame = framing.encode(b"still here").unwrap();
        good.write_all(&frame).unwrap();
        assert_eq!(read_n(&mut good, frame.len()), frame);
        assert_eq!(server.stats().frame_errors, 1);
        server.close().unwrap();
    }
}

#[test]
fn half_close_gets_every_reply_then_eof() {
    for backend in backends() {
        let framing = Framing::lines(b"\n").unwrap();
        let server = start(config(backend, framing), None);
        let mut stream = connect(&server);
        stream.write_all(b"a\nb\nlast without delimiter").unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"a\nb\nlast without delimiter\n", "{}", backend);
        server.close().unwrap();
    }
}

#[test]
fn max_connections_refuses_the_extra_ones() {
    for backend in backends() {
        let mut cfg = config(backend, Framing::raw());
        cfg.max_connections = 2;
        let server = start(cfg, None);
        let mut first = connect(&server);
        let mut second = connect(&server);
        first.write_all(b"1").unwrap();
        second.write_all(b"2").unwrap();
        assert_eq!(read_n(&mut first, 1), b"1");
        assert_eq!(read_n(&mut second, 1), b"2");
        let mut third = connect(&server);
        assert!(closed_by_server(&mut third), "{}", backend);
        assert_eq!(server.stats().connections_rejected, 1);
        drop(first);
        // Below the limit again: a new connection is served.
        let mut ok = false;
        for _ in 0..100 {
            let mut fourth = connect(&server);
            if fourth.write_all(b"4").is_ok() && read_n(&mut fourth, 1) == b"4" {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(ok, "{}: accepting did not resume below the limit", backend);
        server.close().unwrap();
    }
}

#[test]
fn idle_connections_are_closed() {
    for backend in backends() {
        let mut cfg = config(backend, Framing::raw());
        cfg.idle_timeout = Some(Duration::from_millis(200));
        let server = start(cfg, None);
        let mut idle = connect(&server);
        assert!(closed_by_server(&mut idle), "{}", backend);
        assert_eq!(server.stats().idle_timeouts, 1);
        server.close().unwrap();
    }
}

#[test]
fn a_frame_trickled_byte_by_byte_times_out_while_whole_messages_do_not() {
    for backend in backends() {
        let mut cfg = config(backend, Framing::lines(b"\n").unwrap());
        cfg.idle_timeout = Some(Duration::from_millis(400));
        let server = start(cfg, None);
        let mut trickler = connect(&server);
        let mut talker = connect(&server);
        let mut cut = false;
        for _ in 0..40 {
            // Each byte arrives well inside the timeout; no line ever completes.
            if trickler.write_all(b"x").is_err() {
                cut = true;
                break;
            }
            talker.write_all(b"ping\n").unwrap();
            assert_eq!(read_n(&mut talker, 5), b"ping\n", "{}", backend);
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            cut || closed_by_server(&mut trickler),
            "{}: trickler kept",
            backend
        );
        talker.write_all(b"still here\n").unwrap();
        assert_eq!(read_n(&mut talker, 11), b"still here\n", "{}", backend);
        assert_eq!(server.stats().idle_timeouts, 1, "{}", backend);
        server.close().unwrap();
    }
}

#[test]
fn close_with_open_connections_and_ops_in_flight() {
    for backend in backends() {
        let server = start(config(backend, Framing::raw()), None);
        let mut streams: Vec<TcpStream> = (0..50).map(|_| connect(&server)).collect();
        for s in &mut streams {
            s.write_all(b"ping").unwrap();
            assert_eq!(read_n(s, 4), b"ping");
        }
        // Every connection now has a recv in flight.
        server.close().unwrap();
        assert_eq!(server.stats().connections_open, 0, "{}", backend);
        assert_eq!(server.stats().connections_closed, 50);
        for s in &mut streams {
            assert!(closed_by_server(s), "{}", backend);
        }
        assert!(server.wait(Duration::from_secs(0)));
    }
}

#[test]
fn bind_failure_is_the_os_error() {
    for backend in backends() {
        let server = start(config(backend, Framing::raw()), None);
        let mut cfg = config(backend, Framing::raw());
        cfg.addr = server.local_addr();
        match Server::start(cfg, None) {
            Err(super::StartError::Io(e)) => {
                assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{}", backend)
            }
            Err(other) => panic!("expected an io error, got {}", other),
            Ok(_) => panic!("bound a busy port"),
        }
    }
}

#[test]
fn bad_settings_name_the_setting() {
    let mut cfg = Config {
        workers: 0,
        ..Config::default()
    };
    assert_eq!(cfg.validate().unwrap_err().name, "workers");
    cfg.workers = 1;
    cfg.low_water = cfg.high_water;
    assert_eq!(cfg.validate().unwrap_err().name, "low_water");
}

/// Echoes, and closes its own server on "quit" (as a handler may, on a command).
struct Quitter {
    server: std::sync::Mutex<std::sync::Weak<Server>>,
}

impl Handler for Quitter {
    fn handle(&self, batch: &mut Batch) {
        for i in 0..batch.len() {
            if batch.frame(i) == b"quit" {
                let server = self.server.lock().unwrap().upgrade();
                if let Some(server) = server {
                    server.close().unwrap();
                }
            }
            let frame = batch.frame(i).to_vec();
            batch.reply(i, &frame);
        }
    }
}

#[test]
fn a_handler_may_close_its_own_server() {
    for backend in backends() {
        let quitter = Arc::new(Quitter {
            server: std::sync::Mutex::new(std::sync::Weak::new()),
        });
        let framing = Framing::lines(b"\n").unwrap();
        let server = Arc::new(start(config(backend, framing), Some(quitter.clone())));
        *quitter.server.lock().unwrap() = Arc::downgrade(&server);
        let mut other = connect(&server);
        other.write_all(b"hello\n").unwrap();
        assert_eq!(read_n(&mut other, 6), b"hello\n");
        let mut client = connect(&server);
        client.write_all(b"quit\n").unwrap();
        // The reply to "quit" still goes out, then the server closes everything.
        assert_eq!(read_n(&mut client, 5), b"quit\n", "{}", backend);
        assert!(closed_by_server(&mut client), "{}", backend);
        assert!(closed_by_server(&mut other), "{}", backend);
        assert!(server.wait(Duration::from_secs(20)), "{}", backend);
        assert_eq!(server.close(), Ok(()), "{}", backend);
        assert_eq!(server.failure(), None);
    }
}

/// Panics on "panic", as a bug in a Rust handler would.
struct Panicky;

impl Handler for Panicky {
    fn handle(&self, batch: &mut Batch) {
        for i in 0..batch.len() {
            if batch.frame(i) == b"panic" {
                panic!("the handler has a bug");
            }
            let frame = batch.frame(i).to_vec();
            batch.reply(i, &frame);
        }
    }
}

#[test]
fn a_panicking_worker_stops_the_server_and_close_reports_it() {
    for backend in backends() {
        let framing = Framing::lines(b"\n").unwrap();
        let server = start(config(backend, framing), Some(Arc::new(Panicky)));
        let mut client = connect(&server);
        client.write_all(b"fine\n").unwrap();
        assert_eq!(read_n(&mut client, 5), b"fine\n");
        client.write_all(b"panic\n").unwrap();
        // No hang: the server stops by itself, and says why.
        assert!(server.wait(Duration::from_secs(20)), "{}", backend);
        let failure = server.close().unwrap_err();
        assert!(failure.contains("panicked"), "{}: {}", backend, failure);
        assert!(failure.contains("the handler has a bug"), "{}", failure);
        assert_eq!(server.failure(), Some(failure));
    }
}

/// Answers a batch's frames last first, and the odd ones twice.
struct Backwards;

impl Handler for Backwards {
    fn handle(&self, batch: &mut Batch) {
        for i in (0..batch.len()).rev() {
            let frame = batch.frame(i).to_vec();
            if frame.len() % 2 == 1 {
                batch.reply(i, b"first answer, replaced");
            }
            batch.reply(i, &frame);
        }
    }
}

#[test]
fn replies_go_out_in_frame_order_whatever_order_the_handler_gives_them() {
    for backend in backends() {
        let framing = Framing::length_prefixed(2, ByteOrder::Little).unwrap();
        let server = start(config(backend, framing.clone()), Some(Arc::new(Backwards)));
        let mut client = connect(&server);
        let mut wire = Vec::new();
        for n in 0..200usize {
            let payload = vec![b'a' + (n % 26) as u8; n * 37 % 1000];
            framing.encode_into(&payload, &mut wire).unwrap();
        }
        client.write_all(&wire).unwrap();
        assert!(read_n(&mut client, wire.len()) == wire, "{}", backend);
        assert_eq!(server.stats().frames_sent, 200);
        server.close().unwrap();
    }
}
