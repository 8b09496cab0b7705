"""Every server option on every front, from the one definition (`iocp_echo.OPTIONS`).

The fronts are `Server(...)`, the Python command line (`python -m iocp_echo`) and the
Rust binary (`target/release/iocp-echo`, built by `cargo build --release`; its tests are
skipped if it is absent or older than the sources). Each front accepts a good value of
each option, and a bad value gets the same one-line message on all three.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from iocp_echo import OPTIONS, Server, resolve_backend
from server_process import START_TIMEOUT, running

ROOT = Path(__file__).resolve().parent.parent
CERTS = ROOT / "tests" / "certs"
BINARY = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "iocp-echo"

# A good value of each option, none of them its default.
GOOD: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 0,
    "path": f"/tmp/iocp_echo-options-{os.getpid()}.sock",
    "framing": "lines",
    "workers": 2,
    "backend": resolve_backend(),
    "max_frame": 65536,
    "max_connections": 100,
    "idle_timeout": 30.5,
    "drain_timeout": 1.5,
    "linger_timeout": 0.5,
    "high_water": 65536,
    "low_water": 1024,
    "max_output": 4 << 20,
    "backlog": 64,
    "reuse_port": 1,
    "tls_cert": str(CERTS / "server.pem"),
    "tls_key": str(CERTS / "server.key"),
    "tls_client_ca": str(CERTS / "ca.pem"),
    "tls_alpn": "h2,http/1.1",
    "tls_handshake_timeout": 5.5,
    "proxy_protocol": True,
    "trusted_proxies": "10.0.0.0/8,::1/128",
}

# The options that exclude others (a Unix socket, or host and port), left out of
# "every option at once"; tests/test_unix_socket.py starts each front with them.
ALONE = {"path"}

# The options an option needs beside it (TLS files come as a pair, the other TLS
# options only with them).
NEEDS: dict[str, list[str]] = {
    "tls_cert": ["tls_key"],
    "tls_key": ["tls_cert"],
    "tls_client_ca": ["tls_cert", "tls_key"],
    "tls_alpn": ["tls_cert", "tls_key"],
}

# A bad value of each option and its message, the same on every front.
BAD: dict[str, tuple[Any, str]] = {
    "host": (
        "no such host!",
        'host must be an IP address or a resolvable name, got "no such host!"',
    ),
    "port": (70000, "port must be 0 to 65535, got 70000"),
    "path": ("", 'path must be a file path, got ""'),
    "framing": ("bogus", 'framing must be one of raw, lines, length, got "bogus"'),
    "workers": (0, "workers must be 1 to 1024, got 0"),
    "backend": ("bogus", 'backend must be one of auto, io_uring, epoll, iocp, got "bogus"'),
    "max_frame": (0, "max_frame must be at least 1, got 0"),
    "max_connections": (0, "max_connections must be at least 1, got 0"),
    "idle_timeout": (-1, "idle_timeout must be a positive number of seconds or none, got -1"),
    "drain_timeout": (0, "drain_timeout must be a positive number of seconds, got 0"),
    "linger_timeout": (-1, "linger_timeout must be a positive number of seconds, got -1"),
    "high_water": (0, "high_water must be at least 1, got 0"),
    "low_water": (-1, "low_water must be at least 0, got -1"),
    "max_output": (0, "max_output must be at least 1, got 0"),
    "backlog": (0, "backlog must be 1 to 2147483647, got 0"),
    "reuse_port": (2, "reuse_port must be 0 to 1, got 2"),
    "tls_cert": ("", 'tls_cert must be a file path, got ""'),
    "tls_key": ("", 'tls_key must be a file path, got ""'),
    "tls_client_ca": ("", 'tls_client_ca must be a file path, got ""'),
    "tls_alpn": (
        "h2,,x",
        'tls_alpn must be protocol names of 1 to 255 bytes separated by commas, got "h2,,x"',
    ),
    "tls_handshake_timeout": (
        0,
        "tls_handshake_timeout must be a positive number of seconds, got 0",
    ),
    "proxy_protocol": (1, "proxy_protocol must be true or false, got 1"),
    "trusted_proxies": (
        "10.0.0.0/8,10.0.0.0/33",
        "trusted_proxies must be networks in CIDR notation (10.0.0.0/8, ::1/128) "
        'separated by commas, got "10.0.0.0/33"',
    ),
}

# Bad combinations: the rules between options.
BAD_TOGETHER: list[tuple[dict[str, Any], str]] = [
    (
        {"high_water": 1000, "low_water": 2000},
        "low_water must be below high_water (1000), got 2000",
    ),
    (
        {"high_water": 1000, "low_water": 1000},
        "low_water must be below high_water (1000), got 1000",
    ),
    (
        {"high_water": 1000, "max_output": 1000},
        "max_output must be above high_water (1000), got 1000",
    ),
    (
        {"max_output": 1000},
        "max_output must be above high_water (1048576), got 1000",
    ),
    ({"tls_cert": GOOD["tls_cert"]}, "tls_cert needs tls_key, the file of its private key"),
    ({"tls_key": GOOD["tls_key"]}, "tls_key needs tls_cert, the certificate file"),
    ({"tls_client_ca": GOOD["tls_client_ca"]}, "tls_client_ca needs tls_cert and tls_key"),
    ({"tls_alpn": "h2"}, "tls_alpn needs tls_cert and tls_key"),
    (
        {"path": GOOD["path"], "port": 0},
        "path cannot be given with port: a server listens on a Unix socket or on TCP, not both",
    ),
    (
        {"path": GOOD["path"], "host": "127.0.0.1"},
        "path cannot be given with host: a server listens on a Unix socket or on TCP, not both",
    ),
]

NAMES = [option.name for option in OPTIONS]
TOGETHER = {name: value for name, value in GOOD.items() if name not in ALONE}
# The flags that are not their option's name spelled as a flag.
FLAGS = {"path": "--unix"}


def flags(options: dict[str, Any]) -> list[str]:
    """``options`` as command-line flags."""
    by_name = {option.name: option for option in OPTIONS}
    args: list[str] = []
    for name, value in options.items():
        option = by_name[name]
        if option.kind == "flag":
            # A flag takes no value: given, it is on.
            args += [option.flag] if value else []
        else:
            args += [option.flag, str(value)]
    return args


def python_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "iocp_echo", *args]


def rust_cli(*args: str) -> list[str]:
    if not BINARY.exists():
        pytest.skip(f"{BINARY} is absent: build it with `cargo build --release`")
    # Cargo's dep-info beside the binary names the sources it was built from.
    depinfo = BINARY.with_name(BINARY.name + ".d")
    deps = depinfo.read_text().partition(":")[2] if depinfo.exists() else ""
    sources = [Path(p) for p in deps.split()]
    if any(not p.exists() or p.stat().st_mtime > BINARY.stat().st_mtime for p in sources):
        pytest.skip(f"{BINARY} is older than the sources: rebuild it with `cargo build --release`")
    return [str(BINARY), *args]


CLIS = [pytest.param(python_cli, id="python -m iocp_echo"), pytest.param(rust_cli, id="iocp-echo")]


def test_the_tables_cover_every_option() -> None:
    assert set(GOOD) == set(NAMES)
    assert set(BAD) == set(NAMES)
    assert len(set(NAMES)) == len(NAMES)


def test_the_definition_is_consistent() -> None:
    for option in OPTIONS:
        assert option.flag == FLAGS.get(option.name, "--" + option.name.replace("_", "-"))
        assert option.help
        if option.kind in ("count", "bytes"):
            assert option.minimum is not None and option.maximum is not None
            assert isinstance(option.default, int)
            assert option.minimum <= option.default <= option.maximum
        if option.kind in ("choice", "framing"):
            assert option.default in option.choices
        assert option.optional == (option.default is None)


@pytest.mark.parametrize("name", NAMES)
def test_server_accepts_each_option(name: str) -> None:
    Server(None, **{n: GOOD[n] for n in [name, *NEEDS.get(name, [])]})


def test_server_runs_with_every_option_at_once() -> None:
    with Server(None, **TOGETHER) as server:
        assert server.address[1] > 0
        assert server.workers == GOOD["workers"]
        assert server.backend == GOOD["backend"]


@pytest.mark.parametrize("name", NAMES)
def test_server_refuses_each_bad_value_with_its_message(name: str) -> None:
    value, message = BAD[name]
    with pytest.raises(ValueError) as raised:
        Server(None, **{name: value})
    assert str(raised.value) == message


@pytest.mark.parametrize(("options", "message"), BAD_TOGETHER)
def test_server_refuses_bad_combinations(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        Server(None, **options)
    assert str(raised.value) == message


def test_high_water_alone_lowers_the_default_low_water() -> None:
    Server(None, high_water=1000)  # the default low_water (256 KiB) would be above it


def test_high_water_alone_raises_the_default_max_output() -> None:
    Server(None, high_water=64 << 20)  # above the default max_output (16 MiB)


def test_an_unknown_keyword_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="no_such_option"):
        Server(None, no_such_option=1)  # type: ignore[call-arg]


def stops_cleanly(args: list[str]) -> None:
    with running(args) as server:
        code, stderr = server.stop(signal.SIGINT)
    assert code == 0, stderr


@pytest.mark.parametrize("cli", CLIS)
def test_cli_accepts_every_option(cli: Any) -> None:
    stops_cleanly(cli(*flags(TOGETHER)))
    stops_cleanly(cli("--port", "0", "--high-water", "1000", "--idle-timeout", "none"))


@pytest.mark.parametrize("cli", CLIS)
def test_cli_refuses_each_bad_value_with_the_servers_message(cli: Any) -> None:
    # A flag takes no value on a command line, so it has no bad one there.
    kinds = {option.name: option.kind for option in OPTIONS}
    cases = [
        ({name: value}, message) for name, (value, message) in BAD.items() if kinds[name] != "flag"
    ]
    cases += BAD_TOGETHER
    # All at once: each process only parses its options and exits.
    procs = [
        (
            options,
            message,
            subprocess.Popen(
                cli(*flags({"port": 0, **options})),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
        for options, message in cases
    ]
    wrong = []
    for options, message, proc in procs:
        try:
            stdout, stderr = proc.communicate(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            wrong.append(f"{options}: still running instead of refusing its options")
            continue
        expected = f"iocp-echo: error: {message}\n"
        if (proc.returncode, stdout, stderr) != (2, "", expected):
            wrong.append(f"{options}: exit {proc.returncode}, stdout {stdout!r}, stderr {stderr!r}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("cli", CLIS)
def test_cli_help_lists_every_option_with_its_default(cli: Any) -> None:
    done = subprocess.run(cli("--help"), capture_output=True, text=True, timeout=START_TIMEOUT)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    for option in OPTIONS:
        assert option.flag in text
    assert text.count("(default ") >= len(OPTIONS)


@pytest.mark.parametrize("cli", CLIS)
def test_cli_refuses_an_unusable_tls_file_in_one_line_naming_it(cli: Any, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    missing = tmp_path / "missing.pem"
    for cert, key in [
        (missing, GOOD["tls_key"]),
        (junk, GOOD["tls_key"]),
        (GOOD["tls_cert"], junk),
    ]:
        done = subprocess.run(
            cli("--port", "0", "--tls-cert", str(cert), "--tls-key", str(key)),
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
        )
        bad = missing if cert == missing else junk
        assert done.returncode == 2, done.stderr
        assert done.stdout == ""
        assert done.stderr.startswith("iocp-echo: error: ")
        assert done.stderr.count("\n") == 1 and str(bad) in done.stderr, done.stderr


def test_server_refuses_an_unusable_tls_file_at_construction(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(OSError) as raised:
        Server(None, tls_cert=missing, tls_key=GOOD["tls_key"])
    assert raised.value.filename == str(missing)
    with pytest.raises(ValueError, match="does not match the certificate"):
        Server(None, tls_cert=GOOD["tls_cert"], tls_key=CERTS / "client.key")


def test_server_takes_the_tls_settings_as_one_object() -> None:
    import ssl
    from types import SimpleNamespace

    from iocp_echo import connect

    tls = SimpleNamespace(
        certfile=CERTS / "server.pem",
        keyfile=CERTS / "server.key",
        cafile=None,
        alpn_protocols=["h2", "http/1.1"],
        handshake_timeout=5.0,
    )
    context = ssl.create_default_context(cafile=str(CERTS / "ca.pem"))
    context.set_alpn_protocols(["http/1.1"])
    with Server(None, port=0, framing="lines", tls=tls) as server:  # type: ignore[arg-type]
        with connect(
            server.address, framing="lines", tls=context, server_hostname="localhost", timeout=10
        ) as client:
            assert client.request(b"hello") == b"hello"
            sock = client.socket
            assert isinstance(sock, ssl.SSLSocket)
            assert sock.selected_alpn_protocol() == "http/1.1"
    with pytest.raises(TypeError, match="tls must be a TlsConfig"):
        Server(None, tls=object())  # type: ignore[arg-type]
