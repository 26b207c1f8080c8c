"""``_wire.framing.frame_header``: the three length forms of RFC 6455 5.2, checked
against wsproto's own parser."""

from __future__ import annotations

import pytest
from wsproto.frame_protocol import FrameProtocol, Opcode

from trio_websocket._wire.framing import MASKED, frame_header


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_a_server_frame_with_our_header_parses_to_the_payload(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    parser = FrameProtocol(client=True, extensions=[])
    parser.receive_bytes(frame_header(0x82, size) + payload)
    (frame,) = list(parser.received_frames())
    assert frame.opcode is Opcode.BINARY
    assert frame.message_finished and frame.frame_finished
    assert bytes(frame.payload) == payload


@pytest.mark.parametrize(
    ("size", "length_bytes"),
    [(125, b"\xfd"), (126, b"\xfe\x00\x7e"), (65536, b"\xff" + (65536).to_bytes(8, "big"))],
)
def test_the_mask_bit_and_the_length_form(size: int, length_bytes: bytes) -> None:
    header = frame_header(0x81, size, MASKED)
    assert header[0] == 0x81
    assert header[1:] == length_bytes
