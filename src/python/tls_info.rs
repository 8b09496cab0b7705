//! `TlsInfo` for Python: what a TLS connection's handshake negotiated, as
//! `Connection.tls` gives it (None for plain TCP). Made once per connection
//! when it opens, from the `Open` event's [`TlsInfo`]; frozen.
//!
//! The names follow `ssl.SSLSocket`'s methods as attributes: `version`
//! (`version()`), `cipher` (the name of `cipher()`, IANA spelling),
//! `alpn_protocol` (`selected_alpn_protocol()`), `peer_certificate`
//! (`getpeercert(binary_form=True)`).

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::tls::TlsInfo;

/// The negotiated parameters of a TLS connection.
#[pyclass(name = "TlsInfo", module = "iocp_echo", frozen)]
pub(crate) struct PyTlsInfo {
    info: TlsInfo,
}

impl PyTlsInfo {
    /// `info` as a Python object.
    pub(crate) fn new(info: TlsInfo) -> PyTlsInfo {
        PyTlsInfo { info }
    }
}

#[pymethods]
impl PyTlsInfo {
    /// `"TLSv1.2"` or `"TLSv1.3"`, as `ssl.SSLSocket.version()` says it.
    #[getter]
    fn version(&self) -> &'static str {
        self.info.version
    }

    /// The cipher suite's IANA name: `"TLS_AES_256_GCM_SHA384"`,
    /// `"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"`.
    #[getter]
    fn cipher(&self) -> &str {
        &self.info.cipher
    }

    /// The ALPN protocol agreed on (one of the server's `alpn_protocols`),
    /// or None.
    #[getter]
    fn alpn_protocol(&self) -> Option<String> {
        self.info
            .alpn
            .as_ref()
            .map(|name| String::from_utf8_lossy(name).into_owned())
    }

    /// The client's certificate, DER bytes (as
    /// `getpeercert(binary_form=True)`), or None when it gave none.
    #[getter]
    fn peer_certificate<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.info
            .peer_certificate
            .as_ref()
            .map(|der| PyBytes::new(py, der))
    }

    fn __repr__(&self) -> String {
        format!(
            "<TlsInfo {} {} alpn={} peer_certificate={}>",
            self.info.version,
            self.info.cipher,
            self.alpn_protocol().as_deref().unwrap_or("None"),
            match &self.info.peer_certificate {
                Some(der) => format!("{} bytes", der.len()),
                None => "None".to_string(),
            }
        )
    }
}
