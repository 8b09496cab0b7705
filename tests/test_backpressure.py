"""Clients that send large messages and never read: backpressure bounds the server.

The server runs in its own process; its peak RSS (VmHWM) while several connections
flood it without reading must stay within ``high_water`` per connection (twice, for
buffer growth) plus a baseline slack, a well-behaved client keeps getting its echoes
meanwhile, and once the stalled clients read, each gets every byte back in order.
"""

from __future__ import annotations

import hashlib
import socket
import struct
import threading
import time
from collections.abc import Callable

import pytest
from helpers import connect, wait_for
from iocp_echo import Framing
from server_process import Bystander, controlled, peak_rss_bytes, rss_bytes

MIB = 1 << 20
KIB = 1 << 10
LENGTH = Framing.length_prefixed()
FRAME = 64 * KIB
"""Payload bytes per message of a flooding client."""
RECV_CHUNK = 124 * KIB
"""What one receive may add to a connection's output before it pauses (the port's
receive buffers, `LINUX_RECV_SIZE` in src/port.rs)."""
WORKERS = 2
PORT_MEMORY = 16 * MIB
"""Receive memory a worker's port may touch whatever the connections: io_uring's
provided-buffer ring is 128 buffers of 124 KiB (src/uring/buf_ring.rs)."""
RSS_SLACK = WORKERS * PORT_MEMORY + 8 * MIB
"""Growth allowed besides queued output: the ports' receive memory, allocator arenas."""


