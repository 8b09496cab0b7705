//! The `iocp-echo bench` command line: options, the run, the report, and the
//! exit status (0 clean, 1 if a message failed or nothing could connect, 2 for
//! a bad option).

use crate::cli::value;
use std::ffi::OsString;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Bench, BenchConfig, BenchError, Limit, MessageFraming, TlsSettings};
use crate::port::BackendChoice;

/// The one-line usage of `iocp-echo bench`.
pub const USAGE: &str = "usage: iocp-echo bench [--host ADDR] [--port N] [--connections N] \
[--size BYTES] [--duration SECS | --count MESSAGES] [--framing raw|lines|length] \
[--threads N] [--warmup SECS] [--backend auto|io_uring|epoll|iocp] \
[--messages-per-connection N] [--tls --tls-ca FILE [--tls-server-name NAME]] [--json]";

/// What `iocp-echo bench --help` prints after the usage.
const HELP: &str = "
A closed-loop echo load generator: each connection sends a message, reads its echo back,
compares every byte, and sends the next.

  --host ADDR, --port N     the echo server (default 127.0.0.1:8080)
  --connections N           connections, all open at once (default 50)
  --size BYTES              payload bytes of each message (default 64)
  --duration SECS           measure this long (default 10), or
  --count MESSAGES          until this many messages
  --framing raw|lines|length  how messages are framed (default raw)
  --threads N               client threads (default 1)
  --warmup SECS             unmeasured seconds first (default 0)
  --backend NAME            the clients' I/O backend (default auto)
  --messages-per-connection N
                            close each connection after N messages and open a new one
                            (default: never); reports connects/s, or handshakes/s under TLS
  --tls                     speak TLS (rustls), verifying the server; each handshake is a
                            full one (no session resumption)
  --tls-ca FILE             PEM file of the CA that signed the server's certificate
                            (required with --tls)
  --tls-server-name NAME    the name the certificate must carry (default: --host)
  --json                    print the report as one JSON object";

/// Exit status: every message echoed correctly.
pub const EXIT_OK: u8 = 0;
/// Exit status: a message failed verification, nothing connected, or the run failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit status: a bad option.
pub const EXIT_USAGE: u8 = 2;

/// Parsed options.
struct Options {
    config: BenchConfig,
    json: bool,
}

