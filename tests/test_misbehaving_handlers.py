"""Handlers that misbehave: only their own connection pays, everyone else keeps flowing.

`test_handlers.py` covers a handler raising ``ValueError``, returning an ``int`` and
returning a reply its framing cannot encode, one bad client at a time. Here: the other
mistakes handlers make (returning ``str``, a list, a coroutine from an ``async def``;
raising ``SystemExit``, ``KeyboardInterrupt`` or an exception that cannot even be
printed) while other clients talk on both workers; a failed message's connection gets no
further handler calls; a memoryview of any item type is a valid reply; and a handler
that blocks holds up only its own worker.
"""

from __future__ import annotations

import array
import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from client import many, random_payload, run_clients
from helpers import (
    Address,
    connect,
    framed,
    recv_frames,
    recv_until_closed,
    wait_for,
    wait_stats,
)
from iocp_echo import Client, Framing, Server

LINES = Framing.lines()
WORKERS = 2


class Unprintable(Exception):
    """An exception whose ``str()`` itself raises."""

    def __str__(self) -> str:
        raise RuntimeError("no text for this one")


async def _coroutine(message: bytes) -> bytes:
    return message


def _poisoned(kind: str) -> Callable[[bytes], Any]:
    """A handler that echoes, except on messages starting with ``poison``."""

    def misbehave(message: bytes) -> Any:
        if kind == "returns-str":
            return message.decode()
        if kind == "returns-list":
            return [message]
        if kind == "async-def":
            return _coroutine(message)
        if kind == "raises-SystemExit":
            raise SystemExit(3)
        if kind == "raises-KeyboardInterrupt":
            raise KeyboardInterrupt
        if kind == "raises-unprintable":
            raise Unprintable
        raise AssertionError(kind)

    def handler(message: bytes) -> Any:
        if message.startswith(b"poison"):
            return misbehave(message)
        return message

    return handler


@contextmanager
def serving(handler: Callable[[bytes], Any], **options: Any) -> Iterator[Server]:
    """A lines server with two workers on an ephemeral port."""
    with Server(handler, port=0, framing=LINES, workers=WORKERS, **options) as srv:
        yield srv


def ask(address: Address, message: bytes) -> bytes:
    """One message on a new connection, its one reply."""
    with framed(address, LINES) as client:
        return client.request(message)


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("returns-str", TypeError),
        ("returns-list", TypeError),
        ("async-def", TypeError),
        ("raises-SystemExit", SystemExit),
        ("raises-KeyboardInterrupt", KeyboardInterrupt),
        ("raises-unprintable", Unprintable),
    ],
)
@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
def test_each_bad_client_is_closed_logged_and_counted_while_the_others_flow(
    caplog: pytest.LogCaptureFixture, kind: str, error: type[BaseException]
) -> None:
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    talks = [
        [random_payload(rng, rng.randint(0, 2000), LINES) for _ in range(20)] for _ in range(40)
    ]
    bad_clients = 12
    closed_bad: list[bytes] = []
    with serving(_poisoned(kind)) as srv:

        def poison() -> None:
            for i in range(bad_clients):
                with connect(srv.address) as bad:
                    bad.sendall(b"fine\n")
                    assert recv_frames(bad, LINES, 1) == [b"fine"]
                    bad.sendall(b"poison %d\nnever answered\n" % i)
                    closed_bad.append(recv_until_closed(bad))

        poisoner = threading.Thread(target=poison)
        poisoner.start()
        # Good clients on both workers, talking while the bad ones fail.
        run_clients(srv.address, LINES, talks, seed=seed)
        poisoner.join(60)
        assert not poisoner.is_alive(), "a poisoned client was never closed"
        assert closed_bad == [b""] * bad_clients, "a poisoned message got a reply"
        assert ask(srv.address, b"still serving") == b"still serving"
        wait_stats(srv, "the failures counted", lambda s: s["handler_errors"] == bad_clients)
        wait_stats(srv, "every client closed", lambda s: s["connections_open"] == 0)
        stats = srv.stats()
    assert stats["connections_accepted"] == len(talks) + bad_clients + 1
    assert stats["handler_errors"] == bad_clients
    assert stats["frame_errors"] == stats["io_errors"] == 0
    failures = [r for r in caplog.records if r.name == "iocp_echo" and r.exc_info]
    assert len(failures) == bad_clients, [r.getMessage() for r in caplog.records]
    for record in failures:
        assert record.levelno >= logging.ERROR
        assert record.exc_info is not None and record.exc_info[0] is error


def test_a_failed_connection_gets_no_more_handler_calls(caplog: pytest.LogCaptureFixture) -> None:
    """Messages after the failing one, even received with it, never reach the handler."""
    calls: list[bytes] = []

    def handler(message: bytes) -> bytes:
        calls.append(message)
        if message.startswith(b"boom"):
            raise ValueError(message.decode())
        return message

    with serving(handler) as srv:
        for _ in range(20):
            with connect(srv.address) as sock:
                # One write: the three arrive together, mostly in one read.
                sock.sendall(b"boom\nboom again\nafter\n")
                assert recv_until_closed(sock) == b""
        wait_stats(srv, "20 failures", lambda s: s["handler_errors"] == 20)
    assert calls == [b"boom"] * 20
    failures = [r for r in caplog.records if r.name == "iocp_echo" and r.exc_info]
    assert len(failures) == 20, "one traceback per failed connection"


