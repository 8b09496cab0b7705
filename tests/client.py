"""A framing-aware asyncio test client: frames sent in random chunks, replies checked.

Every client writes and reads at once (as a real client must: a server applying
backpressure stops reading from a client that does not read its replies).
"""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from iocp_echo import Framing

Address = tuple[str, int]

# No single step of an exchange may take longer (a hang fails, naming the client).
STEP_TIMEOUT = 60.0


@dataclass
class Exchange:
    """What one client sent and received."""

    sent: int
    """Bytes written (frames as encoded)."""
    received: int
    """Bytes read."""
    replies: list[bytes]
    """Decoded replies (raw framing: the whole received stream as one item)."""


def split_randomly(data: bytes, rng: random.Random, max_chunk: int) -> list[bytes]:
    """``data`` cut at random points into chunks of 1 to ``max_chunk`` bytes."""
    chunks = []
    i = 0
    while i < len(data):
        n = rng.randint(1, max_chunk)
        chunks.append(data[i : i + n])
        i += n
    return chunks


def identity(payload: bytes) -> bytes:
    """The reply an echo server gives."""
    return payload


async def exchange(
    address: Address,
    framing: Framing,
    messages: Sequence[bytes],
    *,
    rng: random.Random,
    reply: Callable[[bytes], bytes | None] = identity,
    max_chunk: int | None = None,
    pause: float = 0.0,
    max_frame: int = 1 << 30,
    tls: ssl.SSLContext | None = None,
) -> Exchange:
    """Send ``messages`` framed by ``framing`` in random chunks; read and check the replies.

    Replies must be ``reply(message)`` for each message (none where it is None),
    byte-exact and in order; for raw
    framing (where the server's message boundaries are its receive chunks) the received
    stream must equal ``reply`` applied to the whole sent stream, which holds for
    bytewise transforms. ``max_chunk`` None: chosen at random per client. ``pause`` > 0:
    sleep up to that long at random between some chunks. ``tls``: speak TLS with this
    client context.
    """
    stream = b"".join(framing.encode(m) for m in messages)
    if max_chunk is None:
        # Tiny chunks for some clients (cut prefixes and delimiters), but not too many writes.
        max_chunk = max(rng.choice([3, 64, 1500, 65536]), len(stream) // 300)
    if framing.kind == "raw":
        whole = reply(stream) if stream else None
        expected = [whole] if whole else []
        expected_bytes = len(whole) if whole else 0
    else:
        expected = [r for r in map(reply, messages) if r is not None]
        expected_bytes = sum(len(framing.encode(m)) for m in expected)
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(*address, ssl=tls), STEP_TIMEOUT
    )
    try:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        async def send() -> None:
            for chunk in split_randomly(stream, rng, max_chunk):
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), STEP_TIMEOUT)
                if pause and rng.random() < 0.2:
                    await asyncio.sleep(rng.uniform(0, pause))

        async def receive() -> tuple[int, list[bytes]]:
            decoder = framing.decoder(max_frame)
            received = 0
            frames: list[bytes] = []
            while received < expected_bytes:
                chunk = await asyncio.wait_for(reader.read(1 << 16), STEP_TIMEOUT)
                if not chunk:
                    break
                received += len(chunk)
                frames.extend(decoder.feed(chunk))
            if framing.kind == "raw":
                frames = [b"".join(frames)] if frames else []
            return received, frames

        _, (received, replies) = await asyncio.gather(send(), receive())
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass
    check_replies(expected, replies)
    assert received == expected_bytes, f"received {received} bytes, expected {expected_bytes}"
    return Exchange(sent=len(stream), received=received, replies=replies)