/// Run `iocp-echo bench` with `args` (the arguments after `bench`); returns
/// the exit status.
pub fn main<I>(args: I) -> u8
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let mut options = match parse(args) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{}\n{}", USAGE, HELP);
            return EXIT_OK;
        }
        Err(message) => {
            eprintln!("iocp-echo bench: error: {}", message);
            return EXIT_USAGE;
        }
    };
    let config = &mut options.config;
    if let Some(limit) = super::raise_fd_limit() {
        let wanted = config.connections as u64 + 64;
        if limit < wanted {
            eprintln!(
                "iocp-echo bench: warning: at most {} files may be open (ulimit -n), fewer \
                 than {} connections need; the rest will fail to connect",
                limit, config.connections
            );
        }
    }
    config.progress = super::stderr_is_terminal();
    // Bad options (a TLS CA file that does not load too) are reported before the
    // signal thread starts, which then lives as long as the process.
    let checked = config.validate().and_then(|()| match &config.tls {
        Some(settings) => super::tls::TlsClient::load(settings).map(drop),
        None => Ok(()),
    });
    if let Err(why) = checked {
        eprintln!("iocp-echo bench: error: {}", why);
        return EXIT_USAGE;
    }
    let interrupted = crate::cli::interrupt_flag();

    let mut bench = match Bench::start(options.config.clone()) {
        Ok(bench) => bench,
        Err(BenchError::Config(why)) => {
            eprintln!("iocp-echo bench: error: {}", why);
            return EXIT_USAGE;
        }
        Err(BenchError::Io(e)) => {
            eprintln!("iocp-echo bench: error: {}", e);
            return EXIT_FAILED;
        }
    };
    while !bench.poll(Duration::from_millis(100)) {
        if interrupted.load(Ordering::Relaxed) {
            bench.stop();
        }
    }
    let report = match bench.finish() {
        Ok(report) => report,
        Err(e) => {
            eprintln!("iocp-echo bench: error: {}", e);
            return EXIT_FAILED;
        }
    };
    let mut out = std::io::stdout().lock();
    if options.json {
        let _ = writeln!(out, "{}", report.to_json());
        for note in report.notes() {
            eprintln!("iocp-echo bench: {}", note);
        }
    } else {
        let _ = write!(out, "{}", report.human());
    }
    let _ = out.flush();
    if report.success() {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

fn parse<I>(args: I) -> Result<Option<Options>, String>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    use lexopt::prelude::*;
    let mut config = BenchConfig::default();
    let mut host = "127.0.0.1".to_string();
    let mut port: u16 = 8080;
    let mut duration = None;
    let mut count = None;
    let mut json = false;
    let mut tls = false;
    let mut tls_ca = None;
    let mut tls_server_name = None;

    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Long("help") | Short('h') => return Ok(None),
            Long("host") => host = value(&mut parser, "--host")?,
            Long("port") => port = value(&mut parser, "--port")?,
            Long("connections") => config.connections = value(&mut parser, "--connections")?,
            Long("size") => config.size = value(&mut parser, "--size")?,
            Long("duration") => duration = Some(value::<f64>(&mut parser, "--duration")?),
            Long("count") => count = Some(value::<u64>(&mut parser, "--count")?),
            Long("framing") => {
                let name: String = value(&mut parser, "--framing")?;
                config.framing = MessageFraming::parse(&name).map_err(|e| format!("--{}", e))?;
            }
            Long("threads") => config.threads = value(&mut parser, "--threads")?,
            Long("warmup") => {
                let secs: f64 = value(&mut parser, "--warmup")?;
                if !(secs.is_finite() && (0.0..=86_400.0).contains(&secs)) {
                    return Err(format!("--warmup must be 0..=86400 seconds, got {}", secs));
                }
                config.warmup = Duration::from_secs_f64(secs);
            }
            Long("backend") => {
                let name: String = value(&mut parser, "--backend")?;
                config.backend =
                    BackendChoice::parse(&name).map_err(|e| format!("--backend: {}", e))?;
            }
            Long("messages-per-connection") => {
                let n = value(&mut parser, "--messages-per-connection")?;
                config.messages_per_connection = Some(n);
            }
            Long("tls") => tls = true,
            Long("tls-ca") => tls_ca = Some(value::<String>(&mut parser, "--tls-ca")?),
            Long("tls-server-name") => {
                tls_server_name = Some(value::<String>(&mut parser, "--tls-server-name")?)
            }
            Long("json") => json = true,
            other => return Err(format!("{}; {}", other.unexpected(), USAGE)),
        }
    }
    config.addr = crate::cli::resolve(&host, port)?;
    config.tls = match (tls, tls_ca) {
        (true, Some(ca)) => Some(TlsSettings {
            ca_file: ca.into(),
            server_name: tls_server_name.unwrap_or(host),
        }),
        (true, None) => {
            return Err(
                "--tls needs --tls-ca FILE: the PEM certificate of the CA that signed \
                        the server's certificate (scripts/make-test-certs makes a test CA and \
                        server certificate)"
                    .to_string(),
            )
        }
        (false, _) if tls_server_name.is_some() => {
            return Err("--tls-server-name is for --tls".to_string())
        }
        (false, Some(_)) => return Err("--tls-ca is for --tls".to_string()),
        (false, None) => None,
    };
    config.limit = match (duration, count) {
        (Some(_), Some(_)) => return Err("give --duration or --count, not both".to_string()),
        (None, Some(n)) => Limit::Count(n),
        (Some(secs), None) => {
            if !(secs.is_finite() && secs > 0.0 && secs <= 86_400.0) {
                return Err(format!(
                    "--duration must be 0..=86400 seconds, got {}",
                    secs
                ));
            }
            Limit::Duration(Duration::from_secs_f64(secs))
        }
        (None, None) => config.limit,
    };
    config.validate().map_err(|e| format!("--{}", e))?;
    Ok(Some(Options { config, json }))
}
