"""Data frame headers built by hand (RFC 6455 section 5.2).

Rules:
- Pure: no trio, no I/O, no state.
- Only the header: the caller's first byte carries FIN, RSV1 and the
  opcode; a client adds ``MASKED`` and then the mask key and the masked
  payload (``_wire.masking``). Control frames and frames with extension data
  are wsproto's to build.
"""

from __future__ import annotations

import struct

#: The MASK bit of the second header byte.
MASKED = 0x80

_pack_header_16 = struct.Struct("!BBH").pack
_pack_header_64 = struct.Struct("!BBQ").pack


def frame_header(first_byte: int, size: int, mask_bit: int = 0) -> bytes:
    """The header of a frame whose payload is ``size`` bytes: the length in
    7 bits, or 126 and 16 bits, or 127 and 64 bits, as the size needs."""
    if size < 126:
        return bytes((first_byte, mask_bit | size))
    if size < 65536:
        return _pack_header_16(first_byte, mask_bit | 126, size)
    return _pack_header_64(first_byte, mask_bit | 127, size)
