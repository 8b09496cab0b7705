//! The server over TLS, with real rustls clients on loopback sockets, on every
//! backend compiled in (under Wine for IOCP too): echo byte-exact in every
//! framing with random sizes, natively and through a handler; TLS 1.2 and 1.3;
//! ALPN; mutual TLS; the `Open` event after the handshake with what it
//! negotiated; `close_notify` on a clean close; many handshakes at once. The
//! bad inputs are in `tls_faults`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, ClientConnection, StreamOwned, SupportedProtocolVersion};

use super::{backends, config, pattern, start};
use crate::framing::{ByteOrder, Framing};
use crate::port::Backend;
use crate::server::{Batch, CloseReason, Config, Event, Handler, Server, StartError};
use crate::tls::test_certs::{certs, client_config, server_name, CertFiles, ClientCert};
use crate::tls::{ServerTls, TlsInfo};

/// A TLS client over a blocking socket.
pub(super) type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// A server configuration serving TLS with the test certificates.
pub(super) fn tls_config(
    backend: Backend,
    framing: Framing,
    files: &CertFiles,
    mutual: bool,
    alpn: &[&str],
) -> Config {
    Config {
        tls: files.settings(mutual, alpn),
        ..config(backend, framing)
    }
}

/// A TLS client of `server`, its handshake not yet made.
pub(super) fn tls_client(server: &Server, client: Arc<ClientConfig>) -> TlsStream {
    let tcp = TcpStream::connect(server.local_addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let conn = ClientConnection::new(client, server_name()).unwrap();
    StreamOwned::new(conn, tcp)
}

/// Run the client's handshake to its end.
pub(super) fn handshake(stream: &mut TlsStream) -> std::io::Result<()> {
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(())
}

/// A TLS client of `server` with its handshake made.
#[track_caller]
pub(super) fn tls_connect(server: &Server, client: Arc<ClientConfig>) -> TlsStream {
    let mut stream = tls_client(server, client);
    handshake(&mut stream).unwrap();
    stream
}

/// Wait (30 s at most) until `server` has `open` connections; its counters
/// are then final for those that closed.
#[track_caller]
pub(super) fn settle(server: &Server, open: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.stats().connections_open != open {
        assert!(Instant::now() < deadline, "{:?}", server.stats());
        thread::sleep(Duration::from_millis(5));
    }
}

/// Write `message`, read back as many bytes.
#[track_caller]
pub(super) fn round_trip(stream: &mut TlsStream, message: &[u8]) -> Vec<u8> {
    stream.write_all(message).unwrap();
    stream.flush().unwrap();
    let mut got = vec![0; message.len()];
    stream.read_exact(&mut got).unwrap();
    got
}

/// Echoes every frame through the batch, and records each `Open` event's TLS.
#[derive(Default)]
pub(super) struct TlsRecorder {
    pub(super) opened: Mutex<Vec<Option<TlsInfo>>>,
    pub(super) closed: Mutex<Vec<CloseReason>>,
}

impl Handler for TlsRecorder {
    fn wants_events(&self) -> bool {
        true
    }

    fn handle(&self, batch: &mut Batch) {
        for (_, event) in batch.events().to_vec() {
            match event {
                Event::Open { tls, .. } => self.opened.lock().unwrap().push(tls.map(|t| *t)),
                Event::Close { reason, .. } => self.closed.lock().unwrap().push(reason),
                _ => {}
            }
        }
        for i in 0..batch.len() {
            let frame = batch.frame(i).to_vec();
            batch.reply(i, &frame);
        }
    }
}

/// Random sizes from `seed`: mostly small, some up to 100 KB.
fn sizes(seed: u32, n: usize) -> Vec<usize> {
    let noise = pattern(n * 2, seed);
    (0..n)
        .map(|i| {
            let x = usize::from(noise[2 * i]) * 251 + usize::from(noise[2 * i + 1]);
            if i % 5 == 0 {
                1 + x * 1_590 % 100_000
            } else {
                1 + x % 2_000
            }
        })
        .collect()
}

#[test]
fn echo_is_byte_exact_in_every_framing_natively_and_through_a_handler() {
    let files = CertFiles::new();
    let framings = [
        Framing::raw(),
        Framing::lines(b"\n").unwrap(),
        Framing::length_prefixed(4, ByteOrder::Big).unwrap(),
    ];
    let clients = if cfg!(windows) { 3 } else { 8 };
    for backend in backends() {
        for framing in &framings {
            for handler in [false, true] {
                let recorder: Option<Arc<dyn Handler>> = if handler {
                    Some(Arc::new(TlsRecorder::default()))
                } else {
                    None
                };
                let server = start(
                    tls_config(backend, framing.clone(), &files, false, &[]),
                    recorder,
                );
                let server = Arc::new(server);
                let threads: Vec<_> = (0..clients)
                    .map(|c| {
                        let (server, framing) = (Arc::clone(&server), framing.clone());
                        thread::spawn(move || {
                            let config = client_config(None, &[], ClientCert::Without);
                            let mut stream = tls_connect(&server, config);
                            for (i, size) in sizes(c as u32 + 1, 12).into_iter().enumerate() {
                                // Lines carry no newline in their payload.
                                let payload: Vec<u8> = pattern(size, (c * 100 + i) as u32)
                                    .into_iter()
                                    .map(|b| if b == b'\n' { b'.' } else { b })
                                    .collect();
                                let wire = framing.encode(&payload).unwrap();
                                let got = round_trip(&mut stream, &wire);
                                assert!(got == wire, "{} {:?} size {}", backend, framing, size);
                            }
                        })
                    })
                    .collect();
                for t in threads {
                    t.join().unwrap();
                }
                settle(&server, 0);
                let stats = server.stats();
                assert_eq!(stats.tls_handshakes, clients as u64, "{}", backend);
                assert_eq!(stats.tls_errors, 0, "{} {:?}", backend, stats);
                server.close().unwrap();
            }
        }
    }
}

#[test]
fn tls_1_2_and_1_3_negotiate_alpn_and_the_open_event_says_so() {
    let files = CertFiles::new();
    for backend in backends() {
        let recorder = Arc::new(TlsRecorder::default());
        let cfg = tls_config(backend, Framing::raw(), &files, false, &["h2", "http/1.1"]);
        let server = start(cfg, Some(recorder.clone()));
        let cases: [(&'static SupportedProtocolVersion, &str, &[&str]); 3] = [
            (&TLS13, "TLSv1.3", &["http/1.1"]),
            (&TLS12, "TLSv1.2", &["h2", "http/1.1"]),
            (&TLS13, "TLSv1.3", &[]),
        ];
        for (version, name, alpn) in cases {
            let mut stream = tls_connect(
                &server,
                client_config(Some(version), alpn, ClientCert::Without),
            );
            assert_eq!(round_trip(&mut stream, b"ping"), b"ping");
            let expected = alpn.first().map(|p| p.as_bytes().to_vec());
            assert_eq!(stream.conn.alpn_protocol().map(<[u8]>::to_vec), expected);
            let opened = recorder
                .opened
                .lock()
                .unwrap()
                .last()
                .cloned()
                .unwrap()
                .unwrap();
            assert_eq!(opened.version, name, "{}", backend);
            assert!(opened.cipher.starts_with("TLS_"), "{}", opened.cipher);
            assert_eq!(opened.alpn, expected, "{}", backend);
            assert_eq!(opened.peer_certificate, None);
        }
        server.close().unwrap();
        assert_eq!(server.stats().tls_errors, 0);
        assert_eq!(recorder.closed.lock().unwrap().len(), 3);
    }
}

#[test]
fn mutual_tls_accepts_a_good_client_certificate_and_the_open_event_carries_it() {
    let files = CertFiles::new();
    for backend in backends() {
        let recorder = Arc::new(TlsRecorder::default());
        let cfg = tls_config(backend, Framing::lines(b"\n").unwrap(), &files, true, &[]);
        let server = start(cfg, Some(recorder.clone()));
        let mut stream = tls_connect(&server, client_config(None, &[], ClientCert::Good));
        assert_eq!(round_trip(&mut stream, b"who am I\n"), b"who am I\n");
        let opened = recorder.opened.lock().unwrap()[0].clone().unwrap();
        let der = certs("client.pem")[0].as_ref().to_vec();
        assert_eq!(opened.peer_certificate, Some(der), "{}", backend);
        server.close().unwrap();
        assert_eq!(server.stats().tls_errors, 0);
    }
}

#[test]
fn a_clean_close_sends_close_notify_both_ways() {
    let files = CertFiles::new();
    for backend in backends() {
        let cfg = tls_config(backend, Framing::lines(b"\n").unwrap(), &files, false, &[]);
        let server = start(cfg, None);
        // The client's close_notify after a last line without delimiter: the
        // echo, then the server's close_notify (a clean EOF for the client).
        let mut stream = tls_connect(&server, client_config(None, &[], ClientCert::Without));
        stream.write_all(b"one\nlast").unwrap();
        stream.conn.send_close_notify();
        stream.flush().unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"one\nlast\n", "{}", backend);
        // The server closing: its close_notify, read as a clean end.
        let mut stream = tls_connect(&server, client_config(None, &[], ClientCert::Without));
        assert_eq!(round_trip(&mut stream, b"hi\n"), b"hi\n");
        server.close().unwrap();
        let mut rest = Vec::new();
        assert_eq!(stream.read_to_end(&mut rest).unwrap(), 0, "{}", backend);
        let stats = server.stats();
        assert_eq!((stats.tls_errors, stats.connections_open), (0, 0));
    }
}

#[test]
fn max_frame_holds_over_tls() {
    let files = CertFiles::new();
    for backend in backends() {
        let framing = Framing::length_prefixed(4, ByteOrder::Big).unwrap();
        let mut cfg = tls_config(backend, framing.clone(), &files, false, &[]);
        cfg.max_frame = 1024;
        let server = start(cfg, None);
        let mut good = tls_connect(&server, client_config(None, &[], ClientCert::Without));
        let mut bad = tls_connect(&server, client_config(None, &[], ClientCert::Without));
        bad.write_all(&[0, 0, 8, 0, 1, 2, 3]).unwrap();
        bad.flush().unwrap();
        let mut sink = Vec::new();
        assert!(bad.read_to_end(&mut sink).is_err() || sink.is_empty());
        let frame = framing.encode(b"still here").unwrap();
        assert_eq!(round_trip(&mut good, &frame), frame);
        settle(&server, 1);
        assert_eq!(server.stats().frame_errors, 1, "{}", backend);
        assert_eq!(server.stats().tls_errors, 0, "{}", backend);
        server.close().unwrap();
    }
}

#[test]
fn many_concurrent_handshakes() {
    let files = CertFiles::new();
    // Wine runs some 13x slower: half as many there.
    let (threads, each) = if cfg!(windows) { (10, 50) } else { (10, 100) };
    for backend in backends() {
        let server = Arc::new(start(
            tls_config(backend, Framing::raw(), &files, false, &[]),
            None,
        ));
        let config = client_config(None, &[], ClientCert::Without);
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (server, config) = (Arc::clone(&server), Arc::clone(&config));
                thread::spawn(move || {
                    // Every connection opened and its ClientHello sent first,
                    // so the server has them all handshaking at once.
                    let mut streams: Vec<TlsStream> = (0..each)
                        .map(|_| {
                            let mut s = tls_client(&server, Arc::clone(&config));
                            s.conn.write_tls(&mut s.sock).unwrap();
                            s
                        })
                        .collect();
                    for s in &mut streams {
                        handshake(s).unwrap();
                    }
                    for (i, s) in streams.iter_mut().enumerate() {
                        let message = format!("hello {}", i);
                        assert_eq!(round_trip(s, message.as_bytes()), message.as_bytes());
                    }
                    streams
                })
            })
            .collect();
        let streams: Vec<Vec<TlsStream>> = workers.into_iter().map(|t| t.join().unwrap()).collect();
        let total = (threads * each) as u64;
        assert_eq!(server.stats().tls_handshakes, total, "{}", backend);
        assert_eq!(server.stats().connections_open, total, "{}", backend);
        drop(streams);
        settle(&server, 0);
        assert_eq!(server.stats().tls_errors, 0, "{}", backend);
        server.close().unwrap();
    }
}

#[test]
fn one_loaded_tls_serves_two_servers_and_must_match_their_config() {
    let files = CertFiles::new();
    let backend = backends()[0];
    let config = tls_config(backend, Framing::raw(), &files, false, &[]);
    let loaded = ServerTls::load(&config.tls).unwrap();
    let servers: Vec<Server> = (0..2)
        .map(|_| Server::start_with_tls(config.clone(), None, loaded.clone()).unwrap())
        .collect();
    for server in &servers {
        let mut stream = tls_connect(server, client_config(None, &[], ClientCert::Without));
        assert_eq!(round_trip(&mut stream, b"shared"), b"shared");
    }
    for server in servers {
        server.close().unwrap();
    }
    // Loaded TLS for a plain config, or none for a TLS one: refused.
    for (config, loaded) in [
        (super::config(backend, Framing::raw()), loaded),
        (config, None),
    ] {
        match Server::start_with_tls(config, None, loaded) {
            Err(StartError::Config(e)) => assert_eq!(e.name, "tls_cert"),
            other => panic!("{:?}", other.map(|s| s.local_addr())),
        }
    }
}