def test_a_memoryview_of_any_item_type_or_stride_is_a_reply() -> None:
    """A memoryview is sent as its bytes, as `socket.send` would send it."""
    ints = array.array("i", [1, -2, 3])
    doubles = array.array("d", [0.5, 2.0])

    def handler(message: bytes) -> memoryview:
        if message == b"ints":
            return memoryview(ints)
        if message == b"doubles":
            return memoryview(doubles)
        if message == b"every other":
            return memoryview(b"a-b-c-")[::2]
        return memoryview(message)

    framing = Framing.length_prefixed()
    with Server(handler, port=0, framing=framing) as srv, framed(srv.address, framing) as c:
        for message in (b"ints", b"doubles", b"every other", b"plain"):
            c.send(message)
        replies = [c.recv() for _ in range(4)]
        assert srv.stats()["handler_errors"] == 0
    assert replies == [ints.tobytes(), doubles.tobytes(), b"abc", b"plain"]


def worker_of_newest(srv: Server, before: list[int]) -> int:
    """The worker the connection just opened landed on (its accepted count went up)."""
    grown: list[int] = []

    def landed() -> bool:
        now = [w["connections_accepted"] for w in srv.stats()["per_worker"]]
        grown[:] = [i for i, (a, b) in enumerate(zip(before, now)) if b > a]
        return bool(grown)

    wait_for(landed, "the new connection accepted")
    assert len(grown) == 1
    return grown[0]


@pytest.mark.parametrize("block", ["until-released", "sleeps-1s"])
def test_a_blocking_handler_holds_up_only_its_own_worker(block: str) -> None:
    """While the handler blocks on one worker, the other answers; nothing is lost after."""
    inside = threading.Event()
    release = threading.Event()

    def handler(message: bytes) -> bytes:
        if message == b"block":
            inside.set()
            if block == "sleeps-1s":
                time.sleep(1.0)
            else:
                assert release.wait(30), "never released"
            inside.clear()
            return b"unblocked"
        return message

    with serving(handler) as srv:
        per_worker = [0] * WORKERS
        clients: list[Client] = []
        workers: list[int] = []
        try:
            # Connect until the first connection's worker holds a second one (its
            # neighbour) and the other worker holds one too.
            for _ in range(10):
                clients.append(framed(srv.address, LINES))
                workers.append(worker_of_newest(srv, per_worker))
                per_worker[workers[-1]] += 1
                if workers.count(workers[0]) >= 2 and len(set(workers)) == WORKERS:
                    break
            else:
                pytest.fail(f"10 connections did not spread over both workers: {workers}")
            blocked, neighbour = clients[0], clients[workers.index(workers[0], 1)]
            other = clients[next(i for i, w in enumerate(workers) if w != workers[0])]

            blocked.send(b"block")
            assert inside.wait(20), "the handler was never called"
            neighbour.send(b"waits its turn")
            # The other worker answers while the handler is still blocked.
            answered_during = 0
            for i in range(50):
                assert other.request(b"ping %d" % i) == b"ping %d" % i
                if not inside.is_set():
                    break
                answered_during += 1
            assert answered_during >= 1, "no reply from the other worker during the block"
            if block == "until-released":
                assert answered_during == 50
                assert inside.is_set()
                release.set()
            # The blocked connection and its neighbour lose nothing.
            assert blocked.recv() == b"unblocked"
            assert neighbour.recv() == b"waits its turn"
            assert srv.stats()["handler_errors"] == 0
        finally:
            release.set()
            for client in clients:
                client.close()


def test_forty_poisoned_clients_among_two_hundred_leave_the_rest_byte_exact() -> None:
    """Under load, on both workers: each poisoned client is closed, the others unharmed."""
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)

    def handler(message: bytes) -> bytes:
        if message == b"poison":
            raise ValueError("poisoned")
        return message[::-1]

    good = [
        [random_payload(rng, rng.randint(0, 3000), LINES) for _ in range(rng.randint(1, 30))]
        for _ in range(160)
    ]
    bad = 40

    async def poisoned_client(address: Address) -> bytes:
        reader, writer = await asyncio.open_connection(*address)
        try:
            writer.write(b"one\ntwo\npoison\nthree\n")
            return await asyncio.wait_for(reader.read(), 60)
        except ConnectionResetError:  # "three" may arrive after the server closed
            return b""
        finally:
            writer.close()

    async def everyone(address: Address) -> list[bytes]:
        results = await asyncio.gather(
            many(address, LINES, good, seed=seed, reply=lambda m: m[::-1]),
            *(poisoned_client(address) for _ in range(bad)),
        )
        return [r for r in results[1:] if isinstance(r, bytes)]

    with serving(handler) as srv:
        seen = asyncio.run(everyone(srv.address))
        wait_stats(srv, "every client closed", lambda s: s["connections_closed"] == 200)
        stats = srv.stats()
    # Replies to the messages before the poison may or may not have gone out.
    assert all(b"eerht" not in r for r in seen), "a message after the poison was answered"
    assert all(r in (b"", b"eno\n", b"eno\nowt\n") for r in seen), seen
    assert stats["handler_errors"] == bad
    assert stats["frame_errors"] == stats["io_errors"] == 0


def test_a_handler_waiting_on_its_own_server_is_refused_not_hung() -> None:
    refusals: list[str] = []
    servers: list[Server] = []

    def handler(message: bytes) -> bytes:
        own = servers[0]
        for wait in (lambda: own.wait(0.1), own.serve_forever):
            try:
                wait()
            except RuntimeError as e:
                refusals.append(str(e))
        return message

    with Server(handler, host="127.0.0.1", port=0, framing=LINES) as srv:
        servers.append(srv)
        with framed(srv.address, LINES) as client:
            assert client.request(b"hello") == b"hello"
        assert srv.stats()["handler_errors"] == 0
    assert len(refusals) == 2, refusals
    assert all("own handler" in r for r in refusals), refusals
