//! `run_bench` for Python: the load generator of `iocp-echo bench`, run with
//! the GIL released, Ctrl-C honoured, and its report returned as a dict.

use std::path::PathBuf;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::errors::os_error;
use crate::bench::{Bench, BenchConfig, BenchError, Limit, MessageFraming, TlsSettings, Value};
use crate::port::BackendChoice;

/// How long one wait for the clients lasts before signals are checked again.
const SIGNAL_SLICE: Duration = Duration::from_millis(50);

/// Run a closed-loop echo load against a server and return its report: the
/// fields of the JSON report (`connections, size, framing, messages, errors,
/// seconds, messages_per_s, mb_per_s, p50_us, p99_us, p999_us, max_us`) and
/// details, then `notes` (warnings, such as connect failures) and `summary`
/// (the text `iocp-echo bench` prints). Runs for `duration` seconds (10 if
/// neither is given) or until `count` messages. `tls_ca` (a PEM file) makes
/// the clients speak TLS, verifying the server against it and the name
/// `tls_server_name` (default: `host`); `messages_per_connection` closes each
/// connection after that many messages and opens a new one (so every
/// connection's handshake is measured: `connects_per_s`, `handshakes_per_s`).
#[pyfunction]
#[pyo3(signature = (
    *, host = "127.0.0.1", port = 8080, connections = 50, size = 64,
    duration = None, count = None, framing = "raw", threads = 1, warmup = 0.0,
    backend = "auto", progress = false, tls_ca = None, tls_server_name = None,
    messages_per_connection = None,
))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_bench<'py>(
    py: Python<'py>,
    host: &str,
    port: i64,
    connections: i64,
    size: i64,
    duration: Option<f64>,
    count: Option<i64>,
    framing: &str,
    threads: i64,
    warmup: f64,
    backend: &str,
    progress: bool,
    tls_ca: Option<PathBuf>,
    tls_server_name: Option<String>,
    messages_per_connection: Option<i64>,
) -> PyResult<Bound<'py, PyDict>> {
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| value_error(format!("port must be 1..=65535, got {}", port)))?;
    let mut config = BenchConfig {
        addr: crate::cli::resolve(host, port).map_err(value_error)?,
        connections: count_arg("connections", connections)?,
        size: count_arg("size", size)?,
        framing: MessageFraming::parse(framing).map_err(value_error)?,
        threads: count_arg("threads", threads)?,
        backend: BackendChoice::parse(backend)
            .map_err(|e| value_error(format!("backend: {}", e)))?,
        progress,
        ..BenchConfig::default()
    };
    config.warmup = seconds("warmup", warmup, true)?;
    config.limit = match (duration, count) {
        (Some(_), Some(_)) => return Err(value_error("give duration or count, not both")),
        (Some(d), None) => Limit::Duration(seconds("duration", d, false)?),
        (None, Some(n)) => Limit::Count(count_arg("count", n)? as u64),
        (None, None) => config.limit,
    };
    config.tls = match (tls_ca, tls_server_name) {
        (Some(ca_file), name) => Some(TlsSettings {
            ca_file,
            server_name: name.unwrap_or_else(|| host.to_string()),
        }),
        (None, Some(_)) => return Err(value_error("tls_server_name needs tls_ca")),
        (None, None) => None,
    };
    if let Some(n) = messages_per_connection {
        config.messages_per_connection = Some(count_arg("messages_per_connection", n)? as u64);
    }

    let mut bench = py.detach(|| Bench::start(config)).map_err(bench_error)?;
    loop {
        if py.detach(|| bench.poll(SIGNAL_SLICE)) {
            break;
        }
        if let Err(e) = py.check_signals() {
            // Stop the clients and wait for them to close, then raise.
            bench.stop();
            let _ = py.detach(move || bench.finish());
            return Err(e);
        }
    }
    let report = py.detach(move || bench.finish()).map_err(bench_error)?;
    let dict = PyDict::new(py);
    for (name, value) in report.fields() {
        match value {
            Value::Int(v) => dict.set_item(name, v)?,
            Value::Float(v) => dict.set_item(name, v)?,
            Value::Text(v) => dict.set_item(name, v)?,
            Value::Null => dict.set_item(name, py.None())?,
        }
    }
    dict.set_item("notes", report.notes())?;
    dict.set_item("summary", report.human())?;
    Ok(dict)
}

fn bench_error(e: BenchError) -> PyErr {
    match e {
        BenchError::Config(why) => value_error(why),
        BenchError::Io(e) => os_error(&e, "bench"),
    }
}

fn value_error(message: impl Into<String>) -> PyErr {
    PyValueError::new_err(message.into())
}

/// A positive integer argument; the range of each is checked by the config.
fn count_arg(name: &str, value: i64) -> PyResult<usize> {
    usize::try_from(value)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| {
            value_error(format!(
                "{} must be a positive integer, got {}",
                name, value
            ))
        })
}

fn seconds(name: &str, value: f64, zero_ok: bool) -> PyResult<Duration> {
    let ok = value.is_finite() && value <= 86_400.0 && (value > 0.0 || (zero_ok && value == 0.0));
    if !ok {
        return Err(value_error(format!(
            "{} must be {} seconds (at most 86400), got {}",
            name,
            if zero_ok { "0 or more" } else { "positive" },
            value
        )));
    }
    Ok(Duration::from_secs_f64(value))
}
