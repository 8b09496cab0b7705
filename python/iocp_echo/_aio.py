"""Async callbacks: awaiting a protocol's coroutines on an asyncio event loop.

A connection whose ``message_received`` returned a coroutine gets a :class:`Lane`: from
then on its worker hands each of its frames to the lane (never waiting for the loop), and
the lane, on the loop, calls ``message_received`` per frame, awaits the result if it is
awaitable and sends the reply, one frame at a time, in order. Different connections'
lanes run concurrently on the loop. A coroutine that raises is logged on the
``iocp_echo`` logger and closes its connection only (after the replies to its earlier
messages). ``connection_lost`` of a lane's protocol is called on the loop, once, after
its running coroutine (if any) was cancelled: still the last callback.

The loop is the one running where the server was started, else a thread of the
:class:`Runner`'s own, started on first need and joined when the server closes.

**Cost per message.** A worker hands over everything of one turn at once
(:func:`hand_over`: the frames, first coroutines and closes of its async connections, in
order), and the runner's loop is woken once for all that piles up until it runs
(:meth:`Runner.deliver`). In that pass a lane that is idle runs its message's coroutine
at once, one step by hand (as Python 3.12's eager tasks do): one that returns without
suspending needs no Task, and its reply joins the pass's replies, posted to the workers
together at the end of the pass (``Connection._send_each``: one mailbox post and wake
per worker). While that step runs, the current task is a parked Task of the runner's
(the *carrier*, ``iocp_echo._carrier``), so ``asyncio.current_task()`` and
``asyncio.timeout()`` work; a coroutine that suspends is carried on by that very Task
(which resumes it from the future it waits on, cancellation forwarded), so the task it
saw is the task it runs in. Each message runs in a new, empty ``contextvars`` context
(its first step and the rest alike), so nothing one message sets is seen by another. A
lane with a running Task queues its later frames; the Task answers them in order,
sending each reply with ``Connection.send``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import threading
import types
from collections import deque
from collections.abc import Awaitable, Callable
from contextvars import Context
from typing import Any

from ._carrier import EAGER, UNSTARTED, Carrier, Resumed, enter_task, leave_task
from ._native import Connection, ConnectionClosed

_log = logging.getLogger("iocp_echo")

# How long closing the server waits for lanes to deliver ``connection_lost`` on the loop.
_LOST_TIMEOUT = 10.0

_Coroutine = types.CoroutineType


def hand_over(items: list[Any]) -> None:
    """Called by a worker once per turn with ``[lane, item, lane, item, ...]``: each
    item a frame (``bytes``), the awaitable a connection's first async
    ``message_received`` returned, or a :class:`Lost`; all lanes of one runner."""
    items[0].runner.deliver(items)


class Lost:
    """A lane's connection closed: ``exc`` is for ``connection_lost``."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException | None) -> None:
        self.exc = exc


