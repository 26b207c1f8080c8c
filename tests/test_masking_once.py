"""Masking straight into ``bytes`` (issue 3): ``apply_mask_bytes`` and
``apply_mask_joined``, compiled and pure Python, and their use by the
receive fast path, which must copy a masked payload only once.

Every implementation is checked against the RFC 6455 definition and
against wsproto's own masker (the one the fast path replaces) on random
data at every mask offset, every short length and lengths that cross the
8- and 32-byte steps of the compiled loop; the pieces of a payload are cut
at odd places and given as ``bytes``, ``bytearray`` and memoryviews
(strided and read-only ones too). Bad input must raise a clear error and
release every buffer it took, and no call may leak a reference.
"""

from __future__ import annotations

import array
import os
import random
import sys
from collections.abc import Callable, Iterable

import pytest
from speedup_expected import speedup_should_be_in_use
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, TextMessage
from wsproto.frame_protocol import XorMaskerSimple

from trio_websocket._wire import frame_decoder as _fastpath
from trio_websocket._wire import masking as _masking
from trio_websocket._wire.frame_decoder import _FastMasker, _Pieces, use_fast_receive
from trio_websocket._wire.masking import (
    apply_mask_bytes_python,
    apply_mask_joined_python,
    apply_mask_python,
)

Buffer = bytes | bytearray | memoryview

ONE_BUFFER = [
    pytest.param(apply_mask_python, id="apply_mask-python"),
    pytest.param(apply_mask_bytes_python, id="apply_mask_bytes-python"),
]
JOINED = [pytest.param(apply_mask_joined_python, id="python")]
if _masking.COMPILED:
    ONE_BUFFER += [
        pytest.param(_masking.apply_mask, id="apply_mask-compiled"),
        pytest.param(_masking.apply_mask_bytes, id="apply_mask_bytes-compiled"),
    ]
    JOINED.append(pytest.param(_masking.apply_mask_joined, id="compiled"))

#: Every short length, then lengths around the compiled loop's 8- and
#: 32-byte steps and a few large ones.
SIZES = [*range(0, 41), 63, 64, 65, 95, 96, 97, 1000, 4099, 65536, 65541]


def reference(data: bytes, key: bytes, offset: int = 0) -> bytes:
    """RFC 6455 section 5.3, byte by byte."""
    return bytes(byte ^ key[(offset + i) % 4] for i, byte in enumerate(data))


def wsproto_unmask(pieces: Iterable[bytes], key: bytes) -> bytes:
    """wsproto's own masker over the pieces of one payload, in order."""
    masker = XorMaskerSimple(key)
    return b"".join(bytes(masker.process(bytearray(piece))) for piece in pieces)


def strided(data: bytes) -> memoryview:
    """A view whose bytes (in C order) are ``data``, every other byte of its
    backing (so non-contiguous from 2 bytes on)."""
    backing = bytearray(len(data) * 2)
    backing[::2] = data
    view = memoryview(backing)[::2]
    assert len(data) < 2 or not view.contiguous
    return view


def as_kind(data: bytes, kind: str) -> Buffer:
    if kind == "bytes":
        return data
    if kind == "bytearray":
        return bytearray(data)
    if kind == "memoryview":
        return memoryview(b"<" + data + b">")[1:-1]  # a slice, read-only
    return strided(data)


KINDS = ["bytes", "bytearray", "memoryview", "strided"]


def test_the_compiled_maskers_are_built_when_expected() -> None:
    # tests/speedup_expected.py says when their absence is correct.
    if speedup_should_be_in_use(_masking.COMPILED):
        assert _masking.apply_mask_bytes is not apply_mask_bytes_python
        assert _masking.apply_mask_joined is not apply_mask_joined_python
    else:
        assert _masking.apply_mask_bytes is apply_mask_bytes_python
        assert _masking.apply_mask_joined is apply_mask_joined_python


# ---------------------------------------------------------------------------
# One buffer


@pytest.mark.parametrize("mask", ONE_BUFFER)
@pytest.mark.parametrize("size", SIZES)
def test_one_buffer_at_every_offset_matches_the_rfc_and_wsproto(
    mask: Callable[..., Buffer], size: int
) -> None:
    rng = random.Random(size)
    data = rng.randbytes(size)
    key = rng.randbytes(4)
    for offset in range(4):
        expected = reference(data, key, offset)
        assert bytes(mask(data, key, offset)) == expected
        # wsproto, having masked ``offset`` bytes before: the same mask position.
        assert wsproto_unmask([bytes(offset), data], key)[offset:] == expected
    assert bytes(mask(data, key)) == reference(data, key)  # offset defaults to 0