def check_replies(expected: Sequence[bytes], replies: Sequence[bytes]) -> None:
    """Assert byte-exact, in-order replies, with a message short enough to read."""
    for i, (want, got) in enumerate(zip(expected, replies)):
        if want != got:
            at = next((j for j, (a, b) in enumerate(zip(want, got)) if a != b), None)
            raise AssertionError(
                f"reply {i} of {len(expected)} differs: {len(got)} bytes, expected "
                f"{len(want)}; first difference at byte {at}: got {got[:64]!r}..., "
                f"expected {want[:64]!r}..."
            )
    assert len(replies) == len(expected), f"{len(replies)} replies, expected {len(expected)}"


async def many(
    address: Address,
    framing: Framing,
    conversations: Sequence[Sequence[bytes]],
    *,
    seed: int,
    reply: Callable[[bytes], bytes | None] = identity,
    max_chunk: int | None = None,
    pause: float = 0.0,
    tls: ssl.SSLContext | None = None,
) -> list[Exchange]:
    """Run one concurrent client per conversation; all must succeed."""
    return list(
        await asyncio.gather(
            *(
                exchange(
                    address,
                    framing,
                    messages,
                    rng=random.Random(seed * 100_003 + i),
                    reply=reply,
                    max_chunk=max_chunk,
                    pause=pause,
                    tls=tls,
                )
                for i, messages in enumerate(conversations)
            )
        )
    )


def run_clients(
    address: Address,
    framing: Framing,
    conversations: Sequence[Sequence[bytes]],
    *,
    seed: int,
    reply: Callable[[bytes], bytes | None] = identity,
    max_chunk: int | None = None,
    pause: float = 0.0,
    tls: ssl.SSLContext | None = None,
) -> list[Exchange]:
    """`many` from synchronous code."""
    return asyncio.run(
        many(
            address,
            framing,
            conversations,
            seed=seed,
            reply=reply,
            max_chunk=max_chunk,
            pause=pause,
            tls=tls,
        )
    )


def random_payload(rng: random.Random, size: int, framing: Framing) -> bytes:
    """``size`` random bytes that ``framing`` can encode (lines: no delimiter inside)."""
    data = rng.randbytes(size)
    if framing.kind != "lines":
        return data
    # Printable-ish bytes other than the delimiter's: never a delimiter inside or straddling.
    delimiter = framing.encode(b"")
    alphabet = bytes(b for b in range(32, 127) if b not in delimiter)
    return data.translate(bytes(alphabet[b % len(alphabet)] for b in range(256)))


# ---------------------------------------------------------------------------------------
# Many long conversations at once, every byte checked as it streams (tests/test_integrity.py)


@dataclass
class Totals:
    """What a crowd of clients did, summed: to compare with the server's stats."""

    connections: int = 0
    """Clients that connected and finished their conversation."""
    messages: int = 0
    """Messages sent."""
    replies: int = 0
    """Replies received and checked (raw framing: the server's chunks are not visible)."""
    sent: int = 0
    """Bytes written."""
    received: int = 0
    """Bytes read, each equal to the byte expected at that position of the reply stream."""


def mixed_size(rng: random.Random) -> int:
    """A message size: mostly small, some up to 4 KiB, one in a hundred up to 64 KiB - 1."""
    pick = rng.random()
    if pick < 0.70:
        return rng.randint(0, 100)
    if pick < 0.99:
        return rng.randint(101, 4096)
    return rng.randint(4097, 65535)


