#!/usr/bin/env python3
"""TLS: server CPU per message and handshakes per server CPU-second, iocp_echo against
uvloop and asyncio with an ``ssl.SSLContext``.

    python bench/tls.py                       # 3 rounds of 2 s per case
    python bench/tls.py --rounds 1 --duration 0.5

Every server serves the same certificate (``tests/certs/server.pem``, ECDSA P-256, signed
by ``tests/certs/ca.pem``), one worker pinned to CPU 0; the client is ``iocp-echo bench
--tls --tls-ca tests/certs/ca.pem`` (rustls, one thread, pinned to CPU 1), so every
server meets the same client. Cases: a closed loop of 64 B and 1 KiB messages over 50
connections (CPU per message: the server's utime + stime over the run / messages
echoed), and handshakes: 50 connections that each close after one message and reconnect
(``--messages-per-connection 1``), so every message costs a new TLS handshake (figure:
handshakes per server CPU-second). Servers are interleaved within each round; figures
are medians of the rounds, ratios medians of the per-round ratios. Run it from the
project's .venv with uvloop installed (``compare.py`` installs it).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from clients import Measurement, run_load
from servers import (
    BINARY,
    CLIENT_CPU,
    HOST,
    PEERS,
    ROOT,
    VENV_PYTHON,
    Children,
    ServerSpec,
    raise_nofile_limit,
    start_server,
)

CERTS = ROOT / "tests" / "certs"
CERT, KEY, CA = CERTS / "server.pem", CERTS / "server.key", CERTS / "ca.pem"
CONNECTIONS = 50


@dataclass(frozen=True)
class TlsCase:
    """One load: message size, and whether each message opens a new connection."""

    size: int
    handshakes: bool

    def label(self) -> str:
        size = f"{self.size} B" if self.size < 1024 else f"{self.size // 1024} KiB"
        if self.handshakes:
            return f"handshakes ({size}, one message per connection, x{CONNECTIONS})"
        return f"{size} x{CONNECTIONS}"


CASES = [TlsCase(64, False), TlsCase(1024, False), TlsCase(64, True)]


def specs() -> list[ServerSpec]:
    """The servers, each serving TLS with the test certificate."""
    py = str(VENV_PYTHON)
    tls = ("--tls-cert", str(CERT), "--tls-key", str(KEY))

    def peer(name: str, *args: str) -> tuple[str, ...]:
        return (py, str(PEERS / name), "--host", HOST, "--port", "0", *tls, *args)

    def iocp(handler: str) -> tuple[str, ...]:
        return peer("iocp_echo_server.py", "--handler", handler, "--backend", "io_uring")

    return [
        ServerSpec("uvloop", "uvloop+ssl", "uvloop Protocol + ssl", peer("uvloop_protocol.py")),
        ServerSpec("asyncio", "asyncio+ssl", "asyncio Protocol + ssl", peer("asyncio_protocol.py")),
        ServerSpec("native", "native", "iocp_echo native echo, rustls", iocp("native"), True),
        ServerSpec("python", "py handler", "iocp_echo `lambda m: m`, rustls", iocp("python"), True),
    ]


def measure(
    spec: ServerSpec, case: TlsCase, args: argparse.Namespace, children: Children, logs: Path
) -> Measurement:
    """One client run of ``case`` against a fresh start of ``spec``."""
    client = [str(BINARY), "bench", "--tls", "--tls-ca", str(CA)]
    if case.handshakes:
        client += ["--messages-per-connection", "1"]
    server = start_server(spec, children, logs)
    try:
        return run_load(children, client, server, CONNECTIONS, case.size, args.duration)
    finally:
        children.kill(server.proc)


def figure(case: TlsCase, m: Measurement) -> float:
    """CPU microseconds per message, or handshakes per CPU-second."""
    if m.failed or not m.messages:
        return float("nan")
    if case.handshakes:
        return m.messages / max(m.server_cpu_s, 1e-9)
    return m.cpu_us_per_message


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per client run")
    parser.add_argument("--output", type=Path, help="also write the Markdown report here")
    parser.add_argument("--no-build", action="store_true", help="do not run cargo build")
    args = parser.parse_args()
    if args.rounds < 1 or args.duration <= 0:
        parser.error("--rounds must be >= 1 and --duration > 0")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    raise_nofile_limit()
    os.sched_setaffinity(0, {CLIENT_CPU})
    servers = specs()
    runs: dict[tuple[TlsCase, str], list[Measurement]] = {}
    started = datetime.datetime.now(datetime.timezone.utc)
    children = Children()
    try:
        with tempfile.TemporaryDirectory(prefix="iocp-echo-tls-") as logs:
            for _ in range(args.rounds):
                for case in CASES:
                    for spec in servers:
                        m = measure(spec, case, args, children, Path(logs))
                        runs.setdefault((case, spec.key), []).append(m)
                        if m.note:
                            print(f"{spec.label}, {case.label()}: {m.note}", file=sys.stderr)
    finally:
        children.kill_all()
    text = report(args, started, servers, runs)
    print(text, end="")
    if args.output:
        args.output.write_text(text)
    return 0


def report(
    args: argparse.Namespace,
    started: datetime.datetime,
    servers: list[ServerSpec],
    runs: dict[tuple[TlsCase, str], list[Measurement]],
) -> str:
    """The Markdown report: figures per server and case, and the ratios to uvloop."""
    lines = [
        f"# TLS, {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"* command: `python bench/tls.py {' '.join(sys.argv[1:])}`",
        f"* {args.rounds} round(s) of {args.duration} s per case and server, interleaved; "
        "server on CPU 0, client (`iocp-echo bench --tls`, rustls) on CPU 1; ECDSA P-256",
        "",
        "| case | " + " | ".join(s.short for s in servers) + " |",
        "|---|" + "---|" * len(servers),
    ]
    for case in CASES:
        unit = "handshakes per CPU-s" if case.handshakes else "CPU us per message"
        cells = []
        for spec in servers:
            values = [figure(case, m) for m in runs[(case, spec.key)]]
            fmt = "{:,.0f}" if case.handshakes else "{:.2f}"
            cells.append(fmt.format(statistics.median(values)))
        lines.append(f"| {case.label()}: {unit} | " + " | ".join(cells) + " |")
    lines += ["", "Ratios to uvloop + ssl (median of per-round ratios):", ""]
    lines += ["| case | " + " | ".join(s.short for s in servers) + " | target |"]
    lines += ["|---|" + "---|" * (len(servers) + 1)]
    for case in CASES:
        base = [figure(case, m) for m in runs[(case, "uvloop")]]
        cells = []
        for spec in servers:
            mine = [figure(case, m) for m in runs[(case, spec.key)]]
            cells.append(f"{statistics.median([a / b for a, b in zip(mine, base)]):.2f}x")
        target = ">= 2x handshakes" if case.handshakes else "<= 0.5x CPU/message"
        lines.append(f"| {case.label()} | " + " | ".join(cells) + f" | {target} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
