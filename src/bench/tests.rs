//! The load generator against an in-process server on a loopback port, on
//! every backend compiled in: each framing, both limits, big messages, a
//! server that echoes wrong bytes, a port nobody listens on, reconnects, bad
//! options. The helpers here serve `tls_tests.rs` too.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use super::cli::{self, EXIT_USAGE};
use super::plan::plans;
use super::{run, BenchConfig, Latency, Limit, MessageFraming, Report};
use crate::port::{Backend, BackendChoice};
use crate::server::{Batch, Config, Handler, Server};

/// Every framing the load generator speaks.
pub(super) const FRAMINGS: [MessageFraming; 3] = [
    MessageFraming::Raw,
    MessageFraming::Lines,
    MessageFraming::Length,
];

/// Every backend compiled in that opens here.
pub(super) fn backends() -> Vec<Backend> {
    let all = [Backend::IoUring, Backend::Epoll, Backend::Iocp];
    all.iter()
        .copied()
        .filter(|b| b.compiled_in() && BackendChoice::Forced(*b).resolve().is_ok())
        .collect()
}

/// A native echo server with `framing` (or `handler`) on a loopback port.
#[track_caller]
pub(super) fn server(
    backend: Backend,
    framing: MessageFraming,
    handler: Option<Arc<dyn Handler>>,
) -> Server {
    let config = Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        framing: framing.codec(),
        workers: 1,
        backend: BackendChoice::Forced(backend),
        ..Config::default()
    };
    match Server::start(config, handler) {
        Ok(server) => server,
        Err(e) => panic!("server did not start: {}", e),
    }
}

/// 6 connections, 100-byte messages, 600 in all.
pub(super) fn bench_config(
    backend: Backend,
    addr: SocketAddr,
    framing: MessageFraming,
) -> BenchConfig {
    BenchConfig {
        addr,
        connections: 6,
        size: 100,
        limit: Limit::Count(600),
        framing,
        backend: BackendChoice::Forced(backend),
        ..BenchConfig::default()
    }
}

#[track_caller]
pub(super) fn run_ok(config: BenchConfig) -> Report {
    match run(config) {
        Ok(report) => report,
        Err(e) => panic!("bench failed: {}", e),
    }
}

#[test]
fn every_framing_echoes_the_exact_count() {
    for backend in backends() {
        for framing in FRAMINGS {
            let server = server(backend, framing, None);
            let mut config = bench_config(backend, server.local_addr(), framing);
            // A window smaller than the connections: connects go in batches.
            config.connect_window = 2;
            let report = run_ok(config);
            let what = format!("{} {}", backend, framing.name());
            assert_eq!(report.errors, 0, "{}: {:?}", what, report.error);
            assert_eq!(report.connected, 6, "{}", what);
            assert_eq!(report.connect_errors, 0, "{}", what);
            assert_eq!(report.messages, 600, "{}", what);
            assert!(report.seconds > 0.0, "{}", what);
            assert!(report.latency.p50_us > 0.0, "{}", what);
            assert!(report.latency.max_us >= report.latency.p99_us, "{}", what);
            assert!(report.success(), "{}", what);
            let stats = server.stats();
            assert_eq!(stats.connections_accepted, 6, "{}", what);
            assert!(stats.frames_received >= 600, "{}", what);
            server.close().unwrap();
        }
    }
}

#[test]
fn duration_limit_with_threads_and_warmup() {
    for backend in backends() {
        let server = server(backend, MessageFraming::Length, None);
        let mut config = bench_config(backend, server.local_addr(), MessageFraming::Length);
        config.limit = Limit::Duration(Duration::from_millis(300));
        config.warmup = Duration::from_millis(100);
        config.threads = 3;
        config.connections = 7;
        let report = run_ok(config);
        assert_eq!(report.errors, 0, "{}: {:?}", backend, report.error);
        assert_eq!(report.threads, 3, "{}", backend);
        assert_eq!(report.connected, 7, "{}", backend);
        assert!(report.messages > 0, "{}", backend);
        assert!(
            report.seconds > 0.0 && report.seconds <= 0.300_001,
            "{}",
            backend
        );
        server.close().unwrap();
    }
}

#[test]
fn big_messages_take_many_sends_and_receives() {
    for backend in backends() {
        let server = server(backend, MessageFraming::Length, None);
        let mut config = bench_config(backend, server.local_addr(), MessageFraming::Length);
        config.size = 3 << 20;
        config.connections = 2;
        config.limit = Limit::Count(6);
        let report = run_ok(config);
        assert_eq!(report.errors, 0, "{}: {:?}", backend, report.error);
        assert_eq!(report.messages, 6, "{}", backend);
        server.close().unwrap();
    }
}

/// Echoes every frame with its first byte changed.
struct FlipFirstByte;

impl Handler for FlipFirstByte {
    fn handle(&self, batch: &mut Batch) {
        for i in 0..batch.len() {
            let mut reply = batch.frame(i).to_vec();
            if let Some(first) = reply.first_mut() {
                *first ^= 0x20;
            }
            batch.reply(i, &reply);
        }
    }
}

#[test]
fn a_wrong_echo_is_an_error() {
    for backend in backends() {
        for framing in [MessageFraming::Raw, MessageFraming::Lines] {
            let server = server(backend, framing, Some(Arc::new(FlipFirstByte)));
            let config = bench_config(backend, server.local_addr(), framing);
            let report = run_ok(config);
            let what = format!("{} {}", backend, framing.name());
            // Each connection's first message fails and closes the connection.
            assert_eq!(report.errors, 6, "{}", what);
            assert_eq!(report.messages, 0, "{}", what);
            assert!(!report.success(), "{}", what);
            let error = report.error.clone().unwrap_or_default();
            assert!(error.contains("mismatch at byte 0"), "{}: {}", what, error);
            server.close().unwrap();
        }
    }
}

