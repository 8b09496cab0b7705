"""Prometheus metrics (``Server(metrics=...)``, ``--metrics-port``): ``/metrics`` scraped
over HTTP while real clients send frames, checked against ``stats()`` taken around each
scrape; the handler-time histogram; port 0; bad values; ``close()`` stops the HTTP
server; the ``--processes`` parent serving the children's sum; no library, a clear error.
"""

from __future__ import annotations

import gc
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from helpers import EXTERNAL, EXTERNAL_SKIP, framed, wait_for, wait_stats
from iocp_echo import Framing, Server, TlsConfig

if TYPE_CHECKING:
    from iocp_echo._exposition import MetricsEndpoint

pytestmark = pytest.mark.skipif(EXTERNAL is not None, reason=EXTERNAL_SKIP)
prometheus_parser = pytest.importorskip("prometheus_client.parser")

LINES = Framing.lines()
ROOT = Path(__file__).resolve().parent.parent
CERTS = ROOT / "tests" / "certs"
BINARY = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "iocp-echo"
START_TIMEOUT = 60.0

# Each counter family (after the prefix, without _total) and the stats key it reads.
COUNTERS = {
    "connections_accepted": "connections_accepted",
    "connections_closed": "connections_closed",
    "connections_rejected": "connections_rejected",
    "received_bytes": "bytes_received",
    "sent_bytes": "bytes_sent",
    "received_frames": "frames_received",
    "sent_frames": "frames_sent",
    "backpressure_pauses": "backpressure_pauses",
}
ERROR_KINDS = {
    "accept": "accept_errors",
    "io": "io_errors",
    "frame": "frame_errors",
    "handler": "handler_errors",
    "slow_consumer": "slow_consumer_closes",
    "idle_timeout": "idle_timeouts",
}


def upper(message: bytes) -> bytes:
    return message.upper()


def scrape(address: tuple[str, int] | None) -> dict[str, float]:
    """One scrape of ``/metrics``, parsed by the library's own parser: each sample by
    its name and labels (``name{label="value"}``)."""
    assert address is not None
    host, port = address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=30) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in prometheus_parser.text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def check_between(before: dict[str, Any], got: dict[str, float], after: dict[str, Any]) -> None:
    """Every counter of a scrape lies between the stats taken just before and after it."""
    for name, key in COUNTERS.items():
        value = got[f"iocp_echo_{name}_total"]
        assert before[key] <= value <= after[key], (name, before[key], value, after[key])
    for kind, key in ERROR_KINDS.items():
        value = got[f'iocp_echo_errors_total{{kind="{kind}"}}']
        assert before[key] <= value <= after[key], (kind, before[key], value, after[key])
    count = got["iocp_echo_handler_seconds_count"]
    assert before["handler_seconds_count"] <= count <= after["handler_seconds_count"]
    assert got['iocp_echo_handler_seconds_bucket{le="+Inf"}'] == count
    buckets = [v for k, v in got.items() if k.startswith("iocp_echo_handler_seconds_bucket")]
    assert buckets == sorted(buckets), "cumulative buckets never fall"
    assert 0 <= got["iocp_echo_connections_open"] <= after["connections_accepted"]


def check_equal(stats: dict[str, Any], got: dict[str, float]) -> None:
    """A scrape of a quiet server says what ``stats()`` says."""
    check_between(stats, got, stats)
    assert got["iocp_echo_connections_open"] == stats["connections_open"]
    assert got["iocp_echo_workers"] == stats["workers"]
    assert got[f'iocp_echo_server_info{{backend="{stats["backend"]}"}}'] == 1
    assert got["iocp_echo_handler_seconds_sum"] == pytest.approx(stats["handler_seconds_sum"])
    for bound, count in stats["handler_seconds_buckets"]:
        assert got[f'iocp_echo_handler_seconds_bucket{{le="{float(bound)!r}"}}'] == count


def test_a_scrape_during_load_lies_between_the_stats_around_it() -> None:
    clients, rounds = 6, 60
    stop = threading.Event()
    failures: list[BaseException] = []

    def client(address: tuple[str, int], n: int) -> None:
        try:
            with framed(address, LINES) as conn:
                for i in range(rounds):
                    if stop.is_set():
                        break
                    # A few frames at a time (one write): handler calls carry one or more.
                    batch = [f"c{n} m{i} {j}".encode() for j in range(1 + i % 4)]
                    conn.send_many(batch)
                    assert [conn.recv() for _ in batch] == [m.upper() for m in batch]
        except BaseException as e:  # reported by the test
            failures.append(e)

    with Server(upper, port=0, framing="lines", workers=2, metrics=("127.0.0.1", 0)) as srv:
        threads = [threading.Thread(target=client, args=(srv.address, n)) for n in range(clients)]
        for t in threads:
            t.start()
        scrapes = 0
        try:
            while any(t.is_alive() for t in threads) or scrapes < 3:
                before = srv.stats()
                got = scrape(srv.metrics_address)
                after = srv.stats()
                check_between(before, got, after)
                scrapes += 1
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not failures, failures
        wait_stats(srv, "every connection closed", lambda s: s["connections_open"] == 0)
        stats = srv.stats()
        got = scrape(srv.metrics_address)
        check_equal(stats, got)
        assert stats["frames_received"] == clients * sum(1 + i % 4 for i in range(rounds))
        assert 1 <= got["iocp_echo_handler_seconds_count"] <= stats["frames_received"]
        assert got["iocp_echo_handler_seconds_sum"] > 0
        assert scrapes >= 3


