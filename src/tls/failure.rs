//! Why TLS failed: a connection's session ([`TlsFailure`]), or loading the
//! files of a server ([`LoadError`]).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Why a connection's TLS failed; the connection is closed for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsFailure {
    /// The handshake did not finish within the handshake timeout.
    HandshakeTimeout,
    /// The peer ended its stream before the handshake finished.
    HandshakeUnfinished,
    /// The peer ended its stream inside a record (a truncated record).
    Truncated,
    /// The peer broke the protocol: not TLS, a bad record, a refused client
    /// certificate, no protocol or cipher suite in common. rustls's words.
    Protocol(String),
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsFailure::HandshakeTimeout => f.write_str("TLS handshake timed out"),
            TlsFailure::HandshakeUnfinished => {
                f.write_str("TLS: the peer left before the handshake finished")
            }
            TlsFailure::Truncated => f.write_str("TLS: the stream ended inside a record"),
            TlsFailure::Protocol(why) => write!(f, "TLS: {}", why),
        }
    }
}

impl std::error::Error for TlsFailure {}

/// A certificate, key or CA file that cannot be used. Each names the option
/// (`tls_cert`, `tls_key`, `tls_client_ca`) and the file.
#[derive(Debug)]
pub enum LoadError {
    /// The file cannot be read (missing, a directory, no permission ...).
    Unreadable {
        /// The option that named the file.
        option: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// The file was read but cannot be used: not PEM, no certificate, no key,
    /// a key that does not match the certificate.
    Invalid {
        /// The option that named the file.
        option: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

impl LoadError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            LoadError::Unreadable { path, .. } | LoadError::Invalid { path, .. } => path,
        }
    }

    pub(crate) fn invalid(option: &'static str, path: &Path, why: String) -> LoadError {
        LoadError::Invalid {
            option,
            path: path.to_path_buf(),
            why,
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Unreadable {
                option,
                path,
                error,
            } => write!(f, "{}: cannot read {}: {}", option, path.display(), error),
            LoadError::Invalid { option, path, why } => {
                write!(f, "{}: {}: {}", option, path.display(), why)
            }
        }
    }
}

impl std::error::Error for LoadError {}

impl From<LoadError> for io::Error {
    /// `Unreadable`: the OS error's kind; `Invalid`: `InvalidInput`. The message
    /// names the option and the file.
    fn from(e: LoadError) -> io::Error {
        let kind = match &e {
            LoadError::Unreadable { error, .. } => error.kind(),
            LoadError::Invalid { .. } => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e.to_string())
    }
}
