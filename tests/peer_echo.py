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
        peer_host, peer_port = self.conn.peer
        local_host, local_port = self.conn.local
        return f"{peer_host}:{peer_port} {local_host}:{local_port} {os.getpid()}".encode()
