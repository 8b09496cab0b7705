//! A session driven in memory against a rustls client: the handshake in TLS
//! 1.2 and 1.3 and what it negotiated, data both ways, `close_notify` both
//! ways, and each way a peer can break it.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use rustls::version::{TLS12, TLS13};
use rustls::ClientConnection;

use super::super::test_certs::{client_config, fixture, CertFiles, ClientCert};
use super::super::{ServerTls, Session, TlsFailure};

fn server(mutual: bool, alpn: &[&str]) -> (ServerTls, CertFiles) {
    let files = CertFiles::new();
    let tls = ServerTls::load(&files.settings(mutual, alpn))
        .unwrap()
        .unwrap();
    (tls, files)
}

/// Everything the client has to send, as the server's recv would see it.
fn from_client(client: &mut ClientConnection) -> Vec<u8> {
    let mut wire = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut wire).unwrap();
    }
    wire
}

/// Hand the server's records to the client.
fn to_client(session: &mut Session, client: &mut ClientConnection) -> Result<(), rustls::Error> {
    let mut wire = Vec::new();
    session.seal(&[], &mut wire);
    let mut rest = &wire[..];
    while !rest.is_empty() {
        client.read_tls(&mut rest).unwrap();
        client.process_new_packets()?;
    }
    Ok(())
}

/// Run the handshake to its end; returns whether the server saw it finish.
fn handshake(session: &mut Session, client: &mut ClientConnection) -> bool {
    let mut finished = false;
    for _ in 0..10 {
        let wire = from_client(client);
        let mut plain = Vec::new();
        finished |= session.receive(&wire, &mut plain).unwrap();
        assert!(plain.is_empty());
        to_client(session, client).unwrap();
        if !session.is_handshaking() && !client.is_handshaking() && !client.wants_write() {
            break;
        }
    }
    finished
}

fn connect(
    tls: &ServerTls,
    client: std::sync::Arc<rustls::ClientConfig>,
) -> (Session, ClientConnection) {
    let session = tls.session(Instant::now()).unwrap();
    let client = ClientConnection::new(client, super::super::test_certs::server_name()).unwrap();
    (session, client)
}

