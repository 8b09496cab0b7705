"""TLS for the tests: the server's `TlsConfig` from the test certificates, Python `ssl`
clients that verify it against the test CA, and a client driven record by record.

The certificates are in ``tests/certs`` (checked in, made by ``scripts/make-test-certs``):
``ca`` signs the server's certificate (localhost, 127.0.0.1) and ``client``; ``other-ca``
signs ``other-client``, a stranger under mutual TLS.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, ClassVar

from helpers import Address, connect
from iocp_echo import Client, Connection, Framing, Protocol, TlsConfig, TlsInfo
from iocp_echo import connect as connect_client

CERTS = Path(__file__).resolve().parent / "certs"


class Recorder(Protocol):
    """Echoes each message and keeps each connection's ``tls``; subclass it per test so
    each gets a list of its own."""

    seen: ClassVar[list[TlsInfo | None]] = []

    def connection_made(self, conn: Connection) -> None:
        type(self).seen.append(conn.tls)

    def message_received(self, message: bytes) -> bytes:
        return message


def server_tls(**options: Any) -> TlsConfig:
    """The server's certificate and key, with ``options`` (``cafile``, ``alpn_protocols``,
    ``handshake_timeout``)."""
    return TlsConfig(CERTS / "server.pem", CERTS / "server.key", **options)


def der(name: str) -> bytes:
    """The DER bytes of the test certificate ``name`` (``client``, ``other-client``)."""
    return ssl.PEM_cert_to_DER_cert((CERTS / f"{name}.pem").read_text())


def client_context(
    *,
    cert: str | None = None,
    version: ssl.TLSVersion | None = None,
    alpn: list[str] | None = None,
) -> ssl.SSLContext:
    """A client context trusting the test CA; ``cert``: present that test certificate
    (``client``, ``other-client``); ``version``: only that TLS version."""
    context = ssl.create_default_context(cafile=str(CERTS / "ca.pem"))
    if cert is not None:
        context.load_cert_chain(CERTS / f"{cert}.pem", CERTS / f"{cert}.key")
    if version is not None:
        context.minimum_version = version
        context.maximum_version = version
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    return context


def tls_framed(
    address: Address | str, framing: str | Framing, context: ssl.SSLContext | None = None
) -> Client:
    """A framed TLS client (``iocp_echo.connect``) of ``address``, verifying the server as
    ``localhost`` against the test CA (or with ``context``)."""
    return connect_client(
        address,
        framing=framing,
        tls=context or client_context(),
        server_hostname="localhost",
        timeout=30,
    )


def tls_socket(client: Client) -> ssl.SSLSocket:
    """The TLS socket under ``client``, for its version, cipher and ALPN."""
    sock = client.socket
    assert isinstance(sock, ssl.SSLSocket), "not a TLS client"
    return sock


class RecordClient:
    """A TLS client over a plain socket through memory buffers, so a test sees and cuts
    the records it sends."""

    def __init__(self, address: Address, context: ssl.SSLContext | None = None) -> None:
        self.sock = connect(address)
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = (context or client_context()).wrap_bio(
            self.incoming, self.outgoing, server_hostname="localhost"
        )

    def pending(self) -> bytes:
        """The records made and not yet sent."""
        return self.outgoing.read()

    def hello(self) -> bytes:
        """The ClientHello's records (not sent)."""
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        return self.pending()

    def handshake(self) -> None:
        """Run the handshake to its end over the socket."""
        while True:
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                self.sock.sendall(self.pending())
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    raise ConnectionError("the server closed during the handshake") from None
                self.incoming.write(chunk)
            else:
                self.sock.sendall(self.pending())
                return

    def seal(self, data: bytes) -> bytes:
        """The records of ``data`` (not sent)."""
        self.tls.write(data)
        return self.pending()

    def close(self) -> None:
        self.sock.close()
