//! Bad input on a TLS port, on every backend compiled in (under Wine for IOCP
//! too): a plaintext client, random bytes instead of a ClientHello, a client
//! that sends nothing (cut at the handshake timeout), a handshake abandoned
//! midway, no client certificate or one from another CA under mutual TLS, a
//! truncated record. Each closes only its connection (a good client beside it
//! goes on echoing), counts `tls_errors`, makes no event when it never opened,
//! and leaks nothing (`connections_open` back to the good client alone).

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConnection;

use super::tls::{
    handshake, round_trip, settle, tls_client, tls_config, tls_connect, TlsRecorder, TlsStream,
};
use super::{backends, closed_by_server, connect, pattern, start};
use crate::framing::Framing;
use crate::port::Backend;
use crate::server::{CloseReason, Server};
use crate::tls::test_certs::{client_config, server_name, CertFiles, ClientCert};
use crate::tls::TlsFailure;

/// A TLS server with a recorder, and a good client of it.
struct Scene {
    server: Server,
    recorder: Arc<TlsRecorder>,
    good: TlsStream,
    _files: CertFiles,
}

fn scene(backend: Backend, mutual: bool, handshake_timeout: Option<Duration>) -> Scene {
    let files = CertFiles::new();
    let mut cfg = tls_config(backend, Framing::raw(), &files, mutual, &[]);
    if let Some(t) = handshake_timeout {
        cfg.tls.handshake_timeout = t;
    }
    let recorder = Arc::new(TlsRecorder::default());
    let server = start(cfg, Some(recorder.clone()));
    let cert = if mutual {
        ClientCert::Good
    } else {
        ClientCert::Without
    };
    let good = tls_connect(&server, client_config(None, &[], cert));
    Scene {
        server,
        recorder,
        good,
        _files: files,
    }
}

impl Scene {
    /// The bad connection is gone (the `tls_errors`-th closed), counted
    /// once; the good client still echoes.
    #[track_caller]
    fn only_that_one_closed(&mut self, tls_errors: u64, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.server.stats().connections_closed < tls_errors {
            assert!(
                Instant::now() < deadline,
                "{}: {:?}",
                what,
                self.server.stats()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        settle(&self.server, 1);
        let stats = self.server.stats();
        assert_eq!(stats.tls_errors, tls_errors, "{}: {:?}", what, stats);
        assert_eq!(
            round_trip(&mut self.good, b"still here"),
            b"still here",
            "{}",
            what
        );
    }

    /// Close the server: nothing leaked, and only the good client opened.
    #[track_caller]
    fn finish(self, opened: usize) {
        self.server.close().unwrap();
        let stats = self.server.stats();
        assert_eq!(stats.connections_open, 0);
        assert_eq!(self.recorder.opened.lock().unwrap().len(), opened);
        assert_eq!(self.recorder.closed.lock().unwrap().len(), opened);
    }
}

#[test]
fn a_plaintext_client_and_random_bytes_are_cut() {
    for backend in backends() {
        let mut scene = scene(backend, false, None);
        let junk: [&[u8]; 3] = [
            b"hello\n",
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
            &pattern(3000, 7),
        ];
        for (n, bytes) in junk.iter().enumerate() {
            let mut plain = connect(&scene.server);
            plain.write_all(bytes).unwrap();
            assert!(closed_by_server(&mut plain), "{} {:?}", backend, bytes);
            scene.only_that_one_closed(n as u64 + 1, "junk");
        }
        scene.finish(1);
    }
}

#[test]
fn a_silent_client_is_cut_at_the_handshake_timeout() {
    for backend in backends() {
        let mut scene = scene(backend, false, Some(Duration::from_millis(300)));
        let mut silent = connect(&scene.server);
        assert!(closed_by_server(&mut silent), "{}", backend);
        scene.only_that_one_closed(1, "silent");
        // The good client, past its handshake, is not cut by that timeout.
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(round_trip(&mut scene.good, b"later"), b"later");
        assert_eq!(scene.server.stats().idle_timeouts, 0);
        scene.finish(1);
    }
}

#[test]
fn a_handshake_abandoned_midway_is_cut() {
    for backend in backends() {
        let mut scene = scene(backend, false, None);
        // Half a ClientHello, then the end of the stream.
        let mut tcp = connect(&scene.server);
        let mut client =
            ClientConnection::new(client_config(None, &[], ClientCert::Without), server_name())
                .unwrap();
        let mut hello = Vec::new();
        client.write_tls(&mut hello).unwrap();
        tcp.write_all(&hello[..hello.len() / 2]).unwrap();
        tcp.shutdown(Shutdown::Write).unwrap();
        assert!(closed_by_server(&mut tcp), "{}", backend);
        scene.only_that_one_closed(1, "half a hello");
        // A whole ClientHello, the server's answer read, then the end.
        let mut stream = tls_client(&scene.server, client_config(None, &[], ClientCert::Without));
        stream.conn.write_tls(&mut stream.sock).unwrap();
        stream.conn.read_tls(&mut stream.sock).unwrap();
        stream.sock.shutdown(Shutdown::Write).unwrap();
        assert!(closed_by_server(&mut stream.sock), "{}", backend);
        scene.only_that_one_closed(2, "after the server's hello");
        // A whole ClientHello, the server's answer read, then a reset.
        let mut stream = tls_client(&scene.server, client_config(None, &[], ClientCert::Without));
        stream.conn.write_tls(&mut stream.sock).unwrap();
        stream.conn.read_tls(&mut stream.sock).unwrap();
        socket2::SockRef::from(&stream.sock)
            .set_linger(Some(Duration::from_secs(0)))
            .unwrap();
        drop(stream);
        scene.only_that_one_closed(3, "reset");
        scene.finish(1);
    }
}

#[test]
fn mutual_tls_refuses_a_client_without_a_certificate_or_with_a_strangers() {
    for backend in backends() {
        let mut scene = scene(backend, true, None);
        for (n, cert) in [ClientCert::Without, ClientCert::Stranger]
            .iter()
            .enumerate()
        {
            let mut stream = tls_client(&scene.server, client_config(None, &[], *cert));
            // TLS 1.3: the client finishes before the server checks its
            // certificate; the refusal (an alert) comes on its next read.
            let refused = handshake(&mut stream).is_err() || closed_by_server(&mut stream);
            assert!(refused, "{} {:?}", backend, cert);
            scene.only_that_one_closed(n as u64 + 1, "refused certificate");
        }
        scene.finish(1);
    }
}

#[test]
fn a_truncated_record_is_a_tls_failure_with_its_close_reason() {
    for backend in backends() {
        let mut scene = scene(backend, false, None);
        let mut stream = tls_connect(&scene.server, client_config(None, &[], ClientCert::Without));
        assert_eq!(round_trip(&mut stream, b"first"), b"first");
        stream.conn.writer().write_all(b"cut short").unwrap();
        let mut record = Vec::new();
        stream.conn.write_tls(&mut record).unwrap();
        stream.sock.write_all(&record[..record.len() - 3]).unwrap();
        stream.sock.shutdown(Shutdown::Write).unwrap();
        let mut sock: TcpStream = stream.sock;
        assert!(closed_by_server(&mut sock), "{}", backend);
        scene.only_that_one_closed(1, "truncated");
        // It had opened: its close says why.
        let truncated = CloseReason::Tls(TlsFailure::Truncated);
        assert!(scene.recorder.closed.lock().unwrap().contains(&truncated));
        scene.finish(2);
    }
}
