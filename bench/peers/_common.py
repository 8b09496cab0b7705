"""Shared command line and start-up of the Python echo peers (not a peer itself)."""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal
import ssl
import sys
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from iocp_echo import Server

BACKLOG = 4096
"""Listen backlog: 10,000 connections arrive at once; asyncio's default of 100 drops SYNs."""


def parse_args(description: str) -> argparse.Namespace:
    """``--host`` (127.0.0.1), ``--port`` (0 picks a free one), and ``--tls-cert`` /
    ``--tls-key`` (PEM files: serve TLS with them)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls-cert", help="serve TLS with this certificate chain (PEM)")
    parser.add_argument("--tls-key", help="the private key of --tls-cert (PEM)")
    args = parser.parse_args()
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    return args


def ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The server's ``ssl.SSLContext`` for ``--tls-cert``/``--tls-key``, or None: TLS 1.2
    and 1.3, no client certificates, Python's default ciphers."""
    if args.tls_cert is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.tls_cert, args.tls_key)
    return context


def raise_nofile_limit() -> None:
    """Raise the open-file limit to its hard limit: the bench opens up to 50,000 connections."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def sigterm_exits() -> None:
    """Make SIGTERM a clean exit (``SystemExit``) for a server blocked outside asyncio."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)


async def serve_until_sigterm(server: asyncio.Server) -> None:
    """Announce ``server``, serve until SIGTERM, then stop listening and return."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    host, port = server.sockets[0].getsockname()[:2]
    announce(host, port)
    await stop.wait()
    server.close()


def announce(host: str, port: int) -> None:
    """The one line the bench waits for before it sends anything."""
    print(f"listening on {host}:{port}", flush=True)
    sys.stdout.flush()


def serve_iocp_echo(server: Server) -> None:
    """Start an iocp_echo ``server``, announce it, serve until SIGTERM or Ctrl-C, close it."""
    sigterm_exits()
    try:
        server.start()
        announce(*server.address)
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.close()
