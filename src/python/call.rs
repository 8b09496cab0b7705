//! Calls with one positional argument, per message, that build no argument tuple.
//!
//! The extension is built on the stable ABI of CPython 3.9 (see docs/architecture.md,
//! packaging), which has no `PyObject_CallOneArg` or `PyObject_VectorcallMethod`, so
//! PyO3's `call1`/`call_method1` there allocate a one-element tuple per call (and
//! `call_method1` a bound method too). `PyObject_CallFunctionObjArgs` and
//! `PyObject_CallMethodObjArgs` are in that stable ABI and hand their arguments to
//! vectorcall from the C stack (the method one without binding a plain function), so
//! a call costs what it costs in the full API. Rule: the variadic list ends with NULL.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyString;

/// `callable(arg)`.
pub(crate) fn call_one<'py>(
    callable: &Bound<'py, PyAny>,
    arg: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let end = std::ptr::null_mut::<ffi::PyObject>();
    // SAFETY: both objects are live (borrowed for the call), the argument list ends with
    // NULL, and the result is a new reference or NULL with an exception set, which
    // `from_owned_ptr_or_err` takes over.
    unsafe {
        Bound::from_owned_ptr_or_err(
            callable.py(),
            ffi::PyObject_CallFunctionObjArgs(callable.as_ptr(), arg.as_ptr(), end),
        )
    }
}

/// `object.name(arg)`.
pub(crate) fn call_method_one<'py>(
    object: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
    arg: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let end = std::ptr::null_mut::<ffi::PyObject>();
    // SAFETY: as in `call_one`; `name` is a `str`, as the function requires.
    unsafe {
        Bound::from_owned_ptr_or_err(
            object.py(),
            ffi::PyObject_CallMethodObjArgs(object.as_ptr(), name.as_ptr(), arg.as_ptr(), end),
        )
    }
}
