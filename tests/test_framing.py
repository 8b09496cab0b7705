"""Properties of the codecs (`Framing`, `Decoder`) that clients and the server share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from iocp_echo import DEFAULT_MAX_FRAME, Decoder, FrameTooLarge, Framing, FramingError

Order = Literal["big", "little"]
WIDTHS = (1, 2, 4, 8)
ORDERS: tuple[Order, ...] = ("big", "little")

# Delimiters from a tiny alphabet, so payloads often hold parts of them.
delimiters = st.binary(min_size=1, max_size=4).map(lambda d: bytes(b % 3 + 97 for b in d)) | (
    st.sampled_from([b"\n", b"\r\n", b"\x00", b"END"])
)
small_payloads = st.binary(max_size=64).map(lambda p: bytes(b % 4 + 97 for b in p)) | st.binary(
    max_size=300
)


def line_encodable(payload: bytes, delimiter: bytes) -> bool:
    """Whether a line decoder would find ``payload + delimiter`` as exactly one line."""
    return (payload + delimiter).find(delimiter) == len(payload)


@st.composite
def line_payloads(draw: st.DrawFn, delimiter: bytes) -> bytes:
    """Payloads near the delimiter: pieces of it inside and at either end (straddling)."""
    piece = st.integers(0, len(delimiter)).map(lambda j: delimiter[:j]) | st.integers(
        0, len(delimiter)
    ).map(lambda j: delimiter[j:])
    parts = draw(st.lists(piece | small_payloads, max_size=4))
    return b"".join(parts)


def prefixed(width: int, order: Order) -> st.SearchStrategy[Framing]:
    return st.just(Framing.length_prefixed(width, order))


framings = (
    st.just(Framing.raw())
    | delimiters.map(Framing.lines)
    | st.sampled_from([(w, o) for w in WIDTHS for o in ORDERS]).flatmap(lambda wo: prefixed(*wo))
)


@st.composite
def framed_streams(draw: st.DrawFn) -> tuple[Framing, list[bytes]]:
    """A framing and payloads it can encode (width 1: at most 255 bytes each)."""
    framing = draw(framings)
    if framing.kind == "lines":
        delimiter = framing.encode(b"")
        payloads = draw(st.lists(line_payloads(delimiter), max_size=20))
        payloads = [p for p in payloads if line_encodable(p, delimiter)]
    else:
        payloads = draw(st.lists(small_payloads, max_size=20))
        payloads = [p[:255] for p in payloads]
    return framing, payloads


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (taken modulo its length, sorted, deduplicated)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


@given(framed_streams(), st.lists(st.integers(min_value=0), max_size=40))
def test_any_split_of_the_stream_decodes_to_the_payloads(
    case: tuple[Framing, list[bytes]], cuts: list[int]
) -> None:
    framing, payloads = case
    stream = b"".join(framing.encode(p) for p in payloads)
    decoder = framing.decoder()
    decoded: list[bytes] = []
    for chunk in split_at(stream, cuts):
        decoded.extend(decoder.feed(chunk))
    decoded.extend(decoder.finish())
    if framing.kind == "raw":
        # Each chunk is a message: only the byte stream is preserved.
        assert b"".join(decoded) == stream
        assert all(decoded)
    else:
        assert decoded == payloads
    assert decoder.buffered == 0


@given(
    st.sampled_from(WIDTHS), st.sampled_from(ORDERS), st.lists(st.binary(max_size=300), max_size=8)
)
def test_length_prefix_round_trip(width: int, order: Order, payloads: list[bytes]) -> None:
    framing = Framing.length_prefixed(width, order)
    payloads = [p[: (1 << (8 * width)) - 1] for p in payloads]
    stream = b""
    for p in payloads:
        frame = framing.encode(p)
        # The prefix is the payload length, as Python's int.to_bytes writes it.
        assert frame == len(p).to_bytes(width, order) + p
        stream += frame
    assert framing.decoder().feed(stream) == payloads


@given(delimiters, st.data())
def test_lines_encode_refuses_exactly_the_payloads_that_would_not_decode(
    delimiter: bytes, data: st.DataObject
) -> None:
    framing = Framing.lines(delimiter)
    payloads = data.draw(st.lists(line_payloads(delimiter), max_size=10))
    for p in payloads:
        if line_encodable(p, delimiter):
            assert framing.encode(p) == p + delimiter
        else:
            with pytest.raises(FramingError):
                framing.encode(p)


def test_lines_encode_refuses_a_payload_holding_the_delimiter() -> None:
    with pytest.raises(FramingError, match="delimiter"):
        Framing.lines().encode(b"one\ntwo")
    with pytest.raises(FramingError):
        Framing.lines(b"\r\n").encode(b"a\r\nb")
    # A delimiter straddling the payload's end would cut the line short.
    with pytest.raises(FramingError):
        Framing.lines(b"abab").encode(b"ab")


@pytest.mark.parametrize(("width", "limit"), [(1, 255), (2, 65535)])
def test_length_encode_refuses_a_payload_too_long_for_the_prefix(width: int, limit: int) -> None:
    framing = Framing.length_prefixed(width)
    assert framing.encode(b"x" * limit)[:width] == b"\xff" * width
    with pytest.raises(FramingError, match="too long"):
        framing.encode(b"x" * (limit + 1))


def test_exception_hierarchy() -> None:
    assert issubclass(FrameTooLarge, FramingError)
    assert issubclass(FramingError, ValueError)


@given(framings, st.integers(min_value=1, max_value=64), st.integers(min_value=0, max_value=8))
def test_a_frame_over_max_frame_raises_frame_too_large(
    framing: Framing, max_frame: int, over: int
) -> None:
    assume(framing.kind != "raw")
    at_limit = b"a" * max_frame
    too_big = b"a" * (max_frame + 1 + over)
    if framing.kind == "lines":
        assume(line_encodable(at_limit, framing.encode(b"")))
        assume(line_encodable(too_big, framing.encode(b"")))
    width = len(framing.encode(b""))  # prefix width or delimiter length

    assert framing.decoder(max_frame).feed(framing.encode(at_limit)) == [at_limit]
    decoder = framing.decoder(max_frame)
    with pytest.raises(FrameTooLarge, match="max_frame"):
        decoder.feed(framing.encode(too_big))
    assert decoder.buffered <= max_frame + width


def test_an_unterminated_line_over_max_frame_raises_before_its_end() -> None:
    decoder = Framing.lines().decoder(1000)
    decoder.feed(b"x" * 1000)
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"x")


def _peak_virtual_memory() -> int:
    """This process's peak virtual memory size (VmPeak), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmPeak:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmPeak in /proc/self/status")


