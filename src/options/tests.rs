//! The definition of the options: complete, consistent with `Config::default()`,
//! and one message per bad value.

use std::time::Duration;

use super::{build, by_flag, by_name, Kind, Setting, Value, OPTIONS};
use crate::config::Config;
use crate::framing::Framing;
use crate::port::{Backend, BackendChoice};

fn text(t: &str) -> Value {
    Value::Text(t.to_string())
}

/// A good value for every option, none of them its default.
fn example(setting: Setting) -> Value {
    match setting {
        Setting::Host => text("127.0.0.2"),
        Setting::Port => Value::Int(9000),
        Setting::Path => text("/run/app.sock"),
        Setting::Framing => text("lines"),
        Setting::Workers => Value::Int(3),
        Setting::Backend => text("epoll"),
        Setting::MaxFrame => Value::Int(1 << 10),
        Setting::MaxConnections => Value::Int(7),
        Setting::IdleTimeout => Value::Float(1.5),
        Setting::DrainTimeout => Value::Int(5),
        Setting::LingerTimeout => Value::Float(0.5),
        Setting::HighWater => Value::Int(1 << 16),
        Setting::LowWater => Value::Int(1 << 12),
        Setting::MaxOutput => Value::Int(1 << 22),
        Setting::Backlog => Value::Int(16),
        Setting::ReusePort => Value::Int(1),
        Setting::TlsCert => text("cert.pem"),
        Setting::TlsKey => text("key.pem"),
        Setting::TlsClientCa => text("ca.pem"),
        Setting::TlsAlpn => Value::List(vec!["h2".to_string(), "http/1.1".to_string()]),
        Setting::TlsHandshakeTimeout => Value::Float(2.5),
        Setting::ProxyProtocol => Value::Bool(true),
        Setting::TrustedProxies => Value::List(vec!["10.0.0.0/8".to_string()]),
    }
}

fn message(name: &str, value: Value) -> String {
    let option = by_name(name).unwrap();
    let mut config = Config::default();
    option.apply(&mut config, &value).unwrap_err().to_string()
}

#[test]
fn names_and_flags_are_unique_and_spelled_alike() {
    for (i, option) in OPTIONS.iter().enumerate() {
        // `path` is `--unix` on the command lines: the flag says what it is.
        let expected = match option.name {
            "path" => "--unix".to_string(),
            name => format!("--{}", name.replace('_', "-")),
        };
        assert_eq!(option.flag, expected);
        assert_eq!(by_name(option.name), Some(option));
        assert_eq!(by_flag(option.flag), Some(option));
        for other in &OPTIONS[i + 1..] {
            assert_ne!(option.setting, other.setting);
            assert_ne!(option.name, other.name);
        }
        assert!(!option.help.is_empty());
    }
}

#[test]
fn every_config_field_is_an_option() {
    // A new field of Config fails to compile here until it is listed.
    let Config {
        addr: _,            // host and port
        path: _,            // path
        framing: _,         // framing
        workers: _,         // workers
        backend: _,         // backend
        max_frame: _,       // max_frame
        max_connections: _, // max_connections
        idle_timeout: _,    // idle_timeout
        drain_timeout: _,   // drain_timeout
        linger_timeout: _,  // linger_timeout
        high_water: _,      // high_water
        low_water: _,       // low_water
        max_output: _,      // max_output
        backlog: _,         // backlog
        reuse_port: _,      // reuse_port
        tls: _,             // tls_cert, tls_key, tls_client_ca, tls_alpn, tls_handshake_timeout
        proxy_protocol: _,  // proxy_protocol
        trusted_proxies: _, // trusted_proxies
    } = Config::default();
    let names: Vec<&str> = OPTIONS.iter().map(|o| o.name).collect();
    assert_eq!(
        names,
        [
            "host",
            "port",
            "path",
            "framing",
            "workers",
            "backend",
            "max_frame",
            "max_connections",
            "idle_timeout",
            "drain_timeout",
            "linger_timeout",
            "high_water",
            "low_water",
            "max_output",
            "backlog",
            "reuse_port",
            "tls_cert",
            "tls_key",
            "tls_client_ca",
            "tls_alpn",
            "tls_handshake_timeout",
            "proxy_protocol",
            "trusted_proxies"
        ]
    );
}

