//! The sender of a running protocol server, shared by its handler and its
//! `Connection` objects.

use std::sync::RwLock;

use pyo3::prelude::*;

use crate::server::ConnectionSender;

/// The server's sender, set once the server has started and cleared when it
/// closed (the sender holds the server's state, which holds this handler).
/// Connections send through it, so one kept after its server closed holds
/// nothing of the server. A connection can open before `Server::start`
/// returns: its `Open` waits (detached) until the sender is set.
#[derive(Default)]
pub(crate) struct SenderSlot {
    sender: RwLock<Option<ConnectionSender>>,
}

impl SenderSlot {
    /// Set the sender (the server started) or clear it (it closed).
    pub(crate) fn set(&self, sender: Option<ConnectionSender>) {
        *self.sender.write().unwrap_or_else(|e| e.into_inner()) = sender;
    }

    /// Call `f` with the sender, or `None` once the server closed.
    pub(crate) fn with<R>(&self, f: impl FnOnce(Option<&ConnectionSender>) -> R) -> R {
        f(self
            .sender
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref())
    }

    /// Wait until the sender is set; false if it is not within a second
    /// (the start failed).
    pub(crate) fn wait(&self, py: Python<'_>) -> bool {
        if self.with(|s| s.is_some()) {
            return true;
        }
        py.detach(|| {
            for _ in 0..1000 {
                if self.with(|s| s.is_some()) {
                    return true;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            false
        })
    }
}
