//! What a finished handshake negotiated, as a connection's `Open` event
//! carries it (Python: `conn.tls`).

use rustls::{ProtocolVersion, ServerConnection};

/// The negotiated parameters of a TLS connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsInfo {
    /// `"TLSv1.2"` or `"TLSv1.3"`, as Python's `SSLSocket.version()` says it.
    pub version: &'static str,
    /// The cipher suite's IANA name: `TLS_AES_256_GCM_SHA384`,
    /// `TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256`.
    pub cipher: String,
    /// The ALPN protocol agreed on, if any.
    pub alpn: Option<Vec<u8>>,
    /// The client's certificate (DER), when it presented one.
    pub peer_certificate: Option<Vec<u8>>,
}

impl TlsInfo {
    /// What `conn` negotiated (its handshake finished).
    pub(crate) fn of(conn: &ServerConnection) -> TlsInfo {
        let version = match conn.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "unknown",
        };
        let cipher = conn
            .negotiated_cipher_suite()
            .and_then(|suite| suite.suite().as_str())
            .map(iana_name)
            .unwrap_or_else(|| "unknown".to_string());
        TlsInfo {
            version,
            cipher,
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            peer_certificate: conn
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|cert| cert.as_ref().to_vec()),
        }
    }
}

/// rustls names TLS 1.3 suites `TLS13_...`; their IANA names are `TLS_...`
/// (TLS 1.2 names are the same in both).
fn iana_name(rustls_name: &str) -> String {
    match rustls_name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{}", rest),
        None => rustls_name.to_string(),
    }
}
