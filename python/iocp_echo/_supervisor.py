"""The supervising parent of ``--processes N`` (Linux), and a child's side of it.

The parent serves nothing itself. It reserves the port (a ``SO_REUSEPORT`` socket
bound but not listening, so port 0 becomes one real port all children share and
the port stays held while children come and go), then starts N children, each a
fresh interpreter running ``python -m iocp_echo`` with the same options plus
``--port P --reuse-port 1 --processes 1``: each child binds its own listener in the
port's ``SO_REUSEPORT`` group, with its own workers and its own GIL, and the kernel
spreads new connections over the listeners.

Each child gets one end of a socket pair (its descriptor number in
``IOCP_ECHO_SUPERVISOR_FD``). Over it the child says ``ready BACKEND WORKERS``
once its listener is listening; the parent holds the other end for the child's
life, so a child whose parent died (even by SIGKILL) reads EOF and stops itself.

Rules:
* One startup line, from the parent, once every child is ready.
* A child that dies is restarted after a back-off (0.1 s doubling to 10 s while
  children die young). A child that dies before it is ready is a start failure:
  at startup any one ends the parent (exit 1) after stopping the others; later,
  three in a row end it the same way, so a taken port never loops.
* SIGINT and SIGTERM: SIGTERM to every child, wait for their drain
  (``drain_timeout`` plus a margin, then SIGKILL), exit 0.
* SIGUSR1: one line on stdout, ``iocp_echo stats: {...}``, the children's stats
  summed (``workers`` is then the total over the processes).
* ``--metrics-port``: the parent serves ``/metrics``, the children's stats summed at
  each scrape (asked over the links, one asker at a time); the children serve none.
* SIGHUP: the children are replaced one at a time; each new child is ready
  (listening) before the old one it replaces is sent SIGTERM and drains, so the
  port always has a listener. A new child that fails to start ends the reload and
  keeps the old ones.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from ._metrics import MetricsBindError, MetricsPlan, url

READY_FD_ENV = "IOCP_ECHO_SUPERVISOR_FD"
"""The environment variable naming a child's end of its link to the parent."""

START_TIMEOUT = 60.0
"""Seconds a child may take from its start to its listener listening."""

STOP_MARGIN = 5.0
"""Seconds past ``drain_timeout`` a stopping child gets before SIGKILL."""

YOUNG = 10.0
"""A child that dies within this many seconds of being ready died young."""

START_FAILURES = 3
"""Start failures in a row after which the parent gives up."""

PROG = "iocp-echo"


def say(message: str) -> None:
    """One line from the supervisor on stderr."""
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


# --- the child's side ---------------------------------------------------------------


def child_link() -> socket.socket | None:
    """The link to the supervising parent, if this process is a supervised child."""
    text = os.environ.pop(READY_FD_ENV, None)
    if text is None:
        return None
    return socket.socket(fileno=int(text))


def report_ready(
    link: socket.socket, backend: str, workers: int, stats: Callable[[], dict[str, Any]]
) -> None:
    """Tell the parent the listener is listening; then answer each ``stats`` line
    with the server's stats as one JSON line, and stop this process (SIGTERM to
    itself) when the parent goes away."""
    link.sendall(f"ready {backend} {workers}\n".encode())

    def watch() -> None:
        try:
            with link.makefile("rb") as lines:
                for line in lines:
                    if line.strip() == b"stats":
                        link.sendall(json.dumps(_stats_or_none(stats)).encode() + b"\n")
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="iocp_echo-parent-watch", daemon=True).start()


