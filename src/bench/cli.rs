//! The `iocp-echo bench` command line: options, the run, the report, and the
//! exit status (0 clean, 1 if a message failed or nothing could connect, 2 for
//! a bad option).

use crate::cli::value;
use std::ffi::OsString;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Bench, BenchConfig, BenchError, Limit, MessageFraming};
use crate::port::BackendChoice;

/// The one-line usage of `iocp-echo bench`.
pub const USAGE: &str = "usage: iocp-echo bench [--host ADDR] [--port N] [--connections N] \
[--size BYTES] [--duration SECS | --count MESSAGES] [--framing raw|lines|length] \
[--threads N] [--warmup SECS] [--backend auto|io_uring|epoll|iocp] [--json]";

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
            println!("{}", USAGE);
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
            Long("json") => json = true,
            other => return Err(format!("{}; {}", other.unexpected(), USAGE)),
        }
    }
    config.addr = crate::cli::resolve(&host, port)?;
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
