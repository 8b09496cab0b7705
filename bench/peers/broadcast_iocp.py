"""Broadcast peer: an iocp_echo protocol hub (one worker, io_uring). Each line a client
sends goes to every connection through ``Server.broadcast``: framed once, one shared
buffer for all receivers."""

from __future__ import annotations

from _common import parse_args, raise_nofile_limit, serve_iocp_echo
from iocp_echo import Connection, Protocol, Server


class Hub(Protocol):
    """One per connection: a line received is broadcast to every connection."""

    def connection_made(self, conn: Connection) -> None:
        self.conn = conn

    def message_received(self, message: bytes) -> None:
        self.conn.server.broadcast(message)


def main() -> None:
    args = parse_args(__doc__ or "")
    raise_nofile_limit()
    server = Server(
        protocol=Hub,
        host=args.host,
        port=args.port,
        framing="lines",
        workers=1,
        backend="io_uring",
        max_connections=100_000,
    )
    serve_iocp_echo(server)


if __name__ == "__main__":
    main()