@pytest.mark.parametrize(
    ("width", "order", "prefix"),
    [
        (4, "big", b"\xff\xff\xff\xff"),
        (4, "little", b"\xff\xff\xff\xff"),
        (8, "big", b"\xff" * 8),
        (8, "little", b"\xff" * 8),
        (8, "big", (1 << 63).to_bytes(8, "big")),
        (4, "big", (1 << 20 | 1).to_bytes(4, "big")),
    ],
)
def test_an_absurd_length_prefix_raises_at_once_without_allocating(
    width: int, order: Order, prefix: bytes
) -> None:
    peak = _peak_virtual_memory()
    decoder = Framing.length_prefixed(width, order).decoder(1 << 20)
    with pytest.raises(FrameTooLarge):
        decoder.feed(prefix + b"some payload bytes")
    assert decoder.buffered <= width + 32
    # Reserving the claimed size (even untouched) would raise the peak by GiBs.
    assert _peak_virtual_memory() - peak < 256 << 20
    # The prefix alone, fed byte by byte, is refused as soon as it is complete.
    decoder = Framing.length_prefixed(width, order).decoder(1 << 20)
    for byte in prefix[:-1]:
        assert decoder.feed(bytes([byte])) == []
    with pytest.raises(FrameTooLarge):
        decoder.feed(prefix[-1:])


def test_lines_with_and_without_a_final_delimiter() -> None:
    framing = Framing.lines(b"\r\n")
    decoder = framing.decoder()
    assert decoder.feed(b"one\r\ntwo\r") == [b"one"]
    assert decoder.buffered == 4
    assert decoder.feed(b"\nthree") == [b"two"]
    assert decoder.finish() == [b"three"]

    decoder = framing.decoder()
    assert decoder.feed(b"one\r\n") == [b"one"]
    assert decoder.finish() == []


def test_finish_on_a_cut_length_prefixed_frame_raises() -> None:
    framing = Framing.length_prefixed(2, "little")
    for cut in (b"\x05", b"\x05\x00abc"):
        decoder = framing.decoder()
        assert decoder.feed(cut) == []
        with pytest.raises(FramingError) as info:
            decoder.finish()
        assert not isinstance(info.value, FrameTooLarge)
    decoder = framing.decoder()
    assert decoder.feed(b"\x01\x00a") == [b"a"]
    assert decoder.finish() == []


def test_raw_decoder_gives_each_chunk_and_cuts_at_max_frame() -> None:
    decoder = Framing.raw().decoder(4)
    assert decoder.feed(b"") == []
    assert decoder.feed(b"abcdefghij") == [b"abcd", b"efgh", b"ij"]
    assert decoder.finish() == []


def test_decoder_built_from_a_name_or_a_framing() -> None:
    assert Decoder("lines").feed(b"a\nb\n") == [b"a", b"b"]
    assert Decoder("length", max_frame=10).max_frame == 10
    assert Decoder(Framing.length_prefixed(1)).feed(b"\x01z") == [b"z"]
    assert Decoder("raw").max_frame == DEFAULT_MAX_FRAME


def test_framing_equality_and_kind() -> None:
    assert Framing.lines(b"\r\n") == Framing.lines(b"\r\n")
    assert Framing.lines(b"\r\n") != Framing.lines()
    assert Framing.length_prefixed(2, "little") != Framing.length_prefixed(2, "big")
    assert hash(Framing.length_prefixed()) == hash(Framing.length_prefixed(4, "big"))
    assert {f.kind for f in (Framing.raw(), Framing.lines(), Framing.length_prefixed())} == {
        "raw",
        "lines",
        "length_prefixed",
    }


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        pytest.param(lambda: Framing.lines(b""), "delimiter", id="empty-delimiter"),
        pytest.param(lambda: Framing.lines(b"x" * 65), "delimiter", id="long-delimiter"),
        pytest.param(lambda: Framing.length_prefixed(3), "width", id="width-3"),
        pytest.param(lambda: Framing.length_prefixed(0), "width", id="width-0"),
        pytest.param(lambda: Framing.length_prefixed(-1), "width", id="width-negative"),
        pytest.param(lambda: Framing.length_prefixed(4, "middle"), "byteorder", id="byteorder"),
        pytest.param(lambda: Decoder("bogus"), "framing", id="framing-name"),
        pytest.param(lambda: Decoder(3), "framing", id="framing-type"),  # type: ignore[arg-type]
        pytest.param(lambda: Decoder("raw", max_frame=0), "max_frame", id="max_frame-0"),
        pytest.param(lambda: Decoder("raw", max_frame=-1), "max_frame", id="max_frame-negative"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(make: Callable[[], object], argument: str) -> None:
    with pytest.raises((ValueError, TypeError), match=argument):
        make()
