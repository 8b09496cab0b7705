//! The server's options, defined once ([`OPTIONS`]): for each, its Python keyword
//! (`max_frame`), its command-line flag (`--max-frame`), the values it takes
//! ([`Kind`]), its help text, its default (read from [`Config::default`]) and the one
//! function that checks a value and applies it to a [`Config`]
//! ([`ServerOption::apply`]).
//!
//! Rules:
//! * Every front (`Server(...)` in Python, `python -m iocp_echo`, the `iocp-echo`
//!   binary) reads its options from this table, so no option exists on one front only.
//! * A bad value has one message, the same on every front, naming the option by its
//!   Python name: `max_frame must be at least 1, got 0`. The command lines hand the
//!   text of a flag to [`ServerOption::parse_text`], which never fails: a text that
//!   is no number is kept as text and [`ServerOption::apply`] refuses it.
//! * A flag ([`Kind::Flag`]) takes no value on a command line: given, it is on.
//! * [`Value::None`] keeps an option's current value, except for an option that may
//!   be none ([`Kind::optional`]: `idle_timeout`, the TLS files, `tls_alpn`), where it
//!   means none.
//! * Rules between options ([`build`]): when `high_water` is given without
//!   `low_water`, the default `low_water` is lowered to a quarter of it; `low_water`
//!   must stay below `high_water`. When `high_water` is given without
//!   `max_output`, the default `max_output` is raised to at least twice it (so a
//!   `high_water` that was valid before `max_output` existed stays valid);
//!   `max_output` must stay above `high_water`. [`Config::validate`] is the
//!   final check (it also wants `tls_cert` and `tls_key` together, and the other TLS
//!   options only with them). TLS files are read when the server is built, not here.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Config, ConfigError};

use crate::port::BackendChoice;
use crate::proxy::Cidr;

mod kinds;
#[cfg(test)]
mod tests;
mod text;

pub use kinds::{Kind, Setting, Value};
pub use text::{framing_by_name, framing_name, resolve, FRAMING_NAMES};

/// The largest number of seconds a timeout takes (about 31 years).
pub const MAX_SECONDS: f64 = 1e9;

/// The largest byte count or connection count (what a `usize` holds).
const UNBOUNDED: i128 = usize::MAX as i128;

/// One server option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerOption {
    /// What it sets.
    pub setting: Setting,
    /// Its Python keyword, also the name in error messages: `max_frame`.
    pub name: &'static str,
    /// Its command-line flag: `--max-frame`.
    pub flag: &'static str,
    /// The values it takes.
    pub kind: Kind,
    /// One line for `--help` (the default is added by the front).
    pub help: &'static str,
}

/// The backends `backend` takes.
const BACKEND_NAMES: &[&str] = &["auto", "io_uring", "epoll", "iocp"];

