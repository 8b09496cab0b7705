"""Conformance: real clients over real sockets against a server on port 0 (or external).

Every test here needs only an echo server of some framing, so in external mode it runs
against the external server when the framing matches (Python handlers are skipped there).
"""

from __future__ import annotations

import random
import socket
import struct
import threading
from collections.abc import Callable

import pytest
from client import identity, random_payload, run_clients
from helpers import (
    SLOW,
    Address,
    connect,
    echo_of,
    framed,
    recv_frames,
    recv_until_closed,
    serve_echo,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from iocp_echo import DEFAULT_MAX_FRAME, Framing, Handler

pytestmark = pytest.mark.conformance

FRAMINGS = {
    "raw": Framing.raw(),
    "lines": Framing.lines(),
    "length": Framing.length_prefixed(4, "big"),
}


def upper(message: bytes) -> bytes:
    return message.upper()


# name -> (server handler, the reply a client expects for a message)
HANDLERS: dict[str, tuple[Handler | None, Callable[[bytes], bytes]]] = {
    "native": (None, identity),
    "python-echo": (lambda m: m, identity),
    "python-upper": (upper, upper),
}

CLIENTS = 200


def conversations(
    rng: random.Random, framing: Framing, clients: int, large: int, max_small: int = 8192
) -> list[list[bytes]]:
    """``clients`` conversations of 1 to 4 messages; the first ``large`` clients each send
    one 1 MiB message and one of random size up to 1 MiB, the rest small ones."""
    result = []
    for i in range(clients):
        if i < large:
            sizes = [1 << 20, rng.randint(0, 1 << 20)]
        else:
            sizes = [
                rng.choice([0, 1, rng.randint(2, max_small)]) for _ in range(rng.randint(1, 4))
            ]
        result.append([random_payload(rng, n, framing) for n in sizes])
    return result


@pytest.mark.parametrize("handler_name", HANDLERS)
@pytest.mark.parametrize("framing_name", FRAMINGS)
def test_many_concurrent_clients_get_byte_exact_replies_in_order(
    framing_name: str, handler_name: str
) -> None:
    framing = FRAMINGS[framing_name]
    handler, reply = HANDLERS[handler_name]
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    talks = conversations(rng, framing, CLIENTS, large=3)
    with serve_echo(handler, framing, workers=2) as address:
        exchanges = run_clients(address, framing, talks, seed=seed, reply=reply)
    assert len(exchanges) == CLIENTS, f"seed {seed}"


@pytest.mark.parametrize(
    "framing",
    [
        Framing.length_prefixed(1, "little"),
        Framing.length_prefixed(2, "little"),
        Framing.length_prefixed(8, "little"),
        Framing.length_prefixed(2, "big"),
        Framing.lines(b"\r\n"),
        Framing.lines(b"<END>"),
    ],
    ids=repr,
)
@pytest.mark.parametrize("handler_name", ["native", "python-upper"])
def test_other_framings(framing: Framing, handler_name: str) -> None:
    handler, reply = HANDLERS[handler_name]
    seed = random.randrange(1 << 32)
    max_small = 255 if framing == Framing.length_prefixed(1, "little") else 4000
    talks = conversations(random.Random(seed), framing, 20, large=0, max_small=max_small)
    with serve_echo(handler, framing) as address:
        run_clients(address, framing, talks, seed=seed, reply=reply)


@pytest.mark.parametrize("framing_name", FRAMINGS)
def test_one_worker_and_paced_clients(framing_name: str) -> None:
    framing = FRAMINGS[framing_name]
    seed = random.randrange(1 << 32)
    talks = conversations(random.Random(seed), framing, 30, large=1)
    with serve_echo(None, framing, workers=1) as address:
        run_clients(address, framing, talks, seed=seed, pause=0.002)


@pytest.mark.slow
@pytest.mark.parametrize("framing_name", FRAMINGS)
def test_many_clients_many_large_messages(framing_name: str) -> None:
    framing = FRAMINGS[framing_name]
    seed = random.randrange(1 << 32)
    talks = conversations(random.Random(seed), framing, 1000, large=40)
    with serve_echo(None, framing, workers=2) as address:
        run_clients(address, framing, talks, seed=seed)


def _echo_examples() -> int:
    return 300 if SLOW else 30


@pytest.mark.parametrize("framing_name", FRAMINGS)
def test_any_payloads_in_any_split_come_back(framing_name: str) -> None:
    framing = FRAMINGS[framing_name]
    with serve_echo(None, framing) as address:

        @settings(max_examples=_echo_examples())
        @given(
            st.lists(st.binary(max_size=2000), max_size=12),
            st.lists(st.integers(min_value=0), max_size=20),
        )
        def echo(payloads: list[bytes], cuts: list[int]) -> None:
            if framing.kind == "lines":
                payloads = [p.replace(b"\n", b"") for p in payloads]
            stream = b"".join(framing.encode(p) for p in payloads)
            points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
            with connect(address) as sock:
                for a, b in zip(points, points[1:]):
                    sock.sendall(stream[a:b])
                if framing.kind == "raw":
                    received = b""
                    while len(received) < len(stream):
                        chunk = sock.recv(1 << 16)
                        assert chunk, "closed early"
                        received += chunk
                    assert received == stream
                else:
                    assert recv_frames(sock, framing, len(payloads)) == payloads

        echo()


@pytest.mark.parametrize("handler_name", ["native", "python-upper"])
@pytest.mark.parametrize("framing_name", FRAMINGS)
def test_half_close_gets_every_reply_then_eof(framing_name: str, handler_name: str) -> None:
    framing = FRAMINGS[framing_name]
    handler, reply = HANDLERS[handler_name]
    rng = random.Random()
    messages = [random_payload(rng, rng.randint(0, 30_000), framing) for _ in range(20)]
    stream = b"".join(framing.encode(m) for m in messages)
    with serve_echo(handler, framing) as address, connect(address, timeout=10) as sock:
        # Send from a thread: replies must be read while sending, or both sides block.
        sender = threading.Thread(target=_send_and_shut, args=(sock, stream))
        sender.start()
        received = recv_until_closed(sock)
        sender.join()
    assert received == b"".join(framing.encode(reply(m)) for m in messages)


def _send_and_shut(sock: socket.socket, data: bytes) -> None:
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)


