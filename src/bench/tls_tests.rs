//! The load generator over TLS, on every backend compiled in, against the
//! server's own TLS (a native echo with the test certificates of
//! `tests/certs`): every framing byte-exact,
//! messages bigger than rustls's buffers, reconnects counted as handshakes,
//! and handshakes that must fail (a CA that did not sign the server, a name
//! the certificate lacks, a plaintext server) failing as connect errors.

use std::fs;

use super::config::TlsSettings;
use super::tests::{backends, bench_config, run_ok, server, FRAMINGS};
use super::tls::TlsClient;
use super::{BenchConfig, Limit, MessageFraming};
use crate::port::{Backend, BackendChoice};
use crate::server::{Config, Server};
use crate::tls::test_certs::CertFiles;

/// A native echo over TLS with the test server certificate, in `framing`.
#[track_caller]
fn tls_server(backend: Backend, framing: MessageFraming, files: &CertFiles) -> Server {
    let config = Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        framing: framing.codec(),
        workers: 1,
        backend: BackendChoice::Forced(backend),
        tls: files.settings(false, &[]),
        ..Config::default()
    };
    match Server::start(config, None) {
        Ok(server) => server,
        Err(e) => panic!("TLS server did not start: {}", e),
    }
}

/// The bench settings for `server`, verified against the CA file `ca`.
fn tls_config(backend: Backend, server: &Server, ca: std::path::PathBuf) -> BenchConfig {
    let mut config = bench_config(backend, server.local_addr(), MessageFraming::Length);
    config.tls = Some(TlsSettings {
        ca_file: ca,
        server_name: "127.0.0.1".to_string(),
    });
    config
}

#[test]
fn every_framing_echoes_over_tls() {
    let files = CertFiles::new();
    for backend in backends() {
        for framing in FRAMINGS {
            let server = tls_server(backend, framing, &files);
            let mut config = tls_config(backend, &server, files.path("ca.pem"));
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
            assert_eq!(server.stats().connections_accepted, 6, "{}", what);
            assert_eq!(server.stats().tls_errors, 0, "{}", what);
            server.close().unwrap();
        }
    }
}

#[test]
fn big_messages_span_many_records_and_sends() {
    let files = CertFiles::new();
    for backend in backends() {
        let server = tls_server(backend, MessageFraming::Length, &files);
        let mut config = tls_config(backend, &server, files.path("ca.pem"));
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
    let files = CertFiles::new();
    for backend in backends() {
        let server = tls_server(backend, MessageFraming::Length, &files);
        let mut config = tls_config(backend, &server, files.path("ca.pem"));
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
        // Once the server has closed every connection, its count is final.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while server.stats().connections_open != 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // Every connection the client made (4 first ones and its reconnects)
        // was a handshake the server finished, except that the end of the run
        // may cut a slot's newest connection before the server has read the
        // client's Finished: at most one per slot, counted as a TLS error.
        let stats = server.stats();
        assert_eq!(
            stats.connections_accepted,
            4 + report.connects,
            "{}",
            backend
        );
        assert_eq!(
            stats.tls_handshakes + stats.tls_errors,
            4 + report.handshakes(),
            "{}: {:?}",
            backend,
            stats
        );
        assert!(stats.tls_errors <= 4, "{}: {:?}", backend, stats);
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
    let files = CertFiles::new();
    let cases = [
        ("other-ca.pem", "127.0.0.1", "UnknownIssuer"),
        ("ca.pem", "example.com", "NotValidForName"),
    ];
    for backend in backends() {
        for (ca, name, why) in cases {
            let server = tls_server(backend, MessageFraming::Length, &files);
            let mut config = tls_config(backend, &server, files.path(ca));
            config.tls = Some(TlsSettings {
                ca_file: files.path(ca),
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
    let files = CertFiles::new();
    for backend in backends() {
        // A raw echo sends the ClientHello back: not what a server says.
        let server = server(backend, MessageFraming::Raw, None);
        let mut config = bench_config(backend, server.local_addr(), MessageFraming::Raw);
        config.tls = Some(TlsSettings {
            ca_file: files.path("ca.pem"),
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
    let files = CertFiles::new();
    let garbage = files.path("garbage.pem");
    fs::write(&garbage, b"not a certificate\n").unwrap();
    let missing = files.path("missing.pem");
    for (path, why) in [(&garbage, "no certificate"), (&missing, "--tls-ca")] {
        let error = match TlsClient::load(&settings(path)) {
            Ok(_) => panic!("{} loaded", path.display()),
            Err(e) => e,
        };
        assert!(error.contains(&path.display().to_string()), "{}", error);
        assert!(error.contains(why), "{}", error);
    }
    let mut bad_name = settings(&files.path("ca.pem"));
    bad_name.server_name = "not a name!".to_string();
    assert!(TlsClient::load(&bad_name).is_err());
}
