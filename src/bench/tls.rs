//! The TLS side of a run as a whole: the rustls client configuration built
//! once from [`TlsSettings`], and a new [`ClientConnection`] for each
//! connection.
//!
//! Rules: the server is always verified (webpki, against the CA certificates
//! of `--tls-ca`; there is no way to turn verification off). Session
//! resumption is off, so every connection, and every reconnect of
//! `--messages-per-connection`, makes a full handshake: the handshake rate
//! measures the server's whole handshake, key exchange and signature included.
//! Protocol versions, cipher suites and key exchange groups are rustls's
//! defaults (TLS 1.3 first, then 1.2).

use std::fs::File;
use std::io::BufReader;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::config::TlsSettings;

/// The rustls configuration and server name every connection of a run shares.
pub(crate) struct TlsClient {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl TlsClient {
    /// Read the CA certificates and build the client configuration; the error
    /// is one line naming the option and the file.
    pub(crate) fn load(settings: &TlsSettings) -> Result<TlsClient, String> {
        let roots = read_roots(settings)?;
        let mut config = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.resumption = Resumption::disabled();
        let name = ServerName::try_from(settings.server_name.clone()).map_err(|_| {
            format!(
                "--tls-server-name: {:?} is neither a DNS name nor an IP address",
                settings.server_name
            )
        })?;
        Ok(TlsClient {
            config: Arc::new(config),
            name,
        })
    }

    /// A new client session, its ClientHello ready to be written.
    pub(crate) fn connect(&self) -> Result<ClientConnection, rustls::Error> {
        ClientConnection::new(Arc::clone(&self.config), self.name.clone())
    }
}

/// Every certificate in the PEM file of `--tls-ca` as a trust anchor.
fn read_roots(settings: &TlsSettings) -> Result<RootCertStore, String> {
    let path = &settings.ca_file;
    let what = |why: String| format!("--tls-ca {}: {}", path.display(), why);
    let file = File::open(path).map_err(|e| what(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut BufReader::new(file)) {
        let cert = cert.map_err(|e| what(format!("not a PEM file: {}", e)))?;
        roots
            .add(cert)
            .map_err(|e| what(format!("not a CA certificate rustls accepts: {}", e)))?;
    }
    if roots.is_empty() {
        return Err(what(
            "no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)".to_string(),
        ));
    }
    Ok(roots)
}
