"""iocp_echo as a bench peer: one worker, native echo, the Python handler ``lambda m: m``,
a protocol whose ``message_received`` returns the message, or an ``async def`` handler;
over TLS (rustls) with ``--tls-cert``/``--tls-key``."""

from __future__ import annotations

import argparse
from typing import Any

from _common import raise_nofile_limit, serve_iocp_echo
from iocp_echo import Protocol, Server


async def async_echo(message: bytes) -> bytes:
    """The async handler echo: awaited on the server's loop thread."""
    return message


class Echo(Protocol):
    """The protocol echo: each message is its own reply."""

    def message_received(self, message: bytes) -> bytes:
        return message


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--handler", choices=["native", "python", "protocol", "async"], default="native"
    )
    parser.add_argument("--backend", choices=["io_uring", "epoll"], default="io_uring")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-connections", type=int, default=100_000)
    parser.add_argument("--tls-cert", help="serve TLS with this certificate chain (PEM)")
    parser.add_argument("--tls-key", help="the private key of --tls-cert (PEM)")
    args = parser.parse_args()
    raise_nofile_limit()
    handlers = {"python": lambda m: m, "async": async_echo}
    handler: Any = handlers.get(args.handler)
    server = Server(
        handler,
        protocol=Echo if args.handler == "protocol" else None,
        host=args.host,
        port=args.port,
        workers=args.workers,
        backend=args.backend,
        max_connections=args.max_connections,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )
    serve_iocp_echo(server)


if __name__ == "__main__":
    main()
