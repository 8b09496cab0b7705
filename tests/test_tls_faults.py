"""Bad TLS clients, from Python: each is closed alone (a good client of the same server
keeps echoing) and counted in ``stats()["tls_errors"]``; one whose handshake failed never
reached ``connection_made``. Mutual TLS: a client certificate from the CA is accepted and
shown in ``Connection.tls``; none, or a stranger's, is refused."""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import pytest
from helpers import connect, recv_until_closed, wait_stats
from iocp_echo import Framing, Server, TlsInfo
from tls_client import (
    CERTS,
    RecordClient,
    Recorder,
    client_context,
    der,
    server_tls,
    tls_framed,
)

LINES = Framing.lines()


@contextmanager
def tls_server(**tls: Any) -> Iterator[tuple[Server, type[Recorder]]]:
    """A TLS echo protocol server (lines) and its protocol class, which records the
    connections made."""

    class Seen(Recorder):
        seen: ClassVar[list[TlsInfo | None]] = []

    with Server(protocol=Seen, port=0, framing=LINES, tls=server_tls(**tls)) as srv:
        yield srv, Seen


def refused(address: tuple[str, int], context: ssl.SSLContext) -> None:
    """A client of ``context`` is refused: in its handshake (TLS 1.2) or at its first read
    (TLS 1.3 clients finish before the server has checked their certificate)."""
    # No reply: an alert (ssl.SSLError), a reset, or the end of stream (ConnectionClosed).
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with tls_framed(address, LINES, context) as client:
            client.request(b"let me in")


def test_mutual_tls_accepts_the_ca_s_client_and_refuses_the_others() -> None:
    with tls_server(cafile=CERTS / "ca.pem") as (srv, seen):
        with tls_framed(srv.address, LINES, client_context(cert="client")) as client:
            assert client.request(b"ping") == b"ping"
            info = seen.seen[0]
            assert info is not None and info.peer_certificate == der("client")
            refused(srv.address, client_context())
            refused(srv.address, client_context(cert="other-client"))
            for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
                refused(srv.address, client_context(cert="other-client", version=version))
            wait_stats(srv, "4 refused clients", lambda s: s["tls_errors"] == 4)
            assert client.request(b"ping") == b"ping"
        assert len(seen.seen) == 1
        assert srv.stats()["tls_handshakes"] == 1


def plaintext(srv: Server) -> None:
    with connect(srv.address) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        recv_until_closed(sock)  # an alert, then the close


def random_bytes(srv: Server) -> None:
    with connect(srv.address) as sock:
        sock.sendall(os.urandom(3000))
        recv_until_closed(sock)


def silent(srv: Server) -> None:
    with connect(srv.address) as sock:
        recv_until_closed(sock)  # cut at the handshake timeout


def abandoned_handshake(srv: Server) -> None:
    client = RecordClient(srv.address)
    client.sock.sendall(client.hello())
    client.sock.shutdown(socket.SHUT_WR)
    recv_until_closed(client.sock)
    client.close()


def truncated_record(srv: Server) -> None:
    client = RecordClient(srv.address)
    client.handshake()
    records = client.seal(b"x" * 1000 + b"\n")
    client.sock.sendall(records[: len(records) // 2])
    client.sock.shutdown(socket.SHUT_WR)
    recv_until_closed(client.sock)
    client.close()


BAD_CLIENTS: dict[str, Callable[[Server], None]] = {
    "plaintext": plaintext,
    "random-bytes": random_bytes,
    "silent": silent,
    "abandoned-handshake": abandoned_handshake,
    "truncated-record": truncated_record,
}


@pytest.mark.parametrize("bad", BAD_CLIENTS)
def test_a_bad_client_is_closed_alone_and_counted(bad: str) -> None:
    # A short handshake timeout for the silent client (the good one finishes at once).
    with tls_server(handshake_timeout=1.0 if bad == "silent" else 10.0) as (srv, seen):
        with tls_framed(srv.address, LINES) as good:
            assert good.request(b"ping") == b"ping"
            BAD_CLIENTS[bad](srv)
            wait_stats(srv, f"the {bad} client counted", lambda s: s["tls_errors"] == 1)
            assert good.request(b"still here") == b"still here"
        # The truncated record's client finished its handshake; no other bad one did.
        assert len(seen.seen) == (2 if bad == "truncated-record" else 1)
        stats = srv.stats()
        assert stats["tls_handshakes"] == len(seen.seen)
