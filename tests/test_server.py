"""The `Server` API: addresses, backends, lifecycle, argument checks, limits, shutdown."""

from __future__ import annotations

import errno
import os
import select
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from helpers import (
    connect,
    echo_of,
    framed,
    open_fds,
    recv_frames,
    recv_until_closed,
    wait_stats,
    worker_threads,
)
from iocp_echo import BACKENDS, Client, Framing, Server, resolve_backend

FORCED = os.environ.get("IOCP_ECHO_BACKEND") or None
LENGTH = Framing.length_prefixed()


def test_address_has_the_real_port() -> None:
    with Server(None, port=0) as srv:
        host, port = srv.address
        assert host == "127.0.0.1"
        assert 0 < port < 65536
        with framed(srv.address, "raw") as client:
            assert echo_of(client, b"ping") == b"ping"


def test_backend_is_reported_and_honours_the_environment() -> None:
    with Server(None, port=0) as srv:
        assert srv.backend in ("io_uring", "epoll")
        assert srv.backend == resolve_backend()
        assert srv.stats()["backend"] == srv.backend
        if FORCED is not None:
            assert srv.backend == FORCED
    assert resolve_backend("epoll") == "epoll"
    assert set(BACKENDS) == {"io_uring", "epoll", "iocp"}


@pytest.mark.parametrize("backend", ["epoll", "io_uring"])
def test_a_forced_backend_is_used(backend: str) -> None:
    try:
        resolve_backend(backend)
    except OSError as e:
        pytest.skip(f"{backend} is not usable here: {e}")
    with Server(None, port=0, backend=backend, framing="lines") as srv:
        assert srv.backend == backend
        with framed(srv.address, "lines") as client:
            assert client.request(b"hello") == b"hello"


def test_the_iocp_backend_is_refused_on_linux() -> None:
    with pytest.raises((ValueError, OSError), match="iocp"):
        Server(None, port=0, backend="iocp").start()


def test_bogus_backend_in_the_environment_raises_value_error() -> None:
    code = (
        "import iocp_echo\n"
        "for f in (iocp_echo.resolve_backend, lambda: iocp_echo.Server(None, port=0).start()):\n"
        "    try:\n"
        "        f()\n"
        "    except ValueError as e:\n"
        "        assert 'IOCP_ECHO_BACKEND' in str(e), e\n"
        "    else:\n"
        "        raise SystemExit('no ValueError')\n"
    )
    env = {**os.environ, "IOCP_ECHO_BACKEND": "bogus"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_context_manager_start_close_and_running() -> None:
    srv = Server(None, port=0)
    assert not srv.running
    with pytest.raises(RuntimeError):
        _ = srv.address
    with srv as entered:
        assert entered is srv
        assert entered.running  # (not srv: mypy narrowed srv.running to False above)
        with pytest.raises(RuntimeError, match="already"):
            entered.start()
        address = entered.address
    assert not srv.running
    srv.close()  # idempotent
    srv.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=10).close()


def test_close_without_start_and_start_close_start() -> None:
    srv = Server(None, port=0, framing="lines")
    srv.close()
    srv.start()
    srv.close()
    srv.start()  # a closed server may be started again
    try:
        with framed(srv.address, "lines") as client:
            assert client.request(b"again") == b"again"
    finally:
        srv.close()


def test_binding_a_busy_port_raises_eaddrinuse() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as info:
            Server(None, port=port).start()
        assert info.value.errno == errno.EADDRINUSE


def test_a_second_server_on_the_same_port_raises_eaddrinuse() -> None:
    with Server(None, port=0) as first:
        second = Server(None, port=first.address[1])
        with pytest.raises(OSError) as info:
            second.start()
        assert info.value.errno == errno.EADDRINUSE
        assert not second.running


