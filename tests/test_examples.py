"""The examples in ``examples/``, each run as a real process, talked to by the framed
clients (``iocp_echo.connect``, ``open_connection``) as their docstrings show."""

from __future__ import annotations

import ast
import asyncio
import doctest
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import Address, wait_for
from iocp_echo import Client, Framing, connect, open_connection
from server_process import FORCED, ServerProcess, running

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
LINES = Framing.lines()
LENGTH = Framing.length_prefixed(4)


def client(address: Address, framing: Framing) -> Client:
    """A framed client of the example (a generous timeout: a hang fails)."""
    return connect(address, framing=framing, timeout=30)


def expect_closed(refused: Client) -> None:
    """The server closes the connection with nothing more to read."""
    try:
        rest = list(refused)
    except ConnectionResetError:
        rest = []
    assert rest == []


@contextmanager
def example(name: str) -> Iterator[ServerProcess]:
    """``python examples/<name> --port 0`` running; stopped with SIGINT after, exit code 0."""
    with running([sys.executable, str(EXAMPLES / name), "--port", "0"]) as server:
        if FORCED is not None:
            assert server.backend == FORCED
        yield server
        code, stderr = server.stop(signal.SIGINT)
    assert code == 0, stderr
    assert "Traceback" not in stderr, stderr


def join(address: Address, nick: bytes, here: bytes) -> Client:
    member = client(address, LINES)
    assert member.recv() == b"nickname?"
    assert member.request(nick) == b"welcome " + nick + b"; here: " + here
    return member


def test_chat() -> None:
    with example("chat.py") as server:
        alice = join(server.address, b"alice", b"nobody")
        bob = join(server.address, b"bob", b"alice")
        assert alice.recv() == b"* bob joined"
        carol = join(server.address, b"carol", b"alice, bob")
        assert alice.recv() == b"* carol joined"
        assert bob.recv() == b"* carol joined"

        # A line reaches the others, not its sender.
        alice.send(b"hello all")
        assert bob.recv() == b"alice: hello all"
        assert carol.recv() == b"alice: hello all"
        bob.send(b"hi alice \x00\xff")
        assert alice.recv() == b"bob: hi alice \x00\xff"  # not her own line first
        assert carol.recv() == b"bob: hi alice \x00\xff"

        # A taken or empty nickname: refused, then closed.
        for nick, refusal in [
            (b"alice", b"ERR nickname taken: alice"),
            (b"", b"ERR empty nickname"),
            (b"  ", b"ERR empty nickname"),
        ]:
            with client(server.address, LINES) as refused:
                assert refused.recv() == b"nickname?"
                assert refused.request(nick) == refusal
                expect_closed(refused)

        # Leaving: the others are told; lines go on between those left.
        carol.close()
        assert alice.recv() == b"* carol left"
        assert bob.recv() == b"* carol left"
        alice.send(b"bye")
        assert bob.recv() == b"alice: bye"
        # Nothing else came: bob's line is alice's next one (no copy of her own, no
        # notice of the refused clients).
        bob.send(b"see you")
        assert alice.recv() == b"bob: see you"
        alice.close()
        assert bob.recv() == b"* alice left"
        bob.close()


def test_pubsub() -> None:
    with example("pubsub.py") as server:
        news1, news2, sport, publisher = (client(server.address, LENGTH) for _ in range(4))
        assert news1.request(b"SUB news") == b"OK"
        assert news2.request(b"SUB news") == b"OK"
        assert sport.request(b"SUB sport") == b"OK"

        # A publish reaches the topic's subscribers only; the publisher learns how many.
        assert publisher.request(b"PUB news hello  world") == b"OK 2"
        assert news1.recv() == b"news hello  world"
        assert news2.recv() == b"news hello  world"
        binary = bytes(range(256))
        assert publisher.request(b"PUB sport " + binary) == b"OK 1"
        assert sport.recv() == b"sport " + binary
        assert publisher.request(b"PUB weather ") == b"OK 0"

        # A subscribed publisher gets its own copy, before its answer.
        assert news1.request(b"PUB news mine") == b"news mine"
        assert news1.recv() == b"OK 2"
        assert news2.recv() == b"news mine"

        # Unsubscribed: no more deliveries (its next frame is the answer to its own command).
        assert news2.request(b"UNSUB news") == b"OK"
        assert news2.request(b"UNSUB news") == b"OK"  # not subscribed: still OK
        assert publisher.request(b"PUB news again") == b"OK 1"
        assert news1.recv() == b"news again"
        assert news2.request(b"PUB nobody x") == b"OK 0"
        assert sport.request(b"PUB nobody y") == b"OK 0"  # nothing of news reached sport

        # Bad commands are answered, and the connection stays open.
        for bad, answer in [
            (b"HELLO there", b"ERR unknown command: HELLO"),
            (b"", b"ERR unknown command: "),
            (b"PUB news", b"ERR usage: PUB topic payload"),
            (b"PUB  x", b"ERR usage: PUB topic payload"),
            (b"SUB", b"ERR usage: SUB topic"),
            (b"UNSUB a b", b"ERR usage: UNSUB topic"),
        ]:
            assert publisher.request(bad) == answer
        assert publisher.request(b"PUB sport still here") == b"OK 1"
        assert sport.recv() == b"sport still here"

        # A subscriber that leaves is unsubscribed (once its connection_lost has run).
        news1.close()
        wait_for(lambda: publisher.request(b"PUB news gone") == b"OK 0", "news1 unsubscribed")
        for subscriber in (news2, sport, publisher):
            # Nothing else came: its next frame is the answer to its own command.
            assert subscriber.request(b"PUB nobody z") == b"OK 0"
            subscriber.close()


def test_async_echo() -> None:
    async def talk(address: Address) -> None:
        first = await open_connection(address, framing="lines", timeout=30)
        second = await open_connection(address, framing="lines", timeout=30)
        for line in [b"one", b"two", b"three"]:
            await first.send(line)
        await second.send(b"other")
        assert [await first.recv() for _ in range(3)] == [b"1: ONE", b"2: TWO", b"3: THREE"]
        assert await second.recv() == b"1: OTHER"
        assert await first.request(b"four\r") == b"4: FOUR"
        await first.aclose()
        await second.aclose()

    with example("async_echo.py") as server:
        asyncio.run(talk(server.address))


@pytest.mark.parametrize("name,port", [("chat.py", 7000), ("pubsub.py", 7001)])
def test_the_docstring_session_runs(name: str, port: int) -> None:
    """The ``>>>`` session of the example's docstring, against the example on its real port."""
    text = ast.get_docstring(ast.parse((EXAMPLES / name).read_text()))
    assert text is not None and ">>>" in text
    with example(name) as server:
        session = text.replace(f'("127.0.0.1", {port})', repr(server.address))
        test = doctest.DocTestParser().get_doctest(session, {}, name, name, 0)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        output: list[str] = []
        result = runner.run(test, out=output.append)
    assert result.failed == 0, "".join(output)
    assert result.attempted >= 4
