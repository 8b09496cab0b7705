"""``python -m iocp_echo bench``: the load generator against an in-process server."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from helpers import wait_stats
from iocp_echo import Server
from iocp_echo._native import run_bench
from tls_client import CERTS, server_tls

TIMEOUT = 60
"""Seconds one bench run may take."""

JSON_KEYS = [
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
]


def bench(port: int, *options: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "iocp_echo", "bench", "--port", str(port), *options]
    return subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT)


def json_report(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout + proc.stderr
    report: dict[str, Any] = json.loads(lines[0])
    return report


@pytest.mark.parametrize("framing", ["raw", "lines", "length"])
def test_bench_json_against_native_echo(framing: str) -> None:
    with Server(port=0, framing=framing, workers=1) as server:
        _, port = server.address
        proc = bench(port, "--count", "2000", "--connections", "20", "--json", "--framing", framing)
    assert proc.returncode == 0, proc.stderr
    report = json_report(proc)
    assert list(report)[: len(JSON_KEYS)] == JSON_KEYS
    assert report["connections"] == 20
    assert report["connected"] == 20
    assert report["size"] == 64
    assert report["framing"] == framing
    assert report["messages"] == 2000
    assert report["errors"] == 0
    assert report["connect_errors"] == 0
    assert report["seconds"] > 0
    assert report["messages_per_s"] > 0
    assert report["mb_per_s"] > 0
    assert 0 < report["p50_us"] <= report["p99_us"] <= report["p999_us"] <= report["max_us"]


def test_bench_human_report() -> None:
    with Server(port=0, workers=1) as server:
        _, port = server.address
        proc = bench(port, "--count", "300", "--connections", "3", "--size", "1000")
    assert proc.returncode == 0, proc.stderr
    for word in ("messages/s", "MB/s", "p50", "p99.9", "max", "0 errors", "3 open"):
        assert word in proc.stdout, proc.stdout


def test_bench_counts_wrong_echoes_and_exits_1() -> None:
    def reverse(message: bytes) -> bytes:
        return message[::-1]

    with Server(reverse, port=0, workers=1) as server:
        _, port = server.address
        proc = bench(port, "--count", "100", "--connections", "4", "--json")
    assert proc.returncode == 1, proc.stderr
    report = json_report(proc)
    assert report["errors"] == 4
    assert report["messages"] == 0
    assert "mismatch" in report["error"]


def test_bench_bad_option_exits_2() -> None:
    proc = bench(1, "--count", "10", "--duration", "1")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stdout == ""


def test_run_bench_returns_a_dict() -> None:
    with Server(port=0, workers=1, framing="length") as server:
        _, port = server.address
        report = run_bench(port=port, count=500, connections=5, framing="length", threads=2)
    assert report["messages"] == 500
    assert report["errors"] == 0
    assert report["threads"] == 2
    assert report["notes"] == []
    assert "messages/s" in report["summary"]
    with pytest.raises(ValueError, match="size"):
        run_bench(port=port, size=0, count=1)
    with pytest.raises(ValueError, match="not both"):
        run_bench(port=port, duration=1.0, count=1)


def test_bench_over_tls_with_reconnects_counts_handshakes() -> None:
    """``bench --tls --tls-ca``: every echo checked over TLS; with
    ``--messages-per-connection`` each connection's handshake is counted, and the server
    saw that many handshakes."""
    with Server(port=0, workers=1, framing="length", tls=server_tls()) as server:
        _, port = server.address
        proc = bench(
            port,
            "--tls",
            "--tls-ca",
            str(CERTS / "ca.pem"),
            "--framing",
            "length",
            "--connections",
            "4",
            "--count",
            "200",
            "--messages-per-connection",
            "10",
            "--json",
        )
        assert proc.returncode == 0, proc.stderr
        report = json_report(proc)
        assert (report["messages"], report["errors"], report["tls_errors"]) == (200, 0, 0)
        assert report["messages_per_connection"] == 10
        assert report["handshakes"] > 0
        # The bench's last connections may still be closing on the server's side:
        # a handshake it counted finishes on the server when the client's Finished
        # is read.
        wait_stats(server, "the bench's connections closed", lambda s: s["connections_open"] == 0)
        stats = server.stats()
    # The 4 first connections and every reconnect each made a handshake on the server.
    assert stats["tls_handshakes"] >= 4 + report["handshakes"]
    assert stats["tls_errors"] == 0


def test_bench_over_tls_refuses_a_server_its_ca_did_not_sign() -> None:
    with Server(port=0, workers=1, tls=server_tls()) as server:
        _, port = server.address
        report = run_bench(
            port=port, count=10, connections=2, tls_ca=CERTS / "other-ca.pem", duration=None
        )
    assert report["connected"] == 0
    assert report["connect_errors"] == 2
    assert "UnknownIssuer" in report["notes"][0]


def test_bench_tls_flags_need_each_other() -> None:
    for options in (["--tls"], ["--tls-ca", str(CERTS / "ca.pem")]):
        proc = bench(1, *options)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert "--tls" in proc.stderr
    with pytest.raises(ValueError, match=r"missing\.pem"):
        run_bench(port=1, count=1, tls_ca=CERTS / "missing.pem")