/// Every server option, in the order `--help` lists them.
pub const OPTIONS: &[ServerOption] = &[
    ServerOption {
        setting: Setting::Host,
        name: "host",
        flag: "--host",
        kind: Kind::Host,
        help: "address to listen on: an IP address or a host name",
    },
    ServerOption {
        setting: Setting::Port,
        name: "port",
        flag: "--port",
        kind: Kind::Count { min: 0, max: 65535 },
        help: "port to listen on; 0 picks a free one (the banner names it)",
    },
    ServerOption {
        setting: Setting::Path,
        name: "path",
        flag: "--unix",
        kind: Kind::Path,
        help: "listen on this Unix domain socket instead of TCP (Linux; not with host or port)",
    },
    ServerOption {
        setting: Setting::Framing,
        name: "framing",
        flag: "--framing",
        kind: Kind::Framing(FRAMING_NAMES),
        help: "how messages are cut: each chunk (raw), lines, or length-prefixed (length)",
    },
    ServerOption {
        setting: Setting::Workers,
        name: "workers",
        flag: "--workers",
        kind: Kind::Count { min: 1, max: 1024 },
        help: "worker threads, each with its own completion port; one per CPU by default",
    },
    ServerOption {
        setting: Setting::Backend,
        name: "backend",
        flag: "--backend",
        kind: Kind::Choice(BACKEND_NAMES),
        help: "I/O backend; auto probes io_uring and falls back to epoll",
    },
    ServerOption {
        setting: Setting::MaxFrame,
        name: "max_frame",
        flag: "--max-frame",
        kind: Kind::Bytes {
            min: 1,
            max: UNBOUNDED,
        },
        help: "largest message payload, in bytes",
    },
    ServerOption {
        setting: Setting::MaxConnections,
        name: "max_connections",
        flag: "--max-connections",
        kind: Kind::Count {
            min: 1,
            max: UNBOUNDED,
        },
        help: "connections open at once; more are closed as soon as accepted",
    },
    ServerOption {
        setting: Setting::IdleTimeout,
        name: "idle_timeout",
        flag: "--idle-timeout",
        kind: Kind::Seconds { optional: true },
        help: "close a connection that completes no message for this many seconds",
    },
    ServerOption {
        setting: Setting::DrainTimeout,
        name: "drain_timeout",
        flag: "--drain-timeout",
        kind: Kind::Seconds { optional: false },
        help: "seconds a stopping server lets queued replies go out",
    },
    ServerOption {
        setting: Setting::LingerTimeout,
        name: "linger_timeout",
        flag: "--linger-timeout",
        kind: Kind::Seconds { optional: false },
        help: "a connection closed by the server reads and discards what its client \
               still sends until its end of stream or this many seconds without input",
    },
    ServerOption {
        setting: Setting::HighWater,
        name: "high_water",
        flag: "--high-water",
        kind: Kind::Bytes {
            min: 1,
            max: UNBOUNDED,
        },
        help: "queued output bytes above which a connection stops reading \
               (alone, it lowers low_water to at most a quarter of it)",
    },
    ServerOption {
        setting: Setting::LowWater,
        name: "low_water",
        flag: "--low-water",
        kind: Kind::Bytes {
            min: 0,
            max: UNBOUNDED,
        },
        help: "queued output bytes below which a paused connection reads again",
    },
    ServerOption {
        setting: Setting::MaxOutput,
        name: "max_output",
        flag: "--max-output",
        kind: Kind::Bytes {
            min: 1,
            max: UNBOUNDED,
        },
        help: "queued output bytes past which a connection is closed as a slow consumer; \
               above high_water (alone, high_water raises it to at least twice itself)",
    },
    ServerOption {
        setting: Setting::Backlog,
        name: "backlog",
        flag: "--backlog",
        kind: Kind::Count {
            min: 1,
            max: i32::MAX as i128,
        },
        help: "length of the kernel's queue of connections waiting to be accepted",
    },
    ServerOption {
        setting: Setting::ReusePort,
        name: "reuse_port",
        flag: "--reuse-port",
        kind: Kind::Count { min: 0, max: 1 },
        help: "1: set SO_REUSEPORT so several processes listen on one port (Linux only)",
    },
    ServerOption {
        setting: Setting::TlsCert,
        name: "tls_cert",
        flag: "--tls-cert",
        kind: Kind::Path,
        help: "serve TLS with this certificate chain (PEM, the server's certificate first)",
    },
    ServerOption {
        setting: Setting::TlsKey,
        name: "tls_key",
        flag: "--tls-key",
        kind: Kind::Path,
        help: "the private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1)",
    },
    ServerOption {
        setting: Setting::TlsClientCa,
        name: "tls_client_ca",
        flag: "--tls-client-ca",
        kind: Kind::Path,
        help: "require client certificates signed by these CAs (PEM): mutual TLS",
    },
    ServerOption {
        setting: Setting::TlsAlpn,
        name: "tls_alpn",
        flag: "--tls-alpn",
        kind: Kind::Names,
        help: "ALPN protocols offered, most preferred first, separated by commas (h2,http/1.1)",
    },
    ServerOption {
        setting: Setting::TlsHandshakeTimeout,
        name: "tls_handshake_timeout",
        flag: "--tls-handshake-timeout",
        kind: Kind::Seconds { optional: false },
        help: "close a TLS connection whose handshake has not finished after this many seconds",
    },
    ServerOption {
        setting: Setting::ProxyProtocol,
        name: "proxy_protocol",
        flag: "--proxy-protocol",
        kind: Kind::Flag,
        help: "every connection starts with a PROXY protocol header (v1 or v2) naming the \
               client, read before TLS and framing; the peer must be a trusted proxy",
    },
    ServerOption {
        setting: Setting::TrustedProxies,
        name: "trusted_proxies",
        flag: "--trusted-proxies",
        kind: Kind::Cidrs,
        help: "with --proxy-protocol: the networks (CIDRs, separated by commas) a \
               connection carrying a header may come from; others are closed",
    },
];

