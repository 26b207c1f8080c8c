"""Payload masking (RFC 6455 section 5.3): the compiled and pure-Python
functions, masking in pieces at an offset, masking keys, and the wsproto fast path."""

from __future__ import annotations

import importlib.util
import os

import pytest
import trio
import trio.testing
from conftest import open_pair
from speedup_expected import speedup_should_be_in_use
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, TextMessage
from wsproto.frame_protocol import FrameDecoder

from trio_websocket._wire import masking as _masking
from trio_websocket._wire.frame_decoder import _FastUnmaskingDecoder, use_fast_unmasking
from trio_websocket._wire.masking import MaskKeys, apply_mask_python, next_mask_key

IMPLEMENTATIONS = [pytest.param(apply_mask_python, id="python")]
if _masking.COMPILED:
    IMPLEMENTATIONS.append(pytest.param(_masking.apply_mask, id="compiled"))


def reference_mask(data: bytes, key: bytes) -> bytes:
    return bytes(byte ^ key[i % 4] for i, byte in enumerate(data))


def test_compiled_speedup_is_built_when_expected() -> None:
    # CI builds the package with a compiler: a silently failed build would
    # only show up as a slow benchmark, so say it here (tests/speedup_expected.py).
    if speedup_should_be_in_use(_masking.COMPILED):
        assert _masking.COMPILED
        assert _masking.apply_mask is not apply_mask_python
    else:
        assert not _masking.COMPILED
        assert _masking.apply_mask is apply_mask_python
        assert importlib.util.find_spec("trio_websocket._wire._speedups") is None


@pytest.mark.parametrize("apply_mask", IMPLEMENTATIONS)
@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 125, 1000, 65539])
def test_mask_matches_the_rfc_definition(apply_mask: _masking.Mask, size: int) -> None:
    data = os.urandom(size)
    key = os.urandom(4)
    masked = apply_mask(data, key)
    assert isinstance(masked, bytearray)
    assert bytes(masked) == reference_mask(data, key)
    # Masking is its own inverse.
    assert bytes(apply_mask(masked, key)) == data


@pytest.mark.parametrize("apply_mask", IMPLEMENTATIONS)
def test_mask_accepts_any_bytes_like_and_leaves_it_unchanged(apply_mask: _masking.Mask) -> None:
    data = bytearray(b"hello, world")
    key = b"\x01\x02\x03\x04"
    expected = reference_mask(bytes(data), key)
    assert bytes(apply_mask(memoryview(data), key)) == expected
    assert bytes(apply_mask(data, key)) == expected
    assert data == bytearray(b"hello, world")


@pytest.mark.parametrize("apply_mask", IMPLEMENTATIONS)
@pytest.mark.parametrize("key", [b"", b"abc", b"abcde"])
def test_mask_key_must_be_four_bytes(apply_mask: _masking.Mask, key: bytes) -> None:
    with pytest.raises(ValueError, match="4 bytes"):
        apply_mask(b"data", key)


@pytest.mark.parametrize("apply_mask", IMPLEMENTATIONS)
@pytest.mark.parametrize("cuts", [[1], [3, 5], [4, 4, 4], [7, 1, 2, 13], [2] * 20])
def test_masking_pieces_at_their_offsets_equals_masking_all_at_once(
    apply_mask: _masking.Mask, cuts: list[int]
) -> None:
    # How a payload arriving in reads is unmasked: each piece at the count
    # of bytes done before it.
    data = os.urandom(sum(cuts) + 11)
    key = os.urandom(4)
    pieces = []
    start = 0
    for cut in [*cuts, len(data) - sum(cuts)]:
        pieces.append(bytes(apply_mask(data[start : start + cut], key, start)))
        start += cut
    assert b"".join(pieces) == reference_mask(data, key)
    assert apply_mask(b"", key, start) == bytearray()


def test_mask_keys_are_four_random_bytes_and_do_not_repeat() -> None:
    keys = MaskKeys()
    drawn = [keys.next() for _ in range(5000)]  # crosses several pool refills
    assert all(isinstance(key, bytes) and len(key) == 4 for key in drawn)
    # 5000 draws from 2**32 values: a repeat would mean the pool is reused.
    assert len(set(drawn)) > 4990
    assert len(next_mask_key()) == 4


def test_fast_unmasking_is_active_with_the_pinned_wsproto() -> None:
    # If a wsproto upgrade changes its internals, use_fast_unmasking leaves
    # it alone (correct but slow): this test is what notices.
    protocol = Connection(ConnectionType.SERVER)
    assert use_fast_unmasking(protocol)
    assert isinstance(protocol._proto._frame_decoder, _FastUnmaskingDecoder)


def test_fast_unmasking_leaves_an_unknown_layout_alone() -> None:
    class Unusual:
        pass

    assert not use_fast_unmasking(Unusual())  # type: ignore[arg-type]


def test_fast_unmasking_decodes_frames_cut_at_every_byte() -> None:
    # A masked client frame fed one byte at a time: the mask must continue
    # across pieces exactly as wsproto's own masker does.
    client = Connection(ConnectionType.CLIENT)
    wire = client.send(TextMessage(data="héllo wörld " * 40)) + client.send(
        BytesMessage(data=os.urandom(300))
    )
    plain = Connection(ConnectionType.SERVER)
    fast = Connection(ConnectionType.SERVER)
    assert type(plain._proto._frame_decoder) is FrameDecoder
    assert use_fast_unmasking(fast)
    for byte in wire:
        plain.receive_data(bytes([byte]))
        fast.receive_data(bytes([byte]))
    assert [repr(e) for e in fast.events()] == [repr(e) for e in plain.events()]


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 300_000])
async def test_frames_we_build_cross_the_wire_both_ways(
    nursery: trio.Nursery, size: int
) -> None:
    # Both directions go through our own frame builder (client: masked).
    client, server = await open_pair(
        nursery,
        client_options={"max_message_size": 1 << 20},
        server_options={"max_message_size": 1 << 20},
    )
    payload = os.urandom(size)
    await client.send_message(payload)
    assert await server.get_message() == payload
    await server.send_message(payload)
    assert await client.get_message() == payload
    text = "ü" * (size // 2)
    await client.send_message(text)
    assert await server.get_message() == text
