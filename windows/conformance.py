#!/usr/bin/env python3
"""Drive the Wine-hosted ``iocp-echo.exe`` from Linux (called by scripts/test-windows).

For each framing (raw, lines, length) it starts the server under Wine on a loopback
port (``--port 0 --stop-on-stdin-eof``), reads the port from its listening line, runs
the project's conformance tests against it (``pytest -m conformance tests`` with
``IOCP_ECHO_EXTERNAL``), then stops it by closing its stdin and checks the clean stop:
exit code 0, the final ``stopped`` line, and no error or leak reported. The framings
run with 1, 2 and 4 workers, so every thread shape of the server is exercised.

It adds what external mode cannot ask of a running server: an oversized frame closes
only its own connection (a server started with ``--max-frame``), and one echo printed
as it went over the wire.

Usage: conformance.py WINE IOCP_ECHO_EXE VENV_PYTHON REPO
"""

from __future__ import annotations

import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time

# Wine is roughly 13x slower than native: bounds are generous.
START_TIMEOUT = 120.0
STOP_TIMEOUT = 120.0
PYTEST_TIMEOUT = 1800.0
SOCKET_TIMEOUT = 60.0

LISTENING = re.compile(r"listening on (\S+):(\d+) \(backend (\w+)")


class WineServer:
    """``iocp-echo.exe`` under Wine, stopped by closing its stdin."""

    def __init__(self, wine: str, exe: str, *args: str) -> None:
        self.args = [wine, exe, "--host", "127.0.0.1", "--port", "0", "--stop-on-stdin-eof"]
        self.args += list(args)
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr_lines: list[str] = []
        self._stderr = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr.start()
        self.port, self.backend = self._read_listening_line()

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line.rstrip("\n"))

    def _read_listening_line(self) -> tuple[int, str]:
        assert self.proc.stdout is not None
        result: list[str] = []
        reader = threading.Thread(
            target=lambda: result.append(self.proc.stdout.readline()),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        reader.join(START_TIMEOUT)
        line = result[0] if result else ""
        match = LISTENING.search(line)
        if not match:
            self.proc.kill()
            raise SystemExit(
                f"server did not report listening within {START_TIMEOUT} s: {line!r}; "
                f"stderr: {self.stderr_lines}"
            )
        print(f"   server: {line.strip()}", flush=True)
        return int(match.group(2)), match.group(3)

    def stop(self) -> list[str]:
        """Close stdin, wait for the exit; return the problems found (none: clean stop)."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            code = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return [f"did not stop within {STOP_TIMEOUT} s of stdin closing"]
        self._stderr.join(10)
        problems = []
        if code != 0:
            problems.append(f"exit code {code}")
        stopped = [line for line in self.stderr_lines if "iocp_echo stopped:" in line]
        if not stopped:
            problems.append("no final 'stopped' line")
        else:
            print(f"   server: {stopped[-1]}", flush=True)
        for line in self.stderr_lines:
            # The port logs ops still in flight at drop, and the worker ops that
            # never completed after cancellation, at error level.
            if line.startswith("ERROR") or "leak" in line.lower():
                problems.append(f"reported: {line}")
        return problems


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT)
    sock.settimeout(SOCKET_TIMEOUT)
    return sock


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def recv_until_closed(sock: socket.socket) -> bytes | None:
    """What arrives until the peer closes (EOF or reset); None if it never does."""
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
    except (ConnectionResetError, ConnectionAbortedError):
        return data
    except socket.timeout:
        return None


def encode(framing: str, payload: bytes) -> bytes:
    """One frame in the server's framing (raw: the bytes as they are)."""
    if framing == "lines":
        return payload + b"\n"
    if framing == "length":
        return struct.pack(">I", len(payload)) + payload
    return payload


def hold_connections(port: int, framing: str, count: int) -> list[socket.socket]:
    """Open `count` connections, each proven live by one echo, and leave them open: at
    the stop the server has a recv in flight on each, which it must cancel and drain."""
    held = []
    for i in range(count):
        sock = connect(port)
        message = encode(framing, f"held {i}".encode())
        sock.sendall(message)
        if recv_exactly(sock, len(message)) != message:
            raise SystemExit(f"held connection {i}: no echo")
        held.append(sock)
    # One more that sends a large message and never reads: its replies back up, so the
    # server has sends in flight (or queued) at the stop too.
    writer = connect(port)
    writer.setblocking(False)
    try:
        writer.send(encode(framing, b"w" * (4 << 20)))
    except BlockingIOError:
        pass
    held.append(writer)
    return held


def closed_after_stop(held: list[socket.socket]) -> list[str]:
    """Every held connection must have been closed by the server's stop."""
    problems = []
    for i, sock in enumerate(held):
        sock.setblocking(True)
        sock.settimeout(SOCKET_TIMEOUT)
        if recv_until_closed(sock) is None:
            problems.append(f"held connection {i} still open after the stop")
        sock.close()
    return problems


def show_one_echo(port: int) -> None:
    """One echo between a Linux client and the Wine-hosted server, printed."""
    message = b"hello from Linux\n"
    with connect(port) as sock:
        sock.sendall(message)
        reply = recv_exactly(sock, len(message))
    print(f"   echo: sent {message!r} to 127.0.0.1:{port}, got back {reply!r}", flush=True)
    if reply != message:
        raise SystemExit("the echo differs")


def check_oversized_frame(wine: str, exe: str) -> list[str]:
    """With --max-frame 1024 (length framing): a frame over it closes only its connection."""
    server = WineServer(wine, exe, "--framing", "length", "--max-frame", "1024", "--workers", "2")
    problems = []
    try:
        with connect(server.port) as good, connect(server.port) as bad:
            good.sendall(encode("length", b"before"))
            if recv_exactly(good, 10) != encode("length", b"before"):
                problems.append("echo before the oversized frame failed")
            # A good frame, then one that claims 1025 bytes and never completes: the
            # server must close at once (replying "ok" first or not, as the tests allow).
            bad.sendall(encode("length", b"ok") + struct.pack(">I", 1025) + b"x" * 100)
            received = recv_until_closed(bad)
            if received is None:
                problems.append("the oversized frame did not close its connection")
            elif received not in (b"", encode("length", b"ok")):
                problems.append(f"unexpected reply before the close: {received!r}")
            good.sendall(encode("length", b"after"))
            if recv_exactly(good, 9) != encode("length", b"after"):
                problems.append("another connection was disturbed by the oversized frame")
    finally:
        problems += server.stop()
    print(f"   oversized frame: {'ok' if not problems else problems}", flush=True)
    return problems


def main() -> int:
    wine, exe, venv_python, repo = sys.argv[1:5]
    failures: list[str] = []
    for framing, workers in (("raw", "1"), ("lines", "2"), ("length", "4")):
        print(f"== conformance: framing {framing}, {workers} workers", flush=True)
        server = WineServer(wine, exe, "--framing", framing, "--workers", workers)
        held: list[socket.socket] = []
        if server.backend != "iocp":
            failures.append(f"{framing}: backend is {server.backend}, not iocp")
        try:
            if framing == "lines":
                show_one_echo(server.port)
            env = dict(os.environ)
            env["IOCP_ECHO_EXTERNAL"] = f"127.0.0.1:{server.port}"
            env["IOCP_ECHO_EXTERNAL_FRAMING"] = framing
            started = time.monotonic()
            tests = subprocess.run(
                [
                    venv_python,
                    "-m",
                    "pytest",
                    "-m",
                    "conformance",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    "tests",
                ],
                cwd=repo,
                env=env,
                timeout=PYTEST_TIMEOUT,
            )
            print(f"   pytest took {time.monotonic() - started:.0f} s", flush=True)
            if tests.returncode != 0:
                failures.append(f"{framing}: pytest exited {tests.returncode}")
            held = hold_connections(server.port, framing, 20)
        finally:
            problems = server.stop()
        problems += closed_after_stop(held)
        failures += [f"{framing}: {p}" for p in problems]
        print(
            f"   clean stop with {len(held)} connections open: "
            f"{'ok' if not problems else problems}",
            flush=True,
        )
    print("== oversized frame (--max-frame 1024)", flush=True)
    failures += check_oversized_frame(wine, exe)
    if failures:
        print("conformance under Wine FAILED:\n  " + "\n  ".join(failures), flush=True)
        return 1
    print("conformance under Wine: every framing passed, every stop clean", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
