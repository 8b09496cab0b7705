"""Echo peer: asyncio.Protocol on the default event loop (data_received -> transport.write);
over TLS with ``--tls-cert``/``--tls-key`` (an ``ssl.SSLContext``)."""

from __future__ import annotations

import asyncio
import ssl
from typing import cast

from _common import BACKLOG, parse_args, raise_nofile_limit, serve_until_sigterm, ssl_context


class Echo(asyncio.Protocol):
    """Writes back every chunk received."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, hence a cast.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def serve(host: str, port: int, context: ssl.SSLContext | None = None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, host, port, backlog=BACKLOG, ssl=context)
    await serve_until_sigterm(server)


def main() -> None:
    args = parse_args(__doc__ or "")
    raise_nofile_limit()
    asyncio.run(serve(args.host, args.port, ssl_context(args)))


if __name__ == "__main__":
    main()