def _expect_echo(address: Address, framing: Framing, rounds: int) -> None:
    """A well-behaved client: ``rounds`` request/reply exchanges."""
    with framed(address, framing) as client:
        for i in range(rounds):
            message = b"still here %d" % i
            assert echo_of(client, message) == message


def test_an_absurd_length_prefix_closes_only_that_connection() -> None:
    framing = FRAMINGS["length"]
    with serve_echo(None, framing) as address, framed(address, framing) as good:
        assert good.request(b"before") == b"before"
        with connect(address) as bad:
            bad.sendall(framing.encode(b"fine") + b"\xff\xff\xff\xff" + b"x" * 1000)
            # Any reply to the good frame may come first; then the server closes.
            assert recv_until_closed(bad) in (b"", framing.encode(b"fine"))
        assert good.request(b"after") == b"after"
        _expect_echo(address, framing, 3)


@pytest.mark.parametrize("handler_name", ["native", "python-echo"])
@pytest.mark.parametrize("framing_name", ["lines", "length"])
def test_a_frame_over_max_frame_closes_only_that_connection(
    framing_name: str, handler_name: str
) -> None:
    framing = FRAMINGS[framing_name]
    handler, _ = HANDLERS[handler_name]
    limit = 64 << 10
    at_limit = b"a" * limit
    with serve_echo(handler, framing, max_frame=limit) as address, framed(address, framing) as good:
        assert good.request(at_limit) == at_limit
        with connect(address) as bad:
            # The first frame is fine; the second is over the limit and never completed
            # (as if the client lied): the server must not wait for the rest of it.
            oversized = framing.encode(b"b" * (limit + 1))
            bad.sendall(framing.encode(b"ok") + oversized[: limit + 2])
            assert recv_until_closed(bad) in (b"", framing.encode(b"ok"))
            good.send(b"after")
            good.send(at_limit)
            assert [good.recv(), good.recv()] == [b"after", at_limit]


def test_raw_chunks_over_max_frame_are_cut_not_refused() -> None:
    framing = FRAMINGS["raw"]
    data = random.Random().randbytes(300_000)
    with serve_echo(None, framing, max_frame=1000) as address:
        run_clients(address, framing, [[data]], seed=1, max_chunk=1 << 16)


def test_a_line_over_the_default_max_frame_closes_only_that_connection() -> None:
    framing = FRAMINGS["lines"]
    with serve_echo(None, framing) as address, framed(address, framing) as good:
        with connect(address) as bad:
            bad.sendall(b"fine\n")
            assert recv_frames(bad, framing, 1) == [b"fine"]
            # No delimiter in sight after DEFAULT_MAX_FRAME bytes: the server gives up.
            try:
                bad.sendall(b"x" * (DEFAULT_MAX_FRAME + 2))
            except ConnectionError:
                pass  # closed while we were still sending
            assert recv_until_closed(bad) == b""
        assert good.request(b"after") == b"after"


@pytest.mark.parametrize("framing_name", FRAMINGS)
def test_clients_that_reset_or_vanish_mid_message_do_not_disturb_others(
    framing_name: str,
) -> None:
    framing = FRAMINGS[framing_name]
    message = random_payload(random.Random(), 10_000, framing)
    frame = framing.encode(message)
    with serve_echo(None, framing) as address, framed(address, framing) as good:
        for i in range(50):
            sock = connect(address)
            sock.sendall(frame[: len(frame) // 2])
            if i % 2:
                # Reset at once (RST) rather than a graceful close.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            if i % 10 == 0:
                assert echo_of(good, message) == message
        # A burst of short-lived clients, each with one exchange.
        for _ in range(100):
            _expect_echo(address, framing, 1)
