"""A server run as a separate process (`python -m iocp_echo ...`), and probes of a process.

Tests that measure a server's memory, descriptors or threads run it in its own process,
so the client's own usage does not blur the figures.
"""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from helpers import Address

BANNER = re.compile(
    r"iocp_echo listening on (?P<host>[\d.]+):(?P<port>\d+) "
    r"\(backend (?P<backend>\w+), (?P<workers>\d+) workers"
)
FORCED = os.environ.get("IOCP_ECHO_BACKEND") or None
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The next line of the process's stdout; fails if none comes within ``timeout``."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            pytest.fail(f"no line from the server within {timeout} s")
    return proc.stdout.readline()


@contextmanager
def running(args: list[str], env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    """Start a server process; wait for its listening line; kill it if still running after."""
    with subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:
        try:
            line = read_line(proc, START_TIMEOUT)
            if not line:
                assert proc.stderr is not None
                pytest.fail(f"the server exited ({proc.wait()}): {proc.stderr.read()}")
            yield ServerProcess(proc, line)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


class ServerProcess:
    """A running server process and what its listening line says."""

    def __init__(self, proc: subprocess.Popen[str], banner: str) -> None:
        match = BANNER.search(banner)
        assert match, f"unexpected listening line: {banner!r}"
        self.proc = proc
        self.banner = banner
        self.address: Address = (match["host"], int(match["port"]))
        self.backend = match["backend"]
        self.workers = int(match["workers"])
        self.stdout = ""

    def stop(self, signum: int) -> tuple[int, str]:
        """Send ``signum``; the exit code and standard error once it exits."""
        self.proc.send_signal(signum)
        try:
            self.stdout, stderr = self.proc.communicate(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the server did not exit within {STOP_TIMEOUT} s of signal {signum}")
        return self.proc.returncode, stderr


def cli(*options: str) -> list[str]:
    """The command line of `python -m iocp_echo` on an ephemeral port, plus ``options``."""
    return [sys.executable, "-m", "iocp_echo", "--port", "0", *options]


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(f"{field} not in /proc/{pid}/status")


def rss_bytes(pid: int) -> int:
    """The resident set size of process ``pid`` now, in bytes."""
    return _status_kib(pid, "VmRSS") * 1024


def peak_rss_bytes(pid: int) -> int:
    """The largest resident set size process ``pid`` has had, in bytes (VmHWM)."""
    return _status_kib(pid, "VmHWM") * 1024


def fd_count(pid: int) -> int:
    """How many file descriptors process ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_count(pid: int) -> int:
    """How many threads process ``pid`` has."""
    return len(os.listdir(f"/proc/{pid}/task"))
