"""A protocol for load balancer tests, run as ``python -m iocp_echo --protocol
peer_echo:PeerEcho`` with ``tests`` on ``PYTHONPATH``: it echoes every message, and
answers ``whoami`` with who the server thinks the client is and which instance it is:
``<peer host>:<peer port> <local host>:<local port> <pid>``."""

from __future__ import annotations

import os

from iocp_echo import Connection, Protocol

WHOAMI = b"whoami"


class PeerEcho(Protocol):
    """Echoes; ``whoami`` gets ``conn.peer``, ``conn.local`` and the process id."""

    def __init__(self) -> None:
        self.conn: Connection | None = None

    def connection_made(self, conn: Connection) -> None:
        self.conn = conn

    def message_received(self, message: bytes) -> bytes:
        if message != WHOAMI or self.conn is None:
            return message
        return f"{where(self.conn.peer)} {where(self.conn.local)} {os.getpid()}".encode()


def where(address: tuple[str, int] | str) -> str:
    """``host:port`` of a TCP address; a Unix socket's path as it is."""
    if isinstance(address, str):
        return address
    host, port = address
    return f"{host}:{port}"
