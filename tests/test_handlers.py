"""Python handlers: reply types, failures (logged, only their connection closed), stats."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from client import identity, random_payload, run_clients
from helpers import Address, connect, framed, recv_until_closed, wait_stats
from iocp_echo import Framing, Handler, Server

LINES = Framing.lines()


@contextmanager
def running(handler: Handler | None, framing: Framing = LINES, **options: Any) -> Iterator[Server]:
    with Server(handler, host="127.0.0.1", port=0, framing=framing, **options) as srv:
        yield srv


def ask(address: Address, messages: list[bytes], replies: int) -> list[bytes]:
    """Send ``messages`` on a new connection and read ``replies`` replies."""
    with framed(address, LINES) as client:
        client.send_many(messages)
        return [client.recv() for _ in range(replies)]


def test_handler_gets_bytes_and_may_return_bytearray_memoryview_or_none() -> None:
    seen: list[type] = []

    def handler(message: bytes) -> bytes | bytearray | memoryview | None:
        seen.append(type(message))
        kind, _, rest = message.partition(b" ")
        if kind == b"array":
            return bytearray(rest) + b"!"
        if kind == b"view":
            return memoryview(b"<" + rest + b">")[1:-1]
        if kind == b"none":
            return None
        return message

    with running(handler) as srv:
        messages = [b"array abc", b"none 1", b"view xyz", b"none 2", b"bytes", b"array ", b"view "]
        assert ask(srv.address, messages, 5) == [b"abc!", b"xyz", b"bytes", b"!", b""]
        stats = srv.stats()
    assert seen == [bytes] * len(messages)
    assert stats["frames_received"] == 7
    assert stats["handler_errors"] == 0


def test_a_handler_returning_none_for_everything_sends_nothing() -> None:
    with running(lambda m: None) as srv, connect(srv.address) as sock:
        sock.sendall(b"a\nb\nc\n")
        wait_stats(srv, "3 frames", lambda s: s["frames_received"] == 3)
        sock.shutdown(1)
        assert recv_until_closed(sock) == b""


def _boom(message: bytes) -> bytes:
    if message == b"boom":
        raise ValueError("the handler blew up")
    return message


def _wrong_type(message: bytes) -> Any:
    return 42 if message == b"boom" else message


@pytest.mark.parametrize(
    ("handler", "error", "text"),
    [(_boom, ValueError, "the handler blew up"), (_wrong_type, TypeError, "int")],
    ids=["raises", "returns-int"],
)
def test_a_failing_handler_is_logged_and_closes_only_its_connection(
    caplog: pytest.LogCaptureFixture, handler: Handler, error: type[Exception], text: str
) -> None:
    with running(handler, workers=2) as srv, framed(srv.address, LINES) as good:
        assert good.request(b"first") == b"first"
        with connect(srv.address) as bad:
            bad.sendall(b"before\nboom\nafter\n")
            received = recv_until_closed(bad)
            # The reply to "before" may or may not go out; nothing after "boom" does.
            assert received in (b"", b"before\n")
        assert good.request(b"second") == b"second"
        assert ask(srv.address, [b"new client"], 1) == [b"new client"]
        wait_stats(srv, "the failure counted", lambda s: s["handler_errors"] == 1)
        stats = srv.stats()
    assert stats["connections_accepted"] == 3
    failures = [r for r in caplog.records if r.name == "iocp_echo" and r.exc_info]
    assert len(failures) == 1, [r.getMessage() for r in caplog.records]
    record = failures[0]
    assert record.levelno >= logging.ERROR
    assert record.exc_info is not None and record.exc_info[0] is error
    traceback = logging.Formatter().formatException(record.exc_info)
    assert text in traceback
    if error is ValueError:
        assert "_boom" in traceback  # the handler's own frame is in the traceback


def test_a_reply_the_framing_cannot_encode_closes_only_its_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def handler(message: bytes) -> bytes:
        return message.replace(b"!", b"\n")  # a delimiter inside a lines reply

    with running(handler) as srv, framed(srv.address, LINES) as good:
        assert ask(srv.address, [b"fine"], 1) == [b"fine"]
        with connect(srv.address) as bad:
            bad.sendall(b"not!fine\n")
            assert recv_until_closed(bad) == b""
        assert good.request(b"ok") == b"ok"
        wait_stats(srv, "the failure counted", lambda s: s["handler_errors"] == 1)
    assert any(
        r.name.startswith("iocp_echo") and r.levelno >= logging.ERROR for r in caplog.records
    ), "the bad reply was not logged"


def test_the_handler_may_be_called_from_several_workers_at_once() -> None:
    calls: set[str] = set()
    lock = threading.Lock()

    def handler(message: bytes) -> bytes:
        with lock:
            calls.add(threading.current_thread().name)
        return message[::-1]

    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    talks = [
        [random_payload(rng, rng.randint(0, 3000), LINES) for _ in range(3)] for _ in range(50)
    ]
    with running(handler, workers=2) as srv:
        run_clients(srv.address, LINES, talks, seed=seed, reply=lambda m: m[::-1])
    assert calls  # called; from which threads is the server's business


def _quiet_on_dash(message: bytes) -> bytes | None:
    return None if message.startswith(b"-") else message


@pytest.mark.parametrize("native", [True, False], ids=["native", "python"])
@pytest.mark.parametrize("framing", [Framing.raw(), LINES, Framing.length_prefixed()], ids=repr)
def test_stats_agree_with_what_the_clients_did(framing: Framing, native: bool) -> None:
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    clients = 40
    talks = [
        [
            b"x" + random_payload(rng, rng.randint(0, 5000), framing)
            for _ in range(rng.randint(1, 5))
        ]
        for _ in range(clients)
    ]
    handler: Callable[[bytes], bytes | None] | None = None
    if not native and framing.kind == "raw":
        handler = identity  # raw messages are arbitrary chunks: no marker to stay quiet on
    elif not native:
        handler = _quiet_on_dash
        talks[0].insert(1, b"-no reply")
        talks[1].append(b"-no reply either")
    with running(handler, framing=framing, workers=2) as srv:
        exchanges = run_clients(srv.address, framing, talks, seed=seed, reply=handler or identity)
        wait_stats(srv, "every connection closed", lambda s: s["connections_closed"] == clients)
        stats = srv.stats()
        backend = srv.backend
    sent = sum(e.sent for e in exchanges)
    received = sum(e.received for e in exchanges)
    assert stats["connections_accepted"] == clients
    assert stats["connections_open"] == 0
    assert stats["bytes_received"] == sent
    assert stats["bytes_sent"] == received
    if framing.kind == "raw":
        # Each receive is a message: as many as the server's reads, at least one per client.
        assert stats["frames_received"] >= clients
        assert stats["frames_sent"] == stats["frames_received"]
    else:
        assert stats["frames_received"] == sum(len(t) for t in talks)
        assert stats["frames_sent"] == sum(len(e.replies) for e in exchanges)
        assert stats["frames_sent"] == stats["frames_received"] - (0 if handler is None else 2)
    for name in ("handler_errors", "frame_errors", "io_errors", "connections_rejected"):
        assert stats[name] == 0, name
    assert stats["backend"] == backend
    assert stats["workers"] == 2
    assert len(stats["per_worker"]) == 2
    for name, total in stats.items():
        if name not in ("backend", "workers", "per_worker") and not name.startswith(
            "handler_seconds"
        ):
            assert sum(w[name] for w in stats["per_worker"]) == total, name
    assert (
        sum(w["handler_seconds_count"] for w in stats["per_worker"])
        == stats["handler_seconds_count"]
    )
