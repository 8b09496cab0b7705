"""Server.broadcast: every open connection gets the payload framed once, `exclude`
leaves some out, the count is right, and the one buffer is shared, not copied per
connection."""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
from helpers import framed, wait_for
from iocp_echo import Client, Connection, Framing, FramingError, Protocol, Server

LINES = Framing.lines()


class Registry:
    """The connections a protocol server made, by the client's address."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_peer: dict[tuple[str, int] | str, Connection] = {}

    def protocol(self) -> type[Protocol]:
        registry = self

        class Echo(Protocol):
            def connection_made(self, conn: Connection) -> None:
                with registry.lock:
                    registry.by_peer[conn.peer] = conn

            def message_received(self, message: bytes) -> bytes:
                return message

        return Echo

    def of(self, client: Client) -> Connection:
        peer = client.socket.getsockname()[:2]
        wait_for(lambda: peer in self.by_peer, "the connection to be made")
        return self.by_peer[peer]


@contextmanager
def clients(srv: Server, registry: Registry, count: int) -> Iterator[list[Client]]:
    """``count`` framed clients of ``srv``, each known to ``registry``; closed after."""
    with ExitStack() as stack:
        members = [stack.enter_context(framed(srv.address, LINES)) for _ in range(count)]
        for member in members:
            registry.of(member)
        yield members


def test_broadcast_reaches_every_connection_and_exclude_leaves_some_out() -> None:
    registry = Registry()
    with Server(protocol=registry.protocol(), port=0, framing=LINES, workers=3) as srv:
        with clients(srv, registry, 50) as members:
            conns = [registry.of(member) for member in members]
            assert srv.broadcast(b"all") == 50
            assert srv.broadcast(bytearray(b"not 0"), exclude=conns[0]) == 49
            assert srv.broadcast(memoryview(b"not 1 2"), exclude=[conns[1], conns[2].id]) == 48
            assert srv.broadcast(b"not 3", exclude=conns[3].id) == 49
            assert srv.broadcast(b"none", exclude=iter(conns)) == 0
            assert srv.broadcast(b"last") == 50
            for i, member in enumerate(members):
                # Broadcasts arrive in order: the excluded got none before "last".
                want = [b"all"]
                want += [b"not 0"] if i != 0 else []
                want += [b"not 1 2"] if i not in (1, 2) else []
                want += [b"not 3"] if i != 3 else []
                want.append(b"last")
                assert [member.recv() for _ in want] == want, i
            members[0].close()
            wait_for(lambda: conns[0].closed, "the closed connection to be lost")
            assert srv.broadcast(b"after") == 49
        # Refused by the codec: raised, queued nowhere.
        with pytest.raises(FramingError):
            srv.broadcast(b"two\nlines")
    assert srv.broadcast(b"closed") == 0


def test_bad_arguments() -> None:
    registry = Registry()
    with Server(protocol=registry.protocol(), port=0, framing=LINES) as srv:
        with pytest.raises(TypeError):
            srv.broadcast(None)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            srv.broadcast("text")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="exclude"):
            srv.broadcast(b"x", exclude="abc")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="exclude"):
            srv.broadcast(b"x", exclude=[1.5])  # type: ignore[list-item]


def test_a_function_handler_server_has_no_one_to_broadcast_to() -> None:
    with Server(lambda m: m, port=0, framing=LINES) as srv, framed(srv.address, LINES) as c:
        assert c.request(b"hi") == b"hi"
        assert srv.broadcast(b"x") == 0


def test_a_callback_broadcasts_to_the_others() -> None:
    registry = Registry()

    class Chat(Protocol):
        def connection_made(self, conn: Connection) -> None:
            self.conn = conn
            with registry.lock:
                registry.by_peer[conn.peer] = conn

        def message_received(self, message: bytes) -> None:
            self.conn.server.broadcast(b"%d: %s" % (self.conn.id, message), exclude=self.conn)

    with Server(protocol=Chat, port=0, framing=LINES, workers=2) as srv:
        with clients(srv, registry, 5) as members:
            speaker = registry.of(members[0])
            members[0].send(b"hello")
            for member in members[1:]:
                assert member.recv() == b"%d: hello" % speaker.id
            members[1].send(b"back")
            assert members[0].recv() == b"%d: back" % registry.of(members[1]).id


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_the_payload_is_shared_not_copied_per_connection() -> None:
    size, count = 4 << 20, 50
    payload = bytes(range(256)) * (size // 256)
    registry = Registry()
    options: dict[str, Any] = {"max_output": 2 * size}
    with Server(protocol=registry.protocol(), port=0, framing=LINES, workers=2, **options) as srv:
        with clients(srv, registry, count) as members:
            conns = [registry.of(member) for member in members]
            before = resident_bytes()
            assert srv.broadcast(payload.replace(b"\n", b"!")) == count

            # Every worker has taken it: queued (a copy per connection would be
            # allocated and filled by now, as nobody reads yet), or already all in the
            # kernel's socket buffers (loopback can take 4 MiB), so readable.
            def taken(conn: Connection, member: Client) -> bool:
                readable = select.select([member.socket], [], [], 0)[0]
                return conn.write_buffer_size > 0 or bool(readable)

            wait_for(lambda: all(map(taken, conns, members)), "the output queued or sent")
            grown = resident_bytes() - before
            copies = size * count
            assert grown < copies // 8, f"RSS grew {grown >> 20} MiB for {count} receivers"
            want = payload.replace(b"\n", b"!")
            for member in members:
                assert member.recv() == want
