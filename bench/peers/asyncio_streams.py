"""Echo peer: asyncio streams (reader.read / writer.write + drain), what most people write."""

from __future__ import annotations

import asyncio
import ssl

from _common import BACKLOG, parse_args, raise_nofile_limit, serve_until_sigterm, ssl_context

CHUNK = 65536


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def serve(host: str, port: int, context: ssl.SSLContext | None = None) -> None:
    server = await asyncio.start_server(echo, host, port, backlog=BACKLOG, ssl=context)
    await serve_until_sigterm(server)


def main() -> None:
    args = parse_args(__doc__ or "")
    raise_nofile_limit()
    asyncio.run(serve(args.host, args.port, ssl_context(args)))


if __name__ == "__main__":
    main()
