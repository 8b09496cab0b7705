//! The PROXY protocol on the server (`proxy_protocol`), over real loopback
//! sockets on every backend compiled in (under Wine for IOCP too): v1 and v2
//! headers, IPv4 and IPv6, name the peer of the `Open` event; `LOCAL` and
//! `UNKNOWN` keep the real one; the bytes after a header are the stream; a
//! header trickled in tiny writes; each bad case (untrusted peer, malformed,
//! too long, missing, cut short, too slow) closes only its connection, with
//! no event, counted in `proxy_errors`; TLS after the header (in the same
//! segment too).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::{ClientConnection, StreamOwned};

use super::events::{Recorder, Seen};
use super::tls::{handshake, tls_config};
use super::{backends, closed_by_server, config, connect, read_n, start};
use crate::framing::Framing;
use crate::port::Backend;
use crate::proxy::tests::v2;
use crate::server::{Config, Handler, Server};
use crate::tls::test_certs::{client_config, server_name, CertFiles, ClientCert};

fn proxy_config(backend: Backend) -> Config {
    Config {
        proxy_protocol: true,
        ..config(backend, Framing::raw())
    }
}

/// A v2 `PROXY` header naming `source` (to `destination` of its family).
fn v2_proxy(source: SocketAddr) -> Vec<u8> {
    let mut body = Vec::new();
    match source {
        SocketAddr::V4(a) => {
            body.extend_from_slice(&a.ip().octets());
            body.extend_from_slice(&[198, 51, 100, 7]);
            body.extend_from_slice(&a.port().to_be_bytes());
            body.extend_from_slice(&443u16.to_be_bytes());
            // A TLV, skipped.
            body.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']);
            v2(0x21, 0x11, &body)
        }
        SocketAddr::V6(a) => {
            body.extend_from_slice(&a.ip().octets());
            body.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            body.extend_from_slice(&a.port().to_be_bytes());
            body.extend_from_slice(&443u16.to_be_bytes());
            v2(0x21, 0x21, &body)
        }
    }
}

