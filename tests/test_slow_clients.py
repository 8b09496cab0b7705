"""Slow and idle clients: the idle/slow policy cuts them, everyone else keeps being served.

``idle_timeout`` counts complete messages, not bytes: a client that trickles one byte a
second and never finishes a frame is closed like a silent one, while well-behaved
clients on the same workers keep getting every echo. Nothing here asserts on speed;
the normal clients' latencies are printed (``-s``) and bounded only generously, by a
bound far above what a held worker would cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from dataclasses import dataclass, field

import pytest
from helpers import Address
from iocp_echo import Server


@dataclass
class Trickle:
    """What happened to the clients that sent one byte a second."""

    cut_after: list[float] = field(default_factory=list)
    """Seconds from connecting until the server closed each one."""
    bytes_sent: int = 0
    still_open: int = 0


@dataclass
class Talk:
    """What the well-behaved clients saw."""

    echoes: int = 0
    latencies: list[float] = field(default_factory=list)


async def closed(writer: asyncio.StreamWriter) -> None:
    """Close ``writer`` and wait until its socket is closed (before the loop ends)."""
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def trickle(address: Address, seconds: float, report: Trickle) -> None:
    """Connect, then send one byte of a never-ending line each second until cut."""
    start = time.monotonic()
    reader, writer = await asyncio.open_connection(*address)
    try:
        while time.monotonic() - start < seconds:
            try:
                writer.write(b"x")
                await writer.drain()
            except ConnectionError:
                break
            report.bytes_sent += 1
            try:
                if await asyncio.wait_for(reader.read(1), timeout=1.0) == b"":
                    break
            except TimeoutError:
                continue
            except ConnectionError:
                break
        else:
            report.still_open += 1
            return
        report.cut_after.append(time.monotonic() - start)
    finally:
        await closed(writer)


async def talk(address: Address, until: asyncio.Event, report: Talk) -> None:
    """Send one line, read its echo, repeat, until ``until`` is set."""
    reader, writer = await asyncio.open_connection(*address)
    n = 0
    try:
        while not until.is_set():
            line = b"message %d\n" % n
            sent = time.monotonic()
            writer.write(line)
            echo = await asyncio.wait_for(reader.readexactly(len(line)), timeout=30.0)
            assert echo == line, f"echo {echo!r} for {line!r}"
            report.latencies.append(time.monotonic() - sent)
            report.echoes += 1
            n += 1
            await asyncio.sleep(0.01)
    finally:
        await closed(writer)


async def slow_among_normal(
    address: Address, slow: int, normal: int, seconds: float
) -> tuple[Trickle, Talk]:
    """``slow`` trickling clients beside ``normal`` talking ones for up to ``seconds``."""
    trickled, talked = Trickle(), Talk()
    done = asyncio.Event()
    talkers = [asyncio.create_task(talk(address, done, talked)) for _ in range(normal)]
    trickles = []
    for i in range(slow):
        trickles.append(asyncio.create_task(trickle(address, seconds, trickled)))
        if i % 100 == 99:
            await asyncio.sleep(0)  # let the accept queue drain between bursts
    await asyncio.gather(*trickles)
    await asyncio.sleep(0.5)  # the talkers go on a moment after the last cut
    done.set()
    await asyncio.gather(*talkers)
    return trickled, talked


@pytest.mark.parametrize(
    ("slow", "normal", "idle_timeout"),
    [
        pytest.param(500, 50, 1.5, id="500-trickling"),
        pytest.param(2000, 100, 3.0, id="2000-trickling", marks=pytest.mark.slow),
    ],
)
def test_trickling_clients_are_cut_while_normal_clients_flow(
    slow: int, normal: int, idle_timeout: float
) -> None:
    bound = idle_timeout * 4 + 5.0
    with Server(
        None, host="127.0.0.1", port=0, framing="lines", workers=2, idle_timeout=idle_timeout
    ) as srv:
        trickled, talked = asyncio.run(slow_among_normal(srv.address, slow, normal, bound))
        stats = srv.stats()

    assert trickled.still_open == 0, f"{trickled.still_open} trickling clients never cut"
    assert len(trickled.cut_after) == slow
    # Cut by the policy, not early: none before the timeout, all within a few checks of it.
    assert min(trickled.cut_after) >= idle_timeout
    assert max(trickled.cut_after) < bound
    assert stats["idle_timeouts"] == slow, "only the trickling clients time out"
    assert stats["frame_errors"] == 0 and stats["io_errors"] == 0
    assert talked.echoes > normal, "the normal clients kept talking"
    assert stats["frames_received"] == talked.echoes
    q = statistics.quantiles(talked.latencies, n=100)
    print(
        f"\n{slow} trickling clients cut after {min(trickled.cut_after):.2f}-"
        f"{max(trickled.cut_after):.2f} s (idle_timeout {idle_timeout} s); "
        f"{normal} normal clients: {talked.echoes} echoes, p50 {q[49] * 1e3:.1f} ms, "
        f"p99 {q[98] * 1e3:.1f} ms, max {max(talked.latencies) * 1e3:.1f} ms"
    )
    # A worker held by a slow client would stall its talkers for the whole timeout.
    assert max(talked.latencies) < idle_timeout, "a normal client waited a whole timeout"


def test_silent_clients_are_cut_and_active_ones_are_not() -> None:
    with Server(None, host="127.0.0.1", port=0, framing="raw", idle_timeout=0.5) as srv:

        async def run() -> tuple[bytes, int]:
            silent_reader, silent = await asyncio.open_connection(*srv.address)
            reader, writer = await asyncio.open_connection(*srv.address)
            echoed = 0
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                writer.write(b"ping")
                echoed += len(await asyncio.wait_for(reader.readexactly(4), timeout=30.0))
                await asyncio.sleep(0.1)
            end = await asyncio.wait_for(silent_reader.read(1), timeout=30.0)
            await closed(silent)
            await closed(writer)
            return end, echoed

        end, echoed = asyncio.run(run())
        assert end == b"", "the silent client was closed"
        assert echoed >= 40
        assert srv.stats()["idle_timeouts"] == 1