@pytest.mark.parametrize("mask", ONE_BUFFER)
def test_the_result_is_a_new_object_of_the_promised_type(mask: Callable[..., Buffer]) -> None:
    data = b"payload!" * 3
    result = mask(data, b"\0\0\0\0")
    expected_type = bytearray if "bytes" not in mask.__name__ else bytes
    assert type(result) is expected_type
    assert result == data and result is not data


@pytest.mark.parametrize("mask", ONE_BUFFER)
@pytest.mark.parametrize("kind", KINDS)
def test_one_buffer_of_any_kind_is_read_in_order_and_left_unchanged(
    mask: Callable[..., Buffer], kind: str
) -> None:
    rng = random.Random(7)
    data = rng.randbytes(77)
    key = rng.randbytes(4)
    given = as_kind(data, kind)
    assert bytes(mask(given, key, 3)) == reference(data, key, 3)
    assert bytes(given) == data


@pytest.mark.parametrize("mask", ONE_BUFFER)
def test_a_buffer_of_wider_items_is_masked_as_its_bytes(mask: Callable[..., Buffer]) -> None:
    numbers = array.array("i", range(-5, 20))
    raw = numbers.tobytes()
    assert bytes(mask(numbers, b"abcd", 1)) == reference(raw, b"abcd", 1)
    assert bytes(mask(memoryview(numbers)[::3], b"abcd")) == reference(
        array.array("i", numbers[::3]).tobytes(), b"abcd"
    )


@pytest.mark.parametrize("mask", ONE_BUFFER + JOINED)
@pytest.mark.parametrize("offset", [-1, -6, 5, 2**40 + 2])
def test_only_the_offset_modulo_four_matters(mask: Callable[..., Buffer], offset: int) -> None:
    data = bytes(range(23))
    given: object = [data[:5], data[5:]] if "joined" in mask.__name__ else data
    assert bytes(mask(given, b"wxyz", offset)) == reference(data, b"wxyz", offset % 4)


@pytest.mark.parametrize("mask", ONE_BUFFER + JOINED)
@pytest.mark.parametrize("key", [b"", b"abc", b"abcde", bytearray(5)])
def test_the_mask_must_be_four_bytes(mask: Callable[..., Buffer], key: bytes) -> None:
    given: object = [b"data"] if "joined" in mask.__name__ else b"data"
    with pytest.raises(ValueError, match="4 bytes"):
        mask(given, key)


@pytest.mark.parametrize("mask", ONE_BUFFER)
@pytest.mark.parametrize("data", [5, "text", None, [1, 2, 3]])
def test_data_that_is_not_bytes_like_is_a_type_error(
    mask: Callable[..., Buffer], data: object
) -> None:
    # (bytearray(5) would be five zero bytes: it must not be taken as data.)
    with pytest.raises(TypeError):
        mask(data, b"abcd")


@pytest.mark.parametrize("mask", ONE_BUFFER + JOINED)
@pytest.mark.parametrize("offset", [1.0, "1", None])
def test_the_offset_must_be_an_int(mask: Callable[..., Buffer], offset: object) -> None:
    given: object = [b"data"] if "joined" in mask.__name__ else b"data"
    with pytest.raises(TypeError):
        mask(given, b"abcd", offset)


# ---------------------------------------------------------------------------
# Pieces of one payload


def random_pieces(data: bytes, rng: random.Random) -> list[Buffer]:
    """``data`` cut at random (empty pieces too), each piece of a random kind."""
    pieces: list[Buffer] = []
    position = 0
    while position < len(data):
        size = rng.choice([0, 1, 2, 3, 5, 7, 8, 9, 31, 33, rng.randint(1, 5000)])
        pieces.append(as_kind(data[position : position + size], rng.choice(KINDS)))
        position += size
    return pieces


@pytest.mark.parametrize("joined", JOINED)
@pytest.mark.parametrize("size", SIZES)
def test_pieces_at_every_offset_match_one_buffer_and_wsproto(
    joined: Callable[..., bytes], size: int
) -> None:
    rng = random.Random(size)
    data = rng.randbytes(size)
    key = rng.randbytes(4)
    for offset in range(4):
        pieces = random_pieces(data, rng)
        result = joined(pieces, key, offset)
        assert type(result) is bytes
        assert result == reference(data, key, offset)
        assert result == wsproto_unmask([bytes(offset), *map(bytes, pieces)], key)[offset:]
        assert result == _masking.apply_mask_bytes(data, key, offset)