def test_the_histogram_counts_one_handler_call_per_lockstep_message() -> None:
    calls: list[bytes] = []

    def handler(message: bytes) -> bytes:
        calls.append(message)
        return message

    with Server(handler, port=0, framing="lines", metrics=("127.0.0.1", 0)) as srv:
        with framed(srv.address, LINES) as client:
            # One message in flight at a time: each handler call carries one.
            for i in range(40):
                assert client.request(b"%d" % i) == b"%d" % i
        got = scrape(srv.metrics_address)
        assert got["iocp_echo_handler_seconds_count"] == len(calls) == 40
        assert srv.stats()["handler_seconds_count"] == 40
        assert 0 < got["iocp_echo_handler_seconds_sum"]


def test_the_native_echo_has_no_histogram_and_plain_tcp_no_tls_or_proxy_metrics() -> None:
    with Server(port=0, framing="lines", metrics=("127.0.0.1", 0)) as srv:
        with framed(srv.address, LINES) as client:
            assert client.request(b"ping") == b"ping"
        got = scrape(srv.metrics_address)
    assert got["iocp_echo_received_frames_total"] == 1
    assert not [k for k in got if "handler_seconds" in k or "tls" in k or "proxy" in k]


def test_tls_and_proxy_servers_have_their_metrics() -> None:
    tls = TlsConfig(str(CERTS / "server.pem"), str(CERTS / "server.key"))
    with Server(port=0, tls=tls, metrics=("127.0.0.1", 0)) as srv:
        with socket.create_connection(srv.address, timeout=30) as sock:
            sock.sendall(b"not a TLS hello, a line\n")
            wait_stats(srv, "the TLS error", lambda s: s["tls_errors"] == 1)
        got = scrape(srv.metrics_address)
    assert got['iocp_echo_errors_total{kind="tls"}'] == 1
    assert got["iocp_echo_tls_handshakes_total"] == 0
    with Server(port=0, proxy_protocol=True, metrics=("127.0.0.1", 0)) as srv:
        with socket.create_connection(srv.address, timeout=30) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            wait_stats(srv, "the PROXY error", lambda s: s["proxy_errors"] == 1)
        got = scrape(srv.metrics_address)
    assert got['iocp_echo_errors_total{kind="proxy"}'] == 1
    assert "iocp_echo_tls_handshakes_total" not in got


def test_port_zero_is_resolved_while_running_and_none_otherwise() -> None:
    srv = Server(port=0, metrics=("127.0.0.1", 0))
    assert srv.metrics_address is None
    with srv:
        host, port = srv.metrics_address or ("", 0)
        assert host == "127.0.0.1" and port != 0
        assert scrape((host, port))["iocp_echo_connections_open"] == 0
    assert srv.metrics_address is None
    with srv:  # a restart serves again
        assert srv.metrics_address is not None
        scrape(srv.metrics_address)
    assert Server(port=0).metrics_address is None


@pytest.mark.parametrize(
    ("metrics", "error", "message"),
    [
        (("127.0.0.1", 65536), ValueError, "metrics port must be 0 to 65535"),
        (("127.0.0.1", -1), ValueError, "metrics port must be 0 to 65535"),
        (("127.0.0.1", "9100"), TypeError, "metrics port must be an int"),
        (("127.0.0.1", True), TypeError, "metrics port must be an int"),
        (("", 9100), TypeError, "metrics host must be a non-empty string"),
        (9100, TypeError, "metrics must be a (host, port) pair"),
        (("127.0.0.1", 9100, 1), TypeError, "metrics must be a (host, port) pair"),
    ],
)
def test_bad_metrics_values_are_refused_at_construction(
    metrics: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as raised:
        Server(port=0, metrics=metrics)
    assert message in str(raised.value)


def test_an_address_that_cannot_be_bound_fails_the_start_clearly() -> None:
    # 203.0.113.0/24 is documentation only (TEST-NET-3): never this machine's.
    srv = Server(port=0, metrics=("203.0.113.9", 0))
    with pytest.raises(OSError) as raised:
        srv.start()
    assert "cannot serve metrics on 203.0.113.9:0" in str(raised.value)
    assert not srv.running, "the server is closed when its metrics cannot start"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        srv = Server(port=0, metrics=("127.0.0.1", port))
        with pytest.raises(OSError) as raised:
            srv.start()
    assert f"cannot serve metrics on 127.0.0.1:{port}" in str(raised.value)
    assert not srv.running


def scraped_server() -> tuple[Server, tuple[str, int], MetricsEndpoint]:
    """A started server with metrics on a free port, scraped once: the server, where its
    metrics are, and their endpoint."""
    srv = Server(upper, port=0, framing="lines", metrics=("127.0.0.1", 0))
    srv.start()
    address = srv.metrics_address
    endpoint = srv._metrics
    assert address is not None and endpoint is not None and endpoint.thread.is_alive()
    scrape(address)
    return srv, address, endpoint


def test_close_stops_the_http_server_and_its_thread() -> None:
    srv, address, endpoint = scraped_server()
    srv.close()
    assert not endpoint.thread.is_alive()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=10).close()
    wait_for(
        lambda: not [t for t in threading.enumerate() if "process_request" in t.name],
        "the scrape's request thread to end",
    )
    assert "iocp_echo-metrics" not in [t.name for t in threading.enumerate()]


