"""What the blocking and the asyncio clients share before any byte moves: the framing
by name, where to connect (a ``(host, port)`` or a Unix socket path) and the TLS
context with the name to verify, under asyncio's rules for ``ssl=`` and
``server_hostname=``; and the errors both raise, worded once.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Union

from ._native import ConnectionClosed, Framing

Address = Union[tuple[str, int], str, os.PathLike[str]]
"""Where a client connects: ``(host, port)`` for TCP, a path (``str`` or path-like) for a
Unix domain socket (Linux)."""

_FRAMINGS = {
    "raw": Framing.raw,
    "lines": Framing.lines,
    "length": Framing.length_prefixed,
    "length_prefixed": Framing.length_prefixed,
}


def framing_of(framing: Framing | str) -> Framing:
    """``framing`` as a `Framing`: itself, or a name as ``Server(framing=...)`` takes it
    (``"raw"``, ``"lines"``: newline, ``"length"``/``"length_prefixed"``: 4 bytes, big-endian)."""
    if isinstance(framing, Framing):
        return framing
    if isinstance(framing, str):
        make = _FRAMINGS.get(framing)
        if make is None:
            raise ValueError(
                f"framing must be one of {', '.join(_FRAMINGS)} or a Framing, got {framing!r}"
            )
        return make()
    raise TypeError(f"framing must be a str or a Framing, not {type(framing).__name__}")


@dataclass(frozen=True)
class Target:
    """Where and how to connect: a TCP ``host``/``port`` or a Unix socket ``path``, and
    the TLS ``context`` with the ``server_hostname`` it verifies (None: plain)."""

    host: str | None
    port: int | None
    path: str | None
    context: ssl.SSLContext | None
    server_hostname: str | None

    def describe(self) -> str:
        """``host:port`` or the path, for error messages."""
        if self.path is not None:
            return self.path
        return f"{self.host}:{self.port}"


def target(
    address: Address, tls: ssl.SSLContext | bool | None, server_hostname: str | None
) -> Target:
    """Check ``address``, ``tls`` and ``server_hostname`` as asyncio's ``open_connection``
    does (``ssl=`` and ``server_hostname=``) and say where and how to connect.

    ``tls=True`` is ``ssl.create_default_context()``; ``server_hostname`` defaults to the
    host (a Unix socket has none: then it must be given), ``""`` turns the host name
    check off (the context's ``check_hostname`` must be off too).
    """
    host: str | None = None
    port: int | None = None
    path: str | None = None
    if isinstance(address, (str, os.PathLike)):
        path = os.fspath(address)
        if not isinstance(path, str):
            raise TypeError("a Unix socket path must be a str or a path-like of str")
    elif isinstance(address, tuple) and len(address) == 2:
        host, port = address
        if not isinstance(host, str) or not isinstance(port, int) or isinstance(port, bool):
            raise TypeError(f"address must be (host: str, port: int), got {address!r}")
    else:
        raise TypeError(
            f"address must be a (host, port) tuple or a Unix socket path, got {address!r}"
        )
    if tls is None or tls is False:
        if server_hostname is not None:
            raise ValueError("server_hostname is only meaningful with tls")
        return Target(host, port, path, None, None)
    if tls is True:
        context = ssl.create_default_context()
    elif isinstance(tls, ssl.SSLContext):
        context = tls
    else:
        raise TypeError(f"tls must be an ssl.SSLContext, True or None, not {type(tls).__name__}")
    if server_hostname is None:
        if host is None:
            raise ValueError("server_hostname must be given for TLS over a Unix socket")
        server_hostname = host
    return Target(host, port, path, context, server_hostname)


def check_max_frame(max_frame: int) -> int:
    """``max_frame`` if it is a positive int (the decoder's own check, said before connecting)."""
    if isinstance(max_frame, bool) or not isinstance(max_frame, int) or max_frame <= 0:
        raise ValueError(f"max_frame must be a positive integer, got {max_frame!r}")
    return max_frame


def end_of_stream() -> ConnectionClosed:
    """What ``recv`` raises at a clean end of stream."""
    return ConnectionClosed("end of stream: the server closed the connection")


def closed_client() -> ConnectionClosed:
    """What any operation on a closed client raises."""
    return ConnectionClosed("the client is closed")


def timed_out(what: str, timeout: float | None) -> TimeoutError:
    """What a timed-out ``what`` (``connect``, ``send``, ``recv``) raises: ``TimeoutError``
    (which ``socket.timeout`` and ``asyncio.TimeoutError`` are only from Python 3.10 and
    3.11 on)."""
    return TimeoutError(f"{what} timed out after {timeout} s")
