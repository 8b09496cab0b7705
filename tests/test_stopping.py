"""Stopping: `close()` under load is bounded and leaves nothing; cycles leak nothing; SIGTERM.

* `close()` with 1,000 connections in mid-traffic (some clients not reading, so queued
  replies cannot all drain) returns within ``drain_timeout`` plus a margin, and afterwards
  no worker thread, socket or descriptor of the server is left; every client saw its
  replies byte-exact up to the end.
* 200 start/stop cycles with traffic, in a child process: its descriptors, threads and
  resident memory stay flat, and every handler is released.
* SIGTERM to the CLI while 200 clients talk: exit code 0, and each client's stream ends
  cleanly (end of stream after whole replies, no reset).
* A handler may close its own server: `serve_forever()` returns normally.

Long versions (``slow``): 5,000 connections, 2,000 cycles, 2,000 clients.

A Rust panic in a worker surfacing from `close()` is tested in Rust
(`src/server/tests.rs`, a panicking `Handler`): from Python there is no way to make a
worker panic without a test-only hook.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import pytest
from client import STEP_TIMEOUT, random_payload
from helpers import (
    Address,
    enough_descriptors,
    framed,
    open_fds,
    wait_for,
    wait_stats,
    worker_threads,
)
from iocp_echo import Framing, Server
from server_process import cli, running

LENGTH = Framing.length_prefixed()


@dataclass
class Ending:
    """How one client's conversation ended."""

    replies: int
    """Whole replies received, each byte-exact."""
    how: str
    """``"eof"`` (clean end of stream), ``"reset"``, or ``"broken"`` (sending failed)."""
    partial: int
    """Bytes of an unfinished reply at the end (a clean close leaves none)."""


async def talker(
    address: Address,
    rng: random.Random,
    counts: list[int],
    *,
    window: int,
    reader_too: bool = True,
) -> Ending:
    """Send random messages until the server ends the stream; check every reply.

    Up to ``window`` messages are outstanding at a time. ``reader_too=False``: a client
    that only writes (its replies pile up in the server) until writing fails. ``counts``
    is ``[clients connected, replies received]``, shared by a crowd.
    """
    # asyncio streams, not AsyncClient: this counts how each stream ended (EOF, reset,
    # broken) and the bytes of an unfinished reply, which a client would hide.
    if reader_too:
        connecting = asyncio.open_connection(*address)
    else:
        # A small receive buffer: the server soon holds replies it cannot send.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, address), 60)
        connecting = asyncio.open_connection(sock=sock)
    reader, writer = await asyncio.wait_for(connecting, STEP_TIMEOUT)
    counts[0] += 1
    decoder = LENGTH.decoder(1 << 30)
    outstanding: list[bytes] = []
    replies = 0
    how = "eof"
    try:
        if not reader_too:
            try:
                while True:
                    writer.write(LENGTH.encode(rng.randbytes(65536)))
                    await writer.drain()
            except (ConnectionError, OSError):
                return Ending(0, "broken", 0)
        while True:
            while len(outstanding) < window:
                message = random_payload(rng, rng.randint(0, 3000), LENGTH)
                outstanding.append(message)
                writer.write(LENGTH.encode(message))
            try:
                await writer.drain()
                chunk = await asyncio.wait_for(reader.read(1 << 16), STEP_TIMEOUT)
            except ConnectionResetError:
                how = "reset"
                break
            except (BrokenPipeError, ConnectionError):
                how = "broken"
                break
            if not chunk:
                break
            for reply in decoder.feed(chunk):
                assert reply == outstanding.pop(0), "a reply differs from its message"
                replies += 1
                counts[1] += 1
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass
    return Ending(replies, how, decoder.buffered)


@dataclass
class Crowd:
    """Clients talking on an event loop in a thread of their own."""

    thread: threading.Thread
    endings: list[Ending]
    """Each client's ending, filled in once every client has ended."""
    counts: list[int]
    """How many clients have connected so far, and how many replies they received."""
    failures: list[BaseException]
    """What went wrong on the client side (a reply that differs ...), if anything."""

    def finish(self) -> None:
        """Wait for every client to see its connection end; fail on any client failure."""
        self.thread.join(STEP_TIMEOUT)
        assert not self.thread.is_alive(), "a client never saw its connection end"
        if self.failures:
            raise self.failures[0]