@pytest.mark.parametrize("joined", JOINED)
def test_pieces_may_be_any_iterable_even_empty(joined: Callable[..., bytes]) -> None:
    key = b"\x01\x02\x03\x04"
    assert joined([], key) == b""
    assert joined((), key, 3) == b""
    assert joined([b"", bytearray(), memoryview(b"")], key) == b""
    assert joined((b"ab", b"cd"), key) == reference(b"abcd", key)
    assert joined((piece for piece in [b"ab", b"c", b"d"]), key, 1) == reference(b"abcd", key, 1)
    many = [bytes([i]) * (i % 5) for i in range(40)]  # more pieces than fit on the stack
    assert joined(many, key, 2) == reference(b"".join(many), key, 2)


@pytest.mark.parametrize("joined", JOINED)
@pytest.mark.parametrize("single", [b"abcd", bytearray(b"abcd"), memoryview(b"abcd")])
def test_one_bytes_like_object_is_not_taken_for_pieces(
    joined: Callable[..., bytes], single: Buffer
) -> None:
    # Iterating it would give ints, and an error that does not say why.
    with pytest.raises(TypeError, match="not a single one"):
        joined(single, b"abcd")


@pytest.mark.parametrize("joined", JOINED)
@pytest.mark.parametrize("bad", [5, "text", None])
@pytest.mark.parametrize("count_before", [0, 3, 12])
def test_a_bad_piece_is_a_type_error_and_releases_the_pieces_before_it(
    joined: Callable[..., bytes], bad: object, count_before: int
) -> None:
    # The pieces before the bad one had their buffers taken; a bytearray
    # whose buffer is still held cannot be resized, so resizing proves
    # each was released (12: more than fit on the stack).
    before = [bytearray(b"x" * 9) for _ in range(count_before)]
    with pytest.raises(TypeError):
        joined([*before, bad, bytearray(b"after")], b"abcd")
    for piece in before:
        piece.extend(b"more")
        piece.clear()
    assert joined(["not iterable pieces"][0:0], b"abcd") == b""
    with pytest.raises(TypeError):
        joined(5, b"abcd")


@pytest.mark.parametrize("joined", JOINED)
def test_a_bad_mask_releases_nothing_it_did_not_take(joined: Callable[..., bytes]) -> None:
    piece = bytearray(b"payload")
    with pytest.raises(ValueError, match="4 bytes"):
        joined([piece], b"abc")
    piece.extend(b" still resizable")


def test_no_reference_is_leaked_by_any_path() -> None:
    piece = b"\x01" * 100
    pieces = [piece, memoryview(piece)[3:50], bytearray(piece)]
    many = [piece] * 20
    key = b"abcd"
    calls: list[Callable[[], object]] = [
        lambda: _masking.apply_mask(piece, key, 1),
        lambda: _masking.apply_mask_bytes(piece, key, 2),
        lambda: _masking.apply_mask_joined(pieces, key, 3),
        lambda: _masking.apply_mask_joined(many, key),
        lambda: _masking.apply_mask_joined(tuple(many), key),
        lambda: _masking.apply_mask_bytes(strided(piece), key),
    ]
    failing: list[Callable[[], object]] = [
        lambda: _masking.apply_mask_joined([piece, piece, 5], key),
        lambda: _masking.apply_mask_joined([*many, None], key),
        lambda: _masking.apply_mask_joined([piece], b"abc"),
        lambda: _masking.apply_mask_bytes(piece, key, "1"),
    ]

    def counts() -> tuple[int, ...]:
        return tuple(sys.getrefcount(obj) for obj in (piece, pieces, many, key))

    for call in calls + failing:  # warm up caches and interned objects
        try:
            call()
        except (TypeError, ValueError):
            pass
    start = counts()
    for _ in range(200):
        for call in calls:
            call()
        for call in failing:
            with pytest.raises((TypeError, ValueError)):
                call()
    assert counts() == start


# ---------------------------------------------------------------------------
# Masking in pieces and the receive fast path