/// A v1 header naming `source`.
fn v1_proxy(source: SocketAddr) -> Vec<u8> {
    match source {
        SocketAddr::V4(a) => format!("PROXY TCP4 {} 198.51.100.7 {} 443\r\n", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("PROXY TCP6 {} 2001:db8::2 {} 443\r\n", a.ip(), a.port()),
    }
    .into_bytes()
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// Wait (30 s at most) until the server counted `n` PROXY errors and has
/// `open` connections.
#[track_caller]
fn settle(server: &Server, errors: u64, open: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = server.stats();
        if stats.proxy_errors == errors && stats.connections_open == open {
            return;
        }
        assert!(Instant::now() < deadline, "{:?}", stats);
        thread::sleep(Duration::from_millis(5));
    }
}

/// Send `header` then `message` (in one write if `together`), read the echo.
#[track_caller]
fn echo_behind(stream: &mut TcpStream, header: &[u8], message: &[u8], together: bool) {
    if together {
        let mut both = header.to_vec();
        both.extend_from_slice(message);
        stream.write_all(&both).unwrap();
    } else {
        stream.write_all(header).unwrap();
        stream.write_all(message).unwrap();
    }
    assert_eq!(read_n(stream, message.len()), message);
}

#[test]
fn headers_name_the_peer_of_the_open_event() {
    let sources = [addr("192.0.2.1:40000"), addr("[2001:db8::1]:5555")];
    for backend in backends() {
        let recorder = Arc::new(Recorder::default());
        let handler: Arc<dyn Handler> = recorder.clone();
        let server = start(proxy_config(backend), Some(handler));
        for (i, source) in sources.iter().enumerate() {
            for (header, together) in [(v1_proxy(*source), true), (v2_proxy(*source), i == 0)] {
                let mut client = connect(&server);
                echo_behind(&mut client, &header, b"hello", together);
                recorder.wait_until("the open event", |seen| {
                    seen.iter()
                        .any(|s| matches!(s, Seen::Open(_, p, _) if p.inet() == Some(*source)))
                });
            }
        }
        let opens = recorder
            .seen()
            .iter()
            .filter(|s| matches!(s, Seen::Open(..)))
            .count();
        assert_eq!(opens, 4, "{:?}", backend);
        assert_eq!(server.stats().proxy_errors, 0);
        server.close().unwrap();
    }
}

#[test]
fn local_and_unknown_keep_the_real_peer() {
    for backend in backends() {
        let recorder = Arc::new(Recorder::default());
        let handler: Arc<dyn Handler> = recorder.clone();
        let server = start(proxy_config(backend), Some(handler));
        for header in [v2(0x20, 0x00, &[]), b"PROXY UNKNOWN\r\n".to_vec()] {
            let mut client = connect(&server);
            let me = client.local_addr().unwrap();
            echo_behind(&mut client, &header, b"ping", true);
            recorder.wait_until("the open event", |seen| {
                seen.iter()
                    .any(|s| matches!(s, Seen::Open(_, p, _) if p.inet() == Some(me)))
            });
        }
        assert_eq!(server.stats().proxy_errors, 0);
        server.close().unwrap();
    }
}

#[test]
fn native_echo_behind_a_header_whole_or_trickled() {
    for backend in backends() {
        let server = start(proxy_config(backend), None);
        let mut whole = connect(&server);
        echo_behind(
            &mut whole,
            &v1_proxy(addr("192.0.2.9:1")),
            b"same segment",
            true,
        );
        echo_behind(&mut whole, b"", b"and after", false);
        // One byte per write, with pauses so they arrive as many recvs.
        let tiny = connect(&server);
        tiny.set_nodelay(true).unwrap();
        for header in [
            v2_proxy(addr("[2001:db8::7]:7")),
            v1_proxy(addr("192.0.2.7:7")),
        ] {
            let mut client = connect(&server);
            client.set_nodelay(true).unwrap();
            for byte in &header {
                client.write_all(&[*byte]).unwrap();
                thread::sleep(Duration::from_millis(1));
            }
            echo_behind(&mut client, b"", b"trickled", false);
        }
        drop(tiny);
        assert_eq!(server.stats().proxy_errors, 0);
        server.close().unwrap();
    }
}

#[test]
fn each_bad_header_closes_only_its_connection_with_no_event() {
    let mut too_long_v2 = v2(0x21, 0x11, &[]);
    too_long_v2[14..16].copy_from_slice(&5000u16.to_be_bytes());
    let bad: Vec<Vec<u8>> = vec![
        b"PROXY TCP4 192.0.2.1 nowhere 1 2\r\n".to_vec(),
        b"PROXY TCP4 192.0.2.1 198.51.100.7 1 2\n".to_vec(),
        v2(0x31, 0x11, &[0; 12]),
        [&b"PROXY UNKNOWN "[..], &[b'x'; 200]].concat(),
        too_long_v2,
        b"hello, no header\n".to_vec(),
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
    ];
    for backend in backends() {
        let recorder = Arc::new(Recorder::default());
        let handler: Arc<dyn Handler> = recorder.clone();
        let server = start(proxy_config(backend), Some(handler));
        let mut good = connect(&server);
        echo_behind(&mut good, &v1_proxy(addr("192.0.2.1:1")), b"before", true);
        for (i, bytes) in bad.iter().enumerate() {
            let mut client = connect(&server);
            client.write_all(bytes).unwrap();
            assert!(closed_by_server(&mut client), "{:?} {}", backend, i);
            settle(&server, i as u64 + 1, 1);
        }
        // Cut inside a header: counted; a connection that sends nothing is not.
        let mut cut = connect(&server);
        cut.write_all(b"PROXY TCP4 192.0").unwrap();
        cut.shutdown(Shutdown::Write).unwrap();
        assert!(closed_by_server(&mut cut));
        let mut silent = connect(&server);
        silent.shutdown(Shutdown::Write).unwrap();
        assert!(closed_by_server(&mut silent));
        let n = bad.len() as u64 + 1;
        settle(&server, n, 1);
        echo_behind(&mut good, b"", b"after", false);
        let seen = recorder.seen();
        let opens = seen.iter().filter(|s| matches!(s, Seen::Open(..))).count();
        let closes = seen.iter().filter(|s| matches!(s, Seen::Close(..))).count();
        assert_eq!((opens, closes), (1, 0), "{:?}", seen);
        // The close count follows the open gauge by an instant.
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.stats().connections_closed != n + 1 {
            assert!(Instant::now() < deadline, "{:?}", server.stats());
            thread::sleep(Duration::from_millis(5));
        }
        let stats = server.stats();
        assert_eq!((stats.frame_errors, stats.tls_errors), (0, 0));
        server.close().unwrap();
    }
}

#[test]
fn a_peer_outside_trusted_proxies_is_closed() {
    for backend in backends() {
        let recorder = Arc::new(Recorder::default());
        let handler: Arc<dyn Handler> = recorder.clone();
        let config = Config {
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
            ..proxy_config(backend)
        };
        let server = start(config, Some(handler));
        let mut client = connect(&server);
        let _ = client.write_all(&v1_proxy(addr("192.0.2.1:1")));
        assert!(closed_by_server(&mut client));
        settle(&server, 1, 0);
        assert!(recorder.seen().is_empty());
        server.close().unwrap();
    }
}

#[test]
fn a_header_trickled_past_the_idle_timeout_is_closed() {
    for backend in backends() {
        let config = Config {
            idle_timeout: Some(Duration::from_millis(200)),
            ..proxy_config(backend)
        };
        let server = start(config, None);
        let mut client = connect(&server);
        client.write_all(b"PROXY ").unwrap();
        // Trickle a header that never ends (shorter than the 107-byte bound,
        // so only the timeout can end it), then wait for the server to close.
        client.set_nodelay(true).unwrap();
        for byte in b"TCP4 192.0.2.1 198.51.100.7 1 2" {
            if client.write_all(&[*byte]).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        assert!(closed_by_server(&mut client));
        settle(&server, 1, 0);
        assert_eq!(server.stats().idle_timeouts, 0);
        server.close().unwrap();
    }
}

#[test]
fn tls_comes_after_the_header() {
    let files = CertFiles::new();
    for backend in backends() {
        let recorder = Arc::new(Recorder::default());
        let handler: Arc<dyn Handler> = recorder.clone();
        let config = Config {
            proxy_protocol: true,
            ..tls_config(backend, Framing::raw(), &files, false, &[])
        };
        let server = start(config, Some(handler));
        let source = addr("[2001:db8::5]:4433");
        let mut tcp = connect(&server);
        tcp.write_all(&v2_proxy(source)).unwrap();
        let conn =
            ClientConnection::new(client_config(None, &[], ClientCert::Without), server_name())
                .unwrap();
        let mut stream = StreamOwned::new(conn, tcp);
        handshake(&mut stream).unwrap();
        stream.write_all(b"secret").unwrap();
        stream.flush().unwrap();
        let mut got = [0u8; 6];
        stream.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"secret");
        assert!(recorder
            .seen()
            .iter()
            .any(|s| matches!(s, Seen::Open(_, p, _) if p.inet() == Some(source))));
        // The header and the ClientHello in one segment: the bytes after the
        // header go on to TLS.
        let source = addr("192.0.2.44:4444");
        let mut tcp = connect(&server);
        let mut conn =
            ClientConnection::new(client_config(None, &[], ClientCert::Without), server_name())
                .unwrap();
        let mut first = v1_proxy(source);
        conn.write_tls(&mut first).unwrap();
        tcp.write_all(&first).unwrap();
        let mut stream = StreamOwned::new(conn, tcp);
        handshake(&mut stream).unwrap();
        stream.write_all(b"joined").unwrap();
        stream.flush().unwrap();
        stream.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"joined");
        assert!(recorder
            .seen()
            .iter()
            .any(|s| matches!(s, Seen::Open(_, p, _) if p.inet() == Some(source))));
        // A ClientHello with no header first: a PROXY failure, not a TLS one.
        let bare = TcpStream::connect(server.local_addr()).unwrap();
        bare.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut hello = StreamOwned::new(
            ClientConnection::new(client_config(None, &[], ClientCert::Without), server_name())
                .unwrap(),
            bare,
        );
        assert!(handshake(&mut hello).is_err());
        settle(&server, 1, 2);
        let stats = server.stats();
        assert_eq!((stats.tls_handshakes, stats.tls_errors), (2, 0));
        server.close().unwrap();
    }
}