def crowd_in_a_thread(
    address: Address, talkers: int, seed: int, *, window: int, non_readers: int = 0
) -> Crowd:
    """Start ``talkers`` (+ ``non_readers``) clients on an event loop in a new thread."""
    crowd = Crowd(threading.Thread(), [], [0, 0], [])

    async def everyone() -> None:
        rng = random.Random(seed)
        try:
            results = await asyncio.gather(
                *(
                    talker(address, random.Random(rng.random()), crowd.counts, window=window)
                    for _ in range(talkers)
                ),
                *(
                    talker(
                        address,
                        random.Random(rng.random()),
                        crowd.counts,
                        window=1,
                        reader_too=False,
                    )
                    for _ in range(non_readers)
                ),
            )
        except BaseException as e:
            crowd.failures.append(e)
        else:
            crowd.endings.extend(results)

    crowd.thread = threading.Thread(target=asyncio.run, args=(everyone(),), name="clients")
    crowd.thread.start()
    return crowd


DRAIN_TIMEOUT = 1.0
MARGIN = 3.0
"""Seconds `close()` may take beyond ``drain_timeout``: cancelling and joining."""


@pytest.mark.parametrize(
    "connections", [1000, pytest.param(5000, marks=pytest.mark.slow)], ids=lambda n: f"{n}"
)
def test_close_with_busy_connections_is_bounded_and_leaves_nothing(
    connections: int,
) -> None:
    non_readers = connections // 20
    talkers = connections - non_readers
    enough_descriptors(2 * (talkers + non_readers))
    assert worker_threads() == [], "a previous test left worker threads"
    fds = open_fds()
    seed = random.randrange(1 << 32)
    srv = Server(None, port=0, framing=LENGTH, workers=2, drain_timeout=DRAIN_TIMEOUT)
    srv.start()
    address = srv.address
    crowd = None
    try:
        crowd = crowd_in_a_thread(address, talkers, seed, window=3, non_readers=non_readers)
        wait_stats(srv, "all connections open", lambda s: s["connections_open"] == connections)
        frames = srv.stats()["frames_received"]
        wait_stats(srv, "traffic", lambda s: s["frames_received"] > frames + 2000)
        # The non-readers' replies pile up: the drain cannot finish them.
        wait_stats(srv, "backpressure", lambda s: s["backpressure_pauses"] >= non_readers)
        assert srv.stats()["connections_open"] == connections
        assert len(worker_threads()) == 2
        began = time.monotonic()
        srv.close()
        took = time.monotonic() - began
        print(f"close() with {connections} busy connections took {took:.2f} s")
        assert took < DRAIN_TIMEOUT + MARGIN, f"close() took {took:.1f} s"
        assert worker_threads() == []
        crowd.finish()
    finally:
        srv.close()
        if crowd is not None:
            crowd.thread.join(STEP_TIMEOUT)
    assert len(crowd.endings) == connections
    assert sum(e.replies for e in crowd.endings) > 2000
    # The listening socket is gone too.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=5).close()
    assert open_fds() == fds


# Run in a child process, so this process's clients and test history do not blur figures.
CYCLES = """
import gc, json, os, socket, sys, weakref
from iocp_echo import Framing, Server

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

def figures():
    gc.collect()
    return {"fds": len(os.listdir("/proc/self/fd")),
            "threads": len(os.listdir("/proc/self/task")), "rss": status("VmRSS")}

class Upper:
    def __call__(self, message):
        return message.upper()

framing = Framing.length_prefixed()
handlers = []
report = {"before": figures()}
for cycle in range({cycles}):
    handler = Upper() if cycle % 2 else None
    if handler is not None:
        handlers.append(weakref.ref(handler))
    # linger_timeout: the two clients left connected were just answered, so
    # each close would otherwise wait the default 0.2 s for more input.
    srv = Server(handler, port=0, framing=framing, workers=2, linger_timeout=0.01)
    srv.start()
    clients = [socket.create_connection(srv.address, timeout=30) for _ in range(3)]
    for sock in clients:
        sock.sendall(framing.encode(b"cycle %d" % cycle))
    for sock in clients:
        decoder, replies = framing.decoder(), []
        while not replies:
            replies = decoder.feed(sock.recv(65536))
        assert replies == [(b"CYCLE %d" if handler else b"cycle %d") % cycle], replies
    clients.pop().close()
    srv.close()  # two clients still connected
    for sock in clients:
        assert sock.recv(10) == b""
        sock.close()
    del srv, handler
    if cycle + 1 == {warmup}:
        report["warm"] = figures()
report["after"] = figures()
report["handlers_alive"] = sum(ref() is not None for ref in handlers)
print(json.dumps(report))
"""