class Runner:
    """One server's asyncio side: its loop (given or its own thread) and its lanes."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._loop = loop
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._lanes: set[Lane] = set()
        self._no_lanes = threading.Condition(self._lock)
        # Handed over by workers, not yet taken by a pass (guarded by _inbox_lock).
        self._inbox_lock = threading.Lock()
        self._inbox: list[Any] = []
        self._scheduled = False
        # On the loop: this pass's replies ``[conn, reply, ...]`` and their lanes.
        self._replies: list[Any] = []
        self._replying: list[Lane] = []
        self._carrier: Carrier | None = None
        self._retired = False

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

    def lane(self, conn: Connection, protocol: Any) -> Lane:
        """A new lane for ``conn``; its first item (the awaitable its protocol returned)
        comes with the worker's turn."""
        lane = Lane(self, self.loop(), conn, protocol)
        with self._lock:
            self._lanes.add(lane)
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
        the lanes finish, then stop the loop, join the thread and end what tasks are
        left; on a given loop, retire the carrier."""
        with self._lock:
            thread, loop = self._thread, self._loop
            if thread is None or loop is None:
                if loop is not None and not loop.is_closed():
                    try:
                        loop.call_soon_threadsafe(self.retire)
                    except RuntimeError:  # closed meanwhile
                        pass
                return
            self._no_lanes.wait_for(lambda: not self._lanes, timeout=_LOST_TIMEOUT)
            self._thread = None
        loop.call_soon_threadsafe(self._stop)
        thread.join()
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # none here: end what tasks are left, as asyncio.run does
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            if left:
                loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        loop.close()

    def _stop(self) -> None:
        """On the runner's own loop: retire the carrier, then stop once it has ended."""
        assert self._loop is not None
        self.retire()
        self._loop.call_soon(self._loop.stop)

    async def wait_idle(self) -> None:
        """On the server's loop: until every lane has delivered its ``connection_lost``."""
        while not self.idle():
            await asyncio.sleep(0.01)
        self.retire()

    def retire(self) -> None:
        """On the loop: cancel the parked carrier, and park no more (the server
        closed; a coroutine that suspends from now on gets a Task of its own)."""
        self._retired = True
        carrier, self._carrier = self._carrier, None
        if carrier is not None:
            carrier.task.cancel()

    # Called on a worker thread: hand over, never wait.

    def deliver(self, items: list[Any]) -> None:
        """A worker's turn (see :func:`hand_over`): one wake of the loop for all that
        piles up until its pass runs."""
        assert self._loop is not None
        with self._inbox_lock:
            self._inbox += items
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._pass)
        except BaseException:
            # The loop is closed: nothing handed over will run; close those connections.
            with self._inbox_lock:
                items, self._inbox, self._scheduled = self._inbox, [], False
            for lane in items[::2]:
                lane.conn.abort()
            raise

    # On the loop.

    def _pass(self) -> None:
        with self._inbox_lock:
            items, self._inbox, self._scheduled = self._inbox, [], False
        replies, replying = self._replies, self._replying
        loop, carrier = self._loop, self._carrier
        assert loop is not None
        # The parked carrier's Task while there is one (a suspension takes it).
        task = carrier.task if carrier is not None and carrier.parked else None
        enter, leave = enter_task, leave_task
        it = iter(items)
        for lane, item in zip(it, it):
            if lane.task is not None or lane.stopped or type(item) is not bytes:
                lane.take(item)
                if task is not None and self._carrier is not carrier:
                    task = None  # a suspension in it took the carrier
                continue
            # The common case, written out (Lane.take and Runner.step do the same): an
            # idle lane's frame, its coroutine's first step run here. Each message runs
            # in a new, empty context: nothing it sets leaks to another message.
            ctx = Context()
            try:
                reply = ctx.run(lane.protocol.message_received, item)
                if type(reply) is _Coroutine:
                    if task is None:
                        reply = self.step(lane, reply, ctx)
                        if reply is _SUSPENDED:
                            continue
                    else:
                        coro = reply
                        enter(loop, task)
                        try:
                            yielded = ctx.run(coro.send, None)
                        except StopIteration as stop:
                            leave(loop, task)
                            reply = stop.value
                        except BaseException:
                            leave(loop, task)
                            raise
                        else:
                            leave(loop, task)
                            self._carry(lane, coro, yielded, ctx)
                            task = None
                            continue
                elif reply is not None and inspect.isawaitable(reply):
                    lane.task = _task(loop, lane.carry_on(reply), ctx)
                    continue
            except (Exception, asyncio.CancelledError) as exc:
                lane.fail(exc)
                continue
            if reply is not None:
                replies += (lane.conn, reply)
                replying.append(lane)
        if replies:
            self.flush()

    def reply(self, lane: Lane, reply: Any) -> None:
        """Send ``reply`` on ``lane``'s connection at the end of this pass."""
        self._replies += (lane.conn, reply)
        self._replying.append(lane)

    def flush(self) -> None:
        """Post this pass's replies (in order), all at once."""
        failures = Connection._send_each(self._replies)
        self._replies.clear()  # in place: a pass holds these lists
        lanes = self._replying[:] if failures else ()
        self._replying.clear()
        for k, exc in failures:
            lanes[k].refused(exc)

    def step(self, lane: Lane, coro: Any, ctx: Context) -> Any:
        """Run ``coro``'s first step now, in ``ctx``, with the carrier as the current
        task: its return value, or :data:`_SUSPENDED` when it awaits (the carrier
        carries it on as ``lane``'s task, still in ``ctx``). No carrier ready (none
        yet, or it was just taken): it runs in a Task of its own from the start."""
        carrier = self._carrier
        loop = lane.loop
        if carrier is None or not carrier.parked:
            if carrier is None and EAGER and not self._retired:
                self._carrier = Carrier(loop)
            lane.task = _task(loop, lane.carry_on(coro), ctx)
            return _SUSPENDED
        enter_task(loop, carrier.task)
        try:
            yielded = ctx.run(coro.send, None)
        except StopIteration as stop:
            return stop.value
        finally:
            leave_task(loop, carrier.task)
        self._carry(lane, coro, yielded, ctx)
        return _SUSPENDED

    def _carry(self, lane: Lane, coro: Any, yielded: Any, ctx: Context) -> None:
        """``coro`` suspended in its first step (yielding ``yielded``): the parked
        carrier carries it on as ``lane``'s task; a new carrier parks."""
        carrier = self._carrier
        assert carrier is not None
        self._carrier = None if self._retired else Carrier(lane.loop)
        lane.task = carrier.task
        carrier.carry(lane, Resumed(coro, yielded, ctx))


def _task(loop: asyncio.AbstractEventLoop, coro: Any, ctx: Context) -> asyncio.Task[None]:
    """A Task running ``coro`` in ``ctx`` (where Python lets a Task be given one: 3.11)."""
    if sys.version_info >= (3, 11):
        return loop.create_task(coro, context=ctx)
    return loop.create_task(coro)  # pragma: no cover


# What Runner.step returns for a coroutine that did not finish in its first step.
_SUSPENDED: Any = object()


