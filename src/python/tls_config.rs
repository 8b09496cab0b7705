//! `TlsConfig` for Python: a server's TLS settings, checked and loaded once at
//! construction, shared by every server given it (`Server(..., tls=config)`),
//! like an `ssl.SSLContext` whose names it takes.
//!
//! Nothing is checked here that the options table (`crate::options`) or the
//! loader (`ServerTls::load`) does not check for `Server(tls_cert=...)` and
//! the command lines: each argument is read as its `tls_*` option under the
//! argument's name, so a bad one gets the option's message naming the
//! argument (`handshake_timeout must be a positive number of seconds, got 0`),
//! and a file that cannot be used the loader's (`OSError` naming an unreadable
//! file, `ValueError` naming the argument and the file otherwise).

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::errors::tls_load_error;
use super::options::from_python;
use crate::config::Config;
use crate::options::{by_name, ServerOption, Setting, Value};
use crate::tls::{LoadError, ServerTls, TlsSettings};

/// Each argument of `TlsConfig(...)` (also the attribute `Server(tls=...)`
/// reads) and the option it is read as.
const ARGUMENTS: [(&str, &str); 5] = [
    ("certfile", "tls_cert"),
    ("keyfile", "tls_key"),
    ("cafile", "tls_client_ca"),
    ("alpn_protocols", "tls_alpn"),
    ("handshake_timeout", "tls_handshake_timeout"),
];

/// A server's TLS: certificate chain and key, optional client CAs (mutual
/// TLS), ALPN protocols and handshake timeout; the files read once.
#[pyclass(name = "TlsConfig", module = "iocp_echo", frozen)]
pub(crate) struct PyTlsConfig {
    settings: TlsSettings,
    loaded: ServerTls,
}

impl PyTlsConfig {
    /// The settings and their loaded form, for a server.
    pub(crate) fn parts(&self) -> (TlsSettings, ServerTls) {
        (self.settings.clone(), self.loaded.clone())
    }

    /// Check the arguments, given as option values in `ARGUMENTS`' order,
    /// and load the files.
    fn build(values: [Value; 5]) -> PyResult<PyTlsConfig> {
        let mut config = Config::default();
        for ((name, option), value) in ARGUMENTS.iter().zip(values.iter()) {
            if *value == Value::None && (*name == "certfile" || *name == "keyfile") {
                return Err(PyTypeError::new_err(format!(
                    "{} must be a path (str or os.PathLike), not None",
                    name
                )));
            }
            argument(name, option)
                .apply(&mut config, value)
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
        }
        let loaded = ServerTls::load(&config.tls)
            .map_err(|e| tls_load_error(&named_by_argument(e)))?
            .ok_or_else(|| PyValueError::new_err("certfile must be given"))?;
        Ok(PyTlsConfig {
            settings: config.tls,
            loaded,
        })
    }

    /// `tls`, the `tls=` of `Server(...)`: a `TlsConfig` as it is, or any
    /// object with its attributes checked and loaded as `TlsConfig(...)` would.
    pub(crate) fn of(tls: &Bound<'_, PyAny>) -> PyResult<(TlsSettings, ServerTls)> {
        if let Ok(config) = tls.cast::<PyTlsConfig>() {
            return Ok(config.get().parts());
        }
        let mut values: [Value; 5] = std::array::from_fn(|_| Value::None);
        for ((name, option), slot) in ARGUMENTS.iter().zip(values.iter_mut()) {
            let value = tls.getattr(*name).map_err(|_| not_a_config(tls))?;
            *slot = from_python(&argument(name, option), &value)?;
        }
        Ok(PyTlsConfig::build(values)?.parts())
    }
}

