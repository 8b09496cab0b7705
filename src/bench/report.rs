//! What a load run measured: the [`Report`] (its fields, a human summary and
//! one JSON object) and the live progress line drawn on a terminal.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::config::MessageFraming;
use super::plan::{new_histogram, ThreadResult};
use super::shared::Shared;
use crate::port::Backend;

/// Latency percentiles of the measured messages, in microseconds (0 if none).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// The slowest message.
    pub max_us: f64,
    /// The mean.
    pub mean_us: f64,
}

/// The result of a load run.
#[derive(Clone, Debug)]
pub struct Report {
    /// The server's address.
    pub addr: SocketAddr,
    /// The backend the clients ran on.
    pub backend: Backend,
    /// Client threads.
    pub threads: usize,
    /// Connections asked for.
    pub connections: usize,
    /// Connections established.
    pub connected: usize,
    /// Connections that could not be established.
    pub connect_errors: u64,
    /// Of those, how many failed with `EADDRNOTAVAIL`: no local port was left.
    pub addr_not_available: u64,
    /// Of the connect failures, how many failed in the TLS handshake.
    pub tls_errors: u64,
    /// The first connect failure, if any.
    pub connect_error: Option<String>,
    /// The server name verified under TLS; `None`: plaintext.
    pub tls_server_name: Option<String>,
    /// Messages each connection sent before a new one took its place; `None`:
    /// connections stayed open.
    pub messages_per_connection: Option<u64>,
    /// Connections established within the measured time (under TLS, each a
    /// full handshake): the reconnects of `messages_per_connection`.
    pub connects: u64,
    /// Payload bytes of each message.
    pub size: usize,
    /// How messages were framed.
    pub framing: MessageFraming,
    /// Messages echoed and verified within the measured time.
    pub messages: u64,
    /// Messages that failed (wrong bytes echoed, or the connection broke mid-message).
    pub errors: u64,
    /// The first such failure, if any.
    pub error: Option<String>,
    /// The measured time, in seconds.
    pub seconds: f64,
    /// Latency from posting a message to the last byte of its echo.
    pub latency: Latency,
}

/// One value of a report field, for JSON and for Python.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A count.
    Int(u64),
    /// A measurement.
    Float(f64),
    /// A name or a message.
    Text(String),
    /// Nothing to say.
    Null,
}

impl Report {
    /// Sum the threads' results.
    pub(crate) fn build(
        shared: &Shared,
        start: Option<Instant>,
        threads: &[ThreadResult],
    ) -> Report {
        let config = &shared.config;
        let mut histogram = new_histogram();
        let mut report = Report {
            addr: config.addr,
            backend: shared.backend,
            threads: threads.len(),
            connections: config.connections,
            connected: 0,
            connect_errors: 0,
            addr_not_available: 0,
            tls_errors: 0,
            connect_error: None,
            tls_server_name: config.tls.as_ref().map(|t| t.server_name.clone()),
            messages_per_connection: config.messages_per_connection,
            connects: 0,
            size: config.size,
            framing: config.framing,
            messages: 0,
            errors: 0,
            error: None,
            seconds: 0.0,
            latency: Latency::default(),
        };
        let mut measured = Duration::ZERO;
        for t in threads {
            // Same bounds on every side: adding cannot fail.
            let _ = histogram.add(&t.histogram);
            report.connected += t.connected;
            report.connect_errors += t.connect_errors;
            report.addr_not_available += t.addr_not_available;
            report.tls_errors += t.tls_errors;
            report.connects += t.connects;
            report.messages += t.messages;
            report.errors += t.errors;
            if report.connect_error.is_none() {
                report.connect_error = t.first_connect_error.clone();
            }
            if report.error.is_none() {
                report.error = t.first_error.clone();
            }
            measured = measured.max(t.measured);
        }
        if start.is_some() {
            report.seconds = measured.as_secs_f64();
        }
        if !histogram.is_empty() {
            let us = |nanos: u64| nanos as f64 / 1000.0;
            report.latency = Latency {
                p50_us: us(histogram.value_at_quantile(0.5)),
                p99_us: us(histogram.value_at_quantile(0.99)),
                p999_us: us(histogram.value_at_quantile(0.999)),
                max_us: us(histogram.max()),
                mean_us: histogram.mean() / 1000.0,
            };
        }
        report
    }