#[test]
fn refused_connects_are_counted_not_fatal() {
    // A port that was free a moment ago: nobody listens there now.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for backend in backends() {
        let report = run_ok(bench_config(backend, addr, MessageFraming::Raw));
        assert_eq!(report.connected, 0, "{}", backend);
        assert_eq!(report.connect_errors, 6, "{}", backend);
        assert_eq!(report.messages, 0, "{}", backend);
        assert!(report.connect_error.is_some(), "{}", backend);
        assert!(!report.success(), "{}", backend);
        assert!(report.to_json().contains("\"connect_errors\": 6"));
    }
}

#[test]
fn reconnects_count_connects() {
    for backend in backends() {
        let server = server(backend, MessageFraming::Lines, None);
        let mut config = bench_config(backend, server.local_addr(), MessageFraming::Lines);
        config.messages_per_connection = Some(3);
        let report = run_ok(config);
        assert_eq!(report.errors, 0, "{}: {:?}", backend, report.error);
        assert_eq!(report.messages, 600, "{}", backend);
        assert_eq!(report.connected, 6, "{}", backend);
        // 100 connections' worth of messages over 6 slots: about 94 reconnects.
        assert!(
            report.connects >= 600 / 3 - 6,
            "{}: {}",
            backend,
            report.connects
        );
        assert_eq!(report.handshakes(), 0, "{}", backend);
        assert!(report.connects_per_s() > 0.0, "{}", backend);
        assert!(report.human().contains("connects/s"), "{}", report.human());
        // The last connects may be established before the server's accept.
        let accepted = || server.stats().connections_accepted;
        let waited = std::time::Instant::now();
        while accepted() < 6 + report.connects && waited.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(accepted(), 6 + report.connects, "{}", backend);
        server.close().unwrap();
    }
}

#[test]
fn plans_share_connections_and_count() {
    let config = BenchConfig {
        connections: 10,
        limit: Limit::Count(1001),
        connect_window: 256,
        ..BenchConfig::default()
    };
    let plans = plans(&config, 3);
    let conns: Vec<usize> = plans.iter().map(|p| p.connections).collect();
    assert_eq!(conns, [4, 3, 3]);
    let firsts: Vec<usize> = plans.iter().map(|p| p.first).collect();
    assert_eq!(firsts, [0, 4, 7]);
    let quotas: Vec<u64> = plans.iter().map(|p| p.quota.unwrap()).collect();
    assert_eq!(quotas.iter().sum::<u64>(), 1001);
    assert_eq!(quotas, [401, 300, 300]);
    assert!(plans.iter().all(|p| p.window == 85));
}

#[test]
fn report_json_keys_and_escapes() {
    let report = Report {
        addr: "127.0.0.1:9".parse().unwrap(),
        backend: Backend::Epoll,
        threads: 1,
        connections: 2,
        connected: 2,
        connect_errors: 0,
        addr_not_available: 0,
        tls_errors: 0,
        connect_error: None,
        tls_server_name: None,
        messages_per_connection: None,
        connects: 0,
        size: 1000,
        framing: MessageFraming::Lines,
        messages: 500,
        errors: 1,
        error: Some("a \"quoted\"\nline".to_string()),
        seconds: 2.0,
        latency: Latency {
            p50_us: 10.0,
            p99_us: 20.0,
            p999_us: 30.0,
            max_us: 40.0,
            mean_us: 12.0,
        },
    };
    assert_eq!(report.messages_per_s(), 250.0);
    assert_eq!(report.mb_per_s(), 0.25);
    let json = report.to_json();
    let keys = [
        "connections",
        "size",
        "framing",
        "messages",
        "errors",
        "seconds",
        "messages_per_s",
        "mb_per_s",
        "p50_us",
        "p99_us",
        "p999_us",
        "max_us",
    ];
    let mut at = 0;
    for key in keys {
        let found = json[at..].find(&format!("\"{}\": ", key));
        assert!(
            found.is_some(),
            "{} missing or out of order in {}",
            key,
            json
        );
        at += found.unwrap();
    }
    assert!(json.starts_with("{\"connections\": 2, \"size\": 1000, \"framing\": \"lines\""));
    assert!(
        json.contains("\"error\": \"a \\\"quoted\\\"\\nline\""),
        "{}",
        json
    );
    assert!(json.contains("\"connect_error\": null"));
    assert!(report.human().contains("p99.9 30.0 us"));
}

#[test]
fn bad_options_exit_with_2() {
    let bad: [&[&str]; 12] = [
        &["--bogus"],
        &["--tls"],
        &["--tls-ca", "ca.pem"],
        &["--tls-server-name", "localhost"],
        &["--tls", "--tls-ca", "/nonexistent/ca.pem"],
        &["--messages-per-connection", "0"],
        &["--size", "0"],
        &["--connections", "many"],
        &["--framing", "xml"],
        &["--count", "5", "--duration", "1"],
        &["--port", "0"],
        &["--duration", "-1"],
    ];
    for args in bad {
        assert_eq!(cli::main(args.iter().copied()), EXIT_USAGE, "{:?}", args);
    }
}
