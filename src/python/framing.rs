//! `Framing` and `Decoder` for Python: the server's codecs, usable by clients
//! and tests so both sides frame bytes the same way.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use super::errors::frame_error;
use crate::config::DEFAULT_MAX_FRAME as MAX_FRAME;
use crate::framing::{ByteOrder, Decoder, Framing};
use crate::options::framing_by_name;

/// The default payload limit, as the `i64` Python arguments take.
const DEFAULT_MAX_FRAME: i64 = MAX_FRAME as i64;

/// How a byte stream is cut into messages: `Framing.raw()`, `Framing.lines()`
/// or `Framing.length_prefixed()`.
#[pyclass(name = "Framing", module = "iocp_echo", frozen, eq)]
#[derive(Clone, PartialEq)]
pub(crate) struct PyFraming {
    pub(crate) inner: Framing,
}

#[pymethods]
impl PyFraming {
    /// Each received chunk is a message.
    #[staticmethod]
    fn raw() -> PyFraming {
        PyFraming {
            inner: Framing::raw(),
        }
    }

    /// Messages end with `delimiter`.
    #[staticmethod]
    #[pyo3(signature = (delimiter = b"\n".to_vec()))]
    fn lines(delimiter: Vec<u8>) -> PyResult<PyFraming> {
        let inner = Framing::lines(&delimiter)
            .map_err(|e| PyValueError::new_err(format!("delimiter: {}", e)))?;
        Ok(PyFraming { inner })
    }

    /// Messages are preceded by their length in `width` bytes.
    #[staticmethod]
    #[pyo3(signature = (width = 4, byteorder = "big"))]
    fn length_prefixed(width: i64, byteorder: &str) -> PyResult<PyFraming> {
        let order =
            ByteOrder::parse(byteorder).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let width = u64::try_from(width).map_err(|_| {
            PyValueError::new_err(format!("width must be 1, 2, 4 or 8, got {}", width))
        })?;
        let inner = Framing::length_prefixed(width, order)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(PyFraming { inner })
    }

    /// `"raw"`, `"lines"` or `"length_prefixed"`.
    #[getter]
    fn kind(&self) -> &'static str {
        match self.inner {
            Framing::Raw => "raw",
            Framing::Lines { .. } => "lines",
            Framing::LengthPrefixed { .. } => "length_prefixed",
        }
    }

    /// The frame of one message, as the server would send it.
    fn encode<'py>(&self, py: Python<'py>, payload: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let encoded = self.inner.encode(payload).map_err(frame_error)?;
        Ok(PyBytes::new(py, &encoded))
    }

    /// A new streaming decoder for this framing.
    #[pyo3(signature = (max_frame = DEFAULT_MAX_FRAME))]
    fn decoder(&self, max_frame: i64) -> PyResult<PyDecoder> {
        PyDecoder::new(self, max_frame)
    }

    fn __repr__(&self) -> String {
        match &self.inner {
            Framing::Raw => "Framing.raw()".to_string(),
            Framing::Lines { delimiter } => format!("Framing.lines({})", bytes_repr(delimiter)),
            Framing::LengthPrefixed { width, order } => format!(
                "Framing.length_prefixed(width={}, byteorder={:?})",
                width,
                order.name()
            ),
        }
    }

    fn __hash__(&self) -> u64 {
        use std::collections::hash_map::DefaultHasher;
        use std::hash::{Hash, Hasher};
        let mut h = DefaultHasher::new();
        self.__repr__().hash(&mut h);
        h.finish()
    }
}

fn bytes_repr(bytes: &[u8]) -> String {
    let escaped: String = bytes
        .iter()
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    format!("b'{}'", escaped)
}

/// Turn the `framing=` argument (a `Framing`, or one of the names `"raw"`,
/// `"lines"`, `"length"`/`"length_prefixed"`, read by the options' shared
/// `framing_by_name`) into a codec.
pub(crate) fn framing_arg(value: &Bound<'_, PyAny>) -> PyResult<Framing> {
    if let Ok(framing) = value.cast::<PyFraming>() {
        return Ok(framing.get().inner.clone());
    }
    match value.extract::<String>() {
        Ok(name) => framing_by_name(&name).map_err(|e| PyValueError::new_err(e.to_string())),
        Err(_) => Err(PyTypeError::new_err(format!(
            "framing must be a str or a Framing, not {}",
            value.get_type().name()?
        ))),
    }
}

/// Cuts a byte stream fed in chunks of any size into whole messages.
#[pyclass(name = "Decoder", module = "iocp_echo")]
pub(crate) struct PyDecoder {
    inner: Decoder,
}

impl PyDecoder {
    fn new(framing: &PyFraming, max_frame: i64) -> PyResult<PyDecoder> {
        let max_frame = match usize::try_from(max_frame) {
            Ok(m) if m > 0 => m,
            _ => {
                return Err(PyValueError::new_err(format!(
                    "max_frame must be a positive integer, got {}",
                    max_frame
                )))
            }
        };
        Ok(PyDecoder {
            inner: framing.inner.decoder(max_frame),
        })
    }
}

#[pymethods]
impl PyDecoder {
    #[new]
    #[pyo3(signature = (framing, max_frame = DEFAULT_MAX_FRAME))]
    fn py_new(framing: &Bound<'_, PyAny>, max_frame: i64) -> PyResult<PyDecoder> {
        let inner = framing_arg(framing)?;
        PyDecoder::new(&PyFraming { inner }, max_frame)
    }

    /// The next bytes of the stream; returns the messages they complete.
    fn feed<'py>(&mut self, py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        let mut pushed = Ok(());
        let fed = self.inner.feed(data, &mut |frame| {
            if pushed.is_ok() {
                pushed = list.append(PyBytes::new(py, frame));
            }
        });
        fed.map_err(frame_error)?;
        pushed?;
        Ok(list)
    }

    /// The stream ended: returns a last message without delimiter (lines), or
    /// raises `FramingError` if a length-prefixed frame was cut short.
    fn finish<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        let mut pushed = Ok(());
        let fed = self.inner.finish(&mut |frame| {
            if pushed.is_ok() {
                pushed = list.append(PyBytes::new(py, frame));
            }
        });
        fed.map_err(frame_error)?;
        pushed?;
        Ok(list)
    }

    /// Bytes held waiting for the rest of a message.
    #[getter]
    fn buffered(&self) -> usize {
        self.inner.buffered()
    }

    /// The payload limit.
    #[getter]
    fn max_frame(&self) -> usize {
        self.inner.max_frame()
    }
}
