"""iocp_echo: a TCP message server whose network core is a completion port in Rust.

Worker threads in Rust own the sockets, the buffers and the completion port
(io_uring or epoll on Linux, IOCP on Windows); Python sees only whole messages.

>>> from iocp_echo import Server
>>> with Server(lambda msg: msg.upper(), port=0, framing="lines") as srv:
...     host, port = srv.address
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, Union

from ._native import (
    BACKENDS,
    DEFAULT_MAX_FRAME,
    OPTIONS,
    Decoder,
    FrameTooLarge,
    Framing,
    FramingError,
    Server,
    ServerOption,
    resolve_backend,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_MAX_FRAME",
    "OPTIONS",
    "Decoder",
    "FrameTooLarge",
    "Framing",
    "FramingError",
    "Handler",
    "Server",
    "ServerOption",
    "resolve_backend",
    "serve",
]

Reply = Union[bytes, bytearray, memoryview, None]
"""What a handler returns: the reply payload (framed by the server), or None for no reply."""

Handler = Callable[[bytes], Reply]
"""A message handler: called with each complete message."""


def serve(
    handler: Handler | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    framing: str | Framing = "raw",
    **options: Any,
) -> None:
    """Serve until Ctrl-C or SIGTERM, then close cleanly and return.

    ``handler=None`` echoes every message natively, without entering Python.
    ``options`` are the other keyword arguments of :class:`Server`, one per
    entry of :data:`OPTIONS` (``workers``, ``backend``, ``max_frame``,
    ``max_connections``, ``idle_timeout``, ``drain_timeout``, ``high_water``,
    ``low_water``, ``backlog``).
    """
    server = Server(handler, host=host, port=port, framing=framing, **options)
    with _stop_signals_interrupt():
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.close()


@contextmanager
def _stop_signals_interrupt() -> Iterator[None]:
    """Make SIGTERM stop the server like Ctrl-C, and SIGINT too where it was ignored
    at startup (a background job of a non-interactive shell), as the CLI does; only
    where Python lets us (the main thread). The previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous_term = signal.signal(signal.SIGTERM, interrupt)
    previous_int = signal.getsignal(signal.SIGINT)
    if previous_int == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        if previous_int == signal.SIG_IGN:
            signal.signal(signal.SIGINT, previous_int)
