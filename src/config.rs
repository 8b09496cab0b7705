//! The server's settings ([`Config`]): defaults, limits and validation.
//!
//! How each setting is given (names, flags, per-value checks and their messages)
//! is `crate::options`; [`Config::validate`] is the final check of the whole.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::framing::Framing;
use crate::port::BackendChoice;
use crate::proxy::Cidr;
use crate::tls::TlsSettings;

/// Everything a server is configured with.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Where to listen; port 0 picks a free port. Unused when `path` is set.
    pub addr: SocketAddr,
    /// Listen on this Unix domain socket instead of `addr` (Linux only): a
    /// stale socket file there (nobody listening) is replaced, anything else
    /// at the path is an error; the file is removed when the server closes.
    pub path: Option<PathBuf>,
    /// How the byte stream is cut into messages, and replies framed.
    pub framing: Framing,
    /// Worker threads, each with its own completion port (at least 1).
    pub workers: usize,
    /// Which I/O backend to use.
    pub backend: BackendChoice,
    /// Largest message payload accepted, in bytes.
    pub max_frame: usize,
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Close a connection that completes no message for this long: no whole
    /// frame received and no reply fully sent. A silent client and one that
    /// trickles a frame a byte at a time (or reads its replies that way) are
    /// both cut; it must exceed the time a legitimate client takes to send
    /// one message.
    pub idle_timeout: Option<Duration>,
    /// How long `close` lets connections finish sending queued replies.
    pub drain_timeout: Duration,
    /// A connection the server closes while its peer was active within this
    /// long first shuts its sending side and reads (discarding) until the
    /// peer's end of stream or this long without input, so input already on
    /// its way does not turn the close into a reset (nginx's
    /// `lingering_timeout`; see `Phase::Lingering` in `server/connection.rs`).
    pub linger_timeout: Duration,
    /// Queued output above which a connection stops reading.
    pub high_water: usize,
    /// Queued output below which a paused connection reads again.
    pub low_water: usize,
    /// Queued output (replies and pushed bytes, the send in flight included)
    /// a connection may hold: one whose output would pass it is closed at once
    /// as a slow consumer, its output dropped. Must be above `high_water`.
    pub max_output: usize,
    /// Length of the kernel's accept queue.
    pub backlog: i32,
    /// Set `SO_REUSEPORT` on the listener (Linux only), so several processes
    /// each listen on the same address and the kernel spreads connections
    /// over them; off by default.
    pub reuse_port: bool,
    /// TLS: on when a certificate is given.
    pub tls: TlsSettings,
    /// Every connection starts with a PROXY protocol header (v1 or v2), read
    /// before TLS and framing: the connection's peer becomes the client it
    /// names. A connection without a valid header, or from a peer outside
    /// `trusted_proxies`, is closed (counted in `proxy_errors`).
    pub proxy_protocol: bool,
    /// The networks a PROXY protocol header may come from (default:
    /// loopback, `127.0.0.0/8` and `::1/128`).
    pub trusted_proxies: Vec<Cidr>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            path: None,
            framing: Framing::Raw,
            workers: default_workers(),
            backend: BackendChoice::Auto,
            max_frame: DEFAULT_MAX_FRAME,
            max_connections: 10_000,
            idle_timeout: None,
            drain_timeout: Duration::from_secs(2),
            linger_timeout: Duration::from_millis(200),
            high_water: 1 << 20,
            low_water: 256 << 10,
            max_output: DEFAULT_MAX_OUTPUT,
            backlog: 1024,
            reuse_port: false,
            tls: TlsSettings::default(),
            proxy_protocol: false,
            trusted_proxies: Cidr::loopback(),
        }
    }
}

/// The default payload limit: 4 MiB.
pub const DEFAULT_MAX_FRAME: usize = 4 << 20;

/// The default bound on a connection's queued output: 16 MiB.
pub const DEFAULT_MAX_OUTPUT: usize = 16 << 20;

/// The number of CPUs, the default worker count.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

impl Config {
    /// Check every setting; the error names the bad one and what is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |name: &'static str, why: String| Err(ConfigError { name, why });
        if self.workers == 0 || self.workers > 1024 {
            return bad(
                "workers",
                format!("must be 1 to 1024, got {}", self.workers),
            );
        }
        if self.max_frame == 0 {
            return bad("max_frame", "must be at least 1, got 0".to_string());
        }
        if self.max_connections == 0 {
            return bad("max_connections", "must be at least 1, got 0".to_string());
        }
        if let Some(t) = self.idle_timeout {
            if t.is_zero() {
                return bad(
                    "idle_timeout",
                    "must be a positive number of seconds or none, got 0".to_string(),
                );
            }
        }
        if self.low_water >= self.high_water {
            return bad(
                "low_water",
                format!(
                    "must be below high_water ({}), got {}",
                    self.high_water, self.low_water
                ),
            );
        }
        if self.max_output <= self.high_water {
            // Reading pauses at high_water: a bound at or below it would close a
            // connection that backpressure was about to slow down.
            return bad(
                "max_output",
                format!(
                    "must be above high_water ({}), got {}",
                    self.high_water, self.max_output
                ),
            );
        }
        if let Some(path) = &self.path {
            if !cfg!(target_os = "linux") {
                return bad(
                    "path",
                    format!(
                        "(a Unix domain socket) is supported on Linux only, not on {}",
                        std::env::consts::OS
                    ),
                );
            }
            if path.as_os_str().is_empty() {
                return bad("path", "must be a file path, got an empty one".to_string());
            }
        }
        if self.backlog <= 0 {
            return bad(
                "backlog",
                format!("must be at least 1, got {}", self.backlog),
            );
        }
        self.validate_tls()
    }

    /// The TLS files come as a pair; the other TLS settings only with them.
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let bad = |name: &'static str, why: &str| {
            Err(ConfigError {
                name,
                why: why.to_string(),
            })
        };
        let tls = &self.tls;
        match (&tls.cert, &tls.key) {
            (Some(_), None) => {
                return bad("tls_cert", "needs tls_key, the file of its private key")
            }
            (None, Some(_)) => return bad("tls_key", "needs tls_cert, the certificate file"),
            (Some(_), Some(_)) => {}
            (None, None) => {
                if tls.client_ca.is_some() {
                    return bad("tls_client_ca", "needs tls_cert and tls_key");
                }
                if !tls.alpn.is_empty() {
                    return bad("tls_alpn", "needs tls_cert and tls_key");
                }
            }
        }
        if tls.handshake_timeout.is_zero() {
            return bad(
                "tls_handshake_timeout",
                "must be a positive number of seconds, got 0",
            );
        }
        Ok(())
    }
}

/// A setting that is out of range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The setting's name.
    pub name: &'static str,
    /// What is wrong with it.
    pub why: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.why)
    }
}

impl std::error::Error for ConfigError {}