#[test]
fn every_option_changes_its_setting_and_its_default_restores_it() {
    let defaults = Config::default();
    let mut changed = Config::default();
    for option in OPTIONS {
        let before = changed.clone();
        option
            .apply(&mut changed, &example(option.setting))
            .unwrap();
        assert_ne!(changed, before, "{} changed nothing", option.name);
        assert_eq!(option.current(&changed), read_back(example(option.setting)));
    }
    let mut checked = changed.clone();
    if !cfg!(target_os = "linux") {
        checked.path = None; // refused off Linux (see path_is_linux_only)
    }
    assert!(checked.validate().is_ok());
    for option in OPTIONS {
        option
            .apply(&mut changed, &option.current(&defaults))
            .unwrap();
    }
    assert_eq!(changed, defaults);
}

/// An example as `current` reads it back (seconds are floats).
fn read_back(value: Value) -> Value {
    match value {
        Value::Int(5) => Value::Float(5.0),
        other => other,
    }
}

#[test]
fn command_line_text_parses_to_the_values_python_gives() {
    let port = by_name("port").unwrap();
    assert_eq!(port.parse_text("80"), Value::Int(80));
    assert_eq!(port.parse_text("x"), text("x"));
    let idle = by_name("idle_timeout").unwrap();
    assert_eq!(idle.parse_text("none"), Value::None);
    assert_eq!(idle.parse_text("2.5"), Value::Float(2.5));
    let drain = by_name("drain_timeout").unwrap();
    assert_eq!(drain.parse_text("none"), text("none"));
    assert_eq!(
        by_name("backend").unwrap().parse_text("epoll"),
        text("epoll")
    );
    let proxy = by_name("proxy_protocol").unwrap();
    assert_eq!(proxy.parse_text("true"), Value::Bool(true));
    assert_eq!(proxy.parse_text("off"), Value::Bool(false));
    assert_eq!(proxy.parse_text("maybe"), text("maybe"));
    let trusted = by_name("trusted_proxies").unwrap();
    let cidrs = Value::List(vec!["10.0.0.0/8".to_string(), "::1/128".to_string()]);
    assert_eq!(trusted.parse_text("10.0.0.0/8,::1/128"), cidrs);
    let mut config = Config::default();
    trusted.apply(&mut config, &cidrs).unwrap();
    assert_eq!(config.trusted_proxies.len(), 2);
    assert_eq!(
        trusted.current(&Config::default()),
        Value::List(vec!["127.0.0.0/8".to_string(), "::1/128".to_string()])
    );
}