#[pymethods]
impl PyTlsConfig {
    /// `TlsConfig(certfile, keyfile, cafile=None, alpn_protocols=None,
    /// handshake_timeout=10.0)`: the arguments checked (`TypeError`,
    /// `ValueError` naming the argument) and the files read now (`OSError`
    /// naming one that cannot be read, `ValueError` naming one that cannot
    /// be used: not PEM, no certificate or key, a key not matching the
    /// certificate).
    /// (`handshake_timeout=None`, as `Server(...)`'s None, is the default.)
    #[new]
    #[pyo3(
        signature = (certfile, keyfile, cafile = None, alpn_protocols = None, handshake_timeout = None),
        text_signature = "(certfile, keyfile, cafile=None, alpn_protocols=None, handshake_timeout=10.0)"
    )]
    fn new(
        certfile: &Bound<'_, PyAny>,
        keyfile: &Bound<'_, PyAny>,
        cafile: Option<&Bound<'_, PyAny>>,
        alpn_protocols: Option<&Bound<'_, PyAny>>,
        handshake_timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyTlsConfig> {
        let given = [
            Some(certfile),
            Some(keyfile),
            cafile,
            alpn_protocols,
            handshake_timeout,
        ];
        let mut values: [Value; 5] = std::array::from_fn(|_| Value::None);
        for (((name, option), value), slot) in ARGUMENTS.iter().zip(given).zip(values.iter_mut()) {
            if let Some(value) = value {
                *slot = from_python(&argument(name, option), value)?;
            }
        }
        PyTlsConfig::build(values)
    }

    /// The certificate chain file (PEM, the server's certificate first).
    #[getter]
    fn certfile(&self) -> String {
        path_text(&self.settings.cert)
    }

    /// The private key file of the certificate (PEM).
    #[getter]
    fn keyfile(&self) -> String {
        path_text(&self.settings.key)
    }

    /// The client CA file (PEM): set, clients must present a certificate
    /// signed by one of them (mutual TLS); else None.
    #[getter]
    fn cafile(&self) -> Option<String> {
        self.settings
            .client_ca
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
    }

    /// The ALPN protocols offered, most preferred first, or None.
    #[getter]
    fn alpn_protocols<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        if self.settings.alpn.is_empty() {
            return Ok(None);
        }
        PyTuple::new(py, &self.settings.alpn).map(Some)
    }

    /// Seconds a client has to finish its handshake.
    #[getter]
    fn handshake_timeout(&self) -> f64 {
        self.settings.handshake_timeout.as_secs_f64()
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let mut parts = Vec::with_capacity(ARGUMENTS.len());
        for (name, _) in ARGUMENTS {
            parts.push(format!("{}={}", name, slf.getattr(name)?.repr()?));
        }
        Ok(format!("TlsConfig({})", parts.join(", ")))
    }
}

/// Whether `option` is one of the `tls_*` options `TlsConfig` stands for.
pub(crate) fn is_tls_option(option: &ServerOption) -> bool {
    matches!(
        option.setting,
        Setting::TlsCert
            | Setting::TlsKey
            | Setting::TlsClientCa
            | Setting::TlsAlpn
            | Setting::TlsHandshakeTimeout
    )
}

/// The `tls_*` option `option` under the argument's `name`, so its messages
/// name the argument.
fn argument(name: &'static str, option: &str) -> ServerOption {
    let option = by_name(option).expect("every TlsConfig argument is an option");
    ServerOption { name, ..*option }
}

/// A loader error naming the argument (`certfile`) instead of the option.
fn named_by_argument(mut e: LoadError) -> LoadError {
    let option = match &mut e {
        LoadError::Unreadable { option, .. } | LoadError::Invalid { option, .. } => option,
    };
    if let Some((name, _)) = ARGUMENTS.iter().find(|(_, o)| o == option) {
        *option = name;
    }
    e
}

fn path_text(path: &Option<std::path::PathBuf>) -> String {
    path.as_ref()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cold]
fn not_a_config(tls: &Bound<'_, PyAny>) -> PyErr {
    PyTypeError::new_err(format!(
        "tls must be a TlsConfig (certfile, keyfile, cafile, alpn_protocols, \
         handshake_timeout) or None, not {}",
        tls.get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default()
    ))
}
