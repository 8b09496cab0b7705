"""The examples in ``examples/``, each run as a real process with real clients."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import Address, connect, wait_for
from iocp_echo import Framing
from server_process import FORCED, ServerProcess, running

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
LINES = Framing.lines()
LENGTH = Framing.length_prefixed(4)


class Client:
    """A blocking client that sends and reads whole frames of one framing."""

    def __init__(self, address: Address, framing: Framing) -> None:
        self.sock = connect(address)
        self.framing = framing
        self.decoder = framing.decoder()
        self.pending: list[bytes] = []

    def send(self, payload: bytes) -> None:
        self.sock.sendall(self.framing.encode(payload))

    def recv(self) -> bytes:
        """The next frame (fails if the server closes first)."""
        while not self.pending:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                pytest.fail("the server closed the connection")
            self.pending.extend(self.decoder.feed(chunk))
        return self.pending.pop(0)

    def ask(self, payload: bytes) -> bytes:
        """Send ``payload``; the next frame."""
        self.send(payload)
        return self.recv()

    def expect_closed(self) -> None:
        """The server closes the connection with nothing more to read."""
        assert self.pending == []
        try:
            rest = self.sock.recv(1 << 16)
        except ConnectionResetError:
            rest = b""
        assert rest == b""

    def close(self) -> None:
        self.sock.close()


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
    client = Client(address, LINES)
    assert client.recv() == b"nickname?"
    assert client.ask(nick) == b"welcome " + nick + b"; here: " + here
    return client


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
            refused = Client(server.address, LINES)
            assert refused.recv() == b"nickname?"
            assert refused.ask(nick) == refusal
            refused.expect_closed()
            refused.close()

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
        assert alice.pending == bob.pending == []
        alice.close()
        assert bob.recv() == b"* alice left"
        bob.close()


def test_pubsub() -> None:
    with example("pubsub.py") as server:
        news1, news2, sport, publisher = (Client(server.address, LENGTH) for _ in range(4))
        assert news1.ask(b"SUB news") == b"OK"
        assert news2.ask(b"SUB news") == b"OK"
        assert sport.ask(b"SUB sport") == b"OK"

        # A publish reaches the topic's subscribers only; the publisher learns how many.
        assert publisher.ask(b"PUB news hello  world") == b"OK 2"
        assert news1.recv() == b"news hello  world"
        assert news2.recv() == b"news hello  world"
        binary = bytes(range(256))
        assert publisher.ask(b"PUB sport " + binary) == b"OK 1"
        assert sport.recv() == b"sport " + binary
        assert publisher.ask(b"PUB weather ") == b"OK 0"

        # A subscribed publisher gets its own copy, before its answer.
        assert news1.ask(b"PUB news mine") == b"news mine"
        assert news1.recv() == b"OK 2"
        assert news2.recv() == b"news mine"

        # Unsubscribed: no more deliveries (its next frame is the answer to its own command).
        assert news2.ask(b"UNSUB news") == b"OK"
        assert news2.ask(b"UNSUB news") == b"OK"  # not subscribed: still OK
        assert publisher.ask(b"PUB news again") == b"OK 1"
        assert news1.recv() == b"news again"
        assert news2.ask(b"PUB nobody x") == b"OK 0"
        assert sport.ask(b"PUB nobody y") == b"OK 0"  # nothing of news reached sport

        # Bad commands are answered, and the connection stays open.
        for bad, answer in [
            (b"HELLO there", b"ERR unknown command: HELLO"),
            (b"", b"ERR unknown command: "),
            (b"PUB news", b"ERR usage: PUB topic payload"),
            (b"PUB  x", b"ERR usage: PUB topic payload"),
            (b"SUB", b"ERR usage: SUB topic"),
            (b"UNSUB a b", b"ERR usage: UNSUB topic"),
        ]:
            assert publisher.ask(bad) == answer
        assert publisher.ask(b"PUB sport still here") == b"OK 1"
        assert sport.recv() == b"sport still here"

        # A subscriber that leaves is unsubscribed (once its connection_lost has run).
        news1.close()
        wait_for(lambda: publisher.ask(b"PUB news gone") == b"OK 0", "news1 unsubscribed")
        for client in (news2, sport, publisher):
            assert client.pending == []
            client.close()


def test_async_echo() -> None:
    with example("async_echo.py") as server:
        first, second = Client(server.address, LINES), Client(server.address, LINES)
        for line in [b"one", b"two", b"three"]:
            first.send(line)
        second.send(b"other")
        assert [first.recv() for _ in range(3)] == [b"1: ONE", b"2: TWO", b"3: THREE"]
        assert second.recv() == b"1: OTHER"
        assert first.ask(b"four\r") == b"4: FOUR"
        first.close()
        second.close()
