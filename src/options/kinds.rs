//! The vocabulary of the options table: what values an option takes
//! ([`Kind`]), which setting it sets ([`Setting`]), and a value as given,
//! before it is checked ([`Value`]).

use std::fmt;

/// The values an option takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An IP address, or a host name resolved to its first address.
    Host,
    /// A whole number from `min` to `max`.
    Count {
        /// The smallest value allowed.
        min: i128,
        /// The largest value allowed.
        max: i128,
    },
    /// A number of bytes from `min` to `max`.
    Bytes {
        /// The smallest value allowed.
        min: i128,
        /// The largest value allowed.
        max: i128,
    },
    /// A positive number of seconds, at most `MAX_SECONDS`.
    Seconds {
        /// Whether none (Python `None`, `none` on a command line) is allowed.
        optional: bool,
    },
    /// One of the names.
    Choice(&'static [&'static str]),
    /// A framing by name; Python also takes a `Framing`, and the command lines
    /// have flags of their own for the delimiter and the length prefix.
    Framing(&'static [&'static str]),
    /// A file's path, or none (the default).
    Path,
    /// Names, or none (the default): a list in Python, separated by commas on
    /// a command line.
    Names,
    /// On or off: a `bool` in Python, a flag without a value on a command line.
    Flag,
    /// Networks in CIDR notation: a list in Python, separated by commas on a
    /// command line.
    Cidrs,
}

impl Kind {
    /// The kind's name as the Python fronts see it: `host`, `count`, `bytes`,
    /// `seconds`, `choice`, `framing`, `path`, `names`, `flag` or `cidrs`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Host => "host",
            Kind::Count { .. } => "count",
            Kind::Bytes { .. } => "bytes",
            Kind::Seconds { .. } => "seconds",
            Kind::Choice(_) => "choice",
            Kind::Framing(_) => "framing",
            Kind::Path => "path",
            Kind::Names => "names",
            Kind::Flag => "flag",
            Kind::Cidrs => "cidrs",
        }
    }

    /// Whether none is a value of its own (Python `None`), not "keep the
    /// current value": an optional number of seconds, a path, names.
    pub fn optional(self) -> bool {
        matches!(
            self,
            Kind::Seconds { optional: true } | Kind::Path | Kind::Names
        )
    }
}

/// Which setting of a [`Config`](crate::config::Config) an option sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    /// The address's IP (`Config::addr`).
    Host,
    /// The address's port (`Config::addr`).
    Port,
    /// `Config::path`: a Unix domain socket to listen on instead.
    Path,
    /// `Config::framing`.
    Framing,
    /// `Config::workers`.
    Workers,
    /// `Config::backend`.
    Backend,
    /// `Config::max_frame`.
    MaxFrame,
    /// `Config::max_connections`.
    MaxConnections,
    /// `Config::idle_timeout`.
    IdleTimeout,
    /// `Config::drain_timeout`.
    DrainTimeout,
    /// `Config::linger_timeout`.
    LingerTimeout,
    /// `Config::high_water`.
    HighWater,
    /// `Config::low_water`.
    LowWater,
    /// `Config::max_output`.
    MaxOutput,
    /// `Config::backlog`.
    Backlog,
    /// `Config::reuse_port`.
    ReusePort,
    /// `Config::tls.cert`.
    TlsCert,
    /// `Config::tls.key`.
    TlsKey,
    /// `Config::tls.client_ca`.
    TlsClientCa,
    /// `Config::tls.alpn`.
    TlsAlpn,
    /// `Config::tls.handshake_timeout`.
    TlsHandshakeTimeout,
    /// `Config::proxy_protocol`.
    ProxyProtocol,
    /// `Config::trusted_proxies`.
    TrustedProxies,
}

/// A value given for an option, before it is checked.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Python `None` (`none` on a command line, for an option that may be none).
    None,
    /// A whole number.
    Int(i128),
    /// A number with a fraction.
    Float(f64),
    /// Text: a name, or what a command line gave that is no number.
    Text(String),
    /// Names (Python: a list of `str`).
    List(Vec<String>),
    /// On or off (Python: a `bool`).
    Bool(bool),
}

impl fmt::Display for Value {
    /// As error messages show it: text quoted, numbers bare, names as the
    /// command line gives them (`"h2,http/1.1"`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::None => f.write_str("None"),
            Value::Int(i) => write!(f, "{}", i),
            Value::Float(x) => write!(f, "{}", x),
            Value::Text(t) => write!(f, "{:?}", t),
            Value::List(names) => write!(f, "{:?}", names.join(",")),
            Value::Bool(true) => f.write_str("True"),
            Value::Bool(false) => f.write_str("False"),
        }
    }
}