@pytest.mark.parametrize(
    "cycles", [200, pytest.param(2000, marks=pytest.mark.slow)], ids=lambda n: f"{n}"
)
def test_start_stop_cycles_leave_fds_threads_and_memory_flat(cycles: int) -> None:
    warmup = 20
    script = CYCLES.replace("{cycles}", str(cycles)).replace("{warmup}", str(warmup))
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    before, warm, after = report["before"], report["warm"], report["after"]
    print(f"{cycles} cycles: before {before}, after {warmup} {warm}, after {cycles} {after}")
    assert after["fds"] == warm["fds"] == before["fds"]
    assert after["threads"] == warm["threads"] == before["threads"]
    # Flat once warm: the cycles after the warm-up may not add 4 MiB in all.
    assert after["rss"] - warm["rss"] < 4 << 20, after["rss"] - warm["rss"]
    assert report["handlers_alive"] == 0, "a closed server kept its handler"


@pytest.mark.parametrize(
    "talkers", [200, pytest.param(2000, marks=pytest.mark.slow)], ids=lambda n: f"{n}"
)
def test_sigterm_under_load_exits_0_and_every_client_sees_a_clean_close(talkers: int) -> None:
    enough_descriptors(talkers)
    seed = random.randrange(1 << 32)
    with running(cli("--framing", "length", "--workers", "2")) as server:
        crowd = crowd_in_a_thread(server.address, talkers, seed, window=1)
        try:
            wait_for(lambda: crowd.counts[0] == talkers, "every client connected")
            # The signal must land mid-traffic.
            wait_for(lambda: crowd.counts[1] > 3 * talkers, "replies flowing")
            code, stderr = server.stop(signal.SIGTERM)
        finally:
            crowd.thread.join(STEP_TIMEOUT)
        crowd.finish()
    endings = crowd.endings
    assert code == 0, stderr
    assert "Traceback" not in stderr, stderr
    assert len(endings) == talkers
    assert sum(e.replies for e in endings) > 3 * talkers
    unclean = [e for e in endings if e.how != "eof" or e.partial]
    assert unclean == [], f"{len(unclean)} of {talkers} clients saw an unclean end: {unclean[:5]}"


def test_a_handler_may_close_its_own_server() -> None:
    fds = open_fds()
    srv: Server | None = None

    def handler(message: bytes) -> bytes:
        if message == b"quit" and srv is not None:
            srv.close()
        return message

    srv = Server(handler, port=0, framing=LENGTH, workers=2)
    srv.start()
    failures: list[BaseException] = []

    def serve() -> None:
        assert srv is not None
        try:
            srv.serve_forever()
        except BaseException as e:
            failures.append(e)

    serving = threading.Thread(target=serve)
    serving.start()
    try:
        with framed(srv.address, LENGTH) as other, framed(srv.address, LENGTH) as client:
            assert other.request(b"hello") == b"hello"
            assert client.request(b"quit") == b"quit"
            # Both streams end cleanly (the server's close lingers), nothing more sent.
            assert list(client) == []
            assert list(other) == []
        serving.join(STEP_TIMEOUT)
        assert not serving.is_alive(), "serve_forever() did not return"
        assert failures == [], "serve_forever() raised"
        assert not srv.running
        assert worker_threads() == []
    finally:
        srv.close()
        serving.join(STEP_TIMEOUT)
    assert open_fds() == fds
