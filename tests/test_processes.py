"""``--processes N`` (Linux): a supervising parent and N children, each its own
SO_REUSEPORT listener on the port. Each child answers a line with its pid (a test
handler), so the tests see which process served a connection."""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="--processes is Linux only")

METRICS_URL = re.compile(r"http://[\d.]+:\d+/metrics")
BANNER = re.compile(
    r"iocp_echo listening on (?P<host>[\d.]+):(?P<port>\d+) "
    r"\((?P<n>\d+) processes: pids (?P<pids>[\d ]+);"
)
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0

PID_HANDLER = """
import os

def pid(message):
    return str(os.getpid()).encode()
"""

# A handler whose module imports in the parent but not in a child: every child
# dies at start.
CHILD_FAILS = """
import os

if "IOCP_ECHO_SUPERVISOR_FD" in os.environ:
    raise ImportError("this module refuses to load in a child")

def pid(message):
    return message
"""

# A handler whose module refuses to load in a child once a marker file exists: the
# children start, then every restart fails.
FAILS_AFTER_MARKER = """
import os
from pathlib import Path

if "IOCP_ECHO_SUPERVISOR_FD" in os.environ and (Path(__file__).parent / "marker").exists():
    raise ImportError("the marker is there")

def pid(message):
    return str(os.getpid()).encode()
"""


class Supervised:
    """A running ``--processes`` parent; its stdout and stderr read by threads."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.out: list[str] = []
        self.err: list[str] = []
        assert proc.stdout is not None and proc.stderr is not None
        for stream, lines in ((proc.stdout, self.out), (proc.stderr, self.err)):
            threading.Thread(target=_collect, args=(stream, lines), daemon=True).start()
        self.port = 0
        self.pids: set[int] = set()

    def wait_banner(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for line in self.out:
                match = BANNER.search(line)
                if match:
                    self.port = int(match["port"])
                    self.pids = {int(p) for p in match["pids"].split()}
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail(f"no listening line; stdout {self.out}, stderr {self.err}")

    def count_err(self, text: str) -> int:
        return len(self.err_with(text))

    def err_with(self, text: str) -> list[str]:
        return [line for line in list(self.err) if text in line]

    def wait_until(self, condition: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                pytest.fail(f"timed out; stderr {self.err}")
            time.sleep(0.05)

    def wait_err(self, text: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.err):
                return
            time.sleep(0.05)
        pytest.fail(f"no {text!r} on stderr: {self.err}")


def _collect(stream: object, lines: list[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        lines.append(line)


# Run a command in a new network namespace whose loopback is up and whose kernel
# migrates the connections waiting in a closing SO_REUSEPORT listener's queue to
# another listener of the group (net.ipv4.tcp_migrate_req, Linux 5.14+).
MIGRATING_NETNS = [
    "unshare",
    "--net",
    "sh",
    "-c",
    'ip link set lo up && echo 1 > /proc/sys/net/ipv4/tcp_migrate_req && exec "$@"',
    "sh",
]


def migrating_netns_refused() -> str | None:
    """Why a namespace with tcp_migrate_req cannot be made here (None: it can)."""
    if not Path("/proc/sys/net/ipv4/tcp_migrate_req").exists():
        return "this kernel has no net.ipv4.tcp_migrate_req (Linux 5.14+)"
    try:
        done = subprocess.run([*MIGRATING_NETNS, "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"no network namespace: {e}"
    if done.returncode != 0:
        return f"no network namespace: {done.stderr.decode().strip()}"
    return None


def in_netns_of(pid: int, work: Callable[[], None]) -> None:
    """Run `work` on a thread that has entered the network namespace of `pid` (setns
    moves only the calling thread); re-raise what it raised."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(f"/proc/{pid}/ns/net") as ns:
                if libc.setns(ns.fileno(), 0x40000000) != 0:  # CLONE_NEWNET
                    raise OSError(ctypes.get_errno(), "setns")
            work()
        except BaseException as e:  # handed to the caller
            failure.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


@contextmanager
def supervised(
    tmp_path: Path, *args: str, module: str = PID_HANDLER, netns: bool = False
) -> Iterator[Supervised]:
    (tmp_path / "pid_handler.py").write_text(module)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    cmd = [sys.executable, "-m", "iocp_echo", "--port", "0", "--workers", "1"]
    cmd += ["--framing", "lines", "--handler", "pid_handler:pid", "--drain-timeout", "1", *args]
    if netns:
        cmd = [*MIGRATING_NETNS, *cmd]
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:
        parent = Supervised(proc)
        try:
            yield parent
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


class Cut(Exception):
    """A connection accepted, then closed (or reset) before its reply came."""


