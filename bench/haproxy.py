#!/usr/bin/env python3
"""What HAProxy in front costs: the native echo through HAProxy (``send-proxy-v2``, the
server with ``--proxy-protocol``) against the same echo reached directly.

    python bench/haproxy.py [--rounds 3] [--duration 3] [--output FILE]

Both servers are the Rust binary's native echo, one worker, on CPU 0; HAProxy (Debian's,
``nbthread 1``, mode tcp) also on CPU 0; the client, ``iocp-echo bench`` (64 B and 1 KiB
messages, 50 connections, closed loop), on CPU 1. Figures: messages per second, and CPU
per message of everything on the server side (server, plus HAProxy when it is in the
path), medians of the rounds, the two paths interleaved. Needs ``haproxy`` on the PATH.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clients import run_load
from servers import (
    BINARY,
    CLIENT_CPU,
    HOST,
    ROOT,
    SERVER_CPU,
    Children,
    RunningServer,
    ServerSpec,
    cpu_seconds,
    pinned,
    raise_nofile_limit,
    start_server,
)

CONNECTIONS = 50
SIZES = [64, 1024]

HAPROXY_CONFIG = """global
    nbthread 1
    maxconn 4000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend echo
    bind {host}:{port}
    default_backend servers
backend servers
    server s1 {host}:{server_port} send-proxy-v2
"""


def free_port() -> int:
    """A free loopback port for HAProxy to listen on."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def echo_spec(proxied: bool) -> ServerSpec:
    argv: tuple[str, ...] = (str(BINARY), "--host", HOST, "--port", "0", "--workers", "1")
    if proxied:
        argv += ("--proxy-protocol",)
    label = "native echo behind HAProxy" if proxied else "native echo, direct"
    return ServerSpec("haproxy" if proxied else "direct", label, label, argv, True)


def start_haproxy(children: Children, server_port: int, logs: Path) -> tuple[int, int]:
    """HAProxy in front of ``server_port``; (its pid, its port) once it accepts."""
    port = free_port()
    cfg = logs / f"haproxy-{port}.cfg"
    cfg.write_text(HAPROXY_CONFIG.format(host=HOST, port=port, server_port=server_port))
    with (logs / f"haproxy-{port}.log").open("wb") as out:
        proc = children.spawn(
            pinned(SERVER_CPU, ["haproxy", "-f", str(cfg), "-db"]),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return proc.pid, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("haproxy did not start")


def one_run(
    proxied: bool, size: int, args: argparse.Namespace, children: Children, logs: Path
) -> tuple[float, float]:
    """(messages/s, server-side CPU us per message) of one client run."""
    server = start_server(echo_spec(proxied), children, logs)
    try:
        target = server
        haproxy_pid = None
        if proxied:
            haproxy_pid, port = start_haproxy(children, server.port, logs)
            target = RunningServer(server.spec, server.proc, port, server.log)
        before = cpu_seconds(haproxy_pid) if haproxy_pid else 0.0
        m = run_load(children, [str(BINARY), "bench"], target, CONNECTIONS, size, args.duration)
        extra = (cpu_seconds(haproxy_pid) - before) if haproxy_pid else 0.0
        if m.failed or not m.messages:
            raise RuntimeError(f"run failed: {m.note}")
        return m.messages_per_s, (m.server_cpu_s + extra) / m.messages * 1e6
    finally:
        children.kill_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if shutil.which("haproxy") is None:
        sys.exit("bench/haproxy.py: haproxy is not installed (apt-get install haproxy)")
    if not BINARY.exists():
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    raise_nofile_limit()
    os.sched_setaffinity(0, {CLIENT_CPU})
    started = datetime.datetime.now(datetime.timezone.utc)
    results: dict[tuple[bool, int], list[tuple[float, float]]] = {}
    children = Children()
    with tempfile.TemporaryDirectory(prefix="iocp-echo-haproxy-") as logs:
        for _ in range(args.rounds):
            for size in SIZES:
                for proxied in (False, True):
                    run = one_run(proxied, size, args, children, Path(logs))
                    results.setdefault((proxied, size), []).append(run)
    lines = [
        f"# HAProxy in front, {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"* command: `python bench/haproxy.py {' '.join(sys.argv[1:])}`",
        f"* {args.rounds} round(s) of {args.duration} s, interleaved; server and HAProxy "
        f"on CPU {SERVER_CPU}, client on CPU {CLIENT_CPU}; {CONNECTIONS} connections",
        "",
        "| case | direct: msg/s | through HAProxy: msg/s | ratio | direct: CPU us/msg "
        "| through HAProxy: CPU us/msg (server + HAProxy) | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for size in SIZES:
        direct, through = results[(False, size)], results[(True, size)]
        rate_d = statistics.median(r for r, _ in direct)
        rate_p = statistics.median(r for r, _ in through)
        cpu_d = statistics.median(c for _, c in direct)
        cpu_p = statistics.median(c for _, c in through)
        lines.append(
            f"| {size} B x{CONNECTIONS} | {rate_d:,.0f} | {rate_p:,.0f} | "
            f"{rate_p / rate_d:.2f}x | {cpu_d:.2f} | {cpu_p:.2f} | {cpu_p / cpu_d:.2f}x |"
        )
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.output:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