/// The option with Python name `name`.
pub fn by_name(name: &str) -> Option<&'static ServerOption> {
    OPTIONS.iter().find(|o| o.name == name)
}

/// The option with command-line flag `flag` (`--max-frame`).
pub fn by_flag(flag: &str) -> Option<&'static ServerOption> {
    OPTIONS.iter().find(|o| o.flag == flag)
}

impl ServerOption {
    /// The value of a command-line flag. Never fails: a text that is no number
    /// of the option's kind stays text, which [`ServerOption::apply`] refuses with
    /// the option's message.
    pub fn parse_text(&self, text: &str) -> Value {
        match self.kind {
            Kind::Count { .. } | Kind::Bytes { .. } => match text.parse::<i128>() {
                Ok(i) => Value::Int(i),
                Err(_) => Value::Text(text.to_string()),
            },
            Kind::Seconds { optional } => {
                if optional && text.eq_ignore_ascii_case("none") {
                    return Value::None;
                }
                match text.parse::<f64>() {
                    Ok(x) => Value::Float(x),
                    Err(_) => Value::Text(text.to_string()),
                }
            }
            Kind::Host | Kind::Choice(_) | Kind::Framing(_) | Kind::Path => {
                Value::Text(text.to_string())
            }
            Kind::Names | Kind::Cidrs => Value::List(text.split(',').map(str::to_string).collect()),
            Kind::Flag => match text {
                "true" | "on" | "yes" | "1" => Value::Bool(true),
                "false" | "off" | "no" | "0" => Value::Bool(false),
                _ => Value::Text(text.to_string()),
            },
        }
    }

    /// Check `value` and set it in `config`; the error names the option and the
    /// value. [`Value::None`] keeps the current value, but sets none where the
    /// option may be none.
    pub fn apply(&self, config: &mut Config, value: &Value) -> Result<(), ConfigError> {
        if *value == Value::None && !self.kind.optional() {
            return Ok(());
        }
        match self.setting {
            Setting::Host => {
                let host = self.name_in(value, &[])?;
                config.addr = resolve(host, config.addr.port())?;
            }
            Setting::Port => config.addr.set_port(self.count(value)? as u16),
            Setting::Path => config.path = self.path(value)?,
            Setting::Framing => config.framing = framing_by_name(self.name_in(value, &[])?)?,
            Setting::Workers => config.workers = self.count(value)? as usize,
            Setting::Backend => {
                let name = self.name_in(value, BACKEND_NAMES)?;
                config.backend = BackendChoice::parse(name).map_err(|why| self.error(why))?;
            }
            Setting::MaxFrame => config.max_frame = self.count(value)? as usize,
            Setting::MaxConnections => config.max_connections = self.count(value)? as usize,
            Setting::IdleTimeout => config.idle_timeout = self.seconds(value)?,
            Setting::DrainTimeout => {
                if let Some(d) = self.seconds(value)? {
                    config.drain_timeout = d;
                }
            }
            Setting::LingerTimeout => {
                if let Some(d) = self.seconds(value)? {
                    config.linger_timeout = d;
                }
            }
            Setting::HighWater => config.high_water = self.count(value)? as usize,
            Setting::LowWater => config.low_water = self.count(value)? as usize,
            Setting::MaxOutput => config.max_output = self.count(value)? as usize,
            Setting::Backlog => config.backlog = self.count(value)? as i32,
            Setting::ReusePort => config.reuse_port = self.count(value)? == 1,
            Setting::TlsCert => config.tls.cert = self.path(value)?,
            Setting::TlsKey => config.tls.key = self.path(value)?,
            Setting::TlsClientCa => config.tls.client_ca = self.path(value)?,
            Setting::TlsAlpn => config.tls.alpn = self.names(value)?,
            Setting::TlsHandshakeTimeout => {
                if let Some(d) = self.seconds(value)? {
                    config.tls.handshake_timeout = d;
                }
            }
            Setting::ProxyProtocol => config.proxy_protocol = self.flag(value)?,
            Setting::TrustedProxies => config.trusted_proxies = self.cidrs(value)?,
        }
        Ok(())
    }