#[test]
fn handshakes_in_tls_1_2_and_1_3_and_says_what_was_negotiated() {
    let (tls, _files) = server(false, &["h2", "http/1.1"]);
    for (version, name, cipher) in [
        (&TLS13, "TLSv1.3", "TLS_AES_256_GCM_SHA384"),
        (&TLS12, "TLSv1.2", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
    ] {
        let config = client_config(Some(version), &["http/1.1"], ClientCert::Without);
        let (mut session, mut client) = connect(&tls, config);
        assert!(session.is_handshaking());
        assert!(handshake(&mut session, &mut client), "{}", name);
        let info = session.info();
        assert_eq!(info.version, name);
        assert_eq!(info.cipher, cipher);
        assert_eq!(info.alpn.as_deref(), Some(&b"http/1.1"[..]));
        assert_eq!(info.peer_certificate, None);
        assert_eq!(session.end_of_stream(), Ok(()));
    }
}

#[test]
fn data_goes_both_ways_byte_exact_and_close_notify_both_ways() {
    let (tls, _files) = server(false, &[]);
    let (mut session, mut client) = connect(&tls, client_config(None, &[], ClientCert::Without));
    assert!(handshake(&mut session, &mut client));
    assert_eq!(session.info().alpn, None);
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    client.set_buffer_limit(None);
    client.writer().write_all(&data).unwrap();
    let wire = from_client(&mut client);
    // In pieces of every size, as recvs would bring them.
    let mut plain = Vec::new();
    for piece in wire.chunks(1_777) {
        assert!(!session.receive(piece, &mut plain).unwrap());
    }
    assert!(plain == data);
    // The reply, in two slices.
    let mut out = Vec::new();
    session.seal(&[&data[..10], &data[10..]], &mut out);
    assert!(!session.wants_write());
    let mut rest = &out[..];
    let mut echoed = Vec::new();
    while !rest.is_empty() {
        client.read_tls(&mut rest).unwrap();
        let n = client
            .process_new_packets()
            .unwrap()
            .plaintext_bytes_to_read();
        let start = echoed.len();
        echoed.resize(start + n, 0);
        client.reader().read_exact(&mut echoed[start..]).unwrap();
    }
    assert!(echoed == data);
    // Our close_notify: once, and nothing sealed after it.
    assert!(session.close_notify());
    assert!(!session.close_notify());
    let mut out = Vec::new();
    session.seal(&[b"after close"], &mut out);
    let mut rest = &out[..];
    client.read_tls(&mut rest).unwrap();
    let state = client.process_new_packets().unwrap();
    assert!(state.peer_has_closed());
    assert_eq!(state.plaintext_bytes_to_read(), 0);
    // The client's close_notify.
    client.send_close_notify();
    let mut plain = Vec::new();
    session
        .receive(&from_client(&mut client), &mut plain)
        .unwrap();
    assert!(session.peer_closed());
    assert!(plain.is_empty());
    assert_eq!(session.end_of_stream(), Ok(()));
}

#[test]
fn mutual_tls_takes_the_good_client_certificate_and_refuses_others() {
    let (tls, _files) = server(true, &[]);
    let (mut session, mut client) = connect(&tls, client_config(None, &[], ClientCert::Good));
    assert!(handshake(&mut session, &mut client));
    let expected = super::super::test_certs::certs("client.pem");
    assert_eq!(
        session.info().peer_certificate.as_deref(),
        Some(expected[0].as_ref())
    );
    assert!(fixture("client.pem").starts_with(b"-----BEGIN CERTIFICATE-----"));

    for cert in [ClientCert::Without, ClientCert::Stranger] {
        let (mut session, mut client) = connect(&tls, client_config(None, &[], cert));
        let mut failure = None;
        for _ in 0..10 {
            let wire = from_client(&mut client);
            match session.receive(&wire, &mut Vec::new()) {
                Ok(_) => {}
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
            let _ = to_client(&mut session, &mut client);
        }
        match failure {
            Some(TlsFailure::Protocol(_)) => {}
            other => panic!("{:?}: expected a protocol failure, got {:?}", cert, other),
        }
        // The alert saying why is queued for the client.
        assert!(session.wants_write(), "{:?}", cert);
        assert!(to_client(&mut session, &mut client).is_err(), "{:?}", cert);
        assert!(!session.close_notify());
        assert_eq!(session.end_of_stream(), Ok(()));
    }
}

#[test]
fn garbage_plaintext_and_a_cut_stream_fail() {
    let (tls, _files) = server(false, &[]);
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &b"hello\n"[..],
        &[0xFFu8; 300][..],
    ] {
        let mut session = tls.session(Instant::now()).unwrap();
        match session.receive(junk, &mut Vec::new()) {
            Err(TlsFailure::Protocol(why)) => assert!(!why.is_empty()),
            other => panic!("{:?}: {:?}", junk, other),
        }
        // Ignored from then on.
        assert_eq!(session.receive(junk, &mut Vec::new()), Ok(false));
    }

    // Nothing sent, or half a ClientHello: the handshake did not finish.
    let session = tls.session(Instant::now()).unwrap();
    assert_eq!(
        session.end_of_stream(),
        Err(TlsFailure::HandshakeUnfinished)
    );
    let (mut session, mut client) = connect(&tls, client_config(None, &[], ClientCert::Without));
    let hello = from_client(&mut client);
    session
        .receive(&hello[..hello.len() / 2], &mut Vec::new())
        .unwrap();
    assert_eq!(
        session.end_of_stream(),
        Err(TlsFailure::HandshakeUnfinished)
    );

    // Half a record after the handshake: truncated.
    let (mut session, mut client) = connect(&tls, client_config(None, &[], ClientCert::Without));
    assert!(handshake(&mut session, &mut client));
    client.writer().write_all(b"some data").unwrap();
    let wire = from_client(&mut client);
    let mut plain = Vec::new();
    session
        .receive(&wire[..wire.len() - 3], &mut plain)
        .unwrap();
    assert!(plain.is_empty());
    assert_eq!(session.end_of_stream(), Err(TlsFailure::Truncated));
    session
        .receive(&wire[wire.len() - 3..], &mut plain)
        .unwrap();
    assert_eq!(plain, b"some data");
    assert_eq!(session.end_of_stream(), Ok(()));
}

#[test]
fn the_handshake_deadline_passes_only_while_handshaking() {
    let (tls, _files) = server(false, &[]);
    let start = Instant::now();
    let later = start + tls.handshake_timeout() + Duration::from_millis(1);
    let session = tls.session(start).unwrap();
    assert!(!session.handshake_expired(start));
    assert!(session.handshake_expired(later));
    let (mut session, mut client) = connect(&tls, client_config(None, &[], ClientCert::Without));
    assert!(handshake(&mut session, &mut client));
    assert!(!session.handshake_expired(later + Duration::from_secs(60)));
}
