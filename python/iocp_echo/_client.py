"""The blocking framed client: `connect` and `Client`.

A `Client` frames what it sends and cuts what it receives with the server's own codecs
(`Framing.encode`, `Framing.decoder`), so a program talks to an iocp_echo server in
whole messages. It is meant for one thread at a time. Rules common to every call:

* ``timeout`` (seconds, None: none) bounds each blocking call: connecting with its TLS
  handshake, each ``send`` and each ``recv``; exceeding it raises ``TimeoutError``. A
  ``recv`` that timed out loses nothing (call it again); a ``send`` that timed out may
  have sent part of a frame, so it closes the client.
* Any socket error, a frame over ``max_frame`` (`FrameTooLarge`) and a stream that ends
  inside a frame (`FramingError`) close the client; every later call raises
  `ConnectionClosed`. A message the framing cannot carry (a line holding the
  delimiter: `FramingError`) is refused before anything is sent; the client stays open.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Union

if TYPE_CHECKING:
    from typing_extensions import Self

from ._dial import (
    Address,
    Target,
    check_max_frame,
    closed_client,
    end_of_stream,
    framing_of,
    target,
    timed_out,
)
from ._inbox import READ_SIZE, Inbox
from ._native import DEFAULT_MAX_FRAME, Framing

Message = Union[bytes, bytearray, memoryview]
"""What ``send`` takes: the payload of one message (framed by the client)."""


def payload(message: Message) -> bytes:
    """``message`` as the ``bytes`` the codec takes."""
    return message if isinstance(message, bytes) else bytes(message)


def connect(
    address: Address,
    *,
    framing: Framing | str = "raw",
    tls: ssl.SSLContext | bool | None = None,
    server_hostname: str | None = None,
    timeout: float | None = None,
    max_frame: int = DEFAULT_MAX_FRAME,
) -> Client:
    """Connect to an iocp_echo server (or any peer speaking ``framing``): a `Client`.

    ``address``: ``(host, port)``, or a Unix domain socket's path (``str`` or path-like).
    ``framing``: a `Framing` or a name as ``Server(framing=...)`` takes it (``"raw"``,
    the server's default; ``"lines"``; ``"length"``); it must be the server's.
    ``tls``: an ``ssl.SSLContext`` made for clients (``ssl.create_default_context()``),
    or True for that default context; ``server_hostname`` (the name the certificate is
    checked against) defaults to the host, as with asyncio's ``open_connection(ssl=...)``,
    and must be given over a Unix socket. ``timeout``: seconds for connecting and for
    each later call (see the module's rules). ``max_frame``: the largest message payload
    accepted from the server.

    ``OSError`` (``ConnectionRefusedError``, ``ssl.SSLError``, ...) if the connection or
    the TLS handshake fails; ``TimeoutError`` after ``timeout``.
    """
    where = target(address, tls, server_hostname)
    codec = framing_of(framing)
    check_max_frame(max_frame)
    sock = _open(where, timeout)
    return Client(sock, codec, max_frame=max_frame, timeout=timeout)


def _open(where: Target, timeout: float | None) -> socket.socket:
    """A connected socket to ``where``, its TLS handshake done."""
    try:
        if where.path is None:
            assert where.host is not None and where.port is not None
            sock = socket.create_connection((where.host, where.port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            family = getattr(socket, "AF_UNIX", None)
            if family is None:
                raise OSError(f"Unix domain sockets are not available here: {where.path}")
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(where.path)
            except BaseException:
                sock.close()
                raise
        if where.context is None:
            return sock
        try:
            return where.context.wrap_socket(sock, server_hostname=where.server_hostname or None)
        except BaseException:
            sock.close()
            raise
    except socket.timeout:
        raise timed_out(f"connect to {where.describe()}", timeout) from None


class Client:
    """A connection to a server that sends and receives whole messages (blocking).

    Made by `connect`. ``send(m)`` frames and sends one message (``send_many`` several
    in one write); ``recv()`` returns the next one whole; ``request(m)`` is both;
    iterating yields the incoming messages until the server ends the stream. A context
    manager: ``with connect(...) as client:`` closes it on exit. With ``raw`` framing
    there are no message boundaries: ``recv`` returns what one read gave.
    """

    def __init__(
        self,
        sock: socket.socket,
        framing: Framing,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        timeout: float | None = None,
    ) -> None:
        """Speak ``framing`` over ``sock``, a connected stream socket (TLS too), which the
        client owns from now on; ``timeout`` is set on it."""
        sock.settimeout(timeout)
        self._sock = sock
        self._framing = framing
        self._inbox = Inbox(framing, max_frame)
        self._timeout = timeout
        self._closed = False

    @property
    def framing(self) -> Framing:
        """The framing of both directions."""
        return self._framing

    @property
    def closed(self) -> bool:
        """Whether the client is closed (by ``close`` or by an error)."""
        return self._closed

    @property
    def socket(self) -> socket.socket:
        """The socket (an ``ssl.SSLSocket`` with TLS), for its address and options; reading
        or writing it directly breaks the framing."""
        return self._sock

    def send(self, message: Message) -> None:
        """Frame ``message`` and send it whole.

        `FramingError` if the framing cannot carry it (nothing sent); `ConnectionClosed`
        once closed; ``TimeoutError`` or ``OSError`` (the client then closed).
        """
        self._write(self._framing.encode(payload(message)))

    def send_many(self, messages: Iterable[Message]) -> None:
        """Frame every message and send them together, in one write: pipelined, as the
        server may then read them in one go. Errors as ``send`` (all refused if one
        cannot be framed)."""
        self._write(b"".join(self._framing.encode(payload(m)) for m in messages))

    def _write(self, frames: bytes) -> None:
        """Send ``frames`` whole; a failure or timeout (part of them may have gone) closes."""
        if self._closed:
            raise closed_client()
        try:
            self._sock.sendall(frames)
        except socket.timeout:
            self.close()
            raise timed_out("send", self._timeout) from None
        except BaseException:
            self.close()
            raise

    def recv(self) -> bytes:
        """The next message (waits for it).

        `ConnectionClosed` at a clean end of stream or once closed; `FramingError` if the
        stream ended inside a frame, `FrameTooLarge` for a message over ``max_frame``;
        ``TimeoutError``.
        """
        message = self._next()
        if message is None:
            raise end_of_stream()
        return message

    def request(self, message: Message) -> bytes:
        """Send ``message``, then return the next message received (its reply, from a
        server that answers each message in order)."""
        self.send(message)
        return self.recv()

    def __iter__(self) -> Iterator[bytes]:
        """The incoming messages, until a clean end of stream (errors as ``recv``)."""
        while True:
            message = self._next()
            if message is None:
                return
            yield message

    def close(self) -> None:
        """Close the connection. Idempotent."""
        if not self._closed:
            self._closed = True
            self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        self.close()
        return False

    def _next(self) -> bytes | None:
        """The next message, or None at the end of the stream."""
        if self._closed:
            raise closed_client()
        while True:
            message = self._inbox.take()
            if message is not None:
                return message
            if self._inbox.ended:
                return None
            try:
                chunk = self._sock.recv(READ_SIZE)
            except socket.timeout:
                raise timed_out("recv", self._timeout) from None
            except OSError:
                self.close()
                raise
            try:
                self._inbox.feed(chunk)
            except ValueError:  # FramingError, FrameTooLarge
                self.close()
                raise
