"""Shared test helpers: the server under test (in-process or external), process probes.

External mode: with ``IOCP_ECHO_EXTERNAL=host:port`` and ``IOCP_ECHO_EXTERNAL_FRAMING=
raw|lines|length`` (length: 4-byte big-endian prefix), the conformance tests talk to an
already running native echo server (the Wine-hosted ``iocp-echo.exe`` on the Windows leg)
instead of starting one; tests needing anything else are skipped.
"""

from __future__ import annotations

import os
import resource
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from iocp_echo import Client, Framing, Handler, Server
from iocp_echo import connect as connect_client

SLOW = os.environ.get("IOCP_ECHO_SLOW") == "1"
"""Long runs requested: more hypothesis examples, `slow` tests enabled."""

EXTERNAL = os.environ.get("IOCP_ECHO_EXTERNAL") or None
"""``host:port`` of an external native echo server, or None (start servers in-process)."""

EXTERNAL_FRAMING = os.environ.get("IOCP_ECHO_EXTERNAL_FRAMING", "raw")

EXTERNAL_SKIP = "needs the in-process server (Python handler, stats, options or close)"

Address = tuple[str, int]


def framing_of(framing: str | Framing) -> Framing:
    """A framing name as the server reads it (``raw``, ``lines``, ``length``) as a `Framing`."""
    if isinstance(framing, Framing):
        return framing
    if framing == "raw":
        return Framing.raw()
    if framing == "lines":
        return Framing.lines()
    if framing in ("length", "length_prefixed"):
        return Framing.length_prefixed(4, "big")
    raise ValueError(f"unknown framing name {framing!r}")


def external_address() -> Address | None:
    """The external server's address, or None when servers are started in-process."""
    if EXTERNAL is None:
        return None
    host, _, port = EXTERNAL.rpartition(":")
    return host, int(port)


# Options that do not change what a client can observe, so an external server fits.
_OBSERVABLY_NEUTRAL = frozenset({"workers"})


@contextmanager
def serve_echo(
    handler: Handler | None, framing: str | Framing = "raw", **options: Any
) -> Iterator[Address]:
    """Start ``Server(handler, port=0, framing=framing, **options)`` on 127.0.0.1; yield its
    address; close it after.

    In external mode a native echo (``handler=None``) with the external framing and no
    options that change behaviour yields the external address; any other request skips.
    """
    external = external_address()
    if external is not None:
        if handler is not None or not set(options) <= _OBSERVABLY_NEUTRAL:
            pytest.skip(EXTERNAL_SKIP)
        if framing_of(framing) != framing_of(EXTERNAL_FRAMING):
            pytest.skip(f"the external server frames {EXTERNAL_FRAMING}")
        yield external
        return
    with Server(handler, host="127.0.0.1", port=0, framing=framing, **options) as srv:
        yield srv.address


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds.

    For state the server reaches asynchronously (counters, closed sockets): never a
    readiness sleep, only a bound on how long a correct server could take.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def wait_stats(srv: Server, what: str, condition: Callable[[dict[str, Any]], bool]) -> None:
    """Wait until ``condition(srv.stats())`` holds."""
    wait_for(lambda: condition(srv.stats()), what)


def worker_threads() -> list[str]:
    """Names of this process's threads that are server workers (Rust threads included)."""
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as f:
                name = f.read().strip()
        except (FileNotFoundError, ProcessLookupError):
            # The thread ended between the listing and the read: open() then fails
            # with ENOENT, or read() with ESRCH.
            continue
        if name.startswith("iocp-echo-work"):
            names.append(name)
    return names


def open_fds() -> set[int]:
    """This process's open file descriptors."""
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def recv_until_closed(sock: socket.socket, limit: int = 64 << 20) -> bytes:
    """Everything ``sock`` receives until the peer closes it (EOF or reset)."""
    chunks = []
    total = 0
    while total <= limit:
        try:
            chunk = sock.recv(1 << 16)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def connect(address: Address, timeout: float = 30.0) -> socket.socket:
    """A blocking TCP client socket connected to ``address``, with a generous timeout."""
    sock = socket.create_connection(address, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def framed(address: Address | str, framing: str | Framing, timeout: float = 30.0) -> Client:
    """A framed client (``iocp_echo.connect``) of ``address``, with a generous timeout."""
    return connect_client(address, framing=framing, timeout=timeout)


def echo_of(client: Client, message: bytes) -> bytes:
    """``client.request(message)``; in raw framing, where replies have no boundaries, the
    reply read until it is as long as ``message`` (an echo, or a bytewise transform)."""
    if client.framing.kind != "raw":
        return client.request(message)
    client.send(message)
    reply = b""
    while len(reply) < len(message):
        reply += client.recv()
    return reply


def recv_frames(
    sock: socket.socket, framing: Framing, count: int, max_frame: int = 1 << 30
) -> list[bytes]:
    """Read exactly ``count`` frames from ``sock`` (fails on EOF before them)."""
    decoder = framing.decoder(max_frame)
    frames: list[bytes] = []
    while len(frames) < count:
        chunk = sock.recv(1 << 16)
        if not chunk:
            pytest.fail(f"connection closed after {len(frames)} of {count} replies")
        frames.extend(decoder.feed(chunk))
    assert len(frames) == count, f"{len(frames) - count} unexpected extra replies"
    return frames


def enough_descriptors(needed: int) -> None:
    """Raise the soft fd limit to the hard one if ``needed`` more descriptors would not fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft != resource.RLIM_INFINITY and soft < needed + 256:
        pytest.skip(f"needs {needed} file descriptors, the hard limit is {hard}")
