//! Loading a server's TLS: the fixtures load; each bad file is refused with an
//! error naming its option and file.

use std::fs;
use std::io::ErrorKind;

use super::super::test_certs::CertFiles;
use super::super::{LoadError, ServerTls, TlsSettings};

#[track_caller]
fn refused(settings: &TlsSettings) -> LoadError {
    match ServerTls::load(settings) {
        Err(e) => e,
        Ok(_) => panic!("loaded {:?}", settings),
    }
}

#[track_caller]
fn invalid(settings: &TlsSettings, option: &str, file: &std::path::Path, words: &str) {
    let e = refused(settings);
    let text = e.to_string();
    match &e {
        LoadError::Invalid {
            option: o, path, ..
        } => {
            assert_eq!(*o, option, "{}", text);
            assert_eq!(path, file, "{}", text);
        }
        other => panic!("expected invalid, got {:?}", other),
    }
    assert!(
        text.starts_with(&format!("{}: {}: ", option, file.display())),
        "{}",
        text
    );
    assert!(text.contains(words), "{}", text);
    assert_eq!(std::io::Error::from(e).kind(), ErrorKind::InvalidInput);
}

#[test]
fn the_fixtures_load_with_and_without_client_certificates() {
    let files = CertFiles::new();
    assert!(ServerTls::load(&TlsSettings::default()).unwrap().is_none());
    let tls = ServerTls::load(&files.settings(false, &[]))
        .unwrap()
        .unwrap();
    assert_eq!(
        tls.handshake_timeout(),
        super::super::DEFAULT_HANDSHAKE_TIMEOUT
    );
    assert!(ServerTls::load(&files.settings(true, &["h2", "http/1.1"]))
        .unwrap()
        .is_some());
}

#[test]
fn a_missing_file_is_the_os_error_naming_the_file() {
    let files = CertFiles::new();
    for (option, field) in [("tls_cert", 0), ("tls_key", 1), ("tls_client_ca", 2)] {
        let mut settings = files.settings(true, &[]);
        let missing = files.path("missing.pem");
        match field {
            0 => settings.cert = Some(missing.clone()),
            1 => settings.key = Some(missing.clone()),
            _ => settings.client_ca = Some(missing.clone()),
        }
        let e = refused(&settings);
        let text = e.to_string();
        match &e {
            LoadError::Unreadable {
                option: o,
                path,
                error,
            } => {
                assert_eq!(*o, option);
                assert_eq!(path, &missing);
                assert_eq!(error.kind(), ErrorKind::NotFound);
            }
            other => panic!("expected unreadable, got {:?}", other),
        }
        assert!(
            text.starts_with(&format!("{}: cannot read {}", option, missing.display())),
            "{}",
            text
        );
        assert_eq!(std::io::Error::from(e).kind(), ErrorKind::NotFound);
    }
}

#[test]
fn a_file_that_is_not_pem_is_invalid() {
    let files = CertFiles::new();
    let junk = files.path("junk.pem");
    fs::write(&junk, b"\x00\x01 not a certificate at all \xff\n").unwrap();
    let mut settings = files.settings(true, &[]);
    settings.cert = Some(junk.clone());
    invalid(&settings, "tls_cert", &junk, "not a PEM file");
    let mut settings = files.settings(true, &[]);
    settings.key = Some(junk.clone());
    invalid(&settings, "tls_key", &junk, "not a PEM file");
    let mut settings = files.settings(true, &[]);
    settings.client_ca = Some(junk.clone());
    invalid(&settings, "tls_client_ca", &junk, "not a PEM file");

    let broken = files.path("broken.pem");
    fs::write(
        &broken,
        b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let mut settings = files.settings(false, &[]);
    settings.cert = Some(broken.clone());
    invalid(&settings, "tls_cert", &broken, "PEM");
}

#[test]
fn a_certificate_file_without_a_certificate_and_a_key_file_without_a_key_are_invalid() {
    let files = CertFiles::new();
    let mut settings = files.settings(false, &[]);
    settings.cert = Some(files.path("server.key"));
    invalid(
        &settings,
        "tls_cert",
        &files.path("server.key"),
        "no certificate",
    );
    let mut settings = files.settings(false, &[]);
    settings.key = Some(files.path("server.pem"));
    invalid(
        &settings,
        "tls_key",
        &files.path("server.pem"),
        "no private key",
    );
    let mut settings = files.settings(true, &[]);
    settings.client_ca = Some(files.path("client.key"));
    invalid(
        &settings,
        "tls_client_ca",
        &files.path("client.key"),
        "no certificate",
    );
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_invalid() {
    let files = CertFiles::new();
    let mut settings = files.settings(false, &[]);
    settings.key = Some(files.path("client.key"));
    invalid(
        &settings,
        "tls_key",
        &files.path("client.key"),
        "does not match the certificate",
    );
}
