"""Async callbacks: awaiting a protocol's coroutines on an asyncio event loop.

A connection whose ``message_received`` returned a coroutine gets a :class:`Lane`: from
then on its worker hands each of its frames to the lane (never waiting for the loop), and
the lane, on the loop, calls ``message_received`` per frame, awaits the result if it is
awaitable and sends the reply with ``Connection.send``, one frame at a time, in order.
Different connections' lanes run concurrently on the loop. A coroutine that raises is
logged on the ``iocp_echo`` logger and closes its connection only (after the
replies to its earlier messages). ``connection_lost``
of a lane's protocol is called on the loop, once, after its running coroutine (if any)
was cancelled: still the last callback.

The loop is the one running where the server was started, else a thread of the
:class:`Runner`'s own, started on first need and joined when the server closes.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from ._native import Connection, ConnectionClosed

_log = logging.getLogger("iocp_echo")

# How long closing the server waits for lanes to deliver ``connection_lost`` on the loop.
_LOST_TIMEOUT = 10.0


class Runner:
    """One server's asyncio side: its loop (given or its own thread) and its lanes."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._loop = loop
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._lanes: set[Lane] = set()
        self._no_lanes = threading.Condition(self._lock)

    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop lanes run on, starting the runner's own thread on first need."""
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=loop.run_forever, name="iocp_echo-asyncio", daemon=True
                )
                self._thread.start()
                self._loop = loop
            return self._loop

    def lane(self, conn: Connection, protocol: Any, first: Awaitable[Any]) -> Lane:
        """A new lane for ``conn``, running ``first`` (the coroutine its protocol returned)."""
        lane = Lane(self, self.loop(), conn, protocol)
        with self._lock:
            self._lanes.add(lane)
        lane.start(first)
        return lane

    def finished(self, lane: Lane) -> None:
        with self._lock:
            self._lanes.discard(lane)
            if not self._lanes:
                self._no_lanes.notify_all()

    def idle(self) -> bool:
        """Whether every lane has delivered its ``connection_lost``."""
        with self._lock:
            return not self._lanes

    def close(self) -> None:
        """The server closed (every lane was told): on the runner's own loop thread, let
        the lanes finish, then stop the loop and join the thread."""
        with self._lock:
            thread, loop = self._thread, self._loop
            if thread is None or loop is None:
                return
            self._no_lanes.wait_for(lambda: not self._lanes, timeout=_LOST_TIMEOUT)
            self._thread = None
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    async def wait_idle(self) -> None:
        """On the server's loop: until every lane has delivered its ``connection_lost``."""
        while not self.idle():
            await asyncio.sleep(0.01)


class Lane:
    """One connection's frames, handled one at a time, in order, on the loop."""

    def __init__(
        self, runner: Runner, loop: asyncio.AbstractEventLoop, conn: Connection, protocol: Any
    ) -> None:
        self._runner = runner
        self._loop = loop
        self._conn = conn
        self._protocol = protocol
        self._queue: deque[Any] = deque()
        self._task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._lost = False

    # Called on the connection's worker thread: hand over, never wait.

    def start(self, first: Awaitable[Any]) -> None:
        self._loop.call_soon_threadsafe(self._push, _Started(first))

    def message(self, message: bytes) -> None:
        """A later frame of the connection."""
        self._loop.call_soon_threadsafe(self._push, message)

    def lost(self, exc: BaseException | None) -> None:
        """The connection closed: cancel what runs, then ``connection_lost`` on the loop."""
        self._loop.call_soon_threadsafe(self._close, exc)

    # On the loop.

    def _push(self, item: Any) -> None:
        if self._lost or self._failure is not None:
            if isinstance(item, _Started):
                item.discard()
            return
        self._queue.append(item)
        if self._task is None:
            self._task = self._loop.create_task(self._run())

    async def _run(self) -> None:
        try:
            while self._queue:
                item = self._queue.popleft()
                if isinstance(item, _Started):
                    reply = await item.awaitable
                else:
                    reply = self._protocol.message_received(item)
                    if inspect.isawaitable(reply):
                        reply = await reply
                if reply is not None:
                    self._conn.send(reply)
        except ConnectionClosed:
            self._queue.clear()  # closed meanwhile: its Close event is on its way
        except Exception as exc:
            _log.error("message_received failed; closing its connection", exc_info=exc)
            self._failure = exc
            self._queue.clear()
            # Like a sync failure: the replies to earlier messages still go out (they
            # were pushed, and an abort would drop them), nothing more is read.
            self._conn.close()
        finally:
            self._task = None

    def _close(self, exc: BaseException | None) -> None:
        self._lost = True
        for item in self._queue:
            if isinstance(item, _Started):
                item.discard()
        self._queue.clear()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            task.add_done_callback(lambda _: self._deliver(exc))
        else:
            self._deliver(exc)

    def _deliver(self, exc: BaseException | None) -> None:
        try:
            self._protocol.connection_lost(self._failure if self._failure is not None else exc)
        except Exception as err:
            _log.error("connection_lost failed", exc_info=err)
        finally:
            self._runner.finished(self)


class _Started:
    """The coroutine a connection's first async ``message_received`` returned."""

    def __init__(self, awaitable: Awaitable[Any]) -> None:
        self.awaitable = awaitable

    def discard(self) -> None:
        """Never awaited: close it, so it does not warn."""
        close = getattr(self.awaitable, "close", None)
        if close is not None:
            close()


class AsyncHandler:
    """``Server(handler=async_fn)``: a protocol whose ``message_received`` is ``async_fn``,
    so its frames get a lane (an order per connection) like an async protocol's."""

    __slots__ = ("message_received",)

    def __init__(self, handler: Callable[[bytes], Awaitable[Any]]) -> None:
        self.message_received = handler

    def connection_made(self, conn: Connection) -> None:
        pass

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    def connection_lost(self, exc: BaseException | None) -> None:
        pass


def async_handler_protocol(
    handler: Callable[[bytes], Awaitable[Any]],
) -> Callable[[], AsyncHandler]:
    """The protocol factory ``Server(handler=async_fn)`` runs as (called from Rust)."""
    return lambda: AsyncHandler(handler)


def is_async_callable(handler: object) -> bool:
    """Whether calling ``handler`` makes a coroutine (an ``async def`` function, or an
    object whose ``__call__`` is one)."""
    if inspect.iscoroutinefunction(handler):
        return True
    call = getattr(handler, "__call__", None)  # noqa: B004
    return not inspect.isfunction(handler) and inspect.iscoroutinefunction(call)


async def drain(conn: Connection) -> None:
    """``await conn.drain()``: at once unless the connection's output is paused (it passed
    ``high_water``); then until it falls back to ``low_water`` (``resume_writing``).
    ``ConnectionClosed`` if the connection is or gets closed."""
    loop = asyncio.get_running_loop()
    while True:
        if conn.closed:
            raise ConnectionClosed(f"connection {conn.id} is closed")
        woken = loop.create_future()

        def wake(woken: asyncio.Future[None] = woken) -> None:
            loop.call_soon_threadsafe(_settle, woken)

        # Added only while paused and open, atomically with the worker's wake-up.
        if not conn._add_drain_waiter(wake):
            if conn.closed:
                raise ConnectionClosed(f"connection {conn.id} is closed")
            return
        await woken


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
