//! Pushed output and the limits over TLS, on every backend compiled in (so
//! under Wine for IOCP too): many broadcasts queued behind each other are sent
//! as one gathered send, which a TLS connection seals as one plaintext (every
//! client decrypts every line, byte-exact and in order); a TLS client that
//! never reads is closed as a slow consumer at `max_output`; an idle TLS
//! connection is closed at the idle timeout, as plain ones are.

use std::io::Read;
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::{ClientConnection, StreamOwned};
use socket2::{Domain, Socket, Type};

use super::events::lines;
use super::tls::{handshake, round_trip, settle, tls_config, tls_connect, TlsRecorder, TlsStream};
use super::{backends, closed_by_server};
use crate::server::{CloseReason, Server};
use crate::tls::test_certs::{client_config, server_name, CertFiles, ClientCert};

#[test]
fn many_broadcasts_reach_every_tls_client_byte_exact_and_in_order() {
    let files = CertFiles::new();
    for backend in backends() {
        let recorder = Arc::new(TlsRecorder::default());
        let cfg = tls_config(backend, lines(), &files, false, &[]);
        let server = Server::start(cfg, Some(Arc::clone(&recorder) as _)).unwrap();
        let client = client_config(None, &[], ClientCert::Without);
        let mut clients: Vec<_> = (0..4)
            .map(|_| tls_connect(&server, Arc::clone(&client)))
            .collect();
        // Broadcasts reach connections whose Open event was made.
        let deadline = Instant::now() + Duration::from_secs(20);
        while recorder.opened.lock().unwrap().len() < clients.len() {
            assert!(
                Instant::now() < deadline,
                "{}: not every client opened",
                backend
            );
            thread::sleep(Duration::from_millis(2));
        }
        let sender = server.sender();
        let mut want = Vec::new();
        for i in 0..3000usize {
            // Mostly small lines (many per gathered send), a few of 20 KiB.
            let len = if i % 500 == 7 { 20 << 10 } else { 1 + i % 90 };
            let payload: Vec<u8> = (0..len).map(|j| b'a' + ((i + j) % 26) as u8).collect();
            assert_eq!(sender.broadcast(&payload, &[]), Ok(clients.len()));
            want.extend_from_slice(&payload);
            want.push(b'\n');
        }
        for (n, stream) in clients.iter_mut().enumerate() {
            let mut got = vec![0; want.len()];
            stream.read_exact(&mut got).unwrap();
            assert!(got == want, "{}: client {} got other bytes", backend, n);
        }
        drop(clients);
        settle(&server, 0);
        assert_eq!(server.stats().tls_errors, 0, "{}", backend);
        server.close().unwrap();
    }
}

/// A TLS client with a small receive window (so pushed output queues on the
/// server soon), its handshake made.
fn small_window_tls_client(server: &Server) -> TlsStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(64 << 10).unwrap();
    socket.connect(&server.local_addr().into()).unwrap();
    let tcp: TcpStream = socket.into();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let client = client_config(None, &[], ClientCert::Without);
    let conn = ClientConnection::new(client, server_name()).unwrap();
    let mut stream = StreamOwned::new(conn, tcp);
    handshake(&mut stream).unwrap();
    stream
}

/// Wait (20 s at most) until `recorder` saw `n` opens.
fn wait_opened(recorder: &TlsRecorder, n: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while recorder.opened.lock().unwrap().len() < n {
        assert!(
            Instant::now() < deadline,
            "{}: not every client opened",
            what
        );
        thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_tls_client_that_never_reads_is_closed_at_max_output() {
    let files = CertFiles::new();
    for backend in backends() {
        let recorder = Arc::new(TlsRecorder::default());
        let mut cfg = tls_config(backend, lines(), &files, false, &[]);
        cfg.high_water = 64 << 10;
        cfg.low_water = 16 << 10;
        cfg.max_output = 1 << 20;
        let server = Server::start(cfg, Some(Arc::clone(&recorder) as _)).unwrap();
        let idle = small_window_tls_client(&server);
        wait_opened(&recorder, 1, &backend.to_string());
        let sender = server.sender();
        let payload = vec![b'x'; (64 << 10) - 1];
        let mut sent = 0usize;
        // Far more than the bound and the socket buffers together: the
        // connection must be closed (a broadcast then reaches nobody).
        while sender.broadcast(&payload, &[]) == Ok(1) {
            sent += payload.len();
            assert!(sent < 128 << 20, "{}: never closed", backend);
        }
        settle(&server, 0);
        let stats = server.stats();
        assert_eq!(stats.slow_consumer_closes, 1, "{}: {:?}", backend, stats);
        assert_eq!(stats.tls_errors, 0, "{}: {:?}", backend, stats);
        assert_eq!(
            recorder.closed.lock().unwrap().as_slice(),
            &[CloseReason::SlowConsumer],
            "{}",
            backend
        );
        drop(idle);
        server.close().unwrap();
    }
}

#[test]
fn an_idle_tls_connection_is_closed_at_the_idle_timeout() {
    let files = CertFiles::new();
    for backend in backends() {
        let recorder = Arc::new(TlsRecorder::default());
        let mut cfg = tls_config(backend, lines(), &files, false, &[]);
        cfg.idle_timeout = Some(Duration::from_millis(300));
        let server = Server::start(cfg, Some(Arc::clone(&recorder) as _)).unwrap();
        let client = client_config(None, &[], ClientCert::Without);
        let mut stream = tls_connect(&server, client);
        assert_eq!(round_trip(&mut stream, b"once\n"), b"once\n");
        // Then nothing: the server ends the session on its own.
        assert!(closed_by_server(&mut stream), "{}", backend);
        settle(&server, 0);
        let stats = server.stats();
        assert_eq!(stats.idle_timeouts, 1, "{}: {:?}", backend, stats);
        assert_eq!(stats.tls_errors, 0, "{}: {:?}", backend, stats);
        assert_eq!(
            recorder.closed.lock().unwrap().as_slice(),
            &[CloseReason::IdleTimeout],
            "{}",
            backend
        );
        server.close().unwrap();
    }
}