@pytest.mark.parametrize("seed", range(5))
def test_masking_continues_across_calls_of_every_kind(seed: int) -> None:
    # The three maskers mixed on one payload, each piece at the offset the
    # previous ones reached (as the receive fast path uses them).
    rng = random.Random(seed)
    data = rng.randbytes(rng.randint(0, 3000))
    key = rng.randbytes(4)
    out = []
    position = 0
    while position < len(data):
        size = rng.randint(0, 300)
        chunk = data[position : position + size]
        way = rng.randrange(3)
        if way == 0:
            out.append(bytes(_masking.apply_mask(chunk, key, position)))
        elif way == 1:
            out.append(_masking.apply_mask_bytes(memoryview(chunk), key, position))
        else:
            out.append(_masking.apply_mask_joined([chunk[:3], bytearray(chunk[3:])], key, position))
        position += len(chunk)
    assert b"".join(out) == reference(data, key) == wsproto_unmask([data], key)


def test_the_fast_masker_gives_bytes_and_continues_the_mask() -> None:
    rng = random.Random(3)
    data = rng.randbytes(20_011)
    key = rng.randbytes(4)
    masker = _FastMasker(key)
    parts = [
        masker.process(data[:5]),
        masker.process(memoryview(data)[5:9000]),
        masker.process(_Pieces([memoryview(data)[9000:9003], data[9003:20_000]], 10_000 + 3 - 3)),
        masker.process(data[20_000:]),
    ]
    assert all(type(part) is bytes for part in parts)
    assert b"".join(parts) == reference(data, key) == wsproto_unmask([data], key)


class Recorder:
    """Wraps a masker function of ``_wire.frame_decoder`` and keeps what it returned."""

    def __init__(self, function: Callable[..., bytes]) -> None:
        self.function = function
        self.results: list[bytes] = []

    def __call__(self, *args: object) -> bytes:
        result = self.function(*args)
        self.results.append(result)
        return result


@pytest.mark.parametrize("room", [None, 1 << 20])
def test_a_masked_payload_reaches_the_event_without_another_copy(
    monkeypatch: pytest.MonkeyPatch, room: int | None
) -> None:
    # The bytes the unmasking writes must be the very object wsproto hands
    # on in its event: then the payload was copied once, by the unmasking.
    one = Recorder(_fastpath.apply_mask_bytes)
    joined = Recorder(_fastpath.apply_mask_joined)
    monkeypatch.setattr(_fastpath, "apply_mask_bytes", one)
    monkeypatch.setattr(_fastpath, "apply_mask_joined", joined)
    client = Connection(ConnectionType.CLIENT)
    server = Connection(ConnectionType.SERVER)
    assert use_fast_receive(server, None if room is None else (lambda: room))
    payload = os.urandom(300_000)
    wire = client.send(BytesMessage(data=payload))
    events = []
    for start in range(0, len(wire), 70_001):  # a payload across reads
        server.receive_data(wire[start : start + 70_001])
        events.extend(server.events())
    assert b"".join(event.data for event in events) == payload
    produced = one.results + joined.results
    assert len(produced) == len(events)
    for event in events:
        assert any(event.data is result for result in produced)
    if room is not None:
        # Held until whole: one event, the pieces unmasked in one pass.
        assert len(events) == 1 and len(joined.results) == 1


def test_masked_frames_cut_at_every_byte_decode_as_in_wsproto() -> None:
    client = Connection(ConnectionType.CLIENT)
    wire = b"".join(
        [
            client.send(TextMessage(data="héllo wörld " * 40)),
            client.send(BytesMessage(data=os.urandom(300))),
            client.send(BytesMessage(data=b"")),
            client.send(BytesMessage(data=os.urandom(9000))),
        ]
    )
    for room in (None, 1 << 20):
        plain = Connection(ConnectionType.SERVER)
        fast = Connection(ConnectionType.SERVER)
        assert use_fast_receive(fast, None if room is None else (lambda: 1 << 20))
        plain_events, fast_events = [], []
        for start in range(0, len(wire), 7):
            plain.receive_data(wire[start : start + 7])
            fast.receive_data(wire[start : start + 7])
            plain_events.extend(plain.events())
            fast_events.extend(fast.events())

        def messages(events: list[object]) -> list[object]:
            out: list[object] = []
            for event in events:
                data = event.data  # type: ignore[attr-defined]
                if out and type(out[-1]) is type(data):
                    out[-1] = out[-1] + data  # type: ignore[operator]
                else:
                    out.append(data)
            return out

        assert messages(fast_events) == messages(plain_events)
