"""A client's received messages: the bytes read, cut by the framing's decoder into whole
messages that wait for ``recv``; what the end of the stream means.

The rules, for both clients: a clean end of stream (at a frame boundary) is the end of
the messages; a stream that ends inside a length-prefixed frame is a `FramingError`
naming how many bytes of that frame arrived; with lines, a last line without its
delimiter is a message (the server's decoder reads it so too); a frame over
``max_frame`` is `FrameTooLarge` (the caller then closes the connection).
"""

from __future__ import annotations

from collections import deque

from ._native import FrameTooLarge, Framing, FramingError

READ_SIZE = 1 << 16
"""Bytes asked of the socket per read."""


class Inbox:
    """The messages decoded and not yet taken, and whether the stream has ended."""

    def __init__(self, framing: Framing, max_frame: int) -> None:
        self._decoder = framing.decoder(max_frame)
        self._messages: deque[bytes] = deque()
        self.ended = False
        """The stream ended (the messages left may still be taken)."""

    def take(self) -> bytes | None:
        """The next whole message, or None if none is waiting."""
        return self._messages.popleft() if self._messages else None

    def feed(self, chunk: bytes) -> None:
        """The next bytes read; ``b""``: the end of the stream.

        ``FrameTooLarge`` for a frame over ``max_frame``; ``FramingError`` for a stream
        that ended inside a frame.
        """
        if chunk:
            try:
                self._messages.extend(self._decoder.feed(chunk))
            except FrameTooLarge as e:
                raise FrameTooLarge(f"received {e}; the client closed the connection") from None
            return
        self.ended = True
        try:
            self._messages.extend(self._decoder.finish())
        except FramingError as e:
            raise FramingError(f"the server closed the connection mid-frame: {e}") from None
