//! `iocp-echo`: the server as a pure-Rust program, without Python. The native
//! speed reference, and the server the Windows tests run under Wine.
//!
//! It takes the server options of `iocp_echo::options::OPTIONS` (as `python -m
//! iocp_echo` does, which adds `--handler`), prints one line when listening, and stops cleanly with exit code 0 on Ctrl-C, SIGTERM,
//! or (with `--stop-on-stdin-eof`) when its standard input closes.
//!
//! `iocp-echo bench [options]` runs the load generator instead (`src/bench/cli.rs`).

use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use iocp_echo::cli::value;
use iocp_echo::framing::{ByteOrder, Framing};
use iocp_echo::options::{self, Kind, Setting, Value, OPTIONS};
use iocp_echo::server::{Config, Server, StartError};
use iocp_echo::tls::ServerTls;

/// The flags of this program alone (the server options come from `OPTIONS`).
const OWN_FLAGS: &[(&str, &str)] = &[
    (
        "--delimiter STR",
        "lines delimiter; escapes \\n \\r \\t \\0 \\\\ \\xHH (default \\n)",
    ),
    ("--length-width 1|2|4|8", "length prefix bytes (default 4)"),
    (
        "--byteorder big|little",
        "length prefix byte order (default big)",
    ),
    (
        "--stop-on-stdin-eof",
        "stop cleanly when standard input closes",
    ),
    (
        "--log-level LEVEL",
        "error, warn, info, debug or trace (default warn)",
    ),
];

struct Options {
    config: Config,
    framing_name: String,
    stop_on_stdin_eof: bool,
    log_level: log::LevelFilter,
}

fn main() -> ExitCode {
    // `iocp-echo bench ...`: the load generator instead of the server.
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new("bench")) {
        return ExitCode::from(iocp_echo::bench::cli::main(std::env::args_os().skip(2)));
    }
    let options = match parse_args() {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{}", help());
            return ExitCode::SUCCESS;
        }
        Err(message) => return fail(&message),
    };
    log::set_max_level(options.log_level);
    let _ = log::set_logger(&STDERR_LOGGER);
    // The TLS files are checked before anything starts: a bad one is one line.
    if let Err(e) = ServerTls::load(&options.config.tls) {
        return fail(&e.to_string());
    }
    let tls = tls_words(&options.config);

    let stop = iocp_echo::cli::interrupt_flag();
    let addr = match &options.config.path {
        Some(path) => path.display().to_string(),
        None => options.config.addr.to_string(),
    };
    let server = match Server::start(options.config, None) {
        Ok(server) => server,
        // This one names the path itself.
        Err(StartError::Io(e)) if e.kind() == io::ErrorKind::AlreadyExists => {
            return fail(&format!("cannot listen: {}", e))
        }
        Err(StartError::Io(e)) => return fail(&format!("cannot listen on {}: {}", addr, e)),
        Err(e) => return fail(&e.to_string()),
    };
    println!(
        "iocp_echo listening on {} (backend {}, {} workers, framing {}{})",
        server.address(),
        server.backend(),
        server.workers(),
        options.framing_name,
        tls
    );
    let _ = io::stdout().flush();
    if options.stop_on_stdin_eof {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut sink = [0u8; 256];
            let mut stdin = io::stdin();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            stop.store(true, Ordering::SeqCst);
        });
    }
    // Until a stop request, or until the workers stop by themselves (a failure).
    while !stop.load(Ordering::SeqCst) {
        if server.wait(Duration::from_millis(100)) {
            break;
        }
    }
    let closed = server.close();
    // Read after close: every completion has been counted by then.
    let stats = server.stats();
    eprintln!(
        "iocp_echo stopped: {} connections, {} frames received, {} replies, {} bytes in, {} bytes out",
        stats.connections_accepted,
        stats.frames_received,
        stats.frames_sent,
        stats.bytes_received,
        stats.bytes_sent
    );
    match closed {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("iocp-echo: error: {}", why);
            ExitCode::FAILURE
        }
    }
}

/// What the listening line says of TLS: nothing when it is off.
fn tls_words(config: &Config) -> &'static str {
    match (config.tls.enabled(), config.tls.client_ca.is_some()) {
        (false, _) => "",
        (true, false) => ", TLS on",
        (true, true) => ", TLS on, client certificates required",
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("iocp-echo: error: {}", message);
    ExitCode::from(2)
}