#[test]
fn bad_values_have_one_message_each() {
    let cases: &[(&str, Value, &str)] = &[
        (
            "port",
            Value::Int(70000),
            "port must be 0 to 65535, got 70000",
        ),
        ("port", Value::Int(-1), "port must be 0 to 65535, got -1"),
        ("port", text("x"), "port must be an integer, got \"x\""),
        ("port", text("1.5"), "port must be an integer, got \"1.5\""),
        (
            "port",
            text("99999999999999999999999999999999999999999"),
            "port must be 0 to 65535, got 99999999999999999999999999999999999999999",
        ),
        (
            "max_frame",
            text("-99999999999999999999999999999999999999999"),
            "max_frame must be at least 1, got -99999999999999999999999999999999999999999",
        ),
        ("workers", Value::Int(0), "workers must be 1 to 1024, got 0"),
        (
            "max_frame",
            Value::Int(0),
            "max_frame must be at least 1, got 0",
        ),
        (
            "max_connections",
            Value::Int(0),
            "max_connections must be at least 1, got 0",
        ),
        (
            "idle_timeout",
            Value::Int(-1),
            "idle_timeout must be a positive number of seconds or none, got -1",
        ),
        (
            "idle_timeout",
            Value::Float(f64::NAN),
            "idle_timeout must be a positive number of seconds or none, got NaN",
        ),
        (
            "drain_timeout",
            Value::Int(0),
            "drain_timeout must be a positive number of seconds, got 0",
        ),
        (
            "drain_timeout",
            Value::Float(1e30),
            "drain_timeout must be at most 1000000000 seconds, got 1000000000000000000000000000000",
        ),
        (
            "high_water",
            Value::Int(0),
            "high_water must be at least 1, got 0",
        ),
        (
            "low_water",
            Value::Int(-1),
            "low_water must be at least 0, got -1",
        ),
        (
            "max_output",
            Value::Int(0),
            "max_output must be at least 1, got 0",
        ),
        (
            "backlog",
            Value::Int(0),
            "backlog must be 1 to 2147483647, got 0",
        ),
        (
            "reuse_port",
            Value::Int(2),
            "reuse_port must be 0 to 1, got 2",
        ),
        (
            "backend",
            text("bogus"),
            "backend must be one of auto, io_uring, epoll, iocp, got \"bogus\"",
        ),
        (
            "framing",
            text("bogus"),
            "framing must be one of raw, lines, length, got \"bogus\"",
        ),
        (
            "host",
            text("no such host!"),
            "host must be an IP address or a resolvable name, got \"no such host!\"",
        ),
        (
            "tls_cert",
            text(""),
            "tls_cert must be a file path, got \"\"",
        ),
        (
            "tls_key",
            Value::Int(3),
            "tls_key must be a file path, got 3",
        ),
        (
            "tls_alpn",
            text("h2,,x"),
            "tls_alpn must be protocol names of 1 to 255 bytes separated by commas, got \"h2,,x\"",
        ),
        (
            "tls_handshake_timeout",
            Value::Int(0),
            "tls_handshake_timeout must be a positive number of seconds, got 0",
        ),
        (
            "proxy_protocol",
            Value::Int(1),
            "proxy_protocol must be true or false, got 1",
        ),
        (
            "trusted_proxies",
            text("10.0.0.0/8,10.0.0.0/33"),
            "trusted_proxies must be networks in CIDR notation (10.0.0.0/8, ::1/128) \
             separated by commas, got \"10.0.0.0/33\"",
        ),
        (
            "trusted_proxies",
            Value::List(Vec::new()),
            "trusted_proxies must be networks in CIDR notation (10.0.0.0/8, ::1/128) \
             separated by commas, got \"\"",
        ),
    ];
    // A protocol name one byte too long (its message is built, not written out).
    let long = "x".repeat(256);
    assert_eq!(
        message("tls_alpn", Value::List(vec![long.clone()])),
        format!(
            "tls_alpn must be protocol names of 1 to 255 bytes separated by commas, got \"{}\"",
            long
        )
    );
    for (name, value, expected) in cases {
        assert_eq!(message(name, value.clone()), *expected);
    }
}

#[test]
fn none_keeps_the_default_but_sets_no_idle_timeout() {
    let mut config = Config {
        idle_timeout: Some(Duration::from_secs(1)),
        ..Config::default()
    };
    for option in OPTIONS {
        option.apply(&mut config, &Value::None).unwrap();
    }
    let expected = Config {
        idle_timeout: None,
        ..Config::default()
    };
    assert_eq!(config, expected);
}

#[test]
fn high_water_alone_lowers_low_water_and_low_water_must_stay_below() {
    let high = by_name("high_water").unwrap();
    let low = by_name("low_water").unwrap();
    let config = build(Config::default(), [(high, &Value::Int(1000))]).unwrap();
    assert_eq!((config.high_water, config.low_water), (1000, 250));
    let config = build(Config::default(), [(high, &Value::Int(1 << 30))]).unwrap();
    assert_eq!(config.low_water, Config::default().low_water);
    let both = [(high, &Value::Int(1000)), (low, &Value::Int(100))];
    assert_eq!(build(Config::default(), both).unwrap().low_water, 100);
    let err = build(
        Config::default(),
        [(high, &Value::Int(1000)), (low, &Value::Int(2000))],
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "low_water must be below high_water (1000), got 2000"
    );
}

