"""The command-line server: ``python -m iocp_echo`` or ``iocp-echo``."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import BACKENDS, DEFAULT_MAX_FRAME, Framing, Handler, Server

PROG = "iocp-echo"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        _fail(message)


def _fail(message: str) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="A TCP echo/message server on a completion port.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port; 0 picks a free one (default 8080)")
    p.add_argument(
        "--framing",
        choices=["raw", "lines", "length"],
        default="raw",
        help="how messages are cut: each chunk, lines, or length-prefixed (default raw)",
    )
    p.add_argument(
        "--delimiter", default="\\n", help="lines delimiter, escapes allowed (default \\n)"
    )
    p.add_argument(
        "--length-width", type=int, choices=[1, 2, 4, 8], default=4, help="prefix bytes (default 4)"
    )
    p.add_argument(
        "--byteorder", choices=["big", "little"], default="big", help="prefix byte order"
    )
    p.add_argument("--workers", type=int, default=None, help="worker threads (default: CPU count)")
    p.add_argument(
        "--backend", choices=["auto", *BACKENDS], default="auto", help="I/O backend (default auto)"
    )
    p.add_argument(
        "--max-frame", type=int, default=DEFAULT_MAX_FRAME, help="largest message, bytes"
    )
    p.add_argument("--max-connections", type=int, default=None, help="open connections at most")
    p.add_argument("--idle-timeout", type=float, default=None, help="close idle clients, seconds")
    p.add_argument(
        "--handler",
        default=None,
        metavar="MODULE:FUNCTION",
        help="a Python handler by import path (default: native echo)",
    )
    p.add_argument("--log-level", default="WARNING", help="Python logging level (default WARNING)")
    return p


def _framing(args: argparse.Namespace) -> Framing:
    if args.framing == "lines":
        try:
            delimiter = args.delimiter.encode("utf-8").decode("unicode_escape").encode("latin-1")
        except (UnicodeError, ValueError) as e:
            _fail(f"--delimiter: {e}")
        return Framing.lines(delimiter)
    if args.framing == "length":
        return Framing.length_prefixed(args.length_width, args.byteorder)
    return Framing.raw()


def _handler(spec: str | None) -> Handler | None:
    if spec is None:
        return None
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        _fail(f"--handler must be MODULE:FUNCTION, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        _fail(f"--handler: cannot import {module_name!r}: {e}")
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            _fail(f"--handler: {module_name!r} has no attribute {attr!r}")
    if not callable(target):
        _fail(f"--handler: {spec} is not callable")
    handler: Handler = target
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until Ctrl-C or SIGTERM; returns the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "backend": args.backend,
        "max_frame": args.max_frame,
    }
    if args.workers is not None:
        options["workers"] = args.workers
    if args.max_connections is not None:
        options["max_connections"] = args.max_connections
    if args.idle_timeout is not None:
        options["idle_timeout"] = args.idle_timeout
    try:
        server = Server(_handler(args.handler), framing=_framing(args), **options)
        server.start()
    except (ValueError, TypeError) as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}")

    # Both stop the server cleanly, even where SIGINT was ignored at startup
    # (a background job of a non-interactive shell).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    host, port = server.address
    print(
        f"iocp_echo listening on {host}:{port} "
        f"(backend {server.backend}, {server.workers} workers, framing {args.framing})",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
