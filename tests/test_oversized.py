"""Oversized input: frames over ``max_frame`` and absurd length prefixes.

Each bad connection is closed and counted (``frame_errors``), the server's memory does not
grow by what the frame claims (the server runs in its own process and its peak RSS is
read from /proc), and well-behaved clients on the same server keep getting intact echoes
during and after.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

import pytest
from helpers import connect, recv_until_closed
from iocp_echo import Framing
from server_process import Bystander, ControlledServer, controlled, peak_rss_bytes, rss_bytes

MIB = 1 << 20


@dataclass(frozen=True)
class Oversized:
    """A hostile stream: a server framing, a head that makes the frame too large, and how
    many bytes of body the client pushes after it (the server should stop reading early)."""

    framing: str
    """As `controlled` names it: lines, length (4-byte prefix), length8."""
    head: bytes
    body: int
    claimed: int
    """What the head claims the frame holds (lines: the body itself)."""


MAX_FRAME = 1 * MIB

CASES = {
    # No delimiter, ever: the server may buffer up to max_frame, then must give up.
    "line-without-delimiter": Oversized("lines", b"", 64 * MIB, 64 * MIB),
    "length4-just-over": Oversized(
        "length", struct.pack(">I", MAX_FRAME + 1), 8 * MIB, MAX_FRAME + 1
    ),
    "length4-0xFFFFFFFF": Oversized("length", b"\xff" * 4, 8 * MIB, 0xFFFF_FFFF),
    "length8-2**63": Oversized("length8", struct.pack(">Q", 1 << 63), 8 * MIB, 1 << 63),
    "length8-max": Oversized("length8", b"\xff" * 8, 8 * MIB, (1 << 64) - 1),
}

RSS_SLACK = 16 * MIB
"""Growth allowed besides frame buffers: allocator arenas, the port's receive buffers."""


def push_until_closed(address: tuple[str, int], head: bytes, body: int) -> tuple[int, bytes]:
    """Connect, send ``head`` then up to ``body`` filler bytes without delimiter until the
    server closes; the bytes the client got written, and what it received (must be none)."""
    chunk = b"x" * (256 << 10)
    sent = 0
    with connect(address, timeout=20) as sock:
        try:
            sock.sendall(head)
            while sent < body:
                sent += sock.send(chunk[: body - sent])
        except (ConnectionResetError, BrokenPipeError):
            pass  # the server closed while we were still sending: what we want
        received = recv_until_closed(sock)
    return sent, received


def check_frame_error(
    server: ControlledServer, case: Oversized, bad_connections: int, bystanders: int
) -> None:
    """The bad connections are closed and counted once each; the bystanders stay open."""
    server.wait_stats(
        "the bad connections counted",
        lambda s: s["frame_errors"] == bad_connections and s["connections_open"] == bystanders,
    )
    stats = server.stats()
    assert stats["frame_errors"] == bad_connections
    assert stats["connections_closed"] == bad_connections
    assert stats["connections_accepted"] == bad_connections + bystanders


def run_oversized(case: Oversized, bad_connections: int, bystanders: int, max_frame: int) -> None:
    """Drive ``bad_connections`` hostile clients of ``case``, one after the other, while
    ``bystanders`` well-behaved clients echo; check closing, counting, memory, bystanders."""
    framing = case.framing
    with controlled(framing, max_frame=max_frame, workers=2) as server:
        codec = codec_of(framing)
        others = [Bystander(server.address, codec, seed=i) for i in range(bystanders)]
        try:
            for other in others:
                other.wait_progress("bystanders before")
            before = rss_bytes(server.proc.pid)
            for _ in range(bad_connections):
                sent, received = push_until_closed(server.address, case.head, case.body)
                assert received == b"", "the server replied to an oversized frame"
                for other in others:
                    other.wait_progress("bystanders while a frame is refused")
            check_frame_error(server, case, bad_connections, bystanders)
            growth = peak_rss_bytes(server.proc.pid) - before
            bound = 2 * max_frame + RSS_SLACK
            print(
                f"\n{framing} claim {case.claimed}: peak RSS grew {growth / MIB:.1f} MiB "
                f"(bound {bound / MIB:.1f} MiB; last client wrote {sent / MIB:.1f} MiB)"
            )
            assert growth < bound, f"the server grew by {growth} bytes for a refused frame"
            for other in others:
                other.wait_progress("bystanders after")
        finally:
            done = [other.stop() for other in others]
        print(f"bystander echoes: {done}")
        server.close()


def codec_of(framing: str) -> Framing:
    """The codec of a framing as `controlled` names it."""
    if framing.startswith("length"):
        return Framing.length_prefixed(int(framing[6:] or 4))
    return Framing.lines() if framing == "lines" else Framing.raw()


@pytest.mark.parametrize("name", CASES)
def test_an_oversized_frame_closes_only_its_connection_without_buffering_it(name: str) -> None:
    run_oversized(CASES[name], bad_connections=2, bystanders=3, max_frame=MAX_FRAME)


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_many_oversized_frames_under_a_large_limit(name: str) -> None:
    case = CASES[name]
    max_frame = 64 * MIB
    if name == "length4-just-over":
        case = Oversized("length", struct.pack(">I", max_frame + 1), 64 * MIB, max_frame + 1)
    if name == "line-without-delimiter":
        case = Oversized("lines", b"", 512 * MIB, 512 * MIB)
    run_oversized(case, bad_connections=10, bystanders=8, max_frame=max_frame)


def test_a_half_sent_huge_prefix_is_refused_before_its_last_byte_is_awaited() -> None:
    """The 0xFFFFFFFF prefix alone (no body) is enough to be refused at once."""
    with controlled("length", max_frame=MAX_FRAME, workers=1) as server:
        with connect(server.address, timeout=20) as sock:
            sock.sendall(b"\xff\xff\xff\xff")
            assert recv_until_closed(sock) == b""
        server.wait_stats("the frame error", lambda s: s["frame_errors"] == 1)
        # Raw: a frame written out, then a half-close to see the server's end of stream.
        with connect(server.address, timeout=20) as sock:
            sock.sendall(b"\x00\x00\x00\x02hi")
            assert sock.recv(16) == b"\x00\x00\x00\x02hi"
            sock.shutdown(socket.SHUT_WR)
            assert recv_until_closed(sock) == b""
        server.close()
