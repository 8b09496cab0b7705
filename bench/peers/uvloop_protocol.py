"""Echo peer: asyncio.Protocol on uvloop (data_received -> transport.write).

The fastest thing a Python user would pick today.
"""

from __future__ import annotations

import asyncio

import uvloop
from _common import parse_args, raise_nofile_limit, ssl_context
from asyncio_protocol import serve


def main() -> None:
    args = parse_args(__doc__ or "")
    raise_nofile_limit()
    uvloop.install()
    asyncio.run(serve(args.host, args.port, ssl_context(args)))


if __name__ == "__main__":
    main()
