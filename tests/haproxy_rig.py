"""A test rig for ``test_haproxy.py``: a network namespace with a veth pair (or, where
namespaces are refused, loopback addresses), iocp_echo instances inside it, and HAProxy
on the host in front of them with ``send-proxy-v2`` and health checks.

Every wait is bounded; every process and the namespace are removed on exit, also when
the test fails. A namespace left by a run that was killed outright (its name carries the
pid of the run) is removed by the next run. ``IOCP_ECHO_HAPROXY_LOOPBACK=1`` takes the
loopback fallback even where namespaces work (to test that path).
"""

from __future__ import annotations

import csv
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

TESTS = Path(__file__).resolve().parent
NS_PREFIX = "iocpecho-"
INSTANCE_PORT = 7000
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
MIGRATE_REQ = "/proc/sys/net/ipv4/tcp_migrate_req"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run a short command (``ip ...``); its result, never raising on failure."""
    return subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)


def must(*args: str) -> None:
    """Run a short command that must succeed."""
    done = run(*args)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")


def free_port(host: str) -> int:
    """A port free on ``host`` now (the kernel's pick; a small race, as usual)."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Network:
    """Where the instances listen and where HAProxy's connections come from."""

    addresses: list[str]
    """One address per instance."""
    trusted: str
    """``--trusted-proxies`` for the instances: HAProxy's source address."""
    prefix: list[str]
    """The command prefix that runs a program inside the namespace (empty on loopback)."""
    namespace: str | None
    """The namespace's name; None on the loopback fallback."""


def _remove_stale_namespaces() -> None:
    """Delete namespaces of earlier runs whose process is gone (a run killed outright)."""
    for line in run("ip", "netns", "list").stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        match = re.fullmatch(NS_PREFIX + r"(\d+)-\d+", name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            _delete_namespace(name)


def _delete_namespace(name: str) -> None:
    """Kill whatever still runs in the namespace, then delete it (and so its veth pair)."""
    for pid in run("ip", "netns", "pids", name).stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    deadline = time.monotonic() + STOP_TIMEOUT
    while run("ip", "netns", "pids", name).stdout.split() and time.monotonic() < deadline:
        time.sleep(0.05)
    run("ip", "netns", "delete", name)


def _free_subnet() -> int:
    """A third octet ``n`` such that no interface here has an address in 10.213.n.0/24."""
    used = run("ip", "-o", "-4", "addr", "show").stdout
    candidates = [n for n in range(1, 255) if f" 10.213.{n}." not in used]
    if not candidates:
        raise RuntimeError("no free 10.213.n.0/24 subnet")
    return random.choice(candidates)


@contextmanager
def network(instances: int) -> Iterator[Network]:
    """A namespace with a veth pair: the host side 10.213.n.1/24, the namespace side one
    address per instance (10.213.n.2, .3, ...). Where namespaces are refused (not root,
    EPERM), loopback addresses 127.0.0.2, .3, ... instead, and it says so."""
    _remove_stale_namespaces()
    name = f"{NS_PREFIX}{os.getpid()}-{random.randrange(10**6)}"
    if os.environ.get("IOCP_ECHO_HAPROXY_LOOPBACK") == "1":
        added = subprocess.CompletedProcess([], 1, "", "IOCP_ECHO_HAPROXY_LOOPBACK=1")
    else:
        added = run("ip", "netns", "add", name)
    if added.returncode != 0:
        print(
            f"network namespaces refused ({added.stderr.strip()}): "
            "falling back to loopback addresses 127.0.0.2 and up"
        )
        yield Network([f"127.0.0.{i + 2}" for i in range(instances)], "127.0.0.0/8", [], None)
        return
    host_side = ""
    try:
        n = _free_subnet()
        host_side, ns_side = f"ieh{n}-{os.getpid() % 1000}h", f"ieh{n}-{os.getpid() % 1000}n"
        must("ip", "link", "add", host_side, "type", "veth", "peer", "name", ns_side)
        must("ip", "link", "set", ns_side, "netns", name)
        must("ip", "addr", "add", f"10.213.{n}.1/24", "dev", host_side)
        must("ip", "link", "set", host_side, "up")
        prefix = ["ip", "netns", "exec", name]
        addresses = [f"10.213.{n}.{i + 2}" for i in range(instances)]
        for address in addresses:
            must(*prefix, "ip", "addr", "add", f"{address}/24", "dev", ns_side)
        must(*prefix, "ip", "link", "set", ns_side, "up")
        must(*prefix, "ip", "link", "set", "lo", "up")
        # A reload's closing listener hands its queued connections to a sibling only
        # with this on (per namespace; see README "Several processes").
        must(*prefix, "sh", "-c", f"echo 1 > {MIGRATE_REQ}")
        print(f"namespace {name}: host side 10.213.{n}.1, instances on {' '.join(addresses)}")
        yield Network(addresses, f"10.213.{n}.1/32", prefix, name)
    finally:
        _delete_namespace(name)
        if host_side:
            run("ip", "link", "delete", host_side)


@dataclass
class Instance:
    """One iocp_echo process (a ``--processes`` parent, or a plain server)."""

    address: str
    port: int
    proc: subprocess.Popen[str]
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
    readers: list[threading.Thread] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.port}"

    def wait_output(self, stream: list[str], text: str, timeout: float) -> str:
        """The first line of ``stream`` holding ``text``; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(stream):
                if text in line:
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(
            f"{self.endpoint}: no {text!r} within {timeout} s (exit {self.proc.poll()});\n"
            f"stdout: {''.join(self.out)}\nstderr: {''.join(self.err)}"
        )


def _collect(stream: IO[str], lines: list[str]) -> None:
    for line in stream:
        lines.append(line)


def _reader(stream: IO[str] | None, lines: list[str]) -> threading.Thread:
    """A thread appending the lines of ``stream`` to ``lines`` (so no pipe fills)."""
    thread = threading.Thread(target=_collect, args=(stream, lines), daemon=True)
    thread.start()
    return thread


def _close(proc: subprocess.Popen[str], readers: list[threading.Thread]) -> None:
    """Once ``proc`` exited: let its readers see the end, then close its pipes."""
    for thread in readers:
        thread.join(STOP_TIMEOUT)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def start_instance(net: Network, address: str, processes: int) -> Instance:
    """An iocp_echo instance on ``address`` inside the network (lines framing, the
    ``peer_echo`` protocol, PROXY protocol on), once its listening line came."""
    port = INSTANCE_PORT if net.namespace else free_port(address)
    args = [
        *net.prefix,
        sys.executable,
        "-m",
        "iocp_echo",
        "--host",
        address,
        "--port",
        str(port),
        "--framing",
        "lines",
        "--protocol",
        "peer_echo:PeerEcho",
        "--proxy-protocol",
        "--trusted-proxies",
        net.trusted,
        "--drain-timeout",
        "2",
    ]
    if processes != 1:
        args += ["--processes", str(processes)]
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    instance = Instance(address, port, proc)
    instance.readers = [_reader(proc.stdout, instance.out), _reader(proc.stderr, instance.err)]
    try:
        instance.wait_output(instance.out, "iocp_echo listening on", START_TIMEOUT)
    except BaseException:
        stop_instance(instance)
        raise
    return instance


def stop_instance(instance: Instance) -> None:
    """SIGTERM, a bounded wait for the drain, then SIGKILL."""
    if instance.proc.poll() is None:
        instance.proc.terminate()
        try:
            instance.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            instance.proc.kill()
            instance.proc.wait(STOP_TIMEOUT)
    _close(instance.proc, instance.readers)


def _stop_all(instances: list[Instance]) -> None:
    for instance in instances:
        stop_instance(instance)


HAPROXY_CONFIG = """\
global
    stats socket {socket} mode 600 level admin
    maxconn 2000
    log stdout format raw local0 info

defaults
    mode tcp
    log global
    option tcplog
    timeout connect 1s
    timeout client 10s
    timeout server 10s
    timeout check 1s
    retries 3
    option redispatch

frontend echo
    bind 127.0.0.1:{port}
    default_backend instances

backend instances
    balance roundrobin
{servers}
"""


class HAProxy:
    """HAProxy in the foreground (``-db``) with a stats socket, in a temporary directory."""

    def __init__(self, binary: str, instances: list[Instance], directory: Path) -> None:
        self.port = free_port("127.0.0.1")
        self.socket = directory / "haproxy.sock"
        self.names = {f"s{i + 1}": inst.endpoint for i, inst in enumerate(instances)}
        servers = "\n".join(
            f"    server {name} {endpoint} send-proxy-v2 check check-send-proxy "
            "inter 100ms fall 2 rise 2"
            for name, endpoint in self.names.items()
        )
        config = directory / "haproxy.cfg"
        config.write_text(
            HAPROXY_CONFIG.format(socket=self.socket, port=self.port, servers=servers)
        )
        self.proc = subprocess.Popen(
            [binary, "-f", str(config), "-db"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.log: list[str] = []
        self.readers = [_reader(self.proc.stdout, self.log)]

    def status(self) -> dict[str, str]:
        """Each server's status as ``show stat`` says it (``UP``, ``DOWN``, ``UP 1/2``...);
        empty while the stats socket does not answer."""
        return {row["svname"]: row["status"] for row in self._stat_rows()}

    def _stat_rows(self) -> list[dict[str, str]]:
        """``show stat``'s rows of the servers, by column name; empty if no answer."""
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(str(self.socket))
                s.sendall(b"show stat\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
        except OSError:
            return []
        rows = csv.DictReader(data.decode().lstrip("# ").splitlines())
        return [row for row in rows if row.get("svname") in self.names]

    def counter(self, column: str) -> int:
        """A ``show stat`` column (``econ``: failed connects to a server) summed over
        the servers."""
        rows = self._stat_rows()
        return sum(int(row.get(column) or 0) for row in rows)

    def log_of(self, client: str) -> list[str]:
        """HAProxy's log lines (tcplog: the termination state, ``SC`` for a failed
        connect, ``SD`` for a server closing in the data phase) of one client address."""
        return [line.strip() for line in list(self.log) if line.startswith(client + " ")]

    def wait_status(self, wanted: dict[str, str], timeout: float) -> None:
        """Until every server named in ``wanted`` has that status; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"haproxy exited {self.proc.poll()}: {''.join(self.log)}")
            seen = self.status()
            if all(seen.get(k) == v for k, v in wanted.items()):
                return
            time.sleep(0.05)
        raise AssertionError(f"haproxy: wanted {wanted} within {timeout} s, last {seen}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(STOP_TIMEOUT)
        _close(self.proc, self.readers)


@dataclass
class Rig:
    """The running rig: the network, the instances (in address order) and HAProxy."""

    net: Network
    instances: list[Instance]
    haproxy: HAProxy


@contextmanager
def rig(binary: str, processes: list[int]) -> Iterator[Rig]:
    """A network, one instance per entry of ``processes`` (its ``--processes``), and
    HAProxy in front with every server UP; all of it removed after."""
    with ExitStack() as stack:
        net = stack.enter_context(network(len(processes)))
        instances: list[Instance] = []
        stack.callback(_stop_all, instances)
        for address, count in zip(net.addresses, processes):
            instances.append(start_instance(net, address, count))
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        haproxy = HAProxy(binary, instances, directory)
        stack.callback(haproxy.stop)
        haproxy.wait_status({name: "UP" for name in haproxy.names}, START_TIMEOUT)
        yield Rig(net, instances, haproxy)