#[test]
fn high_water_alone_raises_max_output_and_max_output_must_stay_above() {
    let high = by_name("high_water").unwrap();
    let max = by_name("max_output").unwrap();
    let default = Config::default().max_output;
    let config = build(Config::default(), [(high, &Value::Int(1000))]).unwrap();
    assert_eq!(config.max_output, default);
    let config = build(Config::default(), [(high, &Value::Int(1 << 30))]).unwrap();
    assert_eq!(config.max_output, 2 << 30);
    let config = build(Config::default(), [(max, &Value::Int(2 << 20))]).unwrap();
    assert_eq!(config.max_output, 2 << 20);
    for (high_water, max_output) in [(1000, 1000), (1000, 999), (1 << 30, 1 << 24)] {
        let both = [
            (high, &Value::Int(high_water)),
            (max, &Value::Int(max_output)),
        ];
        assert_eq!(
            build(Config::default(), both).unwrap_err().to_string(),
            format!(
                "max_output must be above high_water ({}), got {}",
                high_water, max_output
            )
        );
    }
    // Alone, below the default high_water.
    assert_eq!(
        build(Config::default(), [(max, &Value::Int(1000))])
            .unwrap_err()
            .to_string(),
        "max_output must be above high_water (1048576), got 1000"
    );
}

#[test]
fn framing_and_backend_names_are_the_shared_parsers() {
    let mut config = Config::default();
    let framing = by_name("framing").unwrap();
    framing
        .apply(&mut config, &text("length_prefixed"))
        .unwrap();
    assert!(matches!(
        config.framing,
        Framing::LengthPrefixed { width: 4, .. }
    ));
    assert!(matches!(framing.kind, Kind::Framing(_)));
    by_name("backend")
        .unwrap()
        .apply(&mut config, &text("epoll"))
        .unwrap();
    assert_eq!(config.backend, BackendChoice::Forced(Backend::Epoll));
}

#[test]
fn tls_files_come_as_a_pair_and_the_other_tls_options_only_with_them() {
    let option = |name| by_name(name).unwrap();
    let cert = text("cert.pem");
    let key = text("key.pem");
    let cases: &[(&[(&str, &Value)], &str)] = &[
        (
            &[("tls_cert", &cert)],
            "tls_cert needs tls_key, the file of its private key",
        ),
        (
            &[("tls_key", &key)],
            "tls_key needs tls_cert, the certificate file",
        ),
        (
            &[("tls_client_ca", &cert)],
            "tls_client_ca needs tls_cert and tls_key",
        ),
        (
            &[("tls_alpn", &text("h2"))],
            "tls_alpn needs tls_cert and tls_key",
        ),
    ];
    for (given, message) in cases {
        let given = given.iter().map(|(name, value)| (option(name), *value));
        assert_eq!(
            build(Config::default(), given).unwrap_err().to_string(),
            *message
        );
    }
    let config = build(
        Config::default(),
        [(option("tls_cert"), &cert), (option("tls_key"), &key)],
    )
    .unwrap();
    assert!(config.tls.enabled());
    // A handshake timeout alone is harmless: it applies to TLS only.
    let timeout = Value::Float(1.0);
    assert!(!build(
        Config::default(),
        [(option("tls_handshake_timeout"), &timeout)]
    )
    .unwrap()
    .tls
    .enabled());
    assert_eq!(
        option("tls_alpn").parse_text("h2,http/1.1"),
        Value::List(vec!["h2".into(), "http/1.1".into()])
    );
    assert_eq!(option("tls_cert").parse_text("none"), text("none"));
}

#[test]
fn path_excludes_host_and_port() {
    let path = by_name("path").unwrap();
    let sock = text("/run/app.sock");
    for other in ["host", "port"] {
        let option = by_name(other).unwrap();
        let value = example(option.setting);
        for given in [
            vec![(path, &sock), (option, &value)],
            vec![(option, &value), (path, &sock)],
        ] {
            let e = build(Config::default(), given).unwrap_err();
            assert_eq!(e.name, "path");
            assert!(e.why.contains(other), "{}", e);
        }
    }
    // None is "not given": host=None with a path is fine (where path is allowed).
    let host = by_name("host").unwrap();
    let built = build(Config::default(), vec![(path, &sock), (host, &Value::None)]);
    assert_eq!(built.is_ok(), cfg!(target_os = "linux"));
}

#[test]
fn path_is_linux_only() {
    let mut config = Config {
        path: Some("/run/app.sock".into()),
        ..Config::default()
    };
    let result = config.validate();
    assert_eq!(result.is_ok(), cfg!(target_os = "linux"), "{:?}", result);
    if let Err(e) = result {
        assert_eq!(e.name, "path");
        assert!(e.why.contains("Linux only"), "{}", e);
    }
    config.path = Some("".into());
    assert_eq!(config.validate().unwrap_err().name, "path");
}
