"""The loads: `iocp-echo bench`, `ab -k`, and idle connections, each measured on a server.

Each measured run samples the server's CPU time (utime + stime) just before the client
starts and just after it exits; the figure that counts is that delta over the messages
the client completed.
"""

from __future__ import annotations

import json
import math
import os
import re
import select
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from servers import (
    CLIENT_CPU,
    HOST,
    ROOT,
    VENV_PYTHON,
    Children,
    RunningServer,
    cpu_seconds,
    open_fds,
    pinned,
    rss_kib,
)

IDLE_CLIENT = ROOT / "bench" / "idle_client.py"
CONNECT_SLACK = 60.0
"""Seconds a client run may take beyond its duration (connecting 10,000, tearing down)."""


@dataclass
class Measurement:
    """One client run against one server."""

    messages: int
    failed: int
    """Messages that failed plus connections that could not be made."""
    seconds: float
    messages_per_s: float
    p50_us: float
    p99_us: float
    server_cpu_s: float
    note: str = ""

    @property
    def cpu_us_per_message(self) -> float:
        return self.server_cpu_s / self.messages * 1e6 if self.messages else float("nan")


def _run(children: Children, argv: list[str], timeout: float) -> tuple[int | None, str, str]:
    """Run ``argv`` in its own process group; (exit code or None on timeout, out, err)."""
    proc = children.spawn(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        children.kill(proc, grace=0.5)
        out, err = proc.communicate()
        code = None
    children.kill(proc, grace=0.1)
    return code, out.decode(errors="replace"), err.decode(errors="replace")


def run_load(
    children: Children,
    client: list[str],
    server: RunningServer,
    connections: int,
    size: int,
    duration: float,
) -> Measurement:
    """``iocp-echo bench`` (closed loop, one thread) against ``server`` for ``duration`` s."""
    argv = [
        *client,
        "--host",
        HOST,
        "--port",
        str(server.port),
        "--connections",
        str(connections),
        "--size",
        str(size),
        "--duration",
        str(duration),
        "--framing",
        "raw",
        "--threads",
        "1",
        "--warmup",
        "0",
        "--json",
    ]
    before = cpu_seconds(server.pid)
    code, out, err = _run(children, pinned(CLIENT_CPU, argv), duration + CONNECT_SLACK)
    after = cpu_seconds(server.pid) if server.alive() else before
    report = _last_json(out)
    if report is None:
        why = "timed out" if code is None else f"exit {code}"
        return failed_measurement(f"client {why}: {_one_line(err)}", connections)
    connect_failures = int(report.get("connect_errors", 0) or 0)
    connected = int(report.get("connected", connections) or 0)
    failed = int(report["errors"]) + max(connect_failures, connections - connected)
    note = _one_line(err)
    if not server.alive():
        note = f"server died: {server.log_tail()} {note}".strip()
    return Measurement(
        messages=int(report["messages"]),
        failed=failed,
        seconds=float(report["seconds"]),
        messages_per_s=float(report["messages_per_s"]),
        p50_us=float(report["p50_us"]),
        p99_us=float(report["p99_us"]),
        server_cpu_s=after - before,
        note=note,
    )


def _last_json(out: str) -> dict[str, Any] | None:
    for line in reversed(out.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and "messages" in value:
            return value
    return None


def _one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line (for a Markdown note), its last ``limit`` characters."""
    return " ".join(text.split())[-limit:]


def failed_measurement(note: str, failed: int) -> Measurement:
    """A run that measured nothing: ``failed`` connections, and why."""
    nan = float("nan")
    return Measurement(0, failed, 0.0, 0.0, nan, nan, 0.0, note)


# ---------------------------------------------------------------------------------------
# ab -k


AB_FIELDS = {
    "complete": re.compile(r"^Complete requests:\s+(\d+)", re.M),
    "failed": re.compile(r"^Failed requests:\s+(\d+)", re.M),
    "seconds": re.compile(r"^Time taken for tests:\s+([\d.]+)", re.M),
    "rate": re.compile(r"^Requests per second:\s+([\d.]+)", re.M),
    "transferred": re.compile(r"^Total transferred:\s+(\d+)", re.M),
    "keepalive": re.compile(r"^Keep-Alive requests:\s+(\d+)", re.M),
    "p50": re.compile(r"^\s+50%\s+(\d+)", re.M),
    "p99": re.compile(r"^\s+99%\s+(\d+)", re.M),
}
AB_MAX_REQUESTS = 10_000_000
"""ab stops at ``-t`` seconds or this many requests, whichever comes first."""


def ab_padding(children: Children, server: RunningServer, size: int | None) -> str | None:
    """The ``X-Pad`` header value that makes ab's request (and so the echo) ``size`` bytes.

    ab's request is ~100 bytes; one calibration request tells its exact length here.
    """
    if size is None:
        return None
    probe = ["ab", "-k", "-n", "1", "-c", "1", "-s", "5", f"http://{HOST}:{server.port}/"]
    _code, out, err = _run(children, probe, 15.0)
    found = AB_FIELDS["transferred"].search(out)
    if not found:
        why = _one_line(out + " " + err)
        raise RuntimeError(f"ab calibration against {server.spec.label} failed: {why}")
    header = len("X-Pad: \r\n")
    pad = size - int(found.group(1)) - header
    if pad < 1:
        raise RuntimeError(f"ab's request is already {found.group(1)} bytes, over {size}")
    return "a" * pad


def run_ab(
    children: Children,
    server: RunningServer,
    concurrency: int,
    duration: float,
    padding: str | None,
) -> tuple[Measurement, int]:
    """``ab -k`` against ``server``; the measurement and the bytes of each echoed response.

    The echo server sends ab's own keep-alive request back; ab takes it as a complete
    response (status line unparsable, so counted as non-2xx, which is not a failure) with
    no body, and sends the next request on the same connection: a closed-loop echo client.
    ab reports latency in whole milliseconds.
    """
    # -t takes whole seconds.
    seconds = str(max(1, math.ceil(duration)))
    argv = ["ab", "-k", "-q", "-s", "30", "-t", seconds, "-n", str(AB_MAX_REQUESTS)]
    argv += ["-c", str(concurrency)]
    if padding is not None:
        argv += ["-H", f"X-Pad: {padding}"]
    argv.append(f"http://{HOST}:{server.port}/")
    before = cpu_seconds(server.pid)
    code, out, err = _run(children, pinned(CLIENT_CPU, argv), duration + CONNECT_SLACK)
    after = cpu_seconds(server.pid) if server.alive() else before
    values: dict[str, float] = {}
    for name, pattern in AB_FIELDS.items():
        found = pattern.search(out)
        if found:
            values[name] = float(found.group(1))
    if "complete" not in values or "seconds" not in values:
        why = "timed out" if code is None else f"exit {code}"
        return failed_measurement(
            f"ab {why}: {_one_line(err if err.strip() else out)}", concurrency
        ), 0
    complete = int(values["complete"])
    response = int(values.get("transferred", 0) // complete) if complete else 0
    notes = [] if code == 0 else [f"ab exit {code}: {_one_line(err, 200)}"]
    if values.get("keepalive", 0) < complete:
        notes.append(f"only {values.get('keepalive', 0):.0f} of {complete} kept alive")
    return (
        Measurement(
            messages=complete,
            failed=int(values.get("failed", 0)),
            seconds=values["seconds"],
            messages_per_s=values.get("rate", 0.0),
            p50_us=values.get("p50", float("nan")) * 1000,
            p99_us=values.get("p99", float("nan")) * 1000,
            server_cpu_s=after - before,
            note="; ".join(notes),
        ),
        response,
    )


# ---------------------------------------------------------------------------------------
# Idle connections


@dataclass
class IdleMeasurement:
    """Server RSS before and after ``connections`` idle connections were opened."""

    connections: int
    connected: int
    rss_before_kib: int
    rss_after_kib: int
    note: str = ""

    @property
    def bytes_per_connection(self) -> float:
        if not self.connected:
            return float("nan")
        return (self.rss_after_kib - self.rss_before_kib) * 1024 / self.connected


PER_PROCESS = 15_000
"""Idle connections per client process (each under its own open-file limit)."""
PER_SOURCE = 15_000
"""Idle connections per 127.0.0.x source address (one address has ~28k ephemeral ports)."""


def measure_idle(
    children: Children, server: RunningServer, connections: int, timeout: float = 120.0
) -> IdleMeasurement:
    """Open ``connections`` idle connections to ``server``; its RSS growth.

    The connections come from several client processes (each within the open-file limit)
    and several 127.0.0.x source addresses. RSS is read once the server has accepted them
    all (its listen queue is empty and its open files grew by that many, or stopped
    growing) and has settled.
    """
    _echo_a_little(server)
    rss_before = _settled_rss(server.pid)
    fds_before = open_fds(server.pid)
    procs: list[subprocess.Popen[bytes]] = []
    first = 0
    while first < connections:
        count = min(PER_PROCESS, connections - first)
        argv = [
            str(VENV_PYTHON),
            str(IDLE_CLIENT),
            "--port",
            str(server.port),
            "--count",
            str(count),
            "--first",
            str(first),
            "--per-source",
            str(PER_SOURCE),
        ]
        procs.append(
            children.spawn(
                pinned(CLIENT_CPU, argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
        first += count
    try:
        connected = 0
        notes: list[str] = []
        deadline = time.monotonic() + timeout
        for proc in procs:
            line = _read_line(proc, deadline)  # "connected N [error]"
            parts = line.split(maxsplit=2)
            if len(parts) >= 2 and parts[0] == "connected":
                connected += int(parts[1])
                if len(parts) == 3:
                    notes.append(parts[2])
            else:
                notes.append(f"idle client failed: {_one_line(line, 200) or 'no answer'}")
        _wait_accepted(server, fds_before + connected, timeout)
        rss_after = _settled_rss(server.pid)
        if not server.alive():
            notes.append(f"server died: {server.log_tail()}")
        return IdleMeasurement(connections, connected, rss_before, rss_after, "; ".join(notes))
    finally:
        for proc in procs:
            children.kill(proc, grace=2.0)


def _read_line(proc: subprocess.Popen[bytes], deadline: float) -> str:
    """The first line ``proc`` writes to stdout (or its stderr if it exits), by ``deadline``."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return data.decode(errors="replace")
        chunk = os.read(fd, 4096)
        if not chunk:
            err = proc.stderr.read() if proc.stderr else b""
            return (data + err).decode(errors="replace")
        data += chunk
    return data.split(b"\n", 1)[0].decode(errors="replace").strip()


def _echo_a_little(server: RunningServer) -> None:
    """One short echo on a few connections, so lazily made state exists before 'before'."""
    import socket

    socks = [socket.create_connection((HOST, server.port), timeout=5) for _ in range(4)]
    try:
        for s in socks:
            s.sendall(b"x" * 1024)
        for s in socks:
            got = 0
            while got < 1024:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += len(chunk)
    finally:
        for s in socks:
            s.close()
    time.sleep(0.3)


def _accept_queue(port: int) -> int | None:
    """Connections waiting in the listen queue of ``port`` (``ss``'s Recv-Q), if known."""
    try:
        out = subprocess.run(
            ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            return int(parts[1])
    return None


def _wait_accepted(server: RunningServer, fds_wanted: int, timeout: float) -> None:
    """Until the server holds ``fds_wanted`` files, or its accept queue is empty and its
    open files stopped growing (a server may not hold one descriptor per connection)."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline and server.alive():
        fds = open_fds(server.pid)
        if fds >= fds_wanted:
            return
        if fds == last and _accept_queue(server.port) == 0:
            return
        last = fds
        time.sleep(0.5)


def _settled_rss(pid: int, limit: float = 5.0) -> int:
    """VmRSS once two readings 0.3 s apart agree (or after ``limit`` seconds)."""
    deadline = time.monotonic() + limit
    previous = rss_kib(pid)
    while time.monotonic() < deadline:
        time.sleep(0.3)
        current = rss_kib(pid)
        if current == previous:
            return current
        previous = current
    return previous
