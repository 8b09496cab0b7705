//! What a server does with frames, fixed once at start: echo them natively, or
//! give them to a handler (with or without connection events).

use std::sync::Arc;

use super::handler::Handler;
use crate::framing::Framing;

/// The server's mode. Matched where it matters, never recomputed per message.
#[derive(Clone)]
pub(crate) enum Mode {
    /// Echo every frame natively. `raw`: the framing is raw, so a received
    /// buffer is sent back as it is.
    Echo { raw: bool },
    /// Give frames to a handler. `events`: it asked for connection events.
    Handler {
        handler: Arc<dyn Handler>,
        events: bool,
    },
}

impl Mode {
    /// The mode for a server with `handler` (`None`: the native echo) and `framing`.
    pub(crate) fn new(handler: Option<Arc<dyn Handler>>, framing: &Framing) -> Mode {
        match handler {
            None => Mode::Echo {
                raw: *framing == Framing::Raw,
            },
            Some(handler) => Mode::Handler {
                events: handler.wants_events(),
                handler,
            },
        }
    }

    /// The handler, unless the server echoes natively.
    pub(crate) fn handler(&self) -> Option<&Arc<dyn Handler>> {
        match self {
            Mode::Echo { .. } => None,
            Mode::Handler { handler, .. } => Some(handler),
        }
    }

    /// Whether the server echoes natively.
    #[inline]
    pub(crate) fn echoes(&self) -> bool {
        matches!(self, Mode::Echo { .. })
    }

    /// Whether received buffers are echoed as they are (native raw echo).
    #[inline]
    pub(crate) fn echoes_raw(&self) -> bool {
        matches!(self, Mode::Echo { raw: true })
    }

    /// Whether connection events are made (the handler asked for them).
    #[inline]
    pub(crate) fn events(&self) -> bool {
        matches!(self, Mode::Handler { events: true, .. })
    }
}
