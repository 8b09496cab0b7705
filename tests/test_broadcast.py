"""Server.broadcast: every open connection gets the payload framed once, `exclude`
leaves some out, the count is right, and the one buffer is shared, not copied per
connection."""

from __future__ import annotations

import os
import select
import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
from helpers import connect, recv_frames, wait_for
from iocp_echo import Connection, Framing, FramingError, Protocol, Server

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

    def of(self, sock: socket.socket) -> Connection:
        peer = sock.getsockname()[:2]
        wait_for(lambda: peer in self.by_peer, "the connection to be made")
        return self.by_peer[peer]


@contextmanager
def clients(srv: Server, registry: Registry, count: int) -> Iterator[list[socket.socket]]:
    with ExitStack() as stack:
        socks = [stack.enter_context(connect(srv.address)) for _ in range(count)]
        for sock in socks:
            registry.of(sock)
        yield socks


def test_broadcast_reaches_every_connection_and_exclude_leaves_some_out() -> None:
    registry = Registry()
    with Server(protocol=registry.protocol(), port=0, framing=LINES, workers=3) as srv:
        with clients(srv, registry, 50) as socks:
            conns = [registry.of(sock) for sock in socks]
            assert srv.broadcast(b"all") == 50
            assert srv.broadcast(bytearray(b"not 0"), exclude=conns[0]) == 49
            assert srv.broadcast(memoryview(b"not 1 2"), exclude=[conns[1], conns[2].id]) == 48
            assert srv.broadcast(b"not 3", exclude=conns[3].id) == 49
            assert srv.broadcast(b"none", exclude=iter(conns)) == 0
            assert srv.broadcast(b"last") == 50
            for i, sock in enumerate(socks):
                # Broadcasts arrive in order: the excluded got none before "last".
                want = [b"all"]
                want += [b"not 0"] if i != 0 else []
                want += [b"not 1 2"] if i not in (1, 2) else []
                want += [b"not 3"] if i != 3 else []
                want.append(b"last")
                assert recv_frames(sock, LINES, len(want)) == want, i
            socks[0].close()
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
    with Server(lambda m: m, port=0, framing=LINES) as srv, connect(srv.address) as sock:
        sock.sendall(b"hi\n")
        assert recv_frames(sock, LINES, 1) == [b"hi"]
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
        with clients(srv, registry, 5) as socks:
            speaker = registry.of(socks[0])
            socks[0].sendall(b"hello\n")
            for sock in socks[1:]:
                assert recv_frames(sock, LINES, 1) == [b"%d: hello" % speaker.id]
            socks[1].sendall(b"back\n")
            assert recv_frames(socks[0], LINES, 1) == [b"%d: back" % registry.of(socks[1]).id]


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks: list[bytes] = []
    while n > 0:
        chunk = sock.recv(min(n, 1 << 20))
        assert chunk, "closed early"
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_the_payload_is_shared_not_copied_per_connection() -> None:
    size, count = 4 << 20, 50
    payload = bytes(range(256)) * (size // 256)
    registry = Registry()
    options: dict[str, Any] = {"max_output": 2 * size}
    with Server(protocol=registry.protocol(), port=0, framing=LINES, workers=2, **options) as srv:
        with clients(srv, registry, count) as socks:
            conns = [registry.of(sock) for sock in socks]
            before = resident_bytes()
            assert srv.broadcast(payload.replace(b"\n", b"!")) == count

            # Every worker has taken it: queued (a copy per connection would be
            # allocated and filled by now, as nobody reads yet), or already all in the
            # kernel's socket buffers (loopback can take 4 MiB), so readable.
            def taken(conn: Connection, sock: socket.socket) -> bool:
                return conn.write_buffer_size > 0 or bool(select.select([sock], [], [], 0)[0])

            wait_for(lambda: all(map(taken, conns, socks)), "the output queued or sent")
            grown = resident_bytes() - before
            copies = size * count
            assert grown < copies // 8, f"RSS grew {grown >> 20} MiB for {count} receivers"
            want = payload.replace(b"\n", b"!") + b"\n"
            for sock in socks:
                assert recv_exactly(sock, len(want)) == want