    /// Messages per second over the measured time.
    pub fn messages_per_s(&self) -> f64 {
        self.per_s(self.messages)
    }

    /// Connections established per second over the measured time.
    pub fn connects_per_s(&self) -> f64 {
        self.per_s(self.connects)
    }

    /// TLS handshakes done within the measured time (0 in plaintext).
    pub fn handshakes(&self) -> u64 {
        if self.tls_server_name.is_some() {
            self.connects
        } else {
            0
        }
    }

    /// TLS handshakes per second over the measured time (0 in plaintext).
    pub fn handshakes_per_s(&self) -> f64 {
        self.per_s(self.handshakes())
    }

    fn per_s(&self, count: u64) -> f64 {
        if self.seconds > 0.0 {
            count as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Payload megabytes (10^6 bytes) echoed per second, counted one way.
    pub fn mb_per_s(&self) -> f64 {
        self.messages_per_s() * self.size as f64 / 1e6
    }

    /// Whether the run was clean: something connected and no message failed.
    pub fn success(&self) -> bool {
        self.errors == 0 && self.connected > 0
    }

    /// Every field by name: first the keys of the JSON report
    /// (`connections, size, framing, messages, errors, seconds, messages_per_s,
    /// mb_per_s, p50_us, p99_us, p999_us, max_us`), then the details.
    pub fn fields(&self) -> Vec<(&'static str, Value)> {
        let text = |s: &Option<String>| s.clone().map_or(Value::Null, Value::Text);
        let per_connection = self.messages_per_connection.map_or(Value::Null, Value::Int);
        vec![
            ("connections", Value::Int(self.connections as u64)),
            ("size", Value::Int(self.size as u64)),
            ("framing", Value::Text(self.framing.name().to_string())),
            ("messages", Value::Int(self.messages)),
            ("errors", Value::Int(self.errors)),
            ("seconds", Value::Float(self.seconds)),
            ("messages_per_s", Value::Float(self.messages_per_s())),
            ("mb_per_s", Value::Float(self.mb_per_s())),
            ("p50_us", Value::Float(self.latency.p50_us)),
            ("p99_us", Value::Float(self.latency.p99_us)),
            ("p999_us", Value::Float(self.latency.p999_us)),
            ("max_us", Value::Float(self.latency.max_us)),
            ("mean_us", Value::Float(self.latency.mean_us)),
            ("connects", Value::Int(self.connects)),
            ("connects_per_s", Value::Float(self.connects_per_s())),
            ("handshakes", Value::Int(self.handshakes())),
            ("handshakes_per_s", Value::Float(self.handshakes_per_s())),
            ("messages_per_connection", per_connection),
            ("tls_server_name", text(&self.tls_server_name)),
            ("connected", Value::Int(self.connected as u64)),
            ("connect_errors", Value::Int(self.connect_errors)),
            ("addr_not_available", Value::Int(self.addr_not_available)),
            ("tls_errors", Value::Int(self.tls_errors)),
            ("connect_error", text(&self.connect_error)),
            ("error", text(&self.error)),
            ("host", Value::Text(self.addr.ip().to_string())),
            ("port", Value::Int(u64::from(self.addr.port()))),
            ("backend", Value::Text(self.backend.name().to_string())),
            ("threads", Value::Int(self.threads as u64)),
        ]
    }

    /// The report as one JSON object on one line.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        for (n, (name, value)) in self.fields().into_iter().enumerate() {
            if n > 0 {
                out.push_str(", ");
            }
            json_string(&mut out, name);
            out.push_str(": ");
            match value {
                Value::Int(v) => {
                    let _ = write!(out, "{}", v);
                }
                Value::Float(v) if v.is_finite() => {
                    let _ = write!(out, "{:.3}", v);
                }
                Value::Float(_) | Value::Null => out.push_str("null"),
                Value::Text(s) => json_string(&mut out, &s),
            }
        }
        out.push('}');
        out
    }

