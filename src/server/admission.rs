//! `max_connections`: the count of open connections across every worker, and
//! the token a connection holds while it counts.
//!
//! The count goes up in one place ([`Gate::admit`]) and down in one place (the
//! drop of the [`Admission`]), so no path that frees, refuses or abandons a
//! connection can forget it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The open-connection count and its limit, shared by every worker.
#[derive(Debug)]
pub(crate) struct Gate {
    open: AtomicUsize,
    limit: usize,
}

/// One open connection's place under the limit; released when dropped.
#[derive(Debug)]
pub(crate) struct Admission {
    gate: Arc<Gate>,
}

impl Gate {
    /// A gate letting at most `limit` connections be open at once.
    pub(crate) fn new(limit: usize) -> Gate {
        Gate {
            open: AtomicUsize::new(0),
            limit,
        }
    }

    /// Count one more open connection, unless `limit` are open: then `Err`
    /// with the number open.
    pub(crate) fn admit(gate: &Arc<Gate>) -> Result<Admission, usize> {
        let open = gate.open.fetch_add(1, Ordering::SeqCst);
        if open >= gate.limit {
            gate.open.fetch_sub(1, Ordering::SeqCst);
            return Err(open);
        }
        Ok(Admission {
            gate: Arc::clone(gate),
        })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.gate.open.fetch_sub(1, Ordering::SeqCst);
    }
}
