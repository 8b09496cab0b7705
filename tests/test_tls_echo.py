"""Echo over TLS with Python's ``ssl`` clients: byte-exact in every framing, natively and
through a handler; TLS 1.2 and 1.3; ALPN and what ``Connection.tls`` shows; one
`TlsConfig` shared by two servers; the protocol API sync and async, and push."""

from __future__ import annotations

import asyncio
import random
import ssl
import threading
from typing import ClassVar

import pytest
from client import random_payload, run_clients
from helpers import framed, serve_echo, wait_for
from iocp_echo import Connection, Framing, Handler, Protocol, Server, TlsInfo
from tls_client import Recorder, client_context, server_tls, tls_framed, tls_socket

LINES = Framing.lines()

FRAMINGS = {
    "raw": Framing.raw(),
    "lines": Framing.lines(),
    "length": Framing.length_prefixed(4, "big"),
}

HANDLERS: dict[str, Handler | None] = {"native": None, "python": lambda m: m}

CLIENTS = 50


@pytest.mark.parametrize("handler_name", HANDLERS)
@pytest.mark.parametrize("framing_name", FRAMINGS)
def test_fifty_tls_clients_get_byte_exact_echoes(framing_name: str, handler_name: str) -> None:
    framing = FRAMINGS[framing_name]
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    # Sizes across record boundaries (16 KiB) as well as tiny ones.
    talks = [
        [random_payload(rng, rng.choice([0, 1, rng.randint(2, 40_000)]), framing) for _ in range(3)]
        for _ in range(CLIENTS)
    ]
    with serve_echo(HANDLERS[handler_name], framing, workers=2, tls=server_tls()) as address:
        exchanges = run_clients(address, framing, talks, seed=seed, tls=client_context())
    assert len(exchanges) == CLIENTS, f"seed {seed}"
    assert all(x.received == x.sent for x in exchanges), f"seed {seed}"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_each_tls_version_echoes_and_shows_in_conn_tls(version: ssl.TLSVersion) -> None:
    class Seen(Recorder):
        seen: ClassVar[list[TlsInfo | None]] = []

    with (
        Server(protocol=Seen, port=0, framing=LINES, tls=server_tls()) as srv,
        tls_framed(srv.address, LINES, client_context(version=version)) as client,
    ):
        assert client.request(b"ping") == b"ping"
        sock = tls_socket(client)
        name = "TLSv1.2" if version == ssl.TLSVersion.TLSv1_2 else "TLSv1.3"
        assert sock.version() == name
        info = Seen.seen[0]
        assert info is not None
        assert info.version == name
        assert info.peer_certificate is None and info.alpn_protocol is None
        cipher = sock.cipher()
        assert cipher is not None
        if version == ssl.TLSVersion.TLSv1_3:
            assert info.cipher == cipher[0]  # OpenSSL names TLS 1.3 suites as IANA does
        else:
            assert info.cipher.startswith("TLS_ECDHE_ECDSA_WITH_"), info.cipher
        assert srv.stats()["tls_handshakes"] == 1


def test_alpn_is_negotiated_and_shown_and_plain_connections_have_no_tls() -> None:
    class Seen(Recorder):
        seen: ClassVar[list[TlsInfo | None]] = []

    tls = server_tls(alpn_protocols=["h2", "http/1.1"])
    with Server(protocol=Seen, port=0, framing=LINES, tls=tls) as srv:
        with tls_framed(srv.address, LINES, client_context(alpn=["http/1.1", "spdy/1"])) as client:
            assert client.request(b"ping") == b"ping"
            assert tls_socket(client).selected_alpn_protocol() == "http/1.1"
        with tls_framed(srv.address, LINES) as client:
            assert client.request(b"ping") == b"ping"
            assert tls_socket(client).selected_alpn_protocol() is None
    first, second = Seen.seen
    assert first is not None and first.alpn_protocol == "http/1.1"
    assert second is not None and second.alpn_protocol is None
    assert "TLSv1.3" in repr(first)

    class Plain(Recorder):
        seen: ClassVar[list[TlsInfo | None]] = []

    with Server(protocol=Plain, port=0, framing=LINES) as srv, framed(srv.address, LINES) as plain:
        assert plain.request(b"ping") == b"ping"
    assert Plain.seen == [None]


def test_one_tls_config_serves_two_servers() -> None:
    tls = server_tls()
    with (
        Server(None, port=0, framing=LINES, tls=tls) as one,
        Server(lambda m: m.upper(), port=0, framing=LINES, tls=tls) as two,
        tls_framed(one.address, LINES) as a,
        tls_framed(two.address, LINES) as b,
    ):
        assert a.request(b"one") == b"one"
        assert b.request(b"two") == b"TWO"


def test_async_protocol_over_tls() -> None:
    class Later(Protocol):
        async def message_received(self, message: bytes) -> bytes:
            await asyncio.sleep(0)
            return b"re " + message

    with (
        Server(protocol=Later, port=0, framing=LINES, tls=server_tls()) as srv,
        tls_framed(srv.address, LINES) as client,
    ):
        client.send_many(b"m %d" % i for i in range(20))
        assert [client.recv() for _ in range(20)] == [b"re m %d" % i for i in range(20)]


def test_push_over_tls_from_another_thread() -> None:
    opened: list[Connection] = []

    class Quiet(Protocol):
        def connection_made(self, conn: Connection) -> None:
            opened.append(conn)

    with (
        Server(protocol=Quiet, port=0, framing=LINES, tls=server_tls()) as srv,
        tls_framed(srv.address, LINES) as client,
    ):
        wait_for(lambda: len(opened) == 1, "connection_made")
        big = bytes(range(97, 123)) * 2000  # several records

        def push() -> None:
            for i in range(10):
                opened[0].send(b"%d " % i + big)

        pusher = threading.Thread(target=push)
        pusher.start()
        pusher.join()
        assert [client.recv() for _ in range(10)] == [b"%d " % i + big for i in range(10)]
