//! (tests) The certificates of `tests/certs/` (made by `scripts/make-test-certs`),
//! compiled in and written to a temporary folder for loading, and rustls
//! clients that trust them: for the TLS tests here and the server's.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};

use super::settings::TlsSettings;

/// Every fixture: its file name and contents.
const FIXTURES: &[(&str, &[u8])] = &[
    ("ca.pem", include_bytes!("../../tests/certs/ca.pem")),
    ("server.pem", include_bytes!("../../tests/certs/server.pem")),
    ("server.key", include_bytes!("../../tests/certs/server.key")),
    ("client.pem", include_bytes!("../../tests/certs/client.pem")),
    ("client.key", include_bytes!("../../tests/certs/client.key")),
    (
        "other-ca.pem",
        include_bytes!("../../tests/certs/other-ca.pem"),
    ),
    (
        "other-client.pem",
        include_bytes!("../../tests/certs/other-client.pem"),
    ),
    (
        "other-client.key",
        include_bytes!("../../tests/certs/other-client.key"),
    ),
];

/// The contents of fixture `name`.
pub(crate) fn fixture(name: &str) -> &'static [u8] {
    FIXTURES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
        .unwrap_or_else(|| panic!("no fixture {}", name))
}

/// The fixtures written to a folder of their own, removed on drop.
pub(crate) struct CertFiles {
    dir: PathBuf,
}

impl CertFiles {
    /// Write every fixture to a new temporary folder.
    pub(crate) fn new() -> CertFiles {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "iocp-echo-certs-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in FIXTURES {
            fs::write(dir.join(name), bytes).unwrap();
        }
        CertFiles { dir }
    }

    /// The path of file `name` in the folder (a fixture, or one a test writes).
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The server's settings: its certificate and key, ALPN `alpn`, and the
    /// test CA as the client CA when `mutual`.
    pub(crate) fn settings(&self, mutual: bool, alpn: &[&str]) -> TlsSettings {
        TlsSettings {
            cert: Some(self.path("server.pem")),
            key: Some(self.path("server.key")),
            client_ca: if mutual {
                Some(self.path("ca.pem"))
            } else {
                None
            },
            alpn: alpn.iter().map(|s| s.to_string()).collect(),
            ..TlsSettings::default()
        }
    }
}

impl Drop for CertFiles {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The certificates of a PEM fixture.
pub(crate) fn certs(name: &str) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut &fixture(name)[..])
        .collect::<Result<_, _>>()
        .unwrap()
}

fn key(name: &str) -> PrivateKeyDer<'static> {
    rustls_pemfile::private_key(&mut &fixture(name)[..])
        .unwrap()
        .unwrap()
}

/// Which client certificate a test client presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClientCert {
    /// None.
    Without,
    /// One signed by the test CA.
    Good,
    /// One signed by another CA.
    Stranger,
}

/// A client configuration trusting the test CA, for TLS `version` (`None`:
/// 1.2 and 1.3), offering `alpn`, presenting `cert`.
pub(crate) fn client_config(
    version: Option<&'static SupportedProtocolVersion>,
    alpn: &[&str],
    cert: ClientCert,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for ca in certs("ca.pem") {
        roots.add(ca).unwrap();
    }
    let versions: Vec<&'static SupportedProtocolVersion> = match version {
        Some(v) => vec![v],
        None => vec![&TLS13, &TLS12],
    };
    let builder =
        ClientConfig::builder_with_protocol_versions(&versions).with_root_certificates(roots);
    let mut config = match cert {
        ClientCert::Without => builder.with_no_client_auth(),
        ClientCert::Good => builder
            .with_client_auth_cert(certs("client.pem"), key("client.key"))
            .unwrap(),
        ClientCert::Stranger => builder
            .with_client_auth_cert(certs("other-client.pem"), key("other-client.key"))
            .unwrap(),
    };
    config.alpn_protocols = alpn.iter().map(|s| s.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// The name the server's certificate is for.
pub(crate) fn server_name() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}
