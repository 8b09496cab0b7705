"""Broadcast peer: a uvloop Protocol hub. Each line a client sends is written to every
connection, one ``transport.write`` per connection: how a uvloop user writes a hub."""

from __future__ import annotations

import asyncio
from typing import cast

import uvloop
from _common import BACKLOG, parse_args, raise_nofile_limit, serve_until_sigterm


class Hub(asyncio.Protocol):
    """One per connection; all share ``clients``."""

    def __init__(self, clients: set[asyncio.Transport]) -> None:
        self.clients = clients
        self.pending = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are write transports without subclassing asyncio's.
        self.transport = cast(asyncio.Transport, transport)
        self.clients.add(self.transport)

    def data_received(self, data: bytes) -> None:
        self.pending += data
        while b"\n" in self.pending:
            line, _, self.pending = self.pending.partition(b"\n")
            framed = line + b"\n"
            for client in self.clients:
                client.write(framed)

    def connection_lost(self, exc: Exception | None) -> None:
        self.clients.discard(self.transport)


async def serve(host: str, port: int) -> None:
    clients: set[asyncio.Transport] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Hub(clients), host, port, backlog=BACKLOG)
    await serve_until_sigterm(server)


def main() -> None:
    args = parse_args(__doc__ or "")
    raise_nofile_limit()
    uvloop.install()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
