//! The load generator over TLS, on every backend compiled in, against the
//! blocking rustls echo server of `tls_echo.rs`: every framing byte-exact,
//! messages bigger than rustls's buffers, reconnects counted as handshakes,
//! and handshakes that must fail (a CA that did not sign the server, a name
//! the certificate lacks, a plaintext server) failing as connect errors.

use super::config::TlsSettings;
use super::tests::{backends, bench_config, run_ok, server, FRAMINGS};
use super::tls::TlsClient;
use super::tls_echo::{PemFile, TlsEchoServer, CA_PEM, OTHER_CA_PEM};
use super::{BenchConfig, Limit, MessageFraming};
use crate::port::Backend;

/// The bench settings for `server`, verified against the CA in `ca`.
fn tls_config(backend: Backend, server: &TlsEchoServer, ca: &PemFile) -> BenchConfig {
    let mut config = bench_config(backend, server.addr(), MessageFraming::Length);
    config.tls = Some(TlsSettings {
        ca_file: ca.0.clone(),
        server_name: "127.0.0.1".to_string(),
    });
    config
}

#[track_caller]
fn pem(name: &str, pem: &[u8]) -> PemFile {
    match PemFile::new(name, pem) {
        Ok(file) => file,
        Err(e) => panic!("cannot write a temporary PEM file: {}", e),
    }
}

#[test]
fn every_framing_echoes_over_tls() {
    let ca = pem("ca-framing", CA_PEM);
    for backend in backends() {
        for framing in FRAMINGS {
            let server = TlsEchoServer::start();
            let mut config = tls_config(backend, &server, &ca);
            config.framing = framing;
            config.connect_window = 2;
            let report = run_ok(config);
            let what = format!("{} {}", backend, framing.name());
            assert_eq!(report.errors, 0, "{}: {:?}", what, report.error);
            assert_eq!(
                report.connect_errors, 0,
                "{}: {:?}",
                what, report.connect_error
            );
            assert_eq!(report.connected, 6, "{}", what);
            assert_eq!(report.messages, 600, "{}", what);
            assert_eq!(report.handshakes(), 0, "{}", what);
            assert_eq!(report.tls_server_name.as_deref(), Some("127.0.0.1"));
            assert!(report.human().contains("TLS to 127.0.0.1"), "{}", what);
            assert_eq!(server.accepted(), 6, "{}", what);
        }
    }
}

#[test]
fn big_messages_span_many_records_and_sends() {
    let ca = pem("ca-big", CA_PEM);
    for backend in backends() {
        let server = TlsEchoServer::start();
        let mut config = tls_config(backend, &server, &ca);
        // Past rustls's 64 KiB send buffer: the frame goes in pieces.
        config.size = 300_000;
        config.connections = 2;
        config.limit = Limit::Count(6);
        let report = run_ok(config);
        assert_eq!(report.errors, 0, "{}: {:?}", backend, report.error);
        assert_eq!(report.messages, 6, "{}", backend);
    }
}

#[test]
fn reconnects_count_handshakes() {
    let ca = pem("ca-reconnect", CA_PEM);
    for backend in backends() {
        let server = TlsEchoServer::start();
        let mut config = tls_config(backend, &server, &ca);
        config.connections = 4;
        config.limit = Limit::Count(200);
        config.messages_per_connection = Some(5);
        let report = run_ok(config);
        assert_eq!(report.errors, 0, "{}: {:?}", backend, report.error);
        assert_eq!(
            report.connect_errors, 0,
            "{}: {:?}",
            backend, report.connect_error
        );
        assert_eq!(report.messages, 200, "{}", backend);
        // 40 connections' worth of messages over 4 slots: about 36 reconnects,
        // each a full handshake the server saw.
        assert!(report.handshakes() >= 200 / 5 - 4, "{}", backend);
        assert_eq!(report.handshakes(), report.connects, "{}", backend);
        assert_eq!(
            server.accepted() as u64,
            4 + report.handshakes(),
            "{}",
            backend
        );
        assert!(report.handshakes_per_s() > 0.0, "{}", backend);
        assert!(
            report.human().contains("handshakes/s"),
            "{}",
            report.human()
        );
        let json = report.to_json();
        let expected = format!("\"handshakes\": {},", report.handshakes());
        assert!(json.contains(&expected), "{}", json);
    }
}

#[test]
fn a_wrong_ca_or_name_fails_each_handshake() {
    let ca = pem("ca-wrong-name", CA_PEM);
    let other = pem("other-ca", OTHER_CA_PEM);
    let cases = [
        (&other, "127.0.0.1", "UnknownIssuer"),
        (&ca, "example.com", "NotValidForName"),
    ];
    for backend in backends() {
        for (ca, name, why) in cases {
            let server = TlsEchoServer::start();
            let mut config = tls_config(backend, &server, ca);
            config.tls = Some(TlsSettings {
                ca_file: ca.0.clone(),
                server_name: name.to_string(),
            });
            let report = run_ok(config);
            let what = format!("{} {}", backend, why);
            assert_eq!(report.connected, 0, "{}", what);
            assert_eq!(report.connect_errors, 6, "{}", what);
            assert_eq!(report.tls_errors, 6, "{}", what);
            assert_eq!(report.messages, 0, "{}", what);
            assert!(!report.success(), "{}", what);
            let error = report.connect_error.clone().unwrap_or_default();
            assert!(
                error.starts_with("TLS handshake failed: "),
                "{}: {}",
                what,
                error
            );
            assert!(error.contains(why), "{}: {}", what, error);
            assert!(error.contains("--tls-ca"), "{}: {}", what, error);
        }
    }
}

#[test]
fn tls_to_a_plaintext_server_fails_each_handshake() {
    let ca = pem("ca-plaintext", CA_PEM);
    for backend in backends() {
        // A raw echo sends the ClientHello back: not what a server says.
        let server = server(backend, MessageFraming::Raw, None);
        let mut config = bench_config(backend, server.local_addr(), MessageFraming::Raw);
        config.tls = Some(TlsSettings {
            ca_file: ca.0.clone(),
            server_name: "127.0.0.1".to_string(),
        });
        let report = run_ok(config);
        assert_eq!(report.connected, 0, "{}", backend);
        assert_eq!(
            report.tls_errors, 6,
            "{}: {:?}",
            backend, report.connect_error
        );
        server.close().unwrap();
    }
}

#[test]
fn unusable_ca_files_are_named_in_the_error() {
    let settings = |path: &std::path::Path| TlsSettings {
        ca_file: path.to_path_buf(),
        server_name: "localhost".to_string(),
    };
    let garbage = pem("garbage", b"not a certificate\n");
    let missing = garbage.0.with_extension("missing");
    for (path, why) in [(&garbage.0, "no certificate"), (&missing, "--tls-ca")] {
        let error = match TlsClient::load(&settings(path)) {
            Ok(_) => panic!("{} loaded", path.display()),
            Err(e) => e,
        };
        assert!(error.contains(&path.display().to_string()), "{}", error);
        assert!(error.contains(why), "{}", error);
    }
    let ca = pem("ca-name", CA_PEM);
    let mut bad_name = settings(&ca.0);
    bad_name.server_name = "not a name!".to_string();
    assert!(TlsClient::load(&bad_name).is_err());
}
