//! The options definition (`crate::options`) for Python: `OPTIONS`, a tuple of
//! `ServerOption` records the command line builds its flags from; Python values
//! turned into option values (a wrong type is a `TypeError` naming the option; a
//! bad value is left to `ServerOption::apply`, whose message every front shares);
//! and `option_from_text`, the command line's text of a flag as the value
//! `Server(...)` takes.

use std::path::PathBuf;

use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyString, PyTuple};
use pyo3::IntoPyObjectExt;

use crate::config::Config;
use crate::options::{by_name, Kind, ServerOption, Value, OPTIONS};

/// One server option: its keyword, its flag, the values it takes, its default
/// and its help.
#[pyclass(name = "ServerOption", module = "iocp_echo", frozen)]
pub(crate) struct PyServerOption {
    option: &'static ServerOption,
}

#[pymethods]
impl PyServerOption {
    /// The keyword of `Server(...)`, also the name in error messages.
    #[getter]
    fn name(&self) -> &'static str {
        self.option.name
    }

    /// The command-line flag, `--max-frame`.
    #[getter]
    fn flag(&self) -> &'static str {
        self.option.flag
    }

    /// `"host"`, `"count"`, `"bytes"`, `"seconds"`, `"choice"`, `"framing"`,
    /// `"path"`, `"names"`, `"flag"` (a `bool`) or `"cidrs"`.
    #[getter]
    fn kind(&self) -> &'static str {
        self.option.kind.name()
    }

    /// Whether None (`none` on the command line) is a value, not just "the default".
    #[getter]
    fn optional(&self) -> bool {
        self.option.kind.optional()
    }

    /// The smallest value of a count, else None.
    #[getter]
    fn minimum(&self) -> Option<i128> {
        match self.option.kind {
            Kind::Count { min, .. } | Kind::Bytes { min, .. } => Some(min),
            _ => None,
        }
    }

    /// The largest value of a count, else None.
    #[getter]
    fn maximum(&self) -> Option<i128> {
        match self.option.kind {
            Kind::Count { max, .. } | Kind::Bytes { max, .. } => Some(max),
            _ => None,
        }
    }

    /// The names a choice or framing takes, else empty.
    #[getter]
    fn choices<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let names: &[&str] = match self.option.kind {
            Kind::Choice(names) | Kind::Framing(names) => names,
            _ => &[],
        };
        PyTuple::new(py, names)
    }

    /// The value a server has when the option is not given.
    #[getter]
    fn default<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, &self.option.current(&Config::default()))
    }

    /// One line of help.
    #[getter]
    fn help(&self) -> &'static str {
        self.option.help
    }

    fn __repr__(&self) -> String {
        format!("<ServerOption {} {}>", self.option.name, self.option.flag)
    }
}

/// `OPTIONS`: every server option, in the order `--help` lists them.
pub(crate) fn options_tuple(py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
    let records = OPTIONS
        .iter()
        .map(|option| Bound::new(py, PyServerOption { option }))
        .collect::<PyResult<Vec<_>>>()?;
    PyTuple::new(py, records)
}

/// The value `Server(...)` takes for `name`, from the text of its command-line
/// flag. A number's value is checked here (`ValueError`, the message `Server`
/// and the binary give); names and hosts are left to `Server`.
#[pyfunction]
pub(crate) fn option_from_text<'py>(
    py: Python<'py>,
    name: &str,
    text: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let option =
        by_name(name).ok_or_else(|| PyValueError::new_err(format!("no option {:?}", name)))?;
    let value = option.parse_text(text);
    if let Kind::Count { .. } | Kind::Bytes { .. } | Kind::Seconds { .. } = option.kind {
        option
            .apply(&mut Config::default(), &value)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
    }
    to_python(py, &value)
}

/// A Python argument as the value of `option`; a type the option never takes is
/// a `TypeError` naming it.
pub(crate) fn from_python(option: &ServerOption, value: &Bound<'_, PyAny>) -> PyResult<Value> {
    if value.is_none() {
        return Ok(Value::None);
    }
    let wrong_type = |wanted: &str| -> PyResult<Value> {
        Err(PyTypeError::new_err(format!(
            "{} must be {}, not {}",
            option.name,
            wanted,
            value.get_type().name()?
        )))
    };
    match option.kind {
        Kind::Count { .. } | Kind::Bytes { .. } => match value.extract::<i128>() {
            Ok(i) => Ok(Value::Int(i)),
            // Too many digits: out of range, which `apply` says with the number.
            Err(e) if e.is_instance_of::<PyOverflowError>(value.py()) => {
                Ok(Value::Text(value.str()?.to_string()))
            }
            Err(_) => wrong_type("an int"),
        },
        Kind::Seconds { .. } => match value.extract::<i128>() {
            Ok(i) => Ok(Value::Int(i)),
            Err(e) if e.is_instance_of::<PyOverflowError>(value.py()) => Ok(Value::Float(
                value.extract::<f64>().unwrap_or(f64::INFINITY),
            )),
            Err(_) => match value.extract::<f64>() {
                Ok(x) if !value.is_instance_of::<PyString>() => Ok(Value::Float(x)),
                _ => wrong_type("a number of seconds"),
            },
        },
        Kind::Host | Kind::Choice(_) | Kind::Framing(_) => match value.extract::<String>() {
            Ok(text) => Ok(Value::Text(text)),
            Err(_) => wrong_type("a str"),
        },
        Kind::Path => match value.extract::<PathBuf>() {
            Ok(path) => Ok(Value::Text(path.to_string_lossy().into_owned())),
            Err(_) => wrong_type("a path (str or os.PathLike)"),
        },
        Kind::Flag => {
            if let Ok(on) = value.cast::<PyBool>() {
                return Ok(Value::Bool(on.is_true()));
            }
            // Not a bool: a number or text is refused by `apply`, with the
            // message every front gives.
            match value.extract::<i128>() {
                Ok(i) => Ok(Value::Int(i)),
                Err(_) => match value.extract::<String>() {
                    Ok(text) => Ok(Value::Text(text)),
                    Err(_) => wrong_type("a bool"),
                },
            }
        }
        Kind::Names | Kind::Cidrs => {
            if let Ok(text) = value.extract::<String>() {
                return Ok(Value::List(text.split(',').map(str::to_string).collect()));
            }
            match value.extract::<Vec<String>>() {
                Ok(names) => Ok(Value::List(names)),
                Err(_) => wrong_type("a list of str"),
            }
        }
    }
}

fn to_python<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    match value {
        Value::None => Ok(py.None().into_bound(py)),
        Value::Int(i) => i.into_bound_py_any(py),
        Value::Float(x) => x.into_bound_py_any(py),
        Value::Text(t) => t.into_bound_py_any(py),
        Value::List(names) => names.into_bound_py_any(py),
        Value::Bool(on) => on.into_bound_py_any(py),
    }
}