class Lane:
    """One connection's frames, handled one at a time, in order, on the loop."""

    def __init__(
        self, runner: Runner, loop: asyncio.AbstractEventLoop, conn: Connection, protocol: Any
    ) -> None:
        self.runner = runner
        self.loop = loop
        self.conn = conn
        self.protocol = protocol
        self._queue: deque[Any] = deque()
        # The Task answering the lane's frames (while one suspended), else None.
        self.task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        # Lost or failed: nothing more is answered.
        self.stopped = False

    def take(self, item: Any) -> None:
        """The next item of the connection (see :func:`hand_over`), in a pass."""
        if type(item) is Lost:
            self._close(item.exc)
        elif self.stopped:
            _discard(item)
        elif self.task is not None:
            self._queue.append(item)
        else:
            self._answer_now(item)

    def _answer_now(self, item: Any) -> None:
        """Answer ``item`` in this pass: its coroutine's first step now; a reply goes
        out with the pass's replies."""
        try:
            if type(item) is bytes:
                reply = self.protocol.message_received(item)
            else:
                reply = item  # the first awaitable
            if type(reply) is _Coroutine:
                reply = self.runner.step(self, reply, Context())
            elif reply is not None and inspect.isawaitable(reply):
                self.task = self.loop.create_task(self.carry_on(reply))
                return
        except (Exception, asyncio.CancelledError) as exc:
            self.fail(exc)
            return
        if reply is _SUSPENDED or reply is None:
            return
        self.runner.reply(self, reply)

    async def carry_on(self, awaitable: Awaitable[Any]) -> None:
        """As the lane's Task: await ``awaitable`` (the current frame's), send its
        reply, then answer the queued frames one by one."""
        try:
            reply = await awaitable
            while True:
                if reply is not None:
                    self.conn.send(reply)
                if not self._queue:
                    break
                item = self._queue.popleft()
                ctx = Context()  # each message its own, as in a pass
                if type(item) is bytes:
                    reply = ctx.run(self.protocol.message_received, item)
                else:
                    reply = item
                if type(reply) is _Coroutine:
                    reply = await Resumed(reply, UNSTARTED, ctx)
                elif inspect.isawaitable(reply):
                    reply = await reply
        except ConnectionClosed:
            self._clear()  # closed meanwhile: its Close event is on its way
        except Exception as exc:
            self.fail(exc)
        finally:
            self.task = None

    def refused(self, exc: BaseException) -> None:
        """A reply of this pass was not sent: closed meanwhile, or it could not be."""
        if isinstance(exc, ConnectionClosed):
            self._clear()
        else:
            self.fail(exc)

    def fail(self, exc: BaseException) -> None:
        """``message_received`` (or its coroutine, or its reply) failed with ``exc``."""
        _log.error("message_received failed; closing its connection", exc_info=exc)
        self._failure = exc
        self.stopped = True
        self._clear()
        # Like a sync failure: the replies to earlier messages still go out (an abort
        # would drop them), nothing more is read.
        self.runner.flush()
        self.conn.close()

    def _clear(self) -> None:
        for item in self._queue:
            _discard(item)
        self._queue.clear()

    def _close(self, exc: BaseException | None) -> None:
        self.stopped = True
        self._clear()
        task = self.task
        if task is not None and not task.done():
            task.cancel()
            task.add_done_callback(lambda _: self._deliver(exc))
        else:
            self._deliver(exc)

    def _deliver(self, exc: BaseException | None) -> None:
        try:
            self.protocol.connection_lost(self._failure if self._failure is not None else exc)
        except Exception as err:
            _log.error("connection_lost failed", exc_info=err)
        finally:
            self.runner.finished(self)


def _discard(item: Any) -> None:
    """An item never answered: close a coroutine, so it does not warn."""
    if type(item) is not bytes:
        close = getattr(item, "close", None)
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


_CATCH_UP_SECONDS = 0.001
"""How long ``drain()`` waits before looking again when sends passed ``high_water`` and
the worker has not yet paused the connection."""


async def drain(conn: Connection) -> None:
    """``await conn.drain()``: at once unless the connection's output passed ``high_water``
    (paused, or sent past it from any thread and not yet taken by its worker, which
    pauses it then); else until it falls back to ``low_water`` (``resume_writing``).
    ``ConnectionClosed`` if the connection is or gets closed."""
    loop = asyncio.get_running_loop()
    while True:
        if conn.closed:
            raise ConnectionClosed(f"connection {conn.id} is closed")
        woken = loop.create_future()

        def wake(woken: asyncio.Future[None] = woken) -> None:
            loop.call_soon_threadsafe(_settle, woken)

        # Added only while paused and open, atomically with the worker's wake-up.
        if conn._add_drain_waiter(wake):
            await woken
            continue
        if conn.closed:
            raise ConnectionClosed(f"connection {conn.id} is closed")
        if not conn._above_high_water:
            return
        # Not paused yet, but what was sent passed high_water: the connection's
        # worker pauses it once it takes those sends (within its next turn).
        await asyncio.sleep(_CATCH_UP_SECONDS)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
