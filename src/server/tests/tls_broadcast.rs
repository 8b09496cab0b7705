//! Broadcasts to TLS connections, on every backend compiled in (so under Wine
//! for IOCP too): many broadcasts queued behind each other are sent as one
//! gathered send, which a TLS connection seals as one plaintext; every client
//! decrypts every line, byte-exact and in order.

use std::io::Read;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::backends;
use super::events::lines;
use super::tls::{settle, tls_config, tls_connect, TlsRecorder};
use crate::server::Server;
use crate::tls::test_certs::{client_config, CertFiles, ClientCert};

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
