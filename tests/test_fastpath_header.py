"""The plain-header parser of the receive fast path (issue 3): for every
possible first two bytes of a frame, in both roles, with every length form,
whole or cut short, the fast decoder ends in exactly the state wsproto's
own ``parse_header`` leaves (or raises exactly its error), whether our
parser took the header or backed off to wsproto's."""

from __future__ import annotations

import pytest
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import FrameDecoder, ParseFailed

from trio_websocket._wire import frame_decoder as _fastpath
from trio_websocket._wire.frame_decoder import _ChunkBuffer, _FastReceiveDecoder

KEY = b"\x11\x22\x33\x44"


def _tails(second: int) -> list[bytes]:
    """What may follow the first two bytes: the extended length a length
    code of 126 or 127 asks for (shortest form or not, top bit set), then a
    masking key, each whole or cut short."""
    code = second & 0x7F
    if code == 126:
        lengths = [(125).to_bytes(2, "big"), (126).to_bytes(2, "big"), (0xFFFF).to_bytes(2, "big")]
    elif code == 127:
        lengths = [
            (0xFFFF).to_bytes(8, "big"),
            (0x10000).to_bytes(8, "big"),
            (1 << 63).to_bytes(8, "big"),
        ]
    else:
        lengths = [b""]
    tails = []
    for length in lengths:
        whole = length + KEY
        # Cut nowhere, inside the length, after it, inside the key, after it.
        cuts = {0, len(length), len(length) + 2, len(whole)}
        if length:
            cuts.add(1)
        tails.extend(whole[:cut] for cut in sorted(cuts))
    return tails


def _state(decoder: FrameDecoder) -> tuple[object, ...]:
    masker = decoder.masker
    key = getattr(masker, "_masking_key", None)
    return (
        decoder.header,
        decoder.effective_opcode,
        decoder.payload_required,
        decoder.payload_consumed,
        key,
        masker is None,
    )


def _parse(decoder: FrameDecoder) -> object:
    try:
        return decoder.parse_header()
    except ParseFailed as exc:
        return ("ParseFailed", str(exc), exc.code)


def _remaining(buffer: object) -> int:
    return len(buffer)  # type: ignore[arg-type]


@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
def test_every_header_leaves_the_state_wsproto_leaves(client: bool) -> None:
    taken = 0
    for first in range(256):
        for second in range(256):
            for tail in _tails(second):
                data = bytes([first, second]) + tail
                reference = FrameDecoder(client)
                reference.receive_bytes(data)
                expected = _parse(reference)

                fast = _FastReceiveDecoder(client)
                fast.buffer = _ChunkBuffer(None)
                fast.buffer.feed(data)
                got = _parse(fast)

                assert got == expected, data
                if expected is True:
                    assert _state(fast) == _state(reference), data
                    # The payload is masked as the key says, or not at all.
                    assert (type(fast.masker) is _fastpath._PlainPayload) is client
                assert _remaining(fast.buffer) == _remaining(reference.buffer), data
                taken += expected is True
    # (Most first bytes are refused: reserved bits and opcodes, the wrong
    # masking; still, over a thousand headers are accepted.)
    assert taken > 1000


def test_the_plain_parser_takes_the_common_headers_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast parser is what parses a plain masked binary frame; wsproto's
    is not called (so a change that silently backs off every time fails)."""

    def refuse(self: FrameDecoder) -> bool:
        raise AssertionError("wsproto's parse_header was called")

    monkeypatch.setattr(FrameDecoder, "parse_header", refuse)
    decoder = _FastReceiveDecoder(False)
    decoder.buffer = _ChunkBuffer(None)
    decoder.buffer.feed(b"\x82\x85" + KEY + b"hello")
    assert decoder.parse_header() is True
    assert decoder.header is not None and decoder.header.payload_len == 5


def test_with_an_extension_wsproto_parses_the_header() -> None:
    """An extension sees every header (permessage-deflate reads RSV1), so
    with one in use the fast parser stays out of the way."""
    calls: list[bool] = []

    class Watching(PerMessageDeflate):
        def frame_inbound_header(self, *args: object) -> object:
            calls.append(True)
            return super().frame_inbound_header(*args)  # type: ignore[arg-type]

    decoder = _FastReceiveDecoder(False, [Watching()])
    decoder.buffer = _ChunkBuffer(None)
    decoder.buffer.feed(b"\x82\x85" + KEY + b"hello")
    assert decoder.parse_header() is True
    assert calls == [True]