async def converse(
    address: Address,
    framing: Framing,
    messages: int,
    *,
    rng: random.Random,
    start: asyncio.Event,
    connected: Callable[[], None],
    reply: Callable[[bytes], bytes] = identity,
    batch: int = 50,
    max_writes: int = 16,
) -> Totals:
    """One client: connect, wait for ``start``, then stream ``messages`` random messages.

    Messages go in batches of ``batch``, each batch cut at random points (1 to a few
    bytes for some clients, up to 64 KiB for others, at most ``max_writes`` writes), with
    at most two batches unanswered. Every received byte is compared with the expected reply
    stream as it arrives (``reply`` per message; raw framing: bytewise ``reply`` of the
    stream), and the replies are counted by decoding that stream. ``reply`` must keep
    lengths (echo, reversal, a byte translation). ``connected`` is called once the
    connection is open.
    """
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), STEP_TIMEOUT)
    totals = Totals(connections=1)
    try:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connected()
        await asyncio.wait_for(start.wait(), STEP_TIMEOUT)
        chunk_cap = rng.choice([1, 7, 64, 1500, 65536])
        sizes = [mixed_size(rng) for _ in range(messages)]
        total = sum(sizes) + len(framing.encode(b"")) * messages
        expected = bytearray()  # the reply bytes still to come
        answered = asyncio.Event()  # set whenever reply bytes were read

        async def send() -> None:
            for first in range(0, messages, batch):
                payloads = [random_payload(rng, n, framing) for n in sizes[first : first + batch]]
                stream = b"".join(framing.encode(p) for p in payloads)
                if framing.kind == "raw":
                    expected.extend(reply(stream))
                else:
                    expected.extend(b"".join(framing.encode(reply(p)) for p in payloads))
                totals.messages += len(payloads)
                totals.sent += len(stream)
                for piece in split_randomly(
                    stream, rng, max(chunk_cap, len(stream) // max_writes + 1)
                ):
                    writer.write(piece)
                    await writer.drain()  # bounded by the whole client's timeout (`crowd`)
                # At most this batch and the one before unanswered.
                while len(expected) > len(stream):
                    answered.clear()
                    await answered.wait()

        async def receive() -> None:
            decoder = framing.decoder(1 << 30)
            while totals.received < total:
                chunk = await asyncio.wait_for(reader.read(1 << 16), STEP_TIMEOUT)
                if not chunk:
                    break
                if expected[: len(chunk)] != chunk:
                    at = next(
                        (i for i, (a, b) in enumerate(zip(expected, chunk)) if a != b),
                        len(expected),
                    )
                    raise AssertionError(
                        f"reply byte {totals.received + at} of {total} differs "
                        f"(or was never sent: {len(expected)} bytes expected so far)"
                    )
                del expected[: len(chunk)]
                totals.received += len(chunk)
                totals.replies += len(decoder.feed(chunk))
                answered.set()
            assert totals.received == total, f"the server ended the stream at {totals.received}"
            assert decoder.buffered == 0, "the reply stream ends inside a frame"

        await asyncio.gather(send(), receive())
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass
    return totals


async def crowd(
    address: Address,
    framing: Framing,
    clients: int,
    messages: int,
    *,
    seed: int,
    reply: Callable[[bytes], bytes] = identity,
    all_open: Callable[[], bool] = lambda: True,
    timeout: float = 600.0,
) -> Totals:
    """``clients`` concurrent `converse` clients of ``messages`` messages each, summed.

    No client sends before every one is connected and ``all_open()`` holds (e.g. the
    server counts them all open), so the whole crowd is open at once. Each client must
    finish within ``timeout`` seconds (a stalled one fails the run).
    """
    start = asyncio.Event()
    ready = 0

    def connected() -> None:
        nonlocal ready
        ready += 1

    async def open_gate() -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STEP_TIMEOUT
        while ready < clients or not all_open():
            assert loop.time() < deadline, f"only {ready} of {clients} clients connected"
            await asyncio.sleep(0.01)
        start.set()

    results = await asyncio.gather(
        open_gate(),
        *(
            asyncio.wait_for(
                converse(
                    address,
                    framing,
                    messages,
                    rng=random.Random(seed * 100_003 + i),
                    start=start,
                    connected=connected,
                    reply=reply,
                ),
                timeout,
            )
            for i in range(clients)
        ),
    )
    totals = Totals()
    for one in results[1:]:
        assert one is not None
        totals.connections += one.connections
        totals.messages += one.messages
        totals.replies += one.replies
        totals.sent += one.sent
        totals.received += one.received
    return totals
