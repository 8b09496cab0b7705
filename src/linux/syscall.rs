//! Turning libc return values into `io::Result`s.

use std::io;

/// A libc return value as a result: a negative value means `errno`.
pub(crate) fn cvt<T: Copy + PartialOrd + Default>(value: T) -> io::Result<T> {
    if value < T::default() {
        Err(io::Error::last_os_error())
    } else {
        Ok(value)
    }
}

/// Run a syscall again while it fails with `EINTR`.
pub(crate) fn retry_eintr<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}