def payload(client: int, seq: int) -> bytes:
    """Message ``seq`` of flooding client ``client``: tagged, so order and origin show."""
    tag = struct.pack(">II", client, seq)
    return (tag + hashlib.sha256(tag).digest() * (FRAME // 32))[:FRAME]


class Flooder:
    """A client that writes ``messages`` large frames from a thread while reading nothing,
    until `read_all` reads and checks every echo."""

    def __init__(self, address: tuple[str, int], client: int, messages: int) -> None:
        self.client = client
        self.messages = messages
        self.sock = socket.socket()
        # Small kernel buffers on the client's side, so the server holds the backlog.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KIB)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * KIB)
        self.sock.settimeout(60)
        self.sock.connect(address)
        self.failure: BaseException | None = None
        self.sent = 0
        """Messages written so far."""
        self.sender = threading.Thread(target=self._send, daemon=True)
        self.sender.start()

    def _send(self) -> None:
        try:
            for seq in range(self.messages):
                self.sock.sendall(LENGTH.encode(payload(self.client, seq)))
                self.sent += 1
        except BaseException as e:  # reported by read_all
            self.failure = e

    def read_all(self) -> int:
        """Read and check every echo, in order; the bytes received."""
        decoder = LENGTH.decoder(1 << 30)
        seq = 0
        received = 0
        while seq < self.messages:
            chunk = self.sock.recv(1 << 18)
            assert chunk, f"client {self.client}: closed after {seq} of {self.messages} echoes"
            received += len(chunk)
            for reply in decoder.feed(chunk):
                assert reply == payload(self.client, seq), (
                    f"client {self.client}: echo {seq} is not message {seq}"
                )
                seq += 1
        self.sender.join(timeout=60)
        assert not self.sender.is_alive(), f"client {self.client}: sending never finished"
        if self.failure is not None:
            raise AssertionError(f"client {self.client} could not send: {self.failure!r}")
        assert decoder.buffered == 0
        return received


def flood(connections: int, megabytes_each: int, high_water: int, low_water: int) -> None:
    """``connections`` flooders against a server with these marks; check memory, a
    bystander, and that every byte comes back once they read."""
    messages = megabytes_each * MIB // FRAME
    with controlled(
        "length", high_water=high_water, low_water=low_water, workers=WORKERS
    ) as server:
        bystander = Bystander(server.address, LENGTH, seed=7)
        bystander.wait_progress("the bystander before")
        pid = server.proc.pid
        before = rss_bytes(pid)
        flooders = [Flooder(server.address, i, messages) for i in range(connections)]
        try:
            server.wait_stats(
                "every flooder paused", lambda s: s["backpressure_pauses"] >= connections
            )
            # The flooders' writes stall (the server stopped reading from them) ...
            stalled = [-1]

            def nothing_more_sent() -> bool:
                stalled.append(sum(f.sent for f in flooders))
                return stalled[-1] == stalled[-2]

            bystander.wait_progress("the bystander while the floods stall", more=20)
            # (A flood may also end up whole in kernel buffers: the server's receive
            # buffer can autotune to tcp_rmem's maximum before its reader pauses. What the
            # server itself holds is what is bounded.)
            wait_for_quiet(nothing_more_sent)
            stats = server.stats()
            held = stats["bytes_received"] - stats["bytes_sent"]
            peak = peak_rss_bytes(pid) - before
            per_connection = 2 * (high_water + RECV_CHUNK)
            bound = connections * per_connection + RSS_SLACK
            print(
                f"\n{connections} x {megabytes_each} MiB unread, high_water "
                f"{high_water // KIB} KiB: peak RSS growth {peak / MIB:.1f} MiB "
                f"(bound {bound / MIB:.1f} MiB), {held / MIB:.1f} MiB received and not yet sent "
                f"(held by the server), {stats['backpressure_pauses']} pauses"
            )
            assert peak < bound, f"the server's RSS grew {peak} bytes (bound {bound})"
            # Received but not yet handed to the kernel: per connection at most high_water
            # plus one receive, plus a partial frame in its decoder (and the bystander's
            # one message in flight).
            assert held <= connections * (high_water + RECV_CHUNK + FRAME + 4) + 8 * KIB
            # ... and the bystander is still served.
            bystander.wait_progress("the bystander after the floods stalled")
            # Now they read: every byte comes back, in order.
            results: dict[int, int] = {}
            errors: list[BaseException] = []

            def read(f: Flooder) -> None:
                try:
                    results[f.client] = f.read_all()
                except BaseException as e:
                    errors.append(e)

            readers = [threading.Thread(target=read, args=(f,)) for f in flooders]
            for reader in readers:
                reader.start()
            for reader in readers:
                reader.join()
            if errors:
                raise errors[0]
            expected = messages * (FRAME + 4)
            lost = sum(expected - got for got in results.values())
            print(f"echoed back {sum(results.values()) / MIB:.0f} MiB, {lost} bytes lost")
            assert results == {i: expected for i in range(connections)}
            bystander.wait_progress("the bystander at the end")
        finally:
            for f in flooders:
                f.sock.close()
            echoes = bystander.stop()
        print(f"bystander echoes: {echoes}")
        stats = server.stats()
        assert stats["bytes_sent"] >= connections * messages * (FRAME + 4)
        server.close()


def wait_for_quiet(quiet: Callable[[], bool]) -> None:
    """Wait until ``quiet()``, polled every 0.2 s, holds twice in a row."""
    streak = [0]

    def settled() -> bool:
        time.sleep(0.2)
        streak[0] = streak[0] + 1 if quiet() else 0
        return streak[0] >= 2

    wait_for(settled, "the floods to stall")


def test_unread_floods_are_bounded_by_high_water_and_come_back_whole() -> None:
    flood(connections=6, megabytes_each=24, high_water=256 * KIB, low_water=64 * KIB)


@pytest.mark.slow
def test_many_unread_floods_at_the_default_marks() -> None:
    flood(connections=40, megabytes_each=32, high_water=1 * MIB, low_water=256 * KIB)


def test_a_paused_connection_resumes_below_low_water() -> None:
    """Read a little at a time: the connection pauses and resumes repeatedly, byte-exact."""
    with controlled("length", high_water=128 * KIB, low_water=32 * KIB, workers=1) as server:
        messages = 200
        with connect(server.address) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * KIB)
            stream = b"".join(LENGTH.encode(payload(0, i)) for i in range(messages))
            sender = threading.Thread(target=sock.sendall, args=(stream,), daemon=True)
            sender.start()
            server.wait_stats("a pause", lambda s: s["backpressure_pauses"] >= 1)
            received = bytearray()
            while len(received) < len(stream):
                chunk = sock.recv(16 * KIB)
                assert chunk, "closed early"
                received += chunk
            sender.join(timeout=60)
        assert received == stream
        assert server.stats()["backpressure_pauses"] >= 2
        server.close()
