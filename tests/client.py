"""A framing-aware asyncio test client: frames sent in random chunks, replies checked.

Every client writes and reads at once (as a real client must: a server applying
backpressure stops reading from a client that does not read its replies).
"""

from __future__ import annotations

import asyncio
import random
import socket
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
) -> Exchange:
    """Send ``messages`` framed by ``framing`` in random chunks; read and check the replies.

    Replies must be ``reply(message)`` for each message (none where it is None),
    byte-exact and in order; for raw
    framing (where the server's message boundaries are its receive chunks) the received
    stream must equal ``reply`` applied to the whole sent stream, which holds for
    bytewise transforms. ``max_chunk`` None: chosen at random per client. ``pause`` > 0:
    sleep up to that long at random between some chunks.
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
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), STEP_TIMEOUT)
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
