//! Locking a mutex the way every part of the server does.

use std::sync::{Mutex, MutexGuard};

/// Lock a mutex, ignoring poisoning: every value behind the server's mutexes
/// stays valid even if a holder panicked (a worker panic is reported separately).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
