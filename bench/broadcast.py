#!/usr/bin/env python3
"""Broadcast: deliveries per server CPU-second, iocp_echo against a uvloop hub.

    python bench/broadcast.py                  # 1,000 receivers, 64 B, 3 rounds
    python bench/broadcast.py --connections 200 --messages 50 --rounds 1

Each server is a hub (``peers/broadcast_iocp.py``: ``Server.broadcast``;
``peers/broadcast_uvloop.py``: a loop of ``transport.write``), one worker pinned to
CPU 0. This client (pinned to CPU 1) opens ``--connections`` connections, checks that a
warm-up line reaches every one, then has one of them send ``--messages`` lines of
``--size`` bytes at once and reads until every connection has every line. The figure
is deliveries (lines received over all connections) per second of the server's CPU
time (utime + stime from /proc/<pid>/stat), the median of the rounds, the two servers
interleaved in each round. Run it from the project's .venv (uvloop installed, as
``compare.py`` does).
"""

from __future__ import annotations

import argparse
import datetime
import os
import selectors
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from servers import (
    CLIENT_CPU,
    HOST,
    PEERS,
    VENV_PYTHON,
    Children,
    ServerSpec,
    cpu_seconds,
    raise_nofile_limit,
    start_server,
)

SPECS = [
    ServerSpec("uvloop", "uvloop", "uvloop Protocol hub (transport.write per connection)", ()),
    ServerSpec("iocp_echo", "iocp_echo", "iocp_echo Server.broadcast (io_uring)", (), True),
]
PEER_FILES = {"uvloop": "broadcast_uvloop.py", "iocp_echo": "broadcast_iocp.py"}


def spec_of(key: str) -> ServerSpec:
    base = next(s for s in SPECS if s.key == key)
    argv = (str(VENV_PYTHON), str(PEERS / PEER_FILES[key]), "--host", HOST, "--port", "0")
    return ServerSpec(base.key, base.short, base.label, argv, base.iocp_echo)


class Receivers:
    """The client's connections, each counting the lines it received."""

    def __init__(self, port: int, count: int) -> None:
        self.socks = [socket.create_connection((HOST, port)) for _ in range(count)]
        self.selector = selectors.DefaultSelector()
        self.lines = [0] * count
        for i, sock in enumerate(self.socks):
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ, i)

    def read_until(self, targets: list[int], timeout: float) -> bool:
        """Read until connection i has ``targets[i]`` lines; False on timeout."""
        deadline = time.monotonic() + timeout
        short = sum(1 for n, t in zip(self.lines, targets) if n < t)
        while short:
            if time.monotonic() > deadline:
                return False
            self.read_for(0.5, targets)
            short = sum(1 for n, t in zip(self.lines, targets) if n < t)
        return True

    def read_for(self, seconds: float, targets: list[int] | None = None) -> None:
        """Read what arrives for up to ``seconds`` (less once ``targets`` are met)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            events = self.selector.select(timeout=max(0.0, deadline - time.monotonic()))
            if not events:
                return
            for key, _ in events:
                try:
                    data = self.socks[key.data].recv(1 << 16)
                except BlockingIOError:
                    continue
                self.lines[key.data] += data.count(b"\n")
            if targets is not None and all(n >= t for n, t in zip(self.lines, targets)):
                return

    def close(self) -> None:
        self.selector.close()
        for sock in self.socks:
            sock.close()


def one_run(spec: ServerSpec, args: argparse.Namespace, children: Children, logs: Path) -> float:
    """Deliveries per server CPU-second for one run of ``spec``."""
    server = start_server(spec, children, logs)
    try:
        receivers = Receivers(server.port, args.connections)
        try:
            publisher = receivers.socks[0]
            # Warm-up: a line must reach every connection (all accepted and adopted);
            # then what is still in flight is read, and each count is the base.
            ones = [1] * args.connections
            for _ in range(50):
                publisher.sendall(b"warm\n")
                if receivers.read_until(ones, 0.5):
                    break
            else:
                raise RuntimeError(f"{spec.label}: the warm-up never reached every connection")
            receivers.read_for(0.5)
            targets = [n + args.messages for n in receivers.lines]
            line = b"m" * (args.size - 1) + b"\n"
            before = cpu_seconds(server.pid)
            view = memoryview(line * args.messages)
            publisher.setblocking(True)
            publisher.sendall(view)
            publisher.setblocking(False)
            if not receivers.read_until(targets, 60.0):
                raise RuntimeError(f"{spec.label}: not every line arrived within 60 s")
            used = cpu_seconds(server.pid) - before
        finally:
            receivers.close()
        deliveries: int = args.connections * args.messages
        return deliveries / max(used, 1e-9)
    finally:
        children.kill(server.proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=200, help="lines broadcast per run")
    parser.add_argument("--size", type=int, default=64, help="bytes per line, newline included")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, help="also write the Markdown table here")
    args = parser.parse_args()
    if args.size < 2 or args.connections < 1 or args.messages < 1 or args.rounds < 1:
        parser.error("--size must be >= 2; --connections, --messages, --rounds >= 1")
    raise_nofile_limit()
    os.sched_setaffinity(0, {CLIENT_CPU})
    children = Children()
    rates: dict[str, list[float]] = {s.key: [] for s in SPECS}
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        with tempfile.TemporaryDirectory(prefix="iocp-echo-broadcast-") as logs:
            for _ in range(args.rounds):
                for spec in SPECS:
                    rates[spec.key].append(one_run(spec_of(spec.key), args, children, Path(logs)))
    finally:
        children.kill_all()
    median = {key: statistics.median(values) for key, values in rates.items()}
    ratios = [i / u for i, u in zip(rates["iocp_echo"], rates["uvloop"])]
    lines = [
        f"# Broadcast, {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"* command: `python bench/broadcast.py {' '.join(sys.argv[1:])}`",
        f"* {args.connections} connections, {args.messages} lines of {args.size} B broadcast "
        f"per run, {args.rounds} round(s) interleaved; server on CPU 0, client on CPU 1",
        "",
        "| server | deliveries per server CPU-second (median) | each round |",
        "|---|---|---|",
    ]
    for spec in SPECS:
        each = ", ".join(f"{r:,.0f}" for r in rates[spec.key])
        lines.append(f"| {spec.label} | {median[spec.key]:,.0f} | {each} |")
    lines += ["", f"iocp_echo / uvloop: **{statistics.median(ratios):.2f}x** (median of rounds)"]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.output:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
