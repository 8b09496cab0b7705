//! What a load run is configured with, and why one could not start.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::framing::{ByteOrder, Framing};
use crate::port::BackendChoice;

/// Connects in flight at once, over all threads, while connecting.
pub const CONNECT_WINDOW: usize = 256;

/// The largest message payload, in bytes.
pub const MAX_SIZE: usize = 64 << 20;

/// How messages are framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageFraming {
    /// The payload alone; the server echoes whatever chunks it receives.
    Raw,
    /// The payload, which never contains `\n`, then `\n`.
    Lines,
    /// A 4-byte big-endian payload length, then the payload.
    Length,
}

impl MessageFraming {
    /// Parse `"raw"`, `"lines"` or `"length"`.
    pub fn parse(name: &str) -> Result<MessageFraming, String> {
        match name {
            "raw" => Ok(MessageFraming::Raw),
            "lines" => Ok(MessageFraming::Lines),
            "length" => Ok(MessageFraming::Length),
            other => Err(format!(
                "framing must be raw, lines or length, got {:?}",
                other
            )),
        }
    }

    /// The name [`MessageFraming::parse`] accepts.
    pub fn name(self) -> &'static str {
        match self {
            MessageFraming::Raw => "raw",
            MessageFraming::Lines => "lines",
            MessageFraming::Length => "length",
        }
    }

    /// The server codec that frames messages this way.
    pub fn codec(self) -> Framing {
        match self {
            MessageFraming::Raw => Framing::Raw,
            MessageFraming::Lines => Framing::Lines {
                delimiter: b"\n".to_vec(),
            },
            MessageFraming::Length => Framing::LengthPrefixed {
                width: 4,
                order: ByteOrder::Big,
            },
        }
    }
}

/// When a run ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// After this long (not counting the warm-up); messages still in flight
    /// at the end are abandoned, not counted.
    Duration(Duration),
    /// After this many messages in total (not counting the warm-up).
    Count(u64),
}

/// How the clients speak TLS to the server (`iocp-echo bench --tls`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file of the CA certificate(s) the server's certificate must chain to.
    pub ca_file: PathBuf,
    /// The name the server's certificate must carry (a DNS name or an IP
    /// address); also sent as SNI when it is a DNS name.
    pub server_name: String,
}

/// Everything a load run is configured with.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// The echo server.
    pub addr: SocketAddr,
    /// Connections, all open at once.
    pub connections: usize,
    /// Payload bytes of each message.
    pub size: usize,
    /// When the run ends.
    pub limit: Limit,
    /// How messages are framed.
    pub framing: MessageFraming,
    /// Client threads, each with its own port and a share of the connections.
    pub threads: usize,
    /// Messages run for this long first, measured by nothing.
    pub warmup: Duration,
    /// Which I/O backend the clients use.
    pub backend: BackendChoice,
    /// Connects in flight at once, over all threads.
    pub connect_window: usize,
    /// Print a live progress line on stderr once a second.
    pub progress: bool,
    /// Speak TLS, verifying the server; `None`: plaintext.
    pub tls: Option<TlsSettings>,
    /// Close each connection after this many messages and open a new one in
    /// its place (a new TLS handshake each time); `None`: never.
    pub messages_per_connection: Option<u64>,
}

impl Default for BenchConfig {
    fn default() -> BenchConfig {
        BenchConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            connections: 50,
            size: 64,
            limit: Limit::Duration(Duration::from_secs(10)),
            framing: MessageFraming::Raw,
            threads: 1,
            warmup: Duration::ZERO,
            backend: BackendChoice::Auto,
            connect_window: CONNECT_WINDOW,
            progress: false,
            tls: None,
            messages_per_connection: None,
        }
    }
}

impl BenchConfig {
    /// Check every setting; the error names the bad one and what is allowed.
    pub fn validate(&self) -> Result<(), String> {
        if self.connections == 0 || self.connections > 1_000_000 {
            return Err(format!(
                "connections must be 1..=1000000, got {}",
                self.connections
            ));
        }
        if self.size == 0 || self.size > MAX_SIZE {
            return Err(format!("size must be 1..={}, got {}", MAX_SIZE, self.size));
        }
        match self.limit {
            Limit::Duration(d) if d.is_zero() => {
                return Err("duration must be positive seconds".to_string())
            }
            Limit::Count(0) => return Err("count must be at least 1".to_string()),
            _ => {}
        }
        if self.threads == 0 || self.threads > 1024 {
            return Err(format!("threads must be 1..=1024, got {}", self.threads));
        }
        if self.connect_window == 0 {
            return Err("connect_window must be at least 1".to_string());
        }
        if self.messages_per_connection == Some(0) {
            return Err("messages-per-connection must be at least 1".to_string());
        }
        if let Some(tls) = &self.tls {
            if tls.server_name.is_empty() {
                return Err("tls-server-name must not be empty".to_string());
            }
        }
        if self.addr.port() == 0 {
            return Err("port must be 1..=65535, got 0".to_string());
        }
        Ok(())
    }
}

/// Why a run could not start or went wrong as a whole.
#[derive(Debug)]
pub enum BenchError {
    /// A setting is out of range (a usage error).
    Config(String),
    /// An OS call failed: opening a port, spawning a thread, waiting on a port.
    Io(io::Error),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Config(why) => f.write_str(why),
            BenchError::Io(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for BenchError {}