    /// The option's value in `config`: [`OPTIONS`]' defaults are those of
    /// `Config::default()`.
    pub fn current(&self, config: &Config) -> Value {
        let int = |n: usize| Value::Int(n as i128);
        match self.setting {
            Setting::Host => Value::Text(config.addr.ip().to_string()),
            Setting::Port => Value::Int(i128::from(config.addr.port())),
            Setting::Path => path_value(&config.path),
            Setting::Framing => Value::Text(framing_name(&config.framing).to_string()),
            Setting::Workers => int(config.workers),
            Setting::Backend => Value::Text(
                match config.backend {
                    BackendChoice::Auto => "auto",
                    BackendChoice::Forced(backend) => backend.name(),
                }
                .to_string(),
            ),
            Setting::MaxFrame => int(config.max_frame),
            Setting::MaxConnections => int(config.max_connections),
            Setting::IdleTimeout => match config.idle_timeout {
                Some(d) => Value::Float(d.as_secs_f64()),
                None => Value::None,
            },
            Setting::DrainTimeout => Value::Float(config.drain_timeout.as_secs_f64()),
            Setting::LingerTimeout => Value::Float(config.linger_timeout.as_secs_f64()),
            Setting::HighWater => int(config.high_water),
            Setting::LowWater => int(config.low_water),
            Setting::MaxOutput => int(config.max_output),
            Setting::Backlog => Value::Int(i128::from(config.backlog)),
            Setting::ReusePort => Value::Int(i128::from(config.reuse_port)),
            Setting::TlsCert => path_value(&config.tls.cert),
            Setting::TlsKey => path_value(&config.tls.key),
            Setting::TlsClientCa => path_value(&config.tls.client_ca),
            Setting::TlsAlpn if config.tls.alpn.is_empty() => Value::None,
            Setting::TlsAlpn => Value::List(config.tls.alpn.clone()),
            Setting::TlsHandshakeTimeout => {
                Value::Float(config.tls.handshake_timeout.as_secs_f64())
            }
            Setting::ProxyProtocol => Value::Bool(config.proxy_protocol),
            Setting::TrustedProxies => Value::List(
                config
                    .trusted_proxies
                    .iter()
                    .map(|c| c.to_string())
                    .collect(),
            ),
        }
    }

    fn error(&self, why: String) -> ConfigError {
        ConfigError {
            name: self.name,
            why,
        }
    }

    /// A whole number within the kind's bounds.
    fn count(&self, value: &Value) -> Result<i128, ConfigError> {
        let (min, max) = match self.kind {
            Kind::Count { min, max } | Kind::Bytes { min, max } => (min, max),
            _ => unreachable!("{} is not a count", self.name),
        };
        let out_of_range = |got: &dyn fmt::Display, below: bool| {
            let why = if max < UNBOUNDED {
                format!("must be {} to {}, got {}", min, max, got)
            } else if below {
                format!("must be at least {}, got {}", min, got)
            } else {
                format!("must be at most {}, got {}", max, got)
            };
            self.error(why)
        };
        match value {
            Value::Int(i) if *i < min => Err(out_of_range(i, true)),
            Value::Int(i) if *i > max => Err(out_of_range(i, false)),
            Value::Int(i) => Ok(*i),
            // Digits too many for an i128: out of range, not a bad spelling.
            Value::Text(t) if is_integer(t) => Err(out_of_range(t, t.starts_with('-'))),
            other => Err(self.error(format!("must be an integer, got {}", other))),
        }
    }

    /// A positive number of seconds (none where allowed).
    fn seconds(&self, value: &Value) -> Result<Option<Duration>, ConfigError> {
        let optional = self.kind == Kind::Seconds { optional: true };
        let x = match value {
            Value::None => return Ok(None),
            Value::Int(i) => *i as f64,
            Value::Float(x) => *x,
            Value::Text(_) | Value::List(_) | Value::Bool(_) => f64::NAN,
        };
        if x.is_nan() || x <= 0.0 {
            let or_none = if optional { " or none" } else { "" };
            return Err(self.error(format!(
                "must be a positive number of seconds{}, got {}",
                or_none, value
            )));
        }
        if x > MAX_SECONDS {
            return Err(self.error(format!(
                "must be at most {} seconds, got {}",
                MAX_SECONDS, value
            )));
        }
        Ok(Some(Duration::from_secs_f64(x)))
    }

