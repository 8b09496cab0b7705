//! What every step of a worker's turn reads but does not change: the
//! settings, the mode, the worker's counters and mailbox, and the turn's clock.

use std::time::Instant;

use super::mailbox::Mailbox;
use super::mode::Mode;
use super::shared::Shared;
use super::stats::WorkerCounters;
use crate::config::Config;
use crate::tls::ServerTls;

/// The read-only context of one worker's turn.
#[derive(Clone, Copy)]
pub(crate) struct Turn<'a> {
    pub(crate) config: &'a Config,
    pub(crate) mode: &'a Mode,
    /// The server's TLS; `None`: plain TCP.
    pub(crate) tls: Option<&'a ServerTls>,
    pub(crate) counters: &'a WorkerCounters,
    pub(crate) mailbox: &'a Mailbox,
    /// Every worker's mailbox, for handing over.
    pub(crate) mailboxes: &'a [Mailbox],
    /// When this turn's completions were collected: the time of every message
    /// in the turn (one clock read per turn, not two per message).
    pub(crate) now: Instant,
}

impl<'a> Turn<'a> {
    /// The context of worker `index` at `now`.
    pub(crate) fn new(shared: &'a Shared, index: usize, now: Instant) -> Turn<'a> {
        Turn {
            config: &shared.config,
            mode: &shared.mode,
            tls: shared.tls.as_ref(),
            counters: &shared.counters[index],
            mailbox: &shared.mailboxes[index],
            mailboxes: &shared.mailboxes,
            now,
        }
    }
}