fn parse_args() -> Result<Option<Options>, String> {
    use lexopt::prelude::*;
    let mut given: Vec<(&'static options::ServerOption, options::Value)> = Vec::new();
    let mut framing = "raw".to_string();
    let mut delimiter = b"\n".to_vec();
    let mut width: u64 = 4;
    let mut order = ByteOrder::Big;
    let mut stop_on_stdin_eof = false;
    let mut log_level = log::LevelFilter::Warn;

    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        let option = match &arg {
            Long(name) => options::by_flag(&format!("--{}", name)),
            _ => None,
        };
        if let Some(option) = option {
            if option.kind == Kind::Flag {
                // A flag takes no value: given, it is on.
                given.push((option, options::Value::Bool(true)));
                continue;
            }
            let text: String = value(&mut parser, option.flag)?;
            if option.setting == Setting::Framing {
                framing = text;
            } else {
                given.push((option, option.parse_text(&text)));
            }
            continue;
        }
        match arg {
            Long("help") | Short('h') => return Ok(None),
            Long("delimiter") => {
                let text: String = value(&mut parser, "--delimiter")?;
                delimiter = unescape(&text);
            }
            Long("length-width") => width = value(&mut parser, "--length-width")?,
            Long("byteorder") => {
                let name: String = value(&mut parser, "--byteorder")?;
                order = ByteOrder::parse(&name).map_err(|e| format!("--byteorder: {}", e))?;
            }
            Long("stop-on-stdin-eof") => stop_on_stdin_eof = true,
            Long("metrics-port") | Long("metrics-host") => {
                // Served through the Python library prometheus-client: the
                // Python command line has them, this binary has no Python.
                return Err(
                    "--metrics-port and --metrics-host are served by the Python command line \
                     (python -m iocp_echo --metrics-port PORT); this binary serves no metrics"
                        .to_string(),
                );
            }
            Long("log-level") => {
                let name: String = value(&mut parser, "--log-level")?;
                log_level = name
                    .parse()
                    .map_err(|_| format!("--log-level: unknown level {:?}", name))?;
            }
            other => return Err(format!("{}; {}", other.unexpected(), usage())),
        }
    }
    let codec = match framing.as_str() {
        "lines" => Framing::lines(&delimiter).map_err(|e| format!("--delimiter: {}", e))?,
        "length" | "length_prefixed" => {
            Framing::length_prefixed(width, order).map_err(|e| format!("--length-width: {}", e))?
        }
        name => options::framing_by_name(name).map_err(|e| e.to_string())?,
    };
    let base = Config {
        framing: codec,
        ..Config::default()
    };
    let config =
        options::build(base, given.iter().map(|(o, v)| (*o, v))).map_err(|e| e.to_string())?;
    Ok(Some(Options {
        config,
        framing_name: framing,
        stop_on_stdin_eof,
        log_level,
    }))
}

/// The one-line usage: every flag.
fn usage() -> String {
    let mut line = "usage: iocp-echo".to_string();
    for option in OPTIONS {
        line += &format!(" [{}]", with_metavar(option.flag, option.kind));
    }
    for (flag, _) in OWN_FLAGS {
        line += &format!(" [{}]", flag);
    }
    line
}

/// `--help`: the usage, then every flag with its default.
fn help() -> String {
    let defaults = Config::default();
    let mut text = format!(
        "{}\n\nA TCP echo server on a completion port (`iocp-echo bench --help`: the load generator).\n\n",
        usage()
    );
    for option in OPTIONS {
        let default = match option.current(&defaults) {
            Value::None => "none".to_string(),
            Value::Text(t) => t,
            Value::List(names) => names.join(","),
            Value::Bool(on) => if on { "on" } else { "off" }.to_string(),
            other => other.to_string(),
        };
        let flag = with_metavar(option.flag, option.kind);
        text += &format!("  {:<34} {} (default {})\n", flag, option.help, default);
    }
    for (flag, help) in OWN_FLAGS {
        text += &format!("  {:<34} {}\n", flag, help);
    }
    text
}

/// A flag as the usage shows it: with what its value is, unless it takes none.
fn with_metavar(flag: &str, kind: Kind) -> String {
    match kind {
        Kind::Flag => flag.to_string(),
        _ => format!("{} {}", flag, metavar(kind)),
    }
}

/// What a flag's value is, for the usage: `N`, `BYTES`, `auto|io_uring|...`.
fn metavar(kind: Kind) -> String {
    match kind {
        Kind::Host => "ADDR".to_string(),
        Kind::Count { .. } => "N".to_string(),
        Kind::Bytes { .. } => "BYTES".to_string(),
        Kind::Seconds { optional: true } => "SECONDS|none".to_string(),
        Kind::Seconds { optional: false } => "SECONDS".to_string(),
        Kind::Choice(names) | Kind::Framing(names) => names.join("|"),
        Kind::Path => "FILE".to_string(),
        Kind::Names => "NAME,...".to_string(),
        Kind::Cidrs => "CIDR,...".to_string(),
        Kind::Flag => String::new(),
    }
}

/// `\n`, `\r`, `\t`, `\0`, `\\` and `\xHH` escapes, as the Python CLI accepts.
fn unescape(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            let (byte, used) = match bytes[i + 1] {
                b'n' => (b'\n', 2),
                b'r' => (b'\r', 2),
                b't' => (b'\t', 2),
                b'0' => (0, 2),
                b'\\' => (b'\\', 2),
                b'x' if i + 4 <= bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 2..i + 4]).ok();
                    match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        Some(b) => (b, 4),
                        None => (b'\\', 1),
                    }
                }
                _ => (b'\\', 1),
            };
            out.push(byte);
            i += used;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// Log records to stderr, one line each.
struct StderrLogger;

static STDERR_LOGGER: StderrLogger = StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }
    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            eprintln!("{} {}: {}", record.level(), record.target(), record.args());
        }
    }
    fn flush(&self) {}
}
