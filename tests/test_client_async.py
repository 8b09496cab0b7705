"""The asyncio framed client (``await iocp_echo.open_connection``) against the real server
and against tests/rogue_server.py: the same cases as tests/test_client.py, awaited, and
what is asyncio's own (``async for``, ``async with``, ``close``/``wait_closed``/``aclose``,
a send that timed out staying open, many clients in one loop)."""

from __future__ import annotations

import asyncio
import random
import shutil
import sys
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from iocp_echo import (
    AsyncClient,
    ConnectionClosed,
    FrameTooLarge,
    Framing,
    FramingError,
    Server,
    open_connection,
)
from rogue_server import hold, rogue, send_then_close
from test_client import FRAMINGS, LENGTH, LINES, Closer, random_messages
from tls_client import client_context, server_tls


def run(step: Coroutine[Any, Any, None]) -> None:
    """Run ``step`` to its end on a new loop, bounded so a hang fails."""

    async def bounded() -> None:
        await asyncio.wait_for(step, 60)

    asyncio.run(bounded())


async def exchange(client: AsyncClient, messages: list[bytes]) -> None:
    """Each message as a request (raw: the echo read back by length), then all pipelined,
    received by another task while this one sends."""
    if client.framing.kind == "raw":
        for message in messages:
            await client.send(message)
            echoed = b""
            while len(echoed) < len(message):
                echoed += await client.recv()
            assert echoed == message
        return
    for message in messages:
        assert await client.request(message) == message

    async def receive() -> list[bytes]:
        return [await client.recv() for _ in messages]

    receiver = asyncio.ensure_future(receive())
    for message in messages:
        await client.send(message)
    assert await receiver == messages
    receiver = asyncio.ensure_future(receive())
    await client.send_many(messages)  # in one write
    assert await receiver == messages


@pytest.mark.parametrize("name", FRAMINGS)
def test_every_framing_echoes_random_sizes_byte_exact(name: str) -> None:
    framing = FRAMINGS[name]
    seed = random.randrange(1 << 32)
    messages = random_messages(random.Random(seed), framing, 40)

    async def talk(address: tuple[str, int]) -> None:
        async with await open_connection(address, framing=framing, timeout=30) as client:
            assert client.get_extra_info("peername")[:2] == address
            await exchange(client, messages)
        assert client.closed

    with Server(None, port=0, framing=framing) as srv:
        run(talk(srv.address))


def test_async_for_ends_and_recv_raises_at_a_clean_end_of_stream() -> None:
    async def talk(address: tuple[str, int]) -> None:
        client = await open_connection(address, framing="lines", timeout=30)
        for message in [b"one", b"two", b"bye"]:
            await client.send(message)
        assert [m async for m in client] == [b"one", b"two", b"bye"]
        with pytest.raises(ConnectionClosed, match="end of stream"):
            await client.recv()
        client.close()
        await client.wait_closed()
        await client.aclose()  # idempotent

    with Server(protocol=Closer, port=0, framing=LINES) as srv:
        run(talk(srv.address))


def test_timeouts_raise_the_builtin_timeout_error() -> None:
    def quiet_on_wait(message: bytes) -> bytes | None:
        return None if message == b"wait" else message

    async def talk(address: tuple[str, int]) -> None:
        async with await open_connection(address, framing=LENGTH, timeout=0.2) as client:
            await client.send(b"wait")
            with pytest.raises(TimeoutError, match="recv timed out"):
                await client.recv()
            assert await client.request(b"after") == b"after"

    with Server(quiet_on_wait, port=0, framing=LENGTH) as srv:
        run(talk(srv.address))


def test_a_timed_out_send_leaves_its_frame_queued_and_the_client_open() -> None:
    release = threading.Event()

    async def talk(address: tuple[str, int]) -> None:
        async with await open_connection(address, framing=LENGTH, timeout=0.2) as client:
            with pytest.raises(TimeoutError, match="send timed out"):
                for _ in range(10_000):  # until the transport's buffer is over its limit
                    await client.send(bytes(1 << 16))
            assert not client.closed
            with pytest.raises(TimeoutError, match=r"connect to .* timed out"):
                await open_connection(address, tls=client_context(), timeout=0.2)

    with rogue(hold(release)) as address:
        try:
            run(talk(address))
        finally:
            release.set()


