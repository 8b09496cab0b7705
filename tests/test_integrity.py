"""Integrity under load: a thousand concurrent clients, every byte checked, stats exact.

Each client sends random messages (sizes from 0 to 64 KiB, mostly small) in batches cut at
random points, from single bytes to 64 KiB writes, and compares every byte it receives
with the reply stream it expects, as it arrives. No client starts before all of them are
connected and the server counts them open. Afterwards the server's counters must equal
what the clients did: bytes in and out, messages in and out, connections accepted and
closed, and no error of any kind.

Python asyncio clients rather than the Rust load generator (`iocp-echo bench`): the
generator sends fixed-size messages as whole writes, while the point here is random sizes
and random cuts of the stream, which is what exercises the decoders across reads.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import pytest
from client import Totals, crowd, identity
from helpers import enough_descriptors, wait_stats
from iocp_echo import Framing, Server

FRAMINGS = {
    "raw": Framing.raw(),
    "lines": Framing.lines(),
    "crlf-lines": Framing.lines(b"\r\n"),
    "length4": Framing.length_prefixed(4, "big"),
    "length2-little": Framing.length_prefixed(2, "little"),
    "length8-little": Framing.length_prefixed(8, "little"),
}


def reverse(message: bytes) -> bytes:
    """A Python handler's reply: the message backwards."""
    return message[::-1]


def swapcase(stream: bytes) -> bytes:
    """A bytewise Python handler for raw framing: ASCII case swapped."""
    return stream.swapcase()


def drive(
    framing: Framing,
    clients: int,
    messages: int,
    handler: Callable[[bytes], bytes] | None = None,
    **options: Any,
) -> tuple[Totals, dict[str, Any]]:
    """Run the crowd against a fresh server; the clients' totals and the server's stats."""
    enough_descriptors(2 * clients)
    seed = random.randrange(1 << 32)
    print(f"clients' seed: {seed}")  # shown if the test fails
    with Server(handler, port=0, framing=framing, workers=2, **options) as srv:
        totals = asyncio.run(
            crowd(
                srv.address,
                framing,
                clients,
                messages,
                seed=seed,
                reply=handler or identity,
                all_open=lambda: srv.stats()["connections_open"] == clients,
            )
        )
        wait_stats(srv, "every connection closed", lambda s: s["connections_closed"] == clients)
        stats = srv.stats()
    return totals, stats


def assert_stats_match(totals: Totals, stats: dict[str, Any], framing: Framing) -> None:
    """The server counted exactly what the clients did, and nothing went wrong."""
    assert totals.connections == stats["connections_accepted"] == stats["connections_closed"]
    assert stats["connections_open"] == 0
    assert stats["bytes_received"] == totals.sent
    assert stats["bytes_sent"] == totals.received == totals.sent
    if framing.kind == "raw":
        # A raw message is whatever one read returned; each is echoed once.
        assert stats["frames_sent"] == stats["frames_received"] >= totals.connections
    else:
        assert stats["frames_received"] == totals.messages
        assert stats["frames_sent"] == totals.replies == totals.messages
    for name in (
        "handler_errors",
        "frame_errors",
        "io_errors",
        "accept_errors",
        "connections_rejected",
        "idle_timeouts",
    ):
        assert stats[name] == 0, name
    for name, total in stats.items():
        if name not in ("backend", "workers", "per_worker") and not name.startswith(
            "handler_seconds"
        ):
            assert sum(w[name] for w in stats["per_worker"]) == total, name
    assert (
        sum(w["handler_seconds_count"] for w in stats["per_worker"])
        == stats["handler_seconds_count"]
    )


CLIENTS = 1000
"""Concurrent clients in every run: all connected before any sends."""


FAST_MESSAGES = {
    "raw": 17,
    "lines": 17,
    "length4": 17,
    "crlf-lines": 5,
    "length2-little": 5,
    "length8-little": 5,
}
"""Messages per client in the default run: 66,000 in all."""


@pytest.mark.parametrize("name", list(FAST_MESSAGES))
def test_a_thousand_clients_every_byte_native_echo(name: str) -> None:
    framing = FRAMINGS[name]
    messages = FAST_MESSAGES[name]
    totals, stats = drive(framing, CLIENTS, messages)
    assert totals.connections == CLIENTS
    assert totals.messages == CLIENTS * messages
    assert_stats_match(totals, stats, framing)


def test_a_thousand_clients_every_byte_python_handler() -> None:
    framing = FRAMINGS["length4"]
    totals, stats = drive(framing, CLIENTS, 5, reverse)
    assert totals.messages == CLIENTS * 5
    assert_stats_match(totals, stats, framing)


@pytest.mark.slow
@pytest.mark.timeout(1800, method="thread")
@pytest.mark.parametrize("name", ["raw", "lines", "length4"])
def test_a_million_messages_every_byte_native_echo(name: str) -> None:
    framing = FRAMINGS[name]
    totals, stats = drive(framing, CLIENTS, 1000)
    assert totals.messages == 1_000_000
    assert_stats_match(totals, stats, framing)


@pytest.mark.slow
@pytest.mark.timeout(900, method="thread")
@pytest.mark.parametrize("name", ["raw", "lines", "crlf-lines", "length2-little", "length8-little"])
def test_two_hundred_thousand_messages_every_framing_native_echo(name: str) -> None:
    framing = FRAMINGS[name]
    totals, stats = drive(framing, CLIENTS, 200)
    assert totals.messages == CLIENTS * 200
    assert_stats_match(totals, stats, framing)


@pytest.mark.slow
@pytest.mark.timeout(900, method="thread")
@pytest.mark.parametrize("name", ["raw", "lines", "length4"])
def test_a_hundred_thousand_messages_python_handler(name: str) -> None:
    framing = FRAMINGS[name]
    handler = swapcase if name == "raw" else reverse
    totals, stats = drive(framing, CLIENTS, 100, handler)
    assert totals.messages == CLIENTS * 100
    assert_stats_match(totals, stats, framing)
