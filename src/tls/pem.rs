//! Reading PEM files: a certificate chain, a private key, a list of CA
//! certificates. Every error names the option and the file.

use std::fs;
use std::path::Path;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls_pemfile::Item;

use super::failure::LoadError;

/// The PEM blocks of a file (`option` names it in errors); a file with none,
/// or with a malformed one, is refused.
fn blocks(option: &'static str, path: &Path) -> Result<Vec<Item>, LoadError> {
    let bytes = fs::read(path).map_err(|error| LoadError::Unreadable {
        option,
        path: path.to_path_buf(),
        error,
    })?;
    let mut reader = &bytes[..];
    let items = rustls_pemfile::read_all(&mut reader)
        .collect::<Result<Vec<Item>, _>>()
        .map_err(|e| LoadError::invalid(option, path, format!("not valid PEM ({})", e)))?;
    if items.is_empty() {
        return Err(LoadError::invalid(
            option,
            path,
            "not a PEM file (no -----BEGIN block)".to_string(),
        ));
    }
    Ok(items)
}

/// The certificates of a PEM file, in file order (a chain: the server's own
/// certificate first); at least one.
pub(crate) fn certificates(
    option: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let certs: Vec<CertificateDer<'static>> = blocks(option, path)?
        .into_iter()
        .filter_map(|item| match item {
            Item::X509Certificate(cert) => Some(cert),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(LoadError::invalid(
            option,
            path,
            "holds no certificate (-----BEGIN CERTIFICATE-----)".to_string(),
        ));
    }
    Ok(certs)
}

/// The first private key of a PEM file: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
pub(crate) fn private_key(
    option: &'static str,
    path: &Path,
) -> Result<PrivateKeyDer<'static>, LoadError> {
    blocks(option, path)?
        .into_iter()
        .find_map(|item| match item {
            Item::Pkcs8Key(key) => Some(PrivateKeyDer::Pkcs8(key)),
            Item::Pkcs1Key(key) => Some(PrivateKeyDer::Pkcs1(key)),
            Item::Sec1Key(key) => Some(PrivateKeyDer::Sec1(key)),
            _ => None,
        })
        .ok_or_else(|| {
            LoadError::invalid(
                option,
                path,
                "holds no private key (PKCS#8, PKCS#1 or SEC1 PEM)".to_string(),
            )
        })
}
