//! Whether a private key belongs to a certificate: a message signed with the
//! key must verify against the certificate's public key. (rustls 0.22 would
//! accept a mismatched pair and fail every handshake later.)

use rustls::crypto::ring::default_provider;
use rustls::pki_types::CertificateDer;
use rustls::sign::SigningKey;
use rustls::SignatureScheme;

/// The schemes tried, one per key type ring signs with.
const SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ED25519,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PKCS1_SHA256,
];

/// What is signed: any bytes do.
const MESSAGE: &[u8] = b"iocp_echo: does this key belong to this certificate?";

/// `Ok` if `key` is the private key of `cert`; else why not.
pub(crate) fn check(cert: &CertificateDer<'_>, key: &dyn SigningKey) -> Result<(), String> {
    let signer = key
        .choose_scheme(SCHEMES)
        .ok_or_else(|| "the key's type cannot sign (not ECDSA, Ed25519 or RSA)".to_string())?;
    let signature = signer
        .sign(MESSAGE)
        .map_err(|e| format!("the key cannot sign: {}", e))?;
    let cert = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| format!("the certificate cannot be parsed: {:?}", e))?;
    let provider = default_provider();
    let algorithms = provider
        .signature_verification_algorithms
        .mapping
        .iter()
        .find(|(scheme, _)| *scheme == signer.scheme())
        .map(|(_, algorithms)| *algorithms)
        .unwrap_or(&[]);
    if algorithms
        .iter()
        .any(|alg| cert.verify_signature(*alg, MESSAGE, &signature).is_ok())
    {
        Ok(())
    } else {
        Err("the private key does not match the certificate".to_string())
    }
}
