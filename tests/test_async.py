"""``async def`` callbacks: a protocol's ``message_received`` and a function handler,
awaited on an asyncio loop (the running one for ``async with``, else a thread of the
server's own), one message at a time per connection, connections concurrently; and
``await Connection.drain()``."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any, ClassVar

import pytest
from helpers import connect, framed, wait_for
from iocp_echo import Connection, ConnectionClosed, Framing, Protocol, Server

LINES = Framing.lines()
LOOP_THREAD = "iocp_echo-asyncio"


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == LOOP_THREAD]


class Sleeper(Protocol):
    """Replies ``message`` after sleeping a little (longer for earlier frames)."""

    lost: ClassVar[list[BaseException | None]] = []
    threads: ClassVar[set[int]] = set()

    def connection_made(self, conn: Connection) -> None:
        self.conn = conn

    async def message_received(self, message: bytes) -> bytes:
        type(self).threads.add(threading.get_ident())
        await asyncio.sleep(0.001 * (int(message.split(b" ")[-1]) % 5))
        return b"re " + message

    def connection_lost(self, exc: BaseException | None) -> None:
        type(self).lost.append(exc)


def test_async_replies_come_in_frame_order_per_connection_on_a_loop_thread() -> None:
    class Recorded(Sleeper):
        lost: ClassVar[list[BaseException | None]] = []
        threads: ClassVar[set[int]] = set()

    with Server(protocol=Recorded, framing=LINES, port=0) as srv:
        clients = [framed(srv.address, LINES) for _ in range(3)]
        for n, client in enumerate(clients):
            client.send_many(b"c%d m %d" % (n, i) for i in range(20))
        for n, client in enumerate(clients):
            replies = [client.recv() for _ in range(20)]
            assert replies == [b"re c%d m %d" % (n, i) for i in range(20)]
        assert len(loop_threads()) == 1
        for client in clients:
            client.close()
        wait_for(lambda: len(Recorded.lost) == 3, "connection_lost")
    assert Recorded.lost == [None] * 3
    assert len(Recorded.threads) == 1, "one loop thread"
    assert threading.get_ident() not in Recorded.threads
    assert loop_threads() == [], "the loop thread is joined on close"


def test_connections_run_concurrently() -> None:
    # One connection's coroutine waits for an event that only the other's sets: with
    # connections handled one after the other, this would never finish.
    gate: dict[str, asyncio.Event] = {}

    async def handler(message: bytes) -> bytes:
        event = gate.setdefault("event", asyncio.Event())
        if message == b"wait":
            await event.wait()
            return b"waited"
        event.set()
        return b"set"

    with Server(handler, framing=LINES, port=0) as srv:
        waiting, setting = framed(srv.address, LINES), framed(srv.address, LINES)
        waiting.send(b"wait")
        wait_for(lambda: "event" in gate, "the first coroutine running")
        assert setting.request(b"set") == b"set"
        assert waiting.recv() == b"waited"
        waiting.close()
        setting.close()


def test_an_async_function_handler_keeps_order() -> None:
    async def upper(message: bytes) -> bytes:
        await asyncio.sleep(0.002 if message.endswith(b"0") else 0)
        return message.upper()

    with Server(upper, framing=LINES, port=0) as srv, framed(srv.address, LINES) as client:
        client.send_many(b"m%d" % i for i in range(30))
        assert [client.recv() for _ in range(30)] == [b"M%d" % i for i in range(30)]


def test_an_async_server_restarted_after_close_serves_on_a_new_loop_thread() -> None:
    async def upper(message: bytes) -> bytes:
        await asyncio.sleep(0)
        return message.upper()

    srv = Server(upper, framing=LINES, port=0)
    for round_ in range(2):
        srv.start()
        try:
            with framed(srv.address, LINES) as client:
                client.send_many([b"a%d" % round_, b"b%d" % round_])
                assert [client.recv(), client.recv()] == [b"A%d" % round_, b"B%d" % round_]
        finally:
            srv.close()
        # The loop thread of that run was stopped and joined.
        assert loop_threads() == []


def test_a_coroutine_that_raises_closes_only_its_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lost: list[BaseException | None] = []

    class Fragile(Protocol):
        async def message_received(self, message: bytes) -> bytes:
            await asyncio.sleep(0)
            if message == b"boom":
                raise ValueError("boom")
            return message

        def connection_lost(self, exc: BaseException | None) -> None:
            lost.append(exc)

    with caplog.at_level(logging.ERROR, "iocp_echo"):
        with Server(protocol=Fragile, framing=LINES, port=0) as srv:
            bad, good = framed(srv.address, LINES), framed(srv.address, LINES)
            bad.send_many([b"one", b"boom", b"never"])  # in one write
            assert bad.recv() == b"one"
            assert list(bad) == []  # then a clean end of stream: "never" is not answered
            wait_for(lambda: len(lost) == 1, "connection_lost of the failed connection")
            assert good.request(b"still") == b"still"
            good.close()
            bad.close()
            wait_for(lambda: len(lost) == 2, "connection_lost of the other")
    assert isinstance(lost[0], ValueError), lost
    assert lost[1] is None
    assert "message_received failed" in caplog.text
    assert "ValueError: boom" in caplog.text


def test_async_with_uses_the_running_loop() -> None:
    seen: dict[str, Any] = {}

    class OnLoop(Protocol):
        async def message_received(self, message: bytes) -> bytes:
            seen["thread"] = threading.get_ident()
            seen["loop"] = asyncio.get_running_loop()
            await asyncio.sleep(0)
            return message[::-1]

    async def main() -> None:
        seen["main"] = threading.get_ident()
        async with Server(protocol=OnLoop, framing=LINES, port=0) as srv:
            reader, writer = await asyncio.open_connection(*srv.address)
            writer.write(b"abc\nxyz\n")
            assert await reader.readline() == b"cba\n"
            assert await reader.readline() == b"zyx\n"
            writer.close()
            seen["running_loop"] = asyncio.get_running_loop()
            closer = asyncio.get_running_loop().call_later(0.05, srv.close)
            await srv.wait_closed()
            closer.cancel()
            assert not srv.running

    asyncio.run(main())
    assert seen["thread"] == seen["main"]
    assert seen["loop"] is seen["running_loop"]
    assert loop_threads() == []


def test_drain_right_after_a_send_past_high_water_waits_for_the_worker() -> None:
    # The send returns before the connection's worker has taken it, so the pause
    # it causes has not happened yet when drain() looks: drain must wait anyway.
    big = b"b" * (2 << 20)
    after: list[int] = []

    class Pusher(Protocol):
        def connection_made(self, conn: Connection) -> None:
            self.conn = conn

        async def message_received(self, message: bytes) -> bytes:
            self.conn.send(big)
            await self.conn.drain()
            after.append(self.conn.write_buffer_size)
            return b"drained"

    options: dict[str, Any] = {"high_water": 64 << 10, "low_water": 16 << 10}
    with Server(protocol=Pusher, framing=LINES, port=0, **options) as srv:
        with framed(srv.address, LINES) as client:
            for _ in range(5):
                client.send(b"go")
                assert client.recv() == big
                assert client.recv() == b"drained"
    assert len(after) == 5
    assert all(size <= 16 << 10 for size in after), after


def test_drain_waits_for_resume_and_raises_once_closed() -> None:
    chunk = b"d" * 4095
    count = 6_000  # 24 MiB: more than loopback's kernel buffers and high_water hold
    options: dict[str, Any] = {"high_water": 64 << 10, "low_water": 16 << 10}
    options["max_output"] = 64 << 20
    paused = threading.Event()
    after: dict[str, Any] = {}

    class Flooder(Protocol):
        def connection_made(self, conn: Connection) -> None:
            self.conn = conn

        def pause_writing(self) -> None:
            paused.set()

        async def message_received(self, message: bytes) -> bytes | None:
            for _ in range(count):
                self.conn.send(chunk)
            while not paused.is_set():
                await asyncio.sleep(0.001)
            if message == b"background":
                # A close cancels the connection's running coroutine; a task of its
                # own that drains hears the close as ConnectionClosed.
                after["task"] = asyncio.ensure_future(self.drain_in_background())
                return None
            await self.conn.drain()
            after["size"] = self.conn.write_buffer_size
            return b"drained"

        async def drain_in_background(self) -> None:
            try:
                await self.conn.drain()
            except ConnectionClosed as exc:
                after["closed"] = exc

    with Server(protocol=Flooder, framing=LINES, port=0, **options) as srv:
        with framed(srv.address, LINES) as client:
            client.send(b"go")  # and read nothing until the server has paused
            assert paused.wait(30)
            assert [client.recv() for _ in range(count + 1)] == [chunk] * count + [b"drained"]
        assert after["size"] <= 16 << 10

        # Closed while waiting: drain raises ConnectionClosed.
        paused.clear()
        sock = connect(srv.address)  # raw: closed by a reset (SO_LINGER 0) below
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.sendall(b"background\n")
        assert paused.wait(30)
        wait_for(lambda: "task" in after, "the draining task")
        sock.close()
        wait_for(lambda: "closed" in after, "drain raising")
    assert isinstance(after["closed"], ConnectionClosed)
