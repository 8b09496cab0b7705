"""Peers that half-close or reset.

* ``shutdown(SHUT_WR)`` after many messages: every echo arrives, then a clean end of
  stream (FIN, not a reset); counted as an orderly close.
* A reset (``SO_LINGER`` 0) while the server has replies in flight and queued: the
  server frees everything (its descriptor count, threads and open-connections gauge
  return to their baseline), counts each as a closed connection and an I/O error, and
  the other clients notice nothing.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
from collections.abc import Callable

import pytest
from client import random_payload
from helpers import connect, framing_of, serve_echo, wait_for, wait_stats
from iocp_echo import Framing, Server
from server_process import (
    Bystander,
    ControlledServer,
    controlled,
    counters_are,
    fd_count,
    thread_count,
)

FRAMINGS = ["raw", "lines", "length"]


def messages_for(rng: random.Random, framing: Framing, count: int) -> list[bytes]:
    """``count`` messages, mostly small, a few of tens of KiB."""
    sizes = [rng.choice([rng.randint(0, 200), rng.randint(0, 200), rng.randint(1, 40_000)])]
    sizes += [rng.randint(0, 300) if rng.random() < 0.95 else 30_000 for _ in range(count - 1)]
    return [random_payload(rng, size, framing) for size in sizes]


def send_then_half_close(sock: socket.socket, stream: bytes) -> None:
    """Write ``stream`` and shut down the sending side."""
    sock.sendall(stream)
    sock.shutdown(socket.SHUT_WR)


def recv_to_clean_eof(sock: socket.socket) -> bytes:
    """Everything received up to the end of stream; a reset fails the test."""
    chunks: list[bytes] = []
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except ConnectionResetError:
            pytest.fail("the server reset a half-closed connection instead of closing it")
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def half_close_clients(
    address: tuple[str, int], framing: Framing, clients: int, messages: int, seed: int
) -> int:
    """``clients`` concurrent clients each send ``messages`` then half-close; each must
    get every echo in order, then EOF. The messages echoed in all."""
    rng = random.Random(seed)
    streams = []
    for _ in range(clients):
        conversation = messages_for(rng, framing, messages)
        streams.append(b"".join(framing.encode(m) for m in conversation))
    received: dict[int, bytes] = {}
    errors: list[BaseException] = []

    def converse(i: int) -> None:
        try:
            with connect(address, timeout=30) as sock:
                sender = threading.Thread(target=send_then_half_close, args=(sock, streams[i]))
                sender.start()
                received[i] = recv_to_clean_eof(sock)
                sender.join()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=converse, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    for i, stream in enumerate(streams):
        got = received[i]
        lost = len(stream) - len(got)
        assert got == stream, f"client {i}: {lost} bytes short, or different"
    return clients * messages


@pytest.mark.conformance
@pytest.mark.parametrize("framing_name", FRAMINGS)
def test_half_close_after_many_messages_gets_every_echo_then_eof(framing_name: str) -> None:
    framing = framing_of(framing_name)
    with serve_echo(None, framing_name) as address:
        half_close_clients(address, framing, clients=8, messages=2000, seed=11)


@pytest.mark.parametrize("framing_name", FRAMINGS)
def test_half_closed_connections_are_counted_as_orderly_closes(framing_name: str) -> None:
    framing = framing_of(framing_name)
    clients, messages = 6, 1000
    with Server(None, port=0, framing=framing, workers=2) as srv:
        half_close_clients(srv.address, framing, clients, messages, seed=12)
        wait_stats(srv, "every connection closed", lambda s: s["connections_closed"] == clients)
        stats = srv.stats()
    assert stats["connections_open"] == 0
    assert stats["io_errors"] == 0
    assert stats["frame_errors"] == 0
    if framing.kind != "raw":
        assert stats["frames_received"] == clients * messages
        assert stats["frames_sent"] == clients * messages
    assert stats["bytes_sent"] == stats["bytes_received"]


@pytest.mark.slow
@pytest.mark.parametrize("framing_name", FRAMINGS)
def test_many_half_closing_clients(framing_name: str) -> None:
    framing = framing_of(framing_name)
    with serve_echo(None, framing_name, workers=2) as address:
        half_close_clients(address, framing, clients=64, messages=5000, seed=13)


def reset(sock: socket.socket) -> None:
    """Close ``sock`` with a reset (RST) rather than a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def resets_mid_transfer(rounds: int, clients: int, megabytes_each: int) -> None:
    """Per round, ``clients`` connections flood the server without reading until it has
    replies in flight and queued, then reset; check what the server frees and counts."""
    framing = Framing.length_prefixed()
    message = random.Random(5).randbytes(32 << 10)
    data = framing.encode(message) * (megabytes_each * 32)
    with controlled("length", high_water=256 << 10, low_water=64 << 10, workers=2) as server:
        pid = server.proc.pid
        bystander = Bystander(server.address, framing, seed=3)
        bystander.wait_progress("the bystander before")
        fds, threads = fd_count(pid), thread_count(pid)
        try:
            for round_ in range(rounds):
                floods = [Flood(server.address, data) for _ in range(clients)]
                paused = clients * (round_ + 1)
                # Paused: each has a send in flight and output queued behind it.
                wait_for(paused_by(server, floods, paused), "replies in flight")
                for f in floods:
                    reset(f.sock)
                closed = clients * (round_ + 1)
                server.wait_stats(
                    "the reset connections freed",
                    counters_are(connections_closed=closed, connections_open=1),
                )
                bystander.wait_progress("the bystander after the resets")
            stats = server.stats()
            print(
                f"\n{rounds} x {clients} resets: closed {stats['connections_closed']}, "
                f"io_errors {stats['io_errors']}, fds {fd_count(pid)} (baseline {fds})"
            )
            assert stats["io_errors"] == rounds * clients
            assert stats["frame_errors"] == 0
            assert stats["connections_accepted"] == rounds * clients + 1
            assert fd_count(pid) == fds
            assert thread_count(pid) == threads
        finally:
            echoes = bystander.stop()
        print(f"bystander echoes: {echoes}")
        server.wait_stats("the bystander's close", lambda s: s["connections_open"] == 0)
        server.close()


class Flood:
    """A client writing ``data`` without ever reading, from the test's thread (so a reset
    closes the socket at once: no other thread is inside a call on it)."""

    def __init__(self, address: tuple[str, int], data: bytes) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 10)
        self.sock.settimeout(30)
        self.sock.connect(address)
        self.sock.setblocking(False)
        self.data = memoryview(data)
        self.sent = 0

    def push(self) -> None:
        """Write what the socket takes now."""
        try:
            while self.sent < len(self.data):
                self.sent += self.sock.send(self.data[self.sent : self.sent + (1 << 16)])
        except BlockingIOError:
            pass


def paused_by(server: ControlledServer, floods: list[Flood], pauses: int) -> Callable[[], bool]:
    """A condition that keeps ``floods`` writing: the server has paused ``pauses`` times."""

    def paused() -> bool:
        for f in floods:
            f.push()
        return bool(server.stats()["backpressure_pauses"] >= pauses)

    return paused


def test_resets_with_replies_in_flight_free_everything_and_are_counted() -> None:
    resets_mid_transfer(rounds=3, clients=8, megabytes_each=8)


@pytest.mark.slow
def test_many_resets_with_replies_in_flight() -> None:
    resets_mid_transfer(rounds=10, clients=50, megabytes_each=16)
