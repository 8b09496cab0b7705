"""The blocking framed client (``iocp_echo.connect``) against the real server, and against
a server misbehaving on purpose (tests/rogue_server.py) where the real one cannot: every
framing byte-exact at random sizes, TLS, a Unix socket, several clients at once; end of
stream, timeouts, a frame cut by the server, ``max_frame``, a closed client."""

from __future__ import annotations

import random
import shutil
import socket
import ssl
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from client import random_payload
from helpers import Address
from iocp_echo import (
    OPTIONS,
    Client,
    Connection,
    ConnectionClosed,
    FrameTooLarge,
    Framing,
    FramingError,
    Protocol,
    Server,
    connect,
)
from rogue_server import hold, rogue, send_then_close
from tls_client import client_context, server_tls

FRAMINGS = {
    "raw": Framing.raw(),
    "lines": Framing.lines(),
    "crlf": Framing.lines(b"\r\n"),
    "length": Framing.length_prefixed(4, "big"),
    "length1": Framing.length_prefixed(1),
    "length2-little": Framing.length_prefixed(2, "little"),
    "length8": Framing.length_prefixed(8),
}
LINES = FRAMINGS["lines"]
LENGTH = FRAMINGS["length"]

unix_only = pytest.mark.skipif(sys.platform != "linux", reason="Unix sockets: Linux only")


def largest(framing: Framing) -> int:
    """The largest payload ``framing`` carries, capped at 300 KB for the test."""
    for limit in (255, 65535):  # 1- and 2-byte prefixes
        try:
            framing.encode(bytes(limit + 1))
        except FramingError:
            return limit
    return 300_000


def random_messages(rng: random.Random, framing: Framing, count: int) -> list[bytes]:
    """``count`` payloads of random sizes (mostly small, some large) ``framing`` carries."""
    top = largest(framing)
    low = 1 if framing.kind == "raw" else 0  # raw: an empty message is no bytes at all
    sizes = [rng.choice([low, rng.randint(low, 100), rng.randint(low, top)]) for _ in range(count)]
    return [random_payload(rng, n, framing) for n in sizes]


def exchange(client: Client, messages: list[bytes]) -> None:
    """Each message as a request (raw: the echo read back by length), then all pipelined."""
    if client.framing.kind == "raw":
        for message in messages:
            client.send(message)
            echoed = b""
            while len(echoed) < len(message):
                echoed += client.recv()
            assert echoed == message
        return
    for message in messages:
        assert client.request(message) == message
    batch = [m for m in messages if len(m) < 10_000][:50]  # small: no deadlock on buffers
    for message in batch:
        client.send(message)
    assert [client.recv() for _ in batch] == batch
    client.send_many(batch)  # in one write
    assert [client.recv() for _ in batch] == batch


@pytest.mark.parametrize("handler", [None, bytes], ids=["native", "python"])
@pytest.mark.parametrize("name", FRAMINGS)
def test_every_framing_echoes_random_sizes_byte_exact(name: str, handler: object) -> None:
    framing = FRAMINGS[name]
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    messages = random_messages(rng, framing, 40)
    with Server(handler, port=0, framing=framing) as srv:  # type: ignore[arg-type]
        with connect(srv.address, framing=framing, timeout=30) as client:
            assert client.framing == framing
            exchange(client, messages)
        assert client.closed


def test_framing_by_the_names_the_server_takes() -> None:
    (option,) = [o for o in OPTIONS if o.name == "framing"]
    for name in option.choices:
        with Server(None, port=0, framing=name) as srv, connect(srv.address, framing=name) as c:
            assert c.request(b"hello") == b"hello"
    with Server(None, port=0) as srv, connect(srv.address) as c:  # both default to raw
        assert c.framing == Framing.raw()
        assert c.request(b"hello") == b"hello"


class Closer(Protocol):
    """Echoes each message; closes the connection after echoing ``bye``."""

    def connection_made(self, conn: Connection) -> None:
        self.conn = conn

    def message_received(self, message: bytes) -> None:
        self.conn.send(message)
        if message == b"bye":
            self.conn.close()