def ask_pid(port: int) -> int:
    """One connection: a line out, the serving child's pid back. An error connecting
    (refused) propagates as it is; one after: :class:`Cut`."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(b"pid?\n")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = sock.recv(64)
                if not chunk:
                    raise Cut("closed before the reply")
                reply += chunk
        except OSError as e:
            raise Cut(repr(e)) from e
    return int(reply)


def pids_seen(port: int, wanted: set[int], tries: int = 500) -> set[int]:
    """Connect until every pid in `wanted` has answered (or `tries` run out)."""
    seen: set[int] = set()
    for _ in range(tries):
        seen.add(ask_pid(port))
        if wanted <= seen:
            break
    return seen


def reloaded(parent: Supervised, times: int) -> bool:
    return parent.count_err("reloaded: processes") == times


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and " Z " not in Path(f"/proc/{pid}/stat").read_text()


@linux_only
def test_two_processes_both_serve_and_a_killed_one_is_replaced(tmp_path: Path) -> None:
    with supervised(tmp_path, "--processes", "2") as parent:
        parent.wait_banner()
        assert len(parent.pids) == 2
        assert pids_seen(parent.port, parent.pids) == parent.pids
        victim = min(parent.pids)
        os.kill(victim, signal.SIGKILL)
        parent.wait_err("started in place of the one that died")
        # Service continues on both processes: the survivor and the new one.
        tried = failed = 0
        seen: set[int] = set()
        for _ in range(500):
            tried += 1
            try:
                seen.add(ask_pid(parent.port))
            except (OSError, Cut):
                failed += 1
            if len(seen) == 2:
                break
        print(f"after the kill: {tried} connections tried, {failed} failed, pids {sorted(seen)}")
        assert failed == 0
        assert victim not in seen and len(seen) == 2


@linux_only
def test_sigusr1_prints_the_children_stats_summed(tmp_path: Path) -> None:
    with supervised(tmp_path, "--processes", "2") as parent:
        parent.wait_banner()
        assert pids_seen(parent.port, parent.pids) == parent.pids
        for _ in range(10):
            ask_pid(parent.port)
        parent.proc.send_signal(signal.SIGUSR1)
        parent.wait_until(lambda: any("iocp_echo stats:" in line for line in parent.out))
        line = next(line for line in parent.out if "iocp_echo stats:" in line)
        stats = json.loads(line.split(":", 1)[1])
        assert stats["processes"] == 2
        assert stats["workers"] == 2  # one each
        assert stats["connections_accepted"] >= 12
        assert stats["frames_received"] == stats["frames_sent"] >= 12


@linux_only
def test_sigterm_stops_every_process_and_frees_the_port(tmp_path: Path) -> None:
    with supervised(tmp_path, "--processes", "2") as parent:
        parent.wait_banner()
        ask_pid(parent.port)
        parent.proc.send_signal(signal.SIGTERM)
        assert parent.proc.wait(STOP_TIMEOUT) == 0
        for pid in parent.pids:
            assert not alive(pid)
        with socket.socket() as sock:  # no SO_REUSEPORT: only a free port binds
            sock.bind(("127.0.0.1", parent.port))
            sock.listen()


@linux_only
@pytest.mark.parametrize("reloads", [1, 3])
def test_sighup_replaces_every_process_and_refuses_nothing(tmp_path: Path, reloads: int) -> None:
    """A client connects in a loop (a line out, a pid back, close) while the parent
    reloads: no connect is refused (the port always has a listener), none is reset and
    none cut (closed before its reply). In the host's namespace with tcp_migrate_req at
    0 the kernel resets what waits in a replaced listener's queue, so the test runs in
    a namespace of its own with it on (see README "Several processes"). A connection
    the old process accepted just before its drain began is served until its client is
    quiet, then closed (`Connection::close_for_drain`); what its port had accepted is collected, not
    dropped (`Acceptor::stop`)."""
    refused = migrating_netns_refused()
    if refused:
        pytest.skip(refused)
    with supervised(tmp_path, "--processes", "2", netns=True) as parent:
        parent.wait_banner()
        counts = {"tried": 0, "refused": 0, "reset": 0, "cut": 0}
        errors: list[str] = []
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                counts["tried"] += 1
                try:
                    ask_pid(parent.port)
                except Cut:
                    counts["cut"] += 1
                except ConnectionResetError:
                    counts["reset"] += 1
                except OSError as e:
                    counts["refused"] += 1
                    errors.append(repr(e))

        thread = threading.Thread(target=in_netns_of, args=(parent.proc.pid, client))
        thread.start()
        try:
            time.sleep(0.3)
            for done in range(1, reloads + 1):
                parent.proc.send_signal(signal.SIGHUP)
                parent.wait_until(partial(reloaded, parent, done))
            time.sleep(0.3)
        finally:
            stop.set()
            thread.join()
        new_pids = {int(p) for p in parent.err_with("reloaded: processes")[-1].split()[-2:]}
        print(
            f"{reloads} reload(s): {counts['tried']} connections tried, "
            f"{counts['refused']} refused, {counts['reset']} reset after the handshake, "
            f"{counts['cut']} cut by a drain; "
            f"pids {sorted(parent.pids)} -> {sorted(new_pids)}"
        )
        assert counts["refused"] == 0, errors[:5]
        assert counts["reset"] == 0
        assert counts["cut"] == 0
        assert not new_pids & parent.pids
        served_by: list[set[int]] = []
        in_netns_of(parent.proc.pid, lambda: served_by.append(pids_seen(parent.port, new_pids)))
        assert served_by == [new_pids]
        for pid in parent.pids:
            assert not alive(pid)


@linux_only
def test_a_taken_port_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with supervised(tmp_path, "--processes", "2", "--port", str(port)) as parent:
            assert parent.proc.wait(STOP_TIMEOUT) == 2
            time.sleep(0.1)
            assert parent.out == []
            text = "".join(parent.err)
            assert f"cannot listen on 127.0.0.1:{port}" in text
            assert "Address already in use" in text


@linux_only
def test_children_that_die_at_start_end_the_parent(tmp_path: Path) -> None:
    with supervised(tmp_path, "--processes", "2", module=CHILD_FAILS) as parent:
        assert parent.proc.wait(START_TIMEOUT) == 1
        time.sleep(0.1)
        assert parent.out == []
        text = "".join(parent.err)
        assert "refuses to load in a child" in text
        assert "at start; stopping" in text
        assert "restarting" not in text


@linux_only
def test_restarts_that_keep_failing_end_the_parent(tmp_path: Path) -> None:
    with supervised(tmp_path, "--processes", "2", module=FAILS_AFTER_MARKER) as parent:
        parent.wait_banner()
        (tmp_path / "marker").write_text("")
        os.kill(min(parent.pids), signal.SIGKILL)
        assert parent.proc.wait(START_TIMEOUT) == 1
        time.sleep(0.1)
        text = "".join(parent.err)
        assert text.count("failed to start (exited") == 3, text
        assert "3 processes in a row failed to start; giving up" in text
        for pid in parent.pids:
            assert not alive(pid)


@linux_only
def test_two_servers_with_reuse_port_share_a_port() -> None:
    from iocp_echo import Server

    with Server(None, port=0, reuse_port=True, workers=1) as first:
        port = first.address[1]
        with Server(None, port=port, reuse_port=True, workers=1) as second:
            assert second.address[1] == port
            with pytest.raises(OSError):
                Server(None, port=port, workers=1).start()


def test_processes_are_refused_off_linux(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from iocp_echo.__main__ import main

    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(SystemExit) as exit_info:
        main(["--processes", "2", "--port", "0"])
    assert exit_info.value.code == 2
    assert "--processes 2 is supported on Linux only" in capsys.readouterr().err


def test_processes_below_one_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    from iocp_echo.__main__ import main

    with pytest.raises(SystemExit):
        main(["--processes", "0", "--port", "0"])
    assert "--processes must be at least 1, got 0" in capsys.readouterr().err


def test_serve_with_processes_wants_import_strings() -> None:
    from iocp_echo import serve

    with pytest.raises(TypeError, match="import string"):
        serve(lambda m: m, processes=2, port=0)


@linux_only
def test_serve_with_processes_runs_the_supervisor(tmp_path: Path) -> None:
    (tmp_path / "pid_handler.py").write_text(PID_HANDLER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    code = (
        "import iocp_echo; iocp_echo.serve('pid_handler:pid', processes=2, port=0, "
        "framing='lines', workers=1, drain_timeout=1, metrics=('127.0.0.1', 0))"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        parent = Supervised(proc)
        try:
            parent.wait_banner()
            assert pids_seen(parent.port, parent.pids) == parent.pids
            # metrics= reaches the parent, which serves both children's stats summed.
            (url,) = [m[0] for line in parent.out for m in [METRICS_URL.search(line)] if m]
            with urllib.request.urlopen(url, timeout=10) as response:
                text = response.read().decode()
            assert re.search(r"^iocp_echo_workers 2\.0$", text, re.M), text
            proc.send_signal(signal.SIGINT)
            assert proc.wait(STOP_TIMEOUT) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
