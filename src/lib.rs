//! iocp_echo: a TCP message server whose network core is a completion port.
//!
//! The layers, bottom up (see `docs/architecture.md` in the repository):
//!
//! * [`contract`]: the completion-port contract (ops, completions, the
//!   `CompletionPort` trait and the narrow `Driver` a backend implements).
//! * the drivers: `uring` and `epoll` on Linux (sharing `linux`), `iocp` on
//!   Windows; [`front`]: what every port does alike, over any driver.
//! * [`port`]: the `Port` a worker holds and the choice of its backend.
//! * [`framing`]: the codecs (raw, lines, length-prefixed), pure functions over bytes.
//! * [`server`]: listener, workers, connections, limits, stats and shutdown, on
//!   any backend; [`config`] its settings, [`options`] how every front gives them.
//! * `python` (feature `python`): the `iocp_echo._native` extension module.

pub mod bench;
pub mod cli;
pub mod config;
#[cfg(test)]
mod conformance;
pub mod contract;
pub mod framing;
pub mod front;
pub mod options;
pub mod port;
pub mod proxy;
pub mod server;
pub mod tls;

#[cfg(target_os = "linux")]
pub mod epoll;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub mod uring;

#[cfg(windows)]
pub mod iocp;

#[cfg(feature = "python")]
mod python;