BAD_ARGUMENTS: list[tuple[dict[str, Any], str]] = [
    ({"port": -1}, "port"),
    ({"port": 70000}, "port"),
    ({"port": 1 << 70}, "port"),
    ({"port": "80"}, "port"),
    ({"workers": 0}, "workers"),
    ({"framing": "bogus"}, "framing"),
    ({"framing": 3}, "framing"),
    ({"backend": "bogus"}, "backend"),
    ({"max_frame": 0}, "max_frame"),
    ({"max_connections": 0}, "max_connections"),
    ({"idle_timeout": -1}, "idle_timeout"),
    ({"idle_timeout": 0}, "idle_timeout"),
    ({"idle_timeout": float("nan")}, "idle_timeout"),
    ({"drain_timeout": -1}, "drain_timeout"),
    ({"high_water": 0}, "high_water"),
    ({"high_water": 1000, "low_water": 2000}, "low_water"),
    ({"host": "no such host!"}, "host"),
]


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        pytest.param(kw, name, id=",".join(f"{k}={v!r}" for k, v in kw.items()))
        for kw, name in BAD_ARGUMENTS
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs: dict[str, Any], argument: str) -> None:
    with pytest.raises((ValueError, TypeError), match=argument):
        Server(None, **kwargs)


def test_a_handler_that_is_not_callable_raises_type_error() -> None:
    with pytest.raises(TypeError, match="handler"):
        Server(42)  # type: ignore[arg-type]


def test_close_with_open_connections_is_prompt_and_leaves_nothing_behind() -> None:
    fds = open_fds()
    assert worker_threads() == [], "a previous test left worker threads"
    srv = Server(None, port=0, framing=LENGTH, workers=2)
    srv.start()
    clients = []
    try:
        # Raw sockets: half frames, unread replies, and each connection's end is awaited.
        for i in range(100):
            sock = connect(srv.address)
            clients.append(sock)
            if i % 3 == 1:
                sock.sendall(b"\x00\x00\x10\x00half a message")  # mid-frame
            elif i % 3 == 2:
                sock.sendall(LENGTH.encode(b"a reply to read") + b"\x00\x00")
        # Some clients never read: the server holds replies it cannot send.
        for sock in clients[:3]:
            sock.setblocking(False)
            try:
                while True:
                    sock.send(LENGTH.encode(bytes(1 << 16)))
            except BlockingIOError:
                pass
            sock.settimeout(30)
        wait_stats(srv, "100 connections", lambda s: s["connections_open"] == 100)
        assert len(worker_threads()) == 2
        started = time.monotonic()
        srv.close()
        took = time.monotonic() - started
        assert took < 10, f"close() took {took:.1f} s"
        assert worker_threads() == []
        for sock in clients:
            recv_until_closed(sock)  # every client sees its connection end
    finally:
        for sock in clients:
            sock.close()
        srv.close()
    assert open_fds() == fds


# Run in a child process: a deadlock there fails this test instead of hanging the suite.
FROM_ANOTHER_THREAD = """
import threading, iocp_echo
srv = iocp_echo.Server(None, port=0)
srv.start()
def other():
    srv.stats()
    srv.address
    srv.close()
stopper = threading.Timer(0.2, other)
stopper.start()
srv.{method}()
stopper.join()
assert not srv.running
"""


@pytest.mark.parametrize("method", ["serve_forever", "wait"])
def test_stats_and_close_from_another_thread_stop_a_waiting_server(method: str) -> None:
    try:
        done = subprocess.run(
            [sys.executable, "-c", FROM_ANOTHER_THREAD.format(method=method)],
            capture_output=True,
            text=True,
            timeout=15,
        )
    except subprocess.TimeoutExpired:
        done = None
    if done is None:
        pytest.fail(f"{method}() with stats() and close() from another thread hangs (15 s)")
    assert done.returncode == 0, done.stderr


def test_wait_times_out_while_running_and_is_true_once_closed() -> None:
    with Server(None, port=0) as srv:
        assert srv.wait(0.05) is False
    assert srv.wait(0.05) is True


