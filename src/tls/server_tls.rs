//! A server's TLS, loaded once: the rustls server configuration built from
//! the settings' files (TLS 1.2 and 1.3, the ALPN protocols, client
//! certificates required and verified when a client CA is given), from which
//! each connection gets its [`Session`].

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::crypto::ring::default_provider;
use rustls::server::WebPkiClientVerifier;
use rustls::version::{TLS12, TLS13};
use rustls::{RootCertStore, ServerConfig, ServerConnection};

use super::failure::{LoadError, TlsFailure};
use super::key_match;
use super::pem;
use super::session::Session;
use super::settings::TlsSettings;

/// The loaded TLS of a server, shared by its workers.
#[derive(Clone, Debug)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    handshake_timeout: Duration,
}

impl ServerTls {
    /// Read the files of `settings` and build the server's TLS; `None` when
    /// TLS is off. Errors name the option and the file: unreadable (the OS
    /// error), not PEM, no certificate, no key, a key that does not match the
    /// certificate, a CA file without a usable certificate.
    pub fn load(settings: &TlsSettings) -> Result<Option<ServerTls>, LoadError> {
        let cert_path = match &settings.cert {
            Some(path) => path.as_path(),
            None => return Ok(None),
        };
        let key_path = match &settings.key {
            Some(path) => path.as_path(),
            None => {
                return Err(LoadError::invalid(
                    "tls_key",
                    cert_path,
                    "no private key file given for this certificate".to_string(),
                ))
            }
        };
        let certs = pem::certificates("tls_cert", cert_path)?;
        let key = pem::private_key("tls_key", key_path)?;
        let provider = Arc::new(default_provider());
        let signing = provider
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|e| LoadError::invalid("tls_key", key_path, format!("unusable key: {}", e)))?;
        key_match::check(&certs[0], signing.as_ref()).map_err(|why| {
            let why = format!("{} in {}", why, cert_path.display());
            LoadError::invalid("tls_key", key_path, why)
        })?;
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&TLS13, &TLS12])
            .map_err(|e| LoadError::invalid("tls_cert", cert_path, e.to_string()))?;
        let builder = match &settings.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca_path) => {
                let roots = client_roots(ca_path)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| {
                            LoadError::invalid("tls_client_ca", ca_path, format!("{:?}", e))
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| LoadError::invalid("tls_cert", cert_path, e.to_string()))?;
        config.alpn_protocols = settings
            .alpn
            .iter()
            .map(|name| name.as_bytes().to_vec())
            .collect();
        Ok(Some(ServerTls {
            config: Arc::new(config),
            handshake_timeout: settings.handshake_timeout,
        }))
    }

    /// A new connection's session, accepted at `now`.
    pub fn session(&self, now: Instant) -> Result<Session, TlsFailure> {
        let conn = ServerConnection::new(Arc::clone(&self.config))
            .map_err(|e| TlsFailure::Protocol(e.to_string()))?;
        Ok(Session::new(conn, now + self.handshake_timeout))
    }

    /// How long a client has to finish its handshake.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }
}

/// The trust anchors of a client CA file: every certificate in it.
fn client_roots(path: &Path) -> Result<RootCertStore, LoadError> {
    let mut roots = RootCertStore::empty();
    for cert in pem::certificates("tls_client_ca", path)? {
        roots.add(cert).map_err(|e| {
            LoadError::invalid(
                "tls_client_ca",
                path,
                format!("unusable CA certificate: {}", e),
            )
        })?;
    }
    Ok(roots)
}
