//! What TLS a server is configured with: the files, the ALPN protocols, the
//! handshake timeout. Plain data, checked by the server's options and loaded by
//! `ServerTls::load`.

use std::path::PathBuf;
use std::time::Duration;

/// The default time a client has to finish its handshake: 10 seconds.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A server's TLS settings; TLS is on when a certificate is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// The server's certificate chain, PEM: its own certificate first.
    pub cert: Option<PathBuf>,
    /// The private key of that certificate, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// Certificate authorities, PEM: given, every client must present a
    /// certificate they signed (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// The ALPN protocols offered, most preferred first (`h2`, `http/1.1`);
    /// empty: no ALPN.
    pub alpn: Vec<String>,
    /// A connection whose handshake has not finished this long after it was
    /// accepted is closed.
    pub handshake_timeout: Duration,
}

impl Default for TlsSettings {
    fn default() -> TlsSettings {
        TlsSettings {
            cert: None,
            key: None,
            client_ca: None,
            alpn: Vec::new(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

impl TlsSettings {
    /// Whether TLS is on (a certificate is given).
    pub fn enabled(&self) -> bool {
        self.cert.is_some()
    }
}
