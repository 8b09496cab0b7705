"""The asyncio framed client: `open_connection` and `AsyncClient`.

The same client as `Client` (the same framing, errors and ``timeout`` rules, see
``iocp_echo._client``) on asyncio's streams, its methods coroutines; one difference: a
``send`` that timed out leaves the client open, its frame queued whole in the transport.

Closing follows asyncio's ``StreamWriter``: ``close()`` starts it, ``await wait_closed()``
waits for it; ``await aclose()`` (for ``contextlib.aclosing``) and ``async with`` do both.
A task may ``send`` while another ``recv``s; two tasks must not ``recv`` at once.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from typing_extensions import Self

from ._client import Message, payload
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

T = TypeVar("T")


async def open_connection(
    address: Address,
    *,
    framing: Framing | str = "raw",
    tls: ssl.SSLContext | bool | None = None,
    server_hostname: str | None = None,
    timeout: float | None = None,
    max_frame: int = DEFAULT_MAX_FRAME,
) -> AsyncClient:
    """Connect to an iocp_echo server from asyncio: an `AsyncClient`.

    The arguments are `connect`'s: ``address`` a ``(host, port)`` or a Unix socket path,
    ``framing`` a `Framing` or a name, ``tls`` an ``ssl.SSLContext`` or True (as
    ``asyncio.open_connection(ssl=...)``, ``server_hostname`` likewise), ``timeout``
    seconds for connecting and for each later call, ``max_frame`` the largest payload
    accepted. ``OSError`` if connecting fails, ``TimeoutError`` after ``timeout``.
    """
    where = target(address, tls, server_hostname)
    codec = framing_of(framing)
    check_max_frame(max_frame)
    reader, writer = await _bounded(_open(where), timeout, f"connect to {where.describe()}")
    return AsyncClient(reader, writer, codec, max_frame=max_frame, timeout=timeout)


async def _open(where: Target) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """asyncio's streams connected to ``where``, the TLS handshake done."""
    tls: dict[str, Any] = {}
    if where.context is not None:
        tls = {"ssl": where.context, "server_hostname": where.server_hostname}
    if where.path is not None:
        if not hasattr(asyncio, "open_unix_connection"):
            raise OSError(f"Unix domain sockets are not available here: {where.path}")
        return await asyncio.open_unix_connection(where.path, limit=READ_SIZE, **tls)
    return await asyncio.open_connection(where.host, where.port, limit=READ_SIZE, **tls)


async def _bounded(step: Awaitable[T], timeout: float | None, what: str) -> T:
    """``await step`` within ``timeout``; ``TimeoutError`` (the builtin) after it."""
    if timeout is None:
        return await step
    try:
        return await asyncio.wait_for(step, timeout)
    except asyncio.TimeoutError:
        raise timed_out(what, timeout) from None


class AsyncClient:
    """A connection to a server that sends and receives whole messages, for asyncio.

    Made by `open_connection`. ``await send(m)`` (``send_many`` to pipeline),
    ``await recv()``, ``await request(m)``,
    ``async for message in client``, ``async with client:``; ``close()`` with
    ``await wait_closed()``, or ``await aclose()``.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        framing: Framing,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        timeout: float | None = None,
    ) -> None:
        """Speak ``framing`` over asyncio's streams of one connection (owned from now on)."""
        self._reader = reader
        self._writer = writer
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

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The transport's ``get_extra_info`` (``"peername"``, ``"socket"``,
        ``"ssl_object"``, ...)."""
        return self._writer.get_extra_info(name, default)

    async def send(self, message: Message) -> None:
        """Frame ``message``, write it and wait until the transport takes more
        (``drain``).

        `FramingError` if the framing cannot carry it (nothing sent); `ConnectionClosed`
        once closed; ``OSError`` (the client then closed); ``TimeoutError`` if the server
        does not take it in time (the frame stays queued whole: the client stays open).
        """
        await self._write(self._framing.encode(payload(message)))

    async def send_many(self, messages: Iterable[Message]) -> None:
        """Frame every message and write them together, in one write (pipelined); errors
        as ``send`` (all refused if one cannot be framed)."""
        await self._write(b"".join(self._framing.encode(payload(m)) for m in messages))

    async def _write(self, frames: bytes) -> None:
        if self._closed:
            raise closed_client()
        self._writer.write(frames)
        try:
            await _bounded(self._writer.drain(), self._timeout, "send")
        except TimeoutError:
            raise  # the frames wait whole in the transport's buffer: nothing is cut
        except OSError:
            self.close()
            raise

    async def recv(self) -> bytes:
        """The next message (waits for it); errors as ``Client.recv``."""
        message = await self._next()
        if message is None:
            raise end_of_stream()
        return message

    async def request(self, message: Message) -> bytes:
        """Send ``message``, then return the next message received (its reply)."""
        await self.send(message)
        return await self.recv()

    def __aiter__(self) -> AsyncIterator[bytes]:
        """The incoming messages, until a clean end of stream (errors as ``recv``)."""
        return self._messages()

    async def _messages(self) -> AsyncIterator[bytes]:
        while True:
            message = await self._next()
            if message is None:
                return
            yield message

    def close(self) -> None:
        """Start closing the connection (``await wait_closed()`` for the end). Idempotent."""
        if not self._closed:
            self._closed = True
            self._writer.close()

    async def wait_closed(self) -> None:
        """Until the connection is closed: the queued output sent first, for at most
        ``timeout`` seconds if one was given (then the connection is aborted). Errors of
        closing (a peer already gone, an unclean TLS end) are not raised: there is
        nothing left to do about them."""
        closed = asyncio.ensure_future(self._writer.wait_closed())
        try:
            try:
                # Shielded: a timeout must not cancel the transport's own close waiter.
                await _bounded(asyncio.shield(closed), self._timeout, "close")
            except TimeoutError:
                self._writer.transport.abort()
                await closed
        except OSError:  # ConnectionError, ssl.SSLError
            pass

    async def aclose(self) -> None:
        """``close()``, then ``await wait_closed()``."""
        self.close()
        await self.wait_closed()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _next(self) -> bytes | None:
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
                chunk = await _bounded(self._reader.read(READ_SIZE), self._timeout, "recv")
            except TimeoutError:
                raise
            except OSError:
                self.close()
                raise
            try:
                self._inbox.feed(chunk)
            except ValueError:  # FramingError, FrameTooLarge
                self.close()
                raise
