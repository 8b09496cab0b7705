//! iocp_echo: a TCP message server whose network core is a completion port.
//!
//! The layers, bottom up (see `DESIGN.md` in the repository):
//!
//! * [`port`]: the completion-port contract; `uring` and `epoll` implement it on
//!   Linux, `iocp` on Windows.
//! * [`framing`]: the codecs (raw, lines, length-prefixed), pure functions over bytes.
//! * [`server`]: listener, workers, connections, limits, stats and shutdown, on
//!   any backend; [`config`] its settings, [`options`] how every front gives them.
//! * `python` (feature `python`): the `iocp_echo._native` extension module.

pub mod bench;
pub mod cli;
pub mod config;
pub mod framing;
pub mod options;
pub mod port;
pub mod server;

#[cfg(target_os = "linux")]
pub mod epoll;
#[cfg(target_os = "linux")]
pub mod uring;

#[cfg(windows)]
pub mod iocp;

#[cfg(feature = "python")]
mod python;