def test_idle_timeout_closes_an_idle_client_and_keeps_an_active_one() -> None:
    idle_timeout = 0.3
    framing = Framing.lines()
    with Server(None, port=0, framing="lines", idle_timeout=idle_timeout) as srv:
        # The idle one is a raw socket, polled for its end of stream without blocking.
        with connect(srv.address) as idle, framed(srv.address, framing) as active:
            idle.setblocking(False)
            started = time.monotonic()
            closed_at = None
            rounds = 0
            # The active client talks every 0.05 s for at least 5 idle timeouts.
            while closed_at is None or time.monotonic() - started < 5 * idle_timeout:
                assert active.request(b"%d" % rounds) == b"%d" % rounds
                rounds += 1
                readable, _, _ = select.select([idle], [], [], 0.05)
                if readable and closed_at is None:
                    assert idle.recv(10) == b""  # EOF: the server closed it
                    closed_at = time.monotonic()
                assert time.monotonic() - started < 30, "the idle client was never closed"
            assert closed_at is not None and closed_at - started >= idle_timeout * 0.9
            assert active.request(b"last") == b"last"
        assert srv.stats()["idle_timeouts"] == 1


def test_backpressure_bounds_buffering_and_resumes_byte_exact() -> None:
    high_water = 256 << 10
    frame = bytes(range(256)) * 64  # 16 KiB
    frames = 2048  # 32 MiB: far more than socket buffers hold
    with Server(
        None, port=0, framing=LENGTH, high_water=high_water, low_water=64 << 10, workers=1
    ) as srv:
        # A raw socket: a thread writes while the test reads (a Client is for one thread),
        # and its small receive buffer makes the server queue replies.
        with connect(srv.address) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
            sender = threading.Thread(
                target=sock.sendall, args=(LENGTH.encode(frame) * frames,), daemon=True
            )
            sender.start()
            wait_stats(srv, "backpressure", lambda s: s["backpressure_pauses"] > 0)
            # The client reads nothing: the server must stop reading rather than buffer.
            sender.join(timeout=2)
            assert sender.is_alive(), "all 32 MiB were taken without the client reading"
            stats = srv.stats()
            held = stats["bytes_received"] - stats["bytes_sent"]
            assert held < high_water + (2 << 20), f"the server holds {held} bytes"
            # Now read everything: the connection resumes and completes byte-exact.
            replies = recv_frames(sock, LENGTH, frames)
            sender.join()
        assert all(r == frame for r in replies)
        stats = srv.stats()
        assert stats["bytes_sent"] == frames * (len(frame) + 4)


def test_max_connections_refuses_extra_clients_and_recovers() -> None:
    framing = Framing.lines()
    with Server(None, port=0, framing="lines", max_connections=5, workers=2) as srv:
        clients = [framed(srv.address, framing) for _ in range(5)]
        try:
            for i, client in enumerate(clients):
                assert client.request(b"%d" % i) == b"%d" % i
            with framed(srv.address, framing) as extra:  # the kernel accepts; the server closes it
                # No reply: the end of the stream (ConnectionClosed), or a reset.
                with pytest.raises(ConnectionError):
                    extra.request(b"refused?")
            assert srv.stats()["connections_rejected"] >= 1
            clients.pop().close()
            wait_stats(srv, "a free slot", lambda s: s["connections_open"] == 4)
            with framed(srv.address, framing) as again:
                assert again.request(b"welcome back") == b"welcome back"
        finally:
            for client in clients:
                client.close()


def test_close_sends_queued_replies_before_closing() -> None:
    frames = 1600
    message = bytes(range(256)) * 40  # 10 KiB: 16 MiB of replies, far more than socket buffers
    srv = Server(
        None, port=0, framing=LENGTH, drain_timeout=30.0, high_water=64 << 20, low_water=1 << 20
    )
    srv.start()
    with socket.socket() as sock:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 10)  # before connecting
            sock.settimeout(30)
            sock.connect(srv.address)
            client = Client(sock, LENGTH, timeout=30)  # the socket, framed
            client.send_many([message] * frames)  # nothing read yet
            wait_stats(srv, "every frame", lambda s: s["frames_received"] == frames)
            closer = threading.Thread(target=srv.close)
            closer.start()
            replies = [client.recv() for _ in range(frames)]
            assert list(client) == []  # then a clean end of stream, nothing more
            closer.join()
        finally:
            srv.close()
    assert replies == [message] * frames
