"""The per-message path of async connections: a worker's turn handed over at once, an
idle lane's coroutine stepped by hand (a parked carrier Task current, carrying on what
suspends), a pass's replies posted together (``Connection._send_each``). Each keeps the
semantics of ``test_async.py``: order per connection, concurrency across connections,
failures closing only their connection, ``connection_lost`` once and last."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import sys
import threading
from contextvars import ContextVar, copy_context
from typing import Any, ClassVar

import pytest
from helpers import connect, framed, recv_frames, recv_until_closed, wait_for
from iocp_echo import Connection, ConnectionClosed, Framing, FramingError, Protocol, Server, _aio
from iocp_echo._aio import Runner
from iocp_echo._carrier import Carrier

LINES = Framing.lines()


def test_replies_keep_frame_order_per_connection_under_batching() -> None:
    # Many connections, two workers, every frame pipelined: whole turns are handed over,
    # and a pass mixes coroutines that finish at once with ones that suspend (once or
    # twice), so a connection's frames are answered now by hand, now by its Task.
    async def echo(message: bytes) -> bytes:
        n = int(message.rsplit(b" ", 1)[1])
        for _ in range(n % 3):
            await asyncio.sleep(0)
        return b"re " + message

    with Server(echo, framing=LINES, port=0, workers=2) as srv:
        clients = [framed(srv.address, LINES) for _ in range(40)]
        for c, client in enumerate(clients):
            client.send_many(b"c%d %d" % (c, i) for i in range(60))
        for c, client in enumerate(clients):
            replies = [client.recv() for _ in range(60)]
            assert replies == [b"re c%d %d" % (c, i) for i in range(60)]
        for client in clients:
            client.close()


class Steps(Protocol):
    """Records, per message, the task it ran in before and after suspending."""

    seen: ClassVar[list[tuple[bytes, Any, Any, int]]] = []

    async def message_received(self, message: bytes) -> bytes:
        before = asyncio.current_task()
        if message.startswith(b"suspend"):
            await asyncio.sleep(0.001)
        type(self).seen.append((message, before, asyncio.current_task(), threading.get_ident()))
        return message.upper()


def test_a_coroutine_runs_in_one_task_before_and_after_it_suspends() -> None:
    with Server(protocol=Steps, framing=LINES, port=0) as srv, framed(srv.address, LINES) as c:
        # The first message makes the lane (its carrier is parked after the pass);
        # later ones are stepped by hand with a carrier current.
        assert c.request(b"first") == b"FIRST"
        c.send_many([b"now", b"suspend 1", b"now again", b"suspend 2"])
        assert [c.recv() for _ in range(4)] == [b"NOW", b"SUSPEND 1", b"NOW AGAIN", b"SUSPEND 2"]
    messages = [b"first", b"now", b"suspend 1", b"now again", b"suspend 2"]
    assert [m for m, *_ in Steps.seen] == messages
    for message, before, after, thread in Steps.seen:
        assert before is not None and before is after, message
        assert thread != threading.get_ident()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is new in 3.11")
def test_asyncio_timeout_entered_before_the_first_suspension_cancels_the_right_task() -> None:
    async def slow(message: bytes) -> bytes:
        try:
            async with asyncio.timeout(0.01):  # entered in the step run by hand
                await asyncio.sleep(10 if message == b"slow" else 0)
        except TimeoutError:
            return b"timed out"
        return b"in time"

    with Server(slow, framing=LINES, port=0) as srv, framed(srv.address, LINES) as client:
        assert client.request(b"warm") == b"in time"
        client.send_many([b"slow", b"quick"])
        assert [client.recv(), client.recv()] == [b"timed out", b"in time"]


def test_a_coroutine_that_raises_after_suspending_closes_only_its_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lost: list[BaseException | None] = []

    class Late(Protocol):
        async def message_received(self, message: bytes) -> bytes:
            if message.startswith(b"boom"):
                if message == b"boom later":
                    await asyncio.sleep(0.001)
                raise ValueError(message.decode())
            return message

        def connection_lost(self, exc: BaseException | None) -> None:
            lost.append(exc)

    with caplog.at_level(logging.ERROR, "iocp_echo"):
        with Server(protocol=Late, framing=LINES, port=0) as srv:
            for boom in (b"boom later", b"boom now"):
                bad, good = connect(srv.address), framed(srv.address, LINES)
                # Earlier replies of the same pass still go out before the close.
                bad.sendall(b"one\ntwo\n" + boom + b"\nnever\n")
                assert recv_until_closed(bad) == b"one\ntwo\n"
                assert good.request(b"still") == b"still"
                bad.close()
                good.close()
            wait_for(lambda: len(lost) == 4, "connection_lost of every connection")
    failures = sorted(str(e) for e in lost if e is not None)
    assert failures == ["boom later", "boom now"]
    assert caplog.text.count("message_received failed") == 2


class Waiter(Protocol):
    """Awaits forever; records its cancellation, then connection_lost."""

    events: ClassVar[list[str]] = []
    started: ClassVar[threading.Event]

    async def message_received(self, message: bytes) -> bytes:
        type(self).started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            type(self).events.append("cancelled " + message.decode())
            raise
        return b"never"

    def connection_lost(self, exc: BaseException | None) -> None:
        type(self).events.append("lost")


@pytest.mark.parametrize("how", ["mid-await", "in-the-same-turn"])
def test_a_close_cancels_the_awaiting_coroutine_before_connection_lost(how: str) -> None:
    class Recorded(Waiter):
        events: ClassVar[list[str]] = []
        started = threading.Event()

    with Server(protocol=Recorded, framing=LINES, port=0) as srv:
        sock = connect(srv.address)
        sock.sendall(b"warm\n")  # the lane exists; its carrier is parked
        assert Recorded.started.wait(10)
        Recorded.started.clear()
        sock.close()
        wait_for(lambda: Recorded.events[-1:] == ["lost"], "connection_lost")
        sock = connect(srv.address)
        if how == "mid-await":
            sock.sendall(b"first\n")
            wait_for(lambda: len(Recorded.events) == 2 and Recorded.started.wait(0), "first")
            sock.sendall(b"second\n")
        else:
            # The frames and the end of the stream usually arrive in one turn: the
            # coroutine suspends, and its close comes before its carrier first ran.
            sock.sendall(b"first\nsecond\n")
            sock.shutdown(socket.SHUT_WR)
        sock.close()
        wait_for(lambda: Recorded.events.count("lost") == 2, "connection_lost")
    assert Recorded.events[:2] == ["cancelled warm", "lost"]
    assert Recorded.events[2:] == ["cancelled first", "lost"]


def test_the_carrier_cancelled_before_it_first_ran_cancels_the_coroutine() -> None:
    # White box: a coroutine suspends in a step run by hand, and its task is cancelled
    # in the same pass (its connection closed), before the carrier ever resumed it.
    heard: list[str] = []

    class FakeLane:
        task: asyncio.Task[None] | None = None

        def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
            self.loop = loop

        async def carry_on(self, rest: Any) -> None:
            heard.append(f"returned {await rest}")

    async def user(yield_future: bool) -> str:
        try:
            if yield_future:
                await asyncio.sleep(10)
            else:
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            heard.append("cancelled")
            raise
        return "done"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        runner = Runner(loop)
        for yield_future in (True, False):
            runner._carrier = Carrier(loop)
            await asyncio.sleep(0)  # the carrier parks
            lane = FakeLane(loop)
            stepped = loop.create_future()

            def step(
                lane: FakeLane = lane,
                yield_future: bool = yield_future,
                stepped: asyncio.Future[Any] = stepped,
            ) -> None:
                stepped.set_result(runner.step(lane, user(yield_future), copy_context()))  # type: ignore[arg-type]
                assert lane.task is not None
                lane.task.cancel()

            loop.call_soon(step)
            await stepped
            assert lane.task is not None
            with pytest.raises(asyncio.CancelledError):
                await lane.task
        runner.retire()

    asyncio.run(main())
    assert heard == ["cancelled", "cancelled"]


def test_a_pass_never_steps_a_coroutine_with_a_carrier_already_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # White box: in one pass, a new connection's first coroutine suspends (taking the
    # parked carrier), then another lane's frame comes: its coroutine must not run with
    # the taken carrier current.
    sent: list[bytes] = []
    seen: list[tuple[bytes, bool]] = []

    class FakeConnection:
        """Replies of a pass and of a Task alike go to ``sent``."""

        @staticmethod
        def _send_each(items: list[Any]) -> list[tuple[int, BaseException]]:
            sent.extend(items[1::2])
            return []

        def send(self, payload: bytes) -> None:
            sent.append(payload)

    class Same(Protocol):
        async def message_received(self, message: bytes) -> bytes:
            before = asyncio.current_task()
            await asyncio.sleep(0)
            seen.append((message, before is asyncio.current_task()))
            return message

    monkeypatch.setattr(_aio, "Connection", FakeConnection)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        runner = Runner(loop)
        runner._carrier = Carrier(loop)
        await asyncio.sleep(0)  # the carrier parks
        new, idle = (runner.lane(FakeConnection(), Same()) for _ in range(2))  # type: ignore[arg-type]
        runner._inbox = [new, new.protocol.message_received(b"new"), idle, b"idle"]
        loop.call_soon(runner._pass)
        while len(sent) < 2:
            await asyncio.sleep(0.001)
        runner.retire()

    asyncio.run(main())
    assert sorted(seen) == [(b"idle", True), (b"new", True)]
    assert sorted(sent) == [b"idle", b"new"]


REQUEST: ContextVar[bytes] = ContextVar("REQUEST")


def test_each_message_runs_in_a_context_of_its_own() -> None:
    # A variable set by one message's coroutine is seen after its suspension, and by
    # no other message (of this or another connection), as with a Task per message.
    seen: list[tuple[bytes, bytes, bytes]] = []

    async def handler(message: bytes) -> bytes:
        before = REQUEST.get(b"unset")
        REQUEST.set(message)
        if message.endswith(b"wait"):
            await asyncio.sleep(0.001)
        seen.append((message, before, REQUEST.get()))
        return message

    with Server(handler, framing=LINES, port=0) as srv:
        clients = [framed(srv.address, LINES) for _ in range(3)]
        for c, client in enumerate(clients):
            client.send_many(b"c%d m%d%s" % (c, i, b" wait" * (i % 2)) for i in range(6))
        for client in clients:
            assert len([client.recv() for _ in range(6)]) == 6
            client.close()
    assert len(seen) == 18
    for message, before, after in seen:
        assert (before, after) == (b"unset", message)


def test_a_reply_batch_skips_closed_connections_and_reports_each_failure() -> None:
    conns: list[Connection] = []

    class Keep(Protocol):
        def connection_made(self, conn: Connection) -> None:
            conns.append(conn)

    with Server(protocol=Keep, framing=LINES, port=0) as srv:
        socks = [connect(srv.address) for _ in range(3)]
        wait_for(lambda: len(conns) == 3, "three connections")
        by_port = {c.peer[1]: c for c in conns}
        a, b, c = (by_port[s.getsockname()[1]] for s in socks)
        c.abort()
        pairs: list[tuple[Connection, Any]] = [
            (a, b"a1"),
            (b, b"two\nlines"),
            (a, None),
            (b, b"b after a failure"),
        ]
        pairs += [(c, b"closed"), (a, 42), (a, b"a after a failure"), (b, b"b2")]
        failures = Connection._send_each([x for pair in pairs for x in pair])
        assert [k for k, _ in failures] == [1, 4, 5]
        assert isinstance(failures[0][1], FramingError)
        assert isinstance(failures[1][1], ConnectionClosed)
        assert isinstance(failures[2][1], TypeError)
        assert c.closed
        socks[0].shutdown(socket.SHUT_WR)
        assert recv_until_closed(socks[0]) == b"a1\n"
        socks[1].shutdown(socket.SHUT_WR)
        assert recv_until_closed(socks[1]) == b""
        assert Connection._send_each([]) == []
        for sock in socks:
            sock.close()


def test_a_reply_to_a_connection_closed_meanwhile_is_dropped_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lost: list[BaseException | None] = []

    class Quitter(Protocol):
        def connection_made(self, conn: Connection) -> None:
            self.conn = conn

        async def message_received(self, message: bytes) -> bytes:
            if message == b"quit":
                self.conn.abort()  # its reply, in the pass's batch, finds it closed
            return message

        def connection_lost(self, exc: BaseException | None) -> None:
            lost.append(exc)

    with caplog.at_level(logging.ERROR, "iocp_echo"):
        with Server(protocol=Quitter, framing=LINES, port=0) as srv:
            # The quitter is raw: its end may be a reset (abort), which recv_until_closed takes.
            quitter, other = connect(srv.address), framed(srv.address, LINES)
            quitter.sendall(b"hi\n")
            assert recv_frames(quitter, LINES, 1) == [b"hi"]
            quitter.sendall(b"quit\nmore\n")
            assert other.request(b"fine") == b"fine"
            assert recv_until_closed(quitter) == b""
            quitter.close()
            wait_for(lambda: len(lost) == 1, "connection_lost of the quitter")
            other.close()
            wait_for(lambda: len(lost) == 2, "connection_lost of the other")
    assert "failed" not in caplog.text


@pytest.mark.parametrize("where", ["a thread", "a running loop"])
def test_closing_leaves_no_task_pending(where: str, caplog: pytest.LogCaptureFixture) -> None:
    async def echo(message: bytes) -> bytes:
        if message == b"sleep":
            await asyncio.sleep(0)
        return message

    async def close_on_a_loop(srv: Server) -> None:
        srv.close()

    with caplog.at_level(logging.ERROR, "asyncio"):
        srv = Server(echo, framing=LINES, port=0)
        srv.start()
        with framed(srv.address, LINES) as client:
            client.send_many([b"a", b"sleep", b"b"])
            assert [client.recv() for _ in range(3)] == [b"a", b"sleep", b"b"]
        if where == "a thread":
            srv.close()
        else:
            asyncio.run(close_on_a_loop(srv))
        del srv
        gc.collect()
    assert "pending" not in caplog.text
    assert not [t for t in threading.enumerate() if t.name == "iocp_echo-asyncio"]