def test_a_server_collected_without_close_stops_its_metrics_too() -> None:
    srv, address, endpoint = scraped_server()
    del srv
    gc.collect()
    wait_for(lambda: not endpoint.thread.is_alive(), "the metrics thread to end")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=10).close()


def test_an_endpoint_closed_from_its_own_serving_thread_does_not_wait_for_itself() -> None:
    # Where a collected server's finalizer may run: the serving thread calls
    # service_actions() between requests, so closing from there is closing from it.
    srv, address, endpoint = scraped_server()
    endpoint._httpd.service_actions = endpoint.close  # type: ignore[method-assign]

    def closed() -> bool:  # the serving thread, and the thread the close went to
        names = [t.name for t in threading.enumerate()]
        return not endpoint.thread.is_alive() and "iocp_echo-metrics-close" not in names

    wait_for(closed, "the metrics threads to end")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=10).close()
    srv.close()


def test_without_prometheus_client_metrics_say_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "iocp_echo._exposition", raising=False)
    with pytest.raises(ImportError) as raised:
        Server(port=0, metrics=("127.0.0.1", 0))
    assert "pip install 'iocp_echo[metrics]'" in str(raised.value)
    with Server(port=0):  # without metrics= nothing needs the library
        pass


# --- the command line ---------------------------------------------------------------

BANNER = re.compile(r"listening on (?P<host>[\d.]+):(?P<port>\d+) .*, metrics on (?P<url>\S+)$")


@contextmanager
def cli(tmp_path: Path, *args: str) -> Iterator[tuple[tuple[str, int], str]]:
    """``python -m iocp_echo`` with a line-upper handler; the server's address and
    the metrics URL from its startup line."""
    (tmp_path / "metrics_handler.py").write_text("def upper(m):\n    return m.upper()\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    cmd = [sys.executable, "-m", "iocp_echo", "--port", "0", "--framing", "lines"]
    cmd += ["--handler", "metrics_handler:upper", "--workers", "1", *args]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            match = BANNER.search(line)
            assert match, line
            yield (match["host"], int(match["port"])), match["url"]
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(START_TIMEOUT) == 0


def scrape_url(url: str) -> dict[str, float]:
    match = re.match(r"http://([\d.]+):(\d+)/metrics$", url)
    assert match, url
    return scrape((match[1], int(match[2])))


def talk(address: tuple[str, int], count: int) -> None:
    with framed(address, LINES) as client:
        for i in range(count):
            assert client.request(b"m%d" % i) == b"M%d" % i


def test_the_command_line_serves_metrics_on_a_free_port(tmp_path: Path) -> None:
    with cli(tmp_path, "--metrics-port", "0") as (address, url):
        talk(address, 5)
        got = scrape_url(url)
        assert got["iocp_echo_received_frames_total"] == 5
        assert got["iocp_echo_handler_seconds_count"] == 5


@pytest.mark.skipif(sys.platform != "linux", reason="--processes is Linux only")
def test_the_processes_parent_serves_the_childrens_stats_summed(tmp_path: Path) -> None:
    with cli(tmp_path, "--metrics-port", "0", "--processes", "2") as (address, url):
        for _ in range(4):
            talk(address, 3)
        got = scrape_url(url)
        assert got["iocp_echo_workers"] == 2, "one worker in each of the two processes"
        assert got["iocp_echo_received_frames_total"] == 12
        assert got["iocp_echo_connections_accepted_total"] == 4
        assert got["iocp_echo_handler_seconds_count"] == 12
        assert got['iocp_echo_handler_seconds_bucket{le="+Inf"}'] == 12


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metrics-port", "70000"], "metrics port must be 0 to 65535"),
        (["--metrics-host", "127.0.0.1"], "--metrics-host goes with --metrics-port"),
        (
            ["--metrics-port", "0", "--metrics-host", "203.0.113.9"],
            "cannot serve metrics on 203.0.113.9:0",
        ),
    ],
)
def test_the_command_line_refuses_bad_metrics_in_one_line(args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "iocp_echo", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("iocp-echo: error: ") and message in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr


def test_the_rust_binary_says_it_serves_no_metrics() -> None:
    if not BINARY.exists():
        pytest.skip(f"{BINARY} is not built (cargo build --release)")
    done = subprocess.run(
        [str(BINARY), "--port", "0", "--metrics-port", "0"],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
    )
    assert done.returncode == 2
    assert "python -m iocp_echo --metrics-port" in done.stderr
