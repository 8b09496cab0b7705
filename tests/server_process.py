"""A server run as a separate process (`python -m iocp_echo ...`), and probes of a process.

Tests that measure a server's memory, descriptors or threads run it in its own process,
so the client's own usage does not blur the figures.
"""

from __future__ import annotations

import json
import os
import random
import re
import selectors
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from client import random_payload
from helpers import Address, echo_of, framed, framing_of, wait_for
from iocp_echo import Framing

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


def listening_line(proc: subprocess.Popen[str]) -> str:
    """The server's first line of output; fails with its stderr if it exited instead."""
    line = read_line(proc, START_TIMEOUT)
    if not line:
        assert proc.stderr is not None
        pytest.fail(f"the server exited ({proc.wait()}): {proc.stderr.read()}")
    return line


@contextmanager
def running(args: list[str], env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    """Start a server process; wait for its listening line; kill it if still running after.

    The process runs with Python's fault handler on, so a stop that hangs can show where
    (see :meth:`ServerProcess.stop`)."""
    env = {**(os.environ if env is None else env), "PYTHONFAULTHANDLER": "1"}
    with subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:
        try:
            yield ServerProcess(proc, listening_line(proc))
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
            pytest.fail(
                f"the server did not exit within {STOP_TIMEOUT} s of signal {signum}; "
                f"where its threads were:\n{self.dump_threads()}"
            )
        return self.proc.returncode, stderr

    def dump_threads(self) -> str:
        """Abort the hung process: its fault handler prints every thread's Python stack
        to its stderr, returned here (the tail)."""
        self.proc.send_signal(signal.SIGABRT)
        try:
            _, stderr = self.proc.communicate(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, stderr = self.proc.communicate()
        return stderr[-6000:]


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


# A server with any `Server` options in its own process, answering "stats" on stdin with
# one JSON line of its counters; closed when its stdin ends.
_CONTROLLED_SERVER = """
import json, resource, sys
from iocp_echo import Framing, Server
options = json.loads(sys.argv[1])
nofile = options.pop("nofile", None)
if nofile is not None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
framing = options.pop("framing")
codec = framing
if framing.startswith("length"):  # length, length1, length2, length4, length8: big endian
    codec = Framing.length_prefixed(int(framing[6:] or 4))
srv = Server(None, host="127.0.0.1", port=0, framing=codec, **options)
srv.start()
host, port = srv.address
print(f"iocp_echo listening on {host}:{port} "
      f"(backend {srv.backend}, {srv.workers} workers, framing {framing})", flush=True)
for line in sys.stdin:
    if line.strip() == "stats":
        stats = srv.stats()
        del stats["per_worker"]
        print(json.dumps(stats), flush=True)
srv.close()
print("closed", flush=True)
"""


class ControlledServer(ServerProcess):
    """A native echo server process started by `controlled`, with its counters on demand."""

    def stats(self) -> dict[str, Any]:
        """The server's `Server.stats()` now (without ``per_worker``)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        line = read_line(self.proc, START_TIMEOUT)
        assert line, f"the server exited ({self.proc.poll()})"
        stats: dict[str, Any] = json.loads(line)
        return stats

    def wait_stats(self, what: str, condition: Callable[[dict[str, Any]], bool]) -> None:
        """Wait until ``condition(self.stats())`` holds (fails naming ``what``)."""
        wait_for(lambda: condition(self.stats()), what)

    def close(self) -> None:
        """End its stdin: the server closes cleanly and the process exits 0."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"the server did not exit within {STOP_TIMEOUT} s of its stdin ending; "
                f"where its threads were:\n{self.dump_threads()}"
            )
        assert self.proc.returncode == 0, f"the server exited with {self.proc.returncode}"


@contextmanager
def controlled(
    framing: str = "raw", nofile: int | None = None, **options: Any
) -> Iterator[ControlledServer]:
    """A native echo `Server(framing=framing, **options)` in its own process (the backend
    from ``IOCP_ECHO_BACKEND``), its descriptor limit lowered to ``nofile`` if given;
    killed after if still running. ``framing``: raw, lines, or length with an optional
    prefix width (``length8``: 8-byte big-endian prefixes)."""
    spec = dict(options, framing=framing)
    if nofile is not None:
        spec["nofile"] = nofile
    args = [sys.executable, "-c", _CONTROLLED_SERVER, json.dumps(spec)]
    with subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            server = ControlledServer(proc, listening_line(proc))
            yield server
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time process ``pid`` has used so far, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name (field 2) may hold spaces: count fields after its ")".
        fields = f.read().rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


class Bystander:
    """A well-behaved client in a thread: one connection, one message at a time, each
    echo checked byte for byte, until `stop`. It shows whether other clients' misdeeds
    reach it: `exchanges` counts its good round trips, `failure` holds what went wrong.
    """

    def __init__(
        self, address: Address, framing: str | Framing, seed: int, max_size: int = 4096
    ) -> None:
        self.framing = framing_of(framing)
        self.client = framed(address, self.framing)
        self.rng = random.Random(seed)
        self.max_size = max_size
        self.exchanges = 0
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                message = random_payload(self.rng, self.rng.randint(1, self.max_size), self.framing)
                if echo_of(self.client, message) != message:
                    raise AssertionError(f"echo {self.exchanges} differs from what was sent")
                self.exchanges += 1
        except BaseException as e:  # reported by check and stop
            self.failure = e

    def check(self) -> int:
        """Fail if anything went wrong so far; the good round trips so far."""
        if self.failure is not None:
            raise AssertionError(f"a well-behaved client failed: {self.failure!r}")
        return self.exchanges

    def wait_progress(self, what: str, more: int = 3) -> None:
        """Wait until ``more`` further round trips are done (fails if it failed)."""
        target = self.exchanges + more
        wait_for(lambda: self.check() >= target, f"{what}: {more} more echoes")

    def stop(self) -> int:
        """Stop, close the connection, fail if anything went wrong; the round trips done."""
        self._stop.set()
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "a well-behaved client hung"
        self.client.close()
        return self.check()


def counters_are(**expected: int) -> Callable[[dict[str, Any]], bool]:
    """A condition on stats: each named counter has exactly the given value."""
    return lambda stats: all(stats[name] == value for name, value in expected.items())