def test_iteration_ends_and_recv_raises_at_a_clean_end_of_stream() -> None:
    with Server(protocol=Closer, port=0, framing=LINES) as srv:
        with connect(srv.address, framing="lines", timeout=30) as client:
            for message in [b"one", b"two", b"bye"]:
                client.send(message)
            assert list(client) == [b"one", b"two", b"bye"]
            assert list(client) == []
            with pytest.raises(ConnectionClosed, match="end of stream"):
                client.recv()
            assert isinstance(ConnectionClosed(), ConnectionError)


def test_a_timed_out_recv_loses_nothing() -> None:
    def quiet_on_wait(message: bytes) -> bytes | None:
        return None if message == b"wait" else message

    with Server(quiet_on_wait, port=0, framing=LENGTH) as srv:
        with connect(srv.address, framing=LENGTH, timeout=0.2) as client:
            client.send(b"wait")
            with pytest.raises(TimeoutError, match="recv timed out"):
                client.recv()
            assert not client.closed
            assert client.request(b"after") == b"after"


def test_a_timed_out_send_closes_the_client() -> None:
    release = threading.Event()
    with rogue(hold(release)) as address:
        client = connect(address, framing=LENGTH, timeout=0.2)
        try:
            with pytest.raises(TimeoutError, match="send timed out"):
                for _ in range(10_000):  # until the socket buffers are full
                    client.send(bytes(1 << 16))
            assert client.closed
            with pytest.raises(ConnectionClosed):
                client.send(b"more")
        finally:
            release.set()
            client.close()


def test_a_tls_handshake_that_never_ends_times_out() -> None:
    release = threading.Event()
    with rogue(hold(release)) as address:
        try:
            with pytest.raises(TimeoutError, match=r"connect to .* timed out"):
                connect(address, tls=client_context(), timeout=0.2)
        finally:
            release.set()


@pytest.mark.parametrize("iterate", [False, True], ids=["recv", "iteration"])
def test_a_frame_cut_by_the_server_says_how_much_arrived(iterate: bool) -> None:
    stream = LENGTH.encode(b"whole") + LENGTH.encode(b"x" * 100)[:30]
    with rogue(send_then_close(stream)) as address, connect(address, framing=LENGTH) as client:
        received: list[bytes] = []
        with pytest.raises(FramingError) as raised:
            if iterate:
                received.extend(client)
            else:
                while True:
                    received.append(client.recv())
        assert received == [b"whole"]
        assert str(raised.value) == (
            "the server closed the connection mid-frame: "
            "stream ended inside a frame (30 bytes of it received)"
        )
        assert client.closed
        with pytest.raises(ConnectionClosed):
            client.recv()


def test_a_last_line_without_its_delimiter_is_a_message() -> None:
    # As the server's decoder reads a client's last line.
    with rogue(send_then_close(b"one\ntw")) as address:
        with connect(address, framing=LINES, timeout=30) as client:
            assert list(client) == [b"one", b"tw"]


def test_a_reply_over_max_frame_raises_and_closes() -> None:
    with Server(None, port=0, framing=LENGTH) as srv:
        with connect(srv.address, framing=LENGTH, max_frame=100, timeout=30) as client:
            assert client.request(b"a" * 100) == b"a" * 100
            with pytest.raises(FrameTooLarge) as raised:
                client.request(b"b" * 101)
            assert str(raised.value) == (
                "received frame payload of 101 bytes is over the limit of 100 bytes "
                "(max_frame); the client closed the connection"
            )
            assert client.closed
            with pytest.raises(ConnectionClosed, match="the client is closed"):
                client.send(b"more")


def test_a_closed_client_refuses_every_call() -> None:
    with Server(None, port=0, framing=LINES) as srv:
        client = connect(srv.address, framing=LINES)
        client.close()
        client.close()  # idempotent
        for call in (lambda: client.send(b"x"), client.recv, lambda: client.request(b"x")):
            with pytest.raises(ConnectionClosed, match="the client is closed"):
                call()
        with pytest.raises(ConnectionClosed):
            next(iter(client))


