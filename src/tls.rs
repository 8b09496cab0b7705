//! TLS for the server, in user space with rustls: the settings, loading the
//! certificate chain and key, the rustls server configuration, and one session
//! per connection. Knows nothing of the server, ports or Python: the server's
//! transport (`server/transport.rs`) drives a [`Session`] with the bytes of its
//! completions, on every backend alike (see `docs/architecture.md`, "TLS").
//!
//! Rules:
//! * Files are read once, when a server is built ([`ServerTls::load`]); every
//!   error names the option and the file ([`LoadError`]).
//! * A session never touches a socket: ciphertext goes in as the bytes of a
//!   recv, plaintext comes out into a buffer the caller gives; plaintext goes in
//!   as a sequence of byte slices and records come out into the caller's buffer.
//! * A session's failures are [`TlsFailure`]s: the connection is closed for
//!   them, any alert rustls queued sent first.

mod failure;
mod info;
mod key_match;
mod pem;
mod records;
mod server_tls;
mod session;
mod settings;

pub use failure::{LoadError, TlsFailure};
pub use info::TlsInfo;
pub use server_tls::ServerTls;
pub use session::Session;
pub use settings::{TlsSettings, DEFAULT_HANDSHAKE_TIMEOUT};

#[cfg(test)]
pub(crate) mod test_certs;
#[cfg(test)]
mod tests;