def _stats_or_none(stats: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return stats()
    except RuntimeError:  # the server is closing
        return {}


# --- the parent ---------------------------------------------------------------------


@dataclass
class Child:
    """One child process and the parent's end of its link."""

    process: subprocess.Popen[bytes]
    link: socket.socket
    started: float = field(default_factory=time.monotonic)
    ready_at: float | None = None
    words: str = ""

    @property
    def pid(self) -> int:
        return self.process.pid


class Supervisor:
    """The parent of ``--processes N``: see the module doc."""

    def __init__(self, argv: list[str], processes: int, drain_timeout: float) -> None:
        self.argv = argv
        self.processes = processes
        self.drain_timeout = drain_timeout
        self.children: list[Child] = []
        self.signals: list[int] = []
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.young_deaths = 0
        self.start_failures = 0
        self.stats_lock = threading.Lock()

    # signals

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)

    def _install_signals(self) -> None:
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        for signum in (
            signal.SIGINT,
            signal.SIGTERM,
            signal.SIGHUP,
            signal.SIGCHLD,
            signal.SIGUSR1,
        ):
            signal.signal(signum, self._on_signal)

    def _wait(self, timeout: float, link: socket.socket | None = None) -> bool:
        """Sleep until a signal, `link` readable, or `timeout`; True if `link` is readable."""
        watched: list[int | socket.socket] = [self.wake_r]
        if link is not None:
            watched.append(link)
        readable, _, _ = select.select(watched, [], [], max(timeout, 0.0))
        if self.wake_r in readable:
            try:
                while os.read(self.wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        return link is not None and link in readable

    def _stop_asked(self) -> bool:
        return any(s in (signal.SIGINT, signal.SIGTERM) for s in self.signals)

    # children

    def _spawn(self) -> Child:
        parent_end, child_end = socket.socketpair()
        env = dict(os.environ, **{READY_FD_ENV: str(child_end.fileno())})
        process = subprocess.Popen(
            [sys.executable, "-m", "iocp_echo", *self.argv],
            env=env,
            pass_fds=[child_end.fileno()],
            stdin=subprocess.DEVNULL,
            # Its own session: a terminal's Ctrl-C reaches the parent alone, which
            # forwards it once.
            start_new_session=True,
        )
        child_end.close()
        return Child(process, parent_end)

    def _until_ready(self, child: Child) -> bool:
        """Wait for `child` to say it is ready; False if it exits, falls silent past
        START_TIMEOUT, or a stop is asked meanwhile."""
        deadline = child.started + START_TIMEOUT
        buffer = b""
        while not self._stop_asked():
            now = time.monotonic()
            if now >= deadline:
                say(f"process {child.pid} did not start listening in {START_TIMEOUT:g} s")
                return False
            if self._wait(min(deadline - now, 0.5), child.link):
                chunk = child.link.recv(256)
                if not chunk:
                    return False
                buffer += chunk
                if b"\n" in buffer:
                    line = buffer.split(b"\n", 1)[0].decode()
                    child.words = line.partition(" ")[2]
                    child.ready_at = time.monotonic()
                    return True
            elif child.process.poll() is not None:
                return False
        return False

    def _start_one(self) -> Child | None:
        """A new child, ready; None (the child reaped) if it failed to start."""
        child = self._spawn()
        if self._until_ready(child):
            self.start_failures = 0
            return child
        self._stop([child], quietly=True)
        if not self._stop_asked():
            self.start_failures += 1
            say(f"process {child.pid} failed to start ({_exit_words(child.process.returncode)})")
        return None

    def _stop(self, children: list[Child], quietly: bool = False) -> None:
        """SIGTERM to each, wait for their drain, SIGKILL what outlives it."""
        for child in children:
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.drain_timeout + STOP_MARGIN
        for child in children:
            try:
                child.process.wait(max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                if not quietly:
                    say(f"process {child.pid} did not stop in time; killed")
                child.process.kill()
                child.process.wait()
            child.link.close()

    # the phases

    def start(self) -> bool:
        """Every child started and ready; False (all stopped) if one failed."""
        self._install_signals()
        for _ in range(self.processes):
            self.children.append(self._spawn())
        for child in self.children:
            if not self._until_ready(child):
                if not self._stop_asked():
                    code = child.process.poll()
                    why = "exited" if code is not None else "did not become ready"
                    say(f"error: process {child.pid} {why} at start; stopping")
                self._stop(self.children, quietly=True)
                return False
        return True

    def run(self) -> int:
        """Supervise until SIGINT/SIGTERM (0) or children keep failing to start (1)."""
        due: dict[int, float] = {}  # slot -> when its restart is due
        while True:
            pending, self.signals = self.signals, []
            if any(s in (signal.SIGINT, signal.SIGTERM) for s in pending):
                self._stop([c for c in self.children if c.process.poll() is None])
                return 0
            if signal.SIGHUP in pending:
                self._reload()
            if signal.SIGUSR1 in pending:
                self._print_stats()
            for slot, child in enumerate(self.children):
                if slot in due or child.process.poll() is None:
                    continue
                child.link.close()
                lived = time.monotonic() - (child.ready_at or child.started)
                self.young_deaths = self.young_deaths + 1 if lived < YOUNG else 0
                delay = min(0.1 * 2 ** max(self.young_deaths - 1, 0), 10.0)
                say(
                    f"process {child.pid} {_exit_words(child.process.returncode)}; "
                    f"restarting in {delay:g} s"
                )
                due[slot] = time.monotonic() + delay
            for slot, when in sorted(due.items()):
                if time.monotonic() < when or self.signals:
                    continue
                fresh = self._start_one()
                if fresh is not None:
                    self.children[slot] = fresh
                    del due[slot]
                    say(f"process {fresh.pid} started in place of the one that died")
                elif self.start_failures >= START_FAILURES:
                    say(
                        f"error: {self.start_failures} processes in a row failed to start; "
                        "giving up"
                    )
                    self._stop([c for c in self.children if c.process.poll() is None])
                    return 1
                else:
                    due[slot] = time.monotonic() + min(0.1 * 2**self.start_failures, 10.0)
            soonest = min(due.values(), default=time.monotonic() + 1.0)
            self._wait(min(max(soonest - time.monotonic(), 0.0), 1.0))

    def _print_stats(self) -> None:
        """One line on stdout: the children's stats summed (``per_worker`` left out)."""
        print(f"iocp_echo stats: {json.dumps(self.summed_stats())}", flush=True)

    def summed_stats(self) -> dict[str, Any]:
        """The stats of every ready child summed (``per_worker`` left out), with
        ``processes``: how many answered. From any thread (the metrics thread too):
        one asker at a time per link."""
        total: dict[str, Any] = {}
        answered = 0
        with self.stats_lock:
            for child in list(self.children):
                if child.ready_at is None or child.process.poll() is not None:
                    continue
                stats = _ask_stats(child.link)
                if stats:
                    answered += 1
                    add_stats(total, stats)
        total["processes"] = answered
        return total

    def summed_stats_or_none(self) -> dict[str, Any] | None:
        """:meth:`summed_stats`, or None while no child answers (for the metrics)."""
        total = self.summed_stats()
        return total if total["processes"] else None

    def _reload(self) -> bool:
        """Replace each child in turn, the new one ready before the old one drains."""
        say(f"reloading {len(self.children)} processes, one at a time")
        if _migrate_req() == "0":
            say(
                "note: net.ipv4.tcp_migrate_req is 0, so connections still waiting in a "
                "replaced process's accept queue may be reset; set it to 1 to have the "
                "kernel move them to another process"
            )
        for slot, old in enumerate(self.children):
            if old.process.poll() is not None:
                continue  # died meanwhile: the run loop restarts it
            new = self._start_one()
            if new is None:
                say("reload stopped: the new process failed to start; the old ones serve on")
                return False
            self.children[slot] = new
            self._stop([old])
        say("reloaded: processes " + " ".join(str(c.pid) for c in self.children))
        return True


def _ask_stats(link: socket.socket) -> dict[str, Any]:
    """A child's stats over its link; empty if it does not answer within 2 s."""
    try:
        link.settimeout(2.0)
        link.sendall(b"stats\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = link.recv(65536)
            if not chunk:
                break
            reply += chunk
        stats: dict[str, Any] = json.loads(reply) if reply.endswith(b"\n") else {}
        return stats
    except (OSError, ValueError):
        return {}
    finally:
        try:
            link.settimeout(None)
        except OSError:
            pass


def add_stats(total: dict[str, Any], stats: dict[str, Any]) -> None:
    """Add one process's stats into ``total``: numbers summed, the handler-time
    histogram's buckets summed bound by bound, ``backend`` kept."""
    for key, value in stats.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            total[key] = total.get(key, 0) + value
        elif key == "handler_seconds_buckets":
            before = total.get(key) or [(bound, 0) for bound, _ in value]
            total[key] = [(bound, n + old) for (bound, n), (_, old) in zip(value, before)]
        elif key == "backend":
            total.setdefault(key, value)


def _migrate_req() -> str | None:
    """The kernel's net.ipv4.tcp_migrate_req (Linux 5.14+), None where absent."""
    try:
        with open("/proc/sys/net/ipv4/tcp_migrate_req") as f:
            return f.read().strip()
    except OSError:
        return None


def _exit_words(code: int | None) -> str:
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) with SO_REUSEPORT, not listening: port 0 becomes
    the one port every child binds, and the port stays held between children.
    ``OSError`` if the port is taken by a listener that is not in a SO_REUSEPORT group."""
    family, _, _, _, address = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
    reserve = socket.socket(family, socket.SOCK_STREAM)
    try:
        reserve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reserve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reserve.bind(address)
    except OSError:
        reserve.close()
        raise
    return reserve


def supervise(
    argv: list[str],
    processes: int,
    host: str,
    port: int,
    drain_timeout: float,
    framing: str,
    metrics: MetricsPlan | None = None,
) -> int:
    """Run ``--processes N``: `argv` are the children's options (without the port);
    returns the exit code. ``OSError`` if the port cannot be reserved. With
    ``metrics``, this parent serves ``/metrics`` (the children serve none): the
    children's stats summed at each scrape, so a restarted child's counters start
    again from zero there (Prometheus' ``rate()`` reads a drop as a counter reset)."""
    reserve = reserve_port(host, port)
    host, port = reserve.getsockname()[:2]
    child_argv = [*argv, "--port", str(port), "--reuse-port", "1", "--processes", "1"]
    supervisor = Supervisor(child_argv, processes, drain_timeout)
    endpoint = None
    try:
        metrics_words = ""
        if metrics is not None:
            try:
                endpoint = metrics.start(supervisor.summed_stats_or_none)
            except MetricsBindError as e:
                say(f"error: {e.strerror}")
                return 2
            metrics_words = f", metrics on {url(endpoint.address)}"
        if not supervisor.start():
            return 1
        backend, _, workers = supervisor.children[0].words.partition(" ")
        pids = " ".join(str(c.pid) for c in supervisor.children)
        print(
            f"iocp_echo listening on {host}:{port} ({processes} processes: pids {pids}; "
            f"backend {backend}, {workers} workers each, framing {framing}){metrics_words}",
            flush=True,
        )
        return supervisor.run()
    finally:
        if endpoint is not None:
            endpoint.close()
        reserve.close()
