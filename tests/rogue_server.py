"""A server that misbehaves on purpose, for the client tests: what the real server never
does (cut a frame and close, never read, never answer a TLS hello) done by a plain
socket on a thread, one scripted connection at a time.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from helpers import Address

Script = Callable[[socket.socket], None]
"""What the server does with its accepted connection (closed after it returns)."""


@contextmanager
def rogue(script: Script) -> Iterator[Address]:
    """Listen on 127.0.0.1 (port 0); run ``script`` on the first connection accepted, then
    close it. Yields the address; on exit, waits for the script (closing the listener
    first, so a client that never came does not hang it) and raises what it raised."""
    listener = socket.create_server(("127.0.0.1", 0))
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:  # closed before any client came
            return
        try:
            with conn:
                script(conn)
        except BaseException as e:
            failure.append(e)

    thread = threading.Thread(target=serve, name="rogue-server", daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[:2]
    finally:
        try:
            listener.shutdown(socket.SHUT_RDWR)  # wakes an accept still waiting (Linux)
        except OSError:
            pass
        listener.close()
        thread.join(30)
    assert not thread.is_alive(), "the rogue server's script did not end"
    if failure:
        raise failure[0]


def send_then_close(data: bytes) -> Script:
    """A script: read nothing, send ``data``, end the stream (FIN), close."""

    def script(conn: socket.socket) -> None:
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)

    return script


def hold(release: threading.Event) -> Script:
    """A script: never read nor write until ``release`` is set (at most a minute)."""

    def script(conn: socket.socket) -> None:
        release.wait(60)

    return script
