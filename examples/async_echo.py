"""An async echo: each line is answered after awaiting something that stands for I/O.

Run it, then talk to it (``nc 127.0.0.1 7001``)::

    python examples/async_echo.py --port 7001

or from asyncio, with the framed client::

    async with await iocp_echo.open_connection(("127.0.0.1", 7001), framing="lines") as c:
        print(await c.request(b"hello"))  # b'1: HELLO'

``message_received`` is ``async def``: it awaits ``asyncio.sleep`` (a database or an
HTTP call in a real service) and its return value is the reply. A client's lines are
answered one at a time, in order; different clients are served concurrently on the
server's asyncio loop (here the one ``asyncio.run`` runs). Ctrl-C stops the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from iocp_echo import Connection, Protocol, Server


class SlowEcho(Protocol):
    """Echoes each line upper-cased, after a short wait standing for a lookup."""

    def connection_made(self, conn: Connection) -> None:
        self.conn = conn
        self.count = 0

    async def message_received(self, message: bytes) -> bytes:
        self.count += 1
        await asyncio.sleep(0.01)  # stands for awaiting a database or a web service
        return b"%d: %s" % (self.count, message.rstrip(b"\r").upper())


async def main(port: int) -> None:
    async with Server(protocol=SlowEcho, framing="lines", port=port) as srv:
        host, bound = srv.address
        print(
            f"iocp_echo listening on {host}:{bound} "
            f"(backend {srv.backend}, {srv.workers} workers, async echo)",
            flush=True,
        )
        await srv.wait_closed()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=7001, help="0 picks a free port")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args().port))
