"""The carrier of async lanes' eager steps (see ``iocp_echo._aio``): a parked Task that is
the current task while a coroutine's first step runs by hand, and that carries the
coroutine on if it suspends, so the task the coroutine saw (``asyncio.current_task()``,
``asyncio.timeout()``) is the task it runs in. Python 3.12's eager tasks do the same
inside asyncio; this works on 3.9 and later.

Rules: a carrier is used only once parked (its Task has run its first step), so a cancel
always lands inside its coroutine; one cancelled between the suspension and its first
wake-up cancels the coroutine as its task would have (the future it waits on is
cancelled, or a bare yield gets ``CancelledError`` thrown in).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Generator
from contextvars import Context
from typing import Any, Protocol

__all__ = ["EAGER", "UNSTARTED", "CarriedLane", "Carrier", "Resumed", "enter_task", "leave_task"]

# What asyncio's own tasks use to be current (in every supported Python); without
# them (EAGER false) every coroutine runs in a Task of its own from the start.
try:
    from asyncio.tasks import _enter_task as enter_task
    from asyncio.tasks import _leave_task as leave_task

    EAGER = True
except ImportError:  # pragma: no cover
    EAGER = False

    def enter_task(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
        pass

    def leave_task(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
        pass


class CarriedLane(Protocol):
    """What a carrier hands the rest of a coroutine to (a lane)."""

    async def carry_on(self, awaitable: Awaitable[Any]) -> None:
        """Await ``awaitable``, then go on with the lane's work."""


class Carrier:
    """A Task parked until a coroutine's first step (run by hand with this Task as the
    current one) suspends; then it carries that coroutine on, and its lane's queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.parked = False
        self._waiter: asyncio.Future[tuple[CarriedLane, Resumed]] = loop.create_future()
        self.task = loop.create_task(self._carry())

    def carry(self, lane: CarriedLane, rest: Resumed) -> None:
        self._waiter.set_result((lane, rest))

    async def _carry(self) -> None:
        self.parked = True
        try:
            lane, rest = await self._waiter
        except asyncio.CancelledError:
            if not self._waiter.done() or self._waiter.cancelled():
                raise  # retired while parked
            # Cancelled between the coroutine's suspension and this first wake-up
            # (its connection closed meanwhile): the coroutine hears it.
            lane, rest = self._waiter.result()
            rest.cancel()
        await lane.carry_on(rest)


# ``Resumed``'s ``first`` for a coroutine not started yet: its first step is its own.
UNSTARTED: Any = object()


class Resumed:
    """The rest of a coroutine whose first step ran by hand and yielded ``first``:
    awaiting this yields ``first`` again (to the task that now runs it: a future to wait
    for, or None for a bare yield), then steps the coroutine as ``await coro`` would,
    each step in ``ctx`` (the context its first step ran in). With ``first`` UNSTARTED:
    a coroutine not started yet, all of whose steps run in ``ctx``."""

    __slots__ = ("_cancel", "_coro", "_ctx", "_first", "_started")

    def __init__(self, coro: Any, first: Any, ctx: Context) -> None:
        self._coro = coro
        self._ctx = ctx
        self._first = first
        self._started = False
        self._cancel = False

    def cancel(self) -> None:
        """Its task was cancelled before it ran: the coroutine is cancelled as if its
        task had been while it waited."""
        self._cancel = True

    def __await__(self) -> Generator[Any, Any, Any]:
        return self

    def __iter__(self) -> Resumed:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def send(self, value: Any) -> Any:
        if self._started:
            return self._ctx.run(self._coro.send, value)
        self._started = True
        if self._first is UNSTARTED:
            return self._ctx.run(self._coro.send, None)
        if not self._cancel:
            return self._first
        if asyncio.isfuture(self._first):
            self._first.cancel()  # the task wakes and throws CancelledError in
            return self._first
        return self._ctx.run(self._coro.throw, asyncio.CancelledError())

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        self._started = True
        return self._ctx.run(self._coro.throw, typ if val is None else val)

    def close(self) -> None:
        self._ctx.run(self._coro.close)