def test_a_frame_cut_by_the_server_says_how_much_arrived() -> None:
    stream = LENGTH.encode(b"whole") + LENGTH.encode(b"x" * 100)[:30]

    async def talk(address: tuple[str, int]) -> None:
        async with await open_connection(address, framing=LENGTH, timeout=30) as client:
            received = []
            with pytest.raises(FramingError) as raised:
                async for message in client:
                    received.append(message)
            assert received == [b"whole"]
            assert "mid-frame" in str(raised.value)
            assert "30 bytes of it received" in str(raised.value)
            assert client.closed
            with pytest.raises(ConnectionClosed):
                await client.recv()

    with rogue(send_then_close(stream)) as address:
        run(talk(address))


def test_a_reply_over_max_frame_raises_and_closes() -> None:
    async def talk(address: tuple[str, int]) -> None:
        client = await open_connection(address, framing=LENGTH, max_frame=100, timeout=30)
        with pytest.raises(FrameTooLarge, match="101 bytes is over the limit of 100 bytes"):
            await client.request(b"b" * 101)
        assert client.closed
        with pytest.raises(ConnectionClosed, match="the client is closed"):
            await client.send(b"more")
        await client.wait_closed()

    with Server(None, port=0, framing=LENGTH) as srv:
        run(talk(srv.address))


def test_a_message_the_framing_cannot_carry_is_refused_before_sending() -> None:
    async def talk(address: tuple[str, int]) -> None:
        async with await open_connection(address, framing=Framing.lines()) as client:
            with pytest.raises(FramingError, match="delimiter"):
                await client.send(b"two\nlines")
            with pytest.raises(FramingError, match="delimiter"):
                await client.send_many([b"fine", b"two\nlines"])
            assert await client.request(bytearray(b"fine")) == b"fine"

    with Server(None, port=0, framing=LINES) as srv:
        run(talk(srv.address))


@pytest.mark.parametrize("name", ["lines", "length"])
def test_tls_echo_byte_exact(name: str) -> None:
    framing = FRAMINGS[name]
    messages = random_messages(random.Random(), framing, 20)

    async def talk(address: tuple[str, int]) -> None:
        context = client_context()
        async with await open_connection(address, framing=framing, tls=context) as client:
            assert client.get_extra_info("ssl_object") is not None
            await exchange(client, messages)

    with Server(None, port=0, framing=framing, tls=server_tls()) as srv:
        run(talk(srv.address))


@pytest.fixture
def folder() -> Iterator[Path]:
    """A short temporary folder (a socket path is at most 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="iocp-aclient-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(sys.platform != "linux", reason="Unix sockets: Linux only")
def test_unix_socket_plain_and_tls(folder: Path) -> None:
    plain, secure = folder / "plain.sock", folder / "tls.sock"

    async def talk() -> None:
        async with await open_connection(str(plain), framing=LENGTH, timeout=30) as client:
            await exchange(client, [b"x", b"", bytes(range(256)) * 1000])
        with pytest.raises(ValueError, match="server_hostname must be given"):
            await open_connection(secure, framing=LINES, tls=client_context())
        async with await open_connection(
            secure, framing=LINES, tls=client_context(), server_hostname="localhost"
        ) as client:
            assert await client.request(b"secret") == b"secret"

    with (
        Server(None, path=plain, framing=LENGTH),
        Server(None, path=secure, framing=LINES, tls=server_tls()),
    ):
        run(talk())


def test_many_clients_in_one_loop() -> None:
    seed = random.randrange(1 << 32)

    async def one(address: tuple[str, int], i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        async with await open_connection(address, framing=LENGTH, timeout=30) as client:
            for message in random_messages(rng, LENGTH, 20):
                assert await client.request(message) == message, f"seed {seed}"

    async def crowd(address: tuple[str, int]) -> None:
        await asyncio.gather(*(one(address, i) for i in range(20)))

    with Server(None, port=0, framing=LENGTH, workers=2) as srv:
        run(crowd(srv.address))