    /// Warnings the reader must not miss (connect failures and their cause).
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.addr_not_available > 0 {
            notes.push(format!(
                "{} connects failed with EADDRNOTAVAIL: no local port was left for \
                 {}. One source address has about 28k ephemeral ports \
                 (net.ipv4.ip_local_port_range); use fewer connections, or spread them \
                 over several 127.0.0.x server addresses.",
                self.addr_not_available,
                self.addr.ip()
            ));
        }
        if let Some(e) = &self.connect_error {
            notes.push(format!(
                "{} of {} connections failed to connect; the first: {}",
                self.connect_errors, self.connections, e
            ));
        }
        if let Some(e) = &self.error {
            notes.push(format!("{} messages failed; the first: {}", self.errors, e));
        }
        notes
    }

    /// The report for people: a few aligned lines.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let tls = match &self.tls_server_name {
            Some(name) => format!(", TLS to {}", name),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "iocp-echo bench: {}, {} connections, {}-byte messages, framing {}{}, backend {}, {} client thread{}",
            self.addr,
            self.connections,
            self.size,
            self.framing.name(),
            tls,
            self.backend,
            self.threads,
            if self.threads == 1 { "" } else { "s" }
        );
        let _ = write!(
            out,
            "  connections  {} open, {} connect failures",
            self.connected, self.connect_errors
        );
        if self.tls_server_name.is_some() {
            let _ = write!(out, " ({} in the TLS handshake)", self.tls_errors);
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  messages     {} in {:.2} s, {} errors",
            self.messages, self.seconds, self.errors
        );
        let _ = writeln!(
            out,
            "  throughput   {:.0} messages/s, {:.2} MB/s",
            self.messages_per_s(),
            self.mb_per_s()
        );
        if let Some(n) = self.messages_per_connection {
            let (what, rate) = match self.tls_server_name {
                Some(_) => ("handshakes", self.handshakes_per_s()),
                None => ("connects", self.connects_per_s()),
            };
            let _ = writeln!(
                out,
                "  {:<12} {} in {:.2} s, {:.0} {}/s (a new connection every {} message{})",
                what,
                self.connects,
                self.seconds,
                rate,
                what,
                n,
                if n == 1 { "" } else { "s" }
            );
        }
        let l = &self.latency;
        let _ = writeln!(
            out,
            "  latency      p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us",
            l.p50_us, l.p99_us, l.p999_us, l.max_us
        );
        for note in self.notes() {
            let _ = writeln!(out, "  note: {}", note);
        }
        out
    }
}

/// `s` as a JSON string literal.
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The one-line live status on stderr, redrawn in place once a second.
pub(crate) struct ProgressLine {
    last_draw: Instant,
    last_messages: u64,
    drawn: bool,
}

impl ProgressLine {
    pub(crate) fn new() -> ProgressLine {
        ProgressLine {
            last_draw: Instant::now(),
            last_messages: 0,
            drawn: false,
        }
    }

    /// Redraw if a second has passed since the last time.
    pub(crate) fn maybe_draw(&mut self, shared: &Shared, start: Option<Instant>) {
        let now = Instant::now();
        let since = now.saturating_duration_since(self.last_draw);
        if since < Duration::from_secs(1) {
            return;
        }
        let connected = shared.connected.load(Ordering::Relaxed);
        let failed = shared.connect_errors.load(Ordering::Relaxed);
        let errors = shared.errors.load(Ordering::Relaxed);
        let messages = shared.messages.load(Ordering::Relaxed);
        let line = match start {
            None => format!(
                "connecting: {}/{} open, {} failed",
                connected, shared.config.connections, failed
            ),
            Some(start) => {
                let rate =
                    (messages - self.last_messages.min(messages)) as f64 / since.as_secs_f64();
                let warmup = now < start + shared.config.warmup;
                format!(
                    "{:6.1} s{}  {} messages  {:.0} messages/s  {} errors  {} connections",
                    now.saturating_duration_since(start).as_secs_f64(),
                    if warmup { " (warm-up)" } else { "" },
                    messages,
                    rate,
                    errors,
                    connected
                )
            }
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{}\x1b[K", line);
        let _ = err.flush();
        self.last_draw = now;
        self.last_messages = messages;
        self.drawn = true;
    }

    /// Erase the line, if one was drawn.
    pub(crate) fn clear(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
            self.drawn = false;
        }
    }
}
