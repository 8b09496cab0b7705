"""The servers under test: how each is started, watched through /proc, and stopped.

Every server listens on 127.0.0.1 only, with one worker, pinned to CPU 0; every child
process of the bench runs in its own process group and is killed by :class:`Children`.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "bench" / "peers"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
BINARY = ROOT / "target" / "release" / "iocp-echo"
HOST = "127.0.0.1"
SERVER_CPU = 0
CLIENT_CPU = 1
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BANNER = re.compile(rb"listening on ([0-9.]+):([0-9]+)")


@dataclass(frozen=True)
class ServerSpec:
    """One server of the comparison: a key, a label for tables, and its command."""

    key: str
    short: str
    """A column heading."""
    label: str
    argv: tuple[str, ...]
    iocp_echo: bool = False
    """One of iocp_echo's own servers (the Python package or the Rust binary)."""


def server_specs(epoll_binary: Path) -> list[ServerSpec]:
    """Every server, in the order they are interleaved.

    ``epoll_binary`` is the C epoll echo, compiled by the caller.
    """
    py = str(VENV_PYTHON)

    def peer(name: str, *args: str) -> tuple[str, ...]:
        return (py, str(PEERS / name), "--host", HOST, "--port", "0", *args)

    def iocp(handler: str, backend: str) -> tuple[str, ...]:
        return peer("iocp_echo_server.py", "--handler", handler, "--backend", backend)

    binary = (str(BINARY), "--host", HOST, "--port", "0", "--workers", "1")
    rust = (*binary, "--backend", "io_uring", "--max-connections", "100000")
    c_epoll = (str(epoll_binary), "--host", HOST, "--port", "0")
    return [
        ServerSpec("uvloop", "uvloop", "uvloop Protocol", peer("uvloop_protocol.py")),
        ServerSpec("asyncio", "asyncio", "asyncio Protocol", peer("asyncio_protocol.py")),
        ServerSpec("streams", "streams", "asyncio streams", peer("asyncio_streams.py")),
        ServerSpec("c_epoll", "C epoll", "C epoll (one thread)", c_epoll),
        ServerSpec("rust_bin", "Rust bin", "iocp-echo binary (Rust, io_uring)", rust, True),
        ServerSpec(
            "native_uring",
            "native uring",
            "iocp_echo native, io_uring",
            iocp("native", "io_uring"),
            True,
        ),
        ServerSpec(
            "native_uring_oneshot",
            "native uring 1-shot",
            "iocp_echo native, io_uring, one-shot recvs and accepts",
            ("env", "IOCP_ECHO_URING_MULTISHOT=0", *iocp("native", "io_uring")),
            True,
        ),
        ServerSpec(
            "python_uring",
            "py uring",
            "iocp_echo `lambda m: m`, io_uring",
            iocp("python", "io_uring"),
            True,
        ),
        ServerSpec(
            "async_uring",
            "async uring",
            "iocp_echo `async def` handler echo, io_uring",
            iocp("async", "io_uring"),
            True,
        ),
        ServerSpec(
            "protocol_uring",
            "proto uring",
            "iocp_echo protocol echo (`message_received` returns it), io_uring",
            iocp("protocol", "io_uring"),
            True,
        ),
        ServerSpec(
            "native_epoll", "native epoll", "iocp_echo native, epoll", iocp("native", "epoll"), True
        ),
        ServerSpec(
            "python_epoll",
            "py epoll",
            "iocp_echo `lambda m: m`, epoll",
            iocp("python", "epoll"),
            True,
        ),
    ]


def pinned(cpu: int, argv: tuple[str, ...] | list[str]) -> list[str]:
    """``argv`` run by ``taskset`` on ``cpu`` (unpinned on a one-core machine)."""
    if (os.cpu_count() or 1) < 2:
        return list(argv)
    return ["taskset", "-c", str(cpu), *argv]


class Children:
    """Every child process of the bench, each in its own process group, killed on exit."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Start ``argv`` in a new session (so its whole group can be killed)."""
        proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            argv, start_new_session=True, **kwargs
        )
        self._procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes], grace: float = 3.0) -> None:
        """SIGTERM the process group of ``proc``, SIGKILL it after ``grace`` seconds."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # Anything the leader left behind in its group goes too.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if proc in self._procs:
            self._procs.remove(proc)

    def kill_all(self) -> None:
        """Kill every child still registered (the ``finally`` of the bench)."""
        for proc in list(self._procs):
            self.kill(proc, grace=1.0)


@dataclass
class RunningServer:
    """A started server: its process, address and log."""

    spec: ServerSpec
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])


def start_server(
    spec: ServerSpec, children: Children, log_dir: Path, timeout: float = 30.0
) -> RunningServer:
    """Start ``spec`` pinned to the server CPU and wait for its ``listening on`` line."""
    log = log_dir / f"{spec.key}.{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        proc = children.spawn(
            pinned(SERVER_CPU, spec.argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = BANNER.search(log.read_bytes())
        if match:
            return RunningServer(spec, proc, int(match.group(2)), log)
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    children.kill(proc)
    tail = " ".join(log.read_text(errors="replace").split())[-600:]
    raise RuntimeError(f"{spec.label} did not start ({' '.join(spec.argv)}): {tail}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), in seconds.

    Fields 14 and 15 of /proc/<pid>/stat, counted after the ``(comm)`` field, which may
    itself contain spaces.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): field n is fields[n - 3].
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    """How many file descriptors ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def raise_nofile_limit() -> int:
    """Raise this process's open-file limit to its hard limit (children inherit it)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return int(hard)