def test_a_message_the_framing_cannot_carry_is_refused_before_sending() -> None:
    with Server(None, port=0, framing=LINES) as srv, connect(srv.address, framing=LINES) as c:
        with pytest.raises(FramingError, match="delimiter"):
            c.send(b"two\nlines")
        with pytest.raises(FramingError, match="delimiter"):
            c.send_many([b"fine", b"two\nlines"])  # all refused: nothing sent
        assert not c.closed
        assert c.request(bytearray(b"fine")) == b"fine"
        assert c.request(memoryview(b"view")) == b"view"


def test_bad_arguments_are_refused_before_connecting() -> None:
    address = ("127.0.0.1", 9)
    with pytest.raises(ValueError, match="framing must be one of raw, lines, length"):
        connect(address, framing="bogus")
    with pytest.raises(TypeError, match="framing must be a str or a Framing"):
        connect(address, framing=4)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="address must be"):
        connect(("127.0.0.1", "80"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="address must be"):
        connect(8080)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_frame must be a positive integer"):
        connect(address, max_frame=0)
    with pytest.raises(ValueError, match="server_hostname is only meaningful with tls"):
        connect(address, server_hostname="localhost")
    with pytest.raises(ValueError, match="server_hostname must be given"):
        connect("/tmp/nowhere.sock", tls=True)


def test_connection_refused_is_the_os_error() -> None:
    with socket.socket() as bound:  # bound, never listening: connecting is refused
        bound.bind(("127.0.0.1", 0))
        with pytest.raises(ConnectionRefusedError):
            connect(bound.getsockname())


@pytest.mark.parametrize("name", ["raw", "lines", "length"])
def test_tls_echo_byte_exact(name: str) -> None:
    framing = FRAMINGS[name]
    rng = random.Random()
    messages = random_messages(rng, framing, 20)
    with Server(None, port=0, framing=framing, tls=server_tls()) as srv:
        # server_hostname defaults to the host: the test certificate names 127.0.0.1 too.
        with connect(srv.address, framing=framing, tls=client_context(), timeout=30) as client:
            assert isinstance(client.socket, ssl.SSLSocket)
            exchange(client, messages)
        with connect(
            srv.address, framing=framing, tls=client_context(), server_hostname="localhost"
        ) as client:
            exchange(client, messages[:3])


def test_tls_true_verifies_against_the_default_certificate_authorities() -> None:
    with Server(None, port=0, framing=LINES, tls=server_tls()) as srv:
        with pytest.raises(ssl.SSLCertVerificationError):
            connect(srv.address, framing=LINES, tls=True, timeout=30)


@pytest.fixture
def folder() -> Iterator[Path]:
    """A short temporary folder (a socket path is at most 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="iocp-client-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@unix_only
def test_unix_socket_by_str_and_path(folder: Path) -> None:
    path = folder / "echo.sock"
    with Server(None, path=path, framing=LENGTH):
        for address in (str(path), path):
            with connect(address, framing=LENGTH, timeout=30) as client:
                assert client.socket.family == socket.AF_UNIX
                exchange(client, [b"x", b"", bytes(range(256)) * 1000])


@unix_only
def test_tls_over_a_unix_socket(folder: Path) -> None:
    path = folder / "tls.sock"
    with Server(None, path=path, framing=LINES, tls=server_tls()):
        context = client_context()
        with connect(path, framing=LINES, tls=context, server_hostname="localhost") as client:
            assert client.request(b"secret") == b"secret"


def test_clients_on_threads_at_once() -> None:
    seed = random.randrange(1 << 32)
    failures: list[BaseException] = []

    def talk(address: Address, i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        try:
            with connect(address, framing=LENGTH, timeout=30) as client:
                for message in random_messages(rng, LENGTH, 30):
                    assert client.request(message) == message
        except BaseException as e:
            failures.append(e)

    with Server(None, port=0, framing=LENGTH, workers=2) as srv:
        threads = [threading.Thread(target=talk, args=(srv.address, i)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not failures, f"seed {seed}: {failures[0]!r}"