    /// A file's path (none: none).
    fn path(&self, value: &Value) -> Result<Option<PathBuf>, ConfigError> {
        match value {
            Value::None => Ok(None),
            Value::Text(t) if !t.is_empty() => Ok(Some(PathBuf::from(t))),
            other => Err(self.error(format!("must be a file path, got {}", other))),
        }
    }

    /// ALPN protocol names, each 1 to 255 bytes (none: none).
    fn names(&self, value: &Value) -> Result<Vec<String>, ConfigError> {
        let names: Vec<String> = match value {
            Value::None => return Ok(Vec::new()),
            Value::List(names) => names.clone(),
            Value::Text(t) => t.split(',').map(str::to_string).collect(),
            other => return Err(self.error(format!("must be names, got {}", other))),
        };
        if names.is_empty() || names.iter().any(|n| n.is_empty() || n.len() > 255) {
            return Err(self.error(format!(
                "must be protocol names of 1 to 255 bytes separated by commas, got {}",
                value
            )));
        }
        Ok(names)
    }

    /// On or off.
    fn flag(&self, value: &Value) -> Result<bool, ConfigError> {
        match value {
            Value::Bool(on) => Ok(*on),
            other => Err(self.error(format!("must be true or false, got {}", other))),
        }
    }

    /// Networks in CIDR notation, at least one.
    fn cidrs(&self, value: &Value) -> Result<Vec<Cidr>, ConfigError> {
        let texts: Vec<String> = match value {
            Value::List(texts) => texts.clone(),
            Value::Text(t) => t.split(',').map(str::to_string).collect(),
            other => return Err(self.error(format!("must be CIDRs, got {}", other))),
        };
        let bad = |got: &dyn fmt::Display| {
            self.error(format!(
                "must be networks in CIDR notation (10.0.0.0/8, ::1/128) separated by commas, got {}",
                got
            ))
        };
        if texts.is_empty() {
            return Err(bad(value));
        }
        texts
            .iter()
            .map(|t| {
                t.trim()
                    .parse::<Cidr>()
                    .map_err(|_| bad(&format!("{:?}", t)))
            })
            .collect()
    }

    /// The text of `value`, which must be one of `names` (any text if empty).
    fn name_in<'v>(&self, value: &'v Value, names: &[&str]) -> Result<&'v str, ConfigError> {
        match value {
            Value::Text(t) if names.is_empty() || names.contains(&t.as_str()) => Ok(t),
            other if !names.is_empty() => Err(self.error(format!(
                "must be one of {}, got {}",
                names.join(", "),
                other
            ))),
            other => Err(self.error(format!("must be text, got {}", other))),
        }
    }
}

/// A path setting as its value: text, or none.
fn path_value(path: &Option<PathBuf>) -> Value {
    match path {
        Some(path) => Value::Text(path.to_string_lossy().into_owned()),
        None => Value::None,
    }
}

fn is_integer(text: &str) -> bool {
    let digits = text.strip_prefix(|c| c == '-' || c == '+').unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `base` with the `given` options applied in order, then the rules between
/// options (see the module doc) and [`Config::validate`]. The framing is set in
/// `base` by the front (a Python `Framing`, or the command lines' own flags), or
/// given by name.
pub fn build<'a, I>(base: Config, given: I) -> Result<Config, ConfigError>
where
    I: IntoIterator<Item = (&'a ServerOption, &'a Value)>,
{
    let mut config = base;
    let mut high_given = false;
    let mut low_given = false;
    let mut max_output_given = false;
    let mut host_given = false;
    let mut port_given = false;
    for (option, value) in given {
        option.apply(&mut config, value)?;
        if *value != Value::None {
            host_given |= option.setting == Setting::Host;
            port_given |= option.setting == Setting::Port;
            high_given |= option.setting == Setting::HighWater;
            low_given |= option.setting == Setting::LowWater;
            max_output_given |= option.setting == Setting::MaxOutput;
        }
    }
    if config.path.is_some() && (host_given || port_given) {
        // One message on every front, whatever order they apply options in.
        let name = if host_given { "host" } else { "port" };
        return Err(ConfigError {
            name: "path",
            why: format!(
                "cannot be given with {}: a server listens on a Unix socket or on TCP, not both",
                name
            ),
        });
    }
    if high_given && !low_given {
        config.low_water = config.low_water.min(config.high_water / 4);
    }
    if high_given && !max_output_given {
        config.max_output = config.max_output.max(config.high_water.saturating_mul(2));
    }
    config.validate()?;
    Ok(config)
}
