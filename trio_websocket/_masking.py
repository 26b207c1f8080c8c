"""Masking of frame payloads (RFC 6455 section 5.3) and masking keys.

Rules:
- Pure functions and small value objects; no trio, no wsproto.
- ``apply_mask`` is the compiled one from ``_speedups`` when it was built,
  else ``apply_mask_python``; both return a new ``bytearray`` and are
  compared by the tests.
- Masking keys come from ``os.urandom`` (the RFC asks for keys a peer cannot
  predict), read a few KiB at a time instead of one system call per frame.
"""

from __future__ import annotations

import os
from collections.abc import Callable

Mask = Callable[[bytes | bytearray | memoryview, bytes], bytearray]

# _XOR_TABLES[k] maps each byte b to b ^ k, for bytes.translate.
_XOR_TABLES: list[bytes] = []


def apply_mask_python(data: bytes | bytearray | memoryview, mask: bytes) -> bytearray:
    """XOR ``data`` with the repeated 4-byte ``mask``, in pure Python: each
    of the four interleaved byte columns goes through one translate call."""
    if len(mask) != 4:
        raise ValueError("mask must be exactly 4 bytes")
    if not _XOR_TABLES:
        _XOR_TABLES.extend(bytes(b ^ k for b in range(256)) for k in range(256))
    result = bytearray(data)
    for column in range(4):
        result[column::4] = result[column::4].translate(_XOR_TABLES[mask[column]])
    return result


try:
    from ._speedups import apply_mask as _compiled_apply_mask
except ImportError:  # pragma: no cover - depends on the build
    apply_mask: Mask = apply_mask_python
    COMPILED = False
else:
    apply_mask = _compiled_apply_mask
    COMPILED = True


class RotatingMask:
    """Unmasks one frame's payload as it arrives in pieces of any length:
    each piece continues the mask where the previous one stopped."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes | bytearray) -> None:
        self._key = bytes(key)

    def process(self, data: bytes | bytearray | memoryview) -> bytearray:
        if not data:
            return bytearray()
        result = apply_mask(data, self._key)
        shift = len(data) & 3
        if shift:
            self._key = self._key[shift:] + self._key[:shift]
        return result


class MaskKeys:
    """A supply of random 4-byte masking keys."""

    __slots__ = ("_pool", "_position")

    _POOL_BYTES = 4096

    def __init__(self) -> None:
        self._pool = b""
        self._position = 0

    def next(self) -> bytes:
        position = self._position
        if position >= len(self._pool):
            self._pool = os.urandom(self._POOL_BYTES)
            position = 0
        self._position = position + 4
        return self._pool[position : position + 4]


#: One supply for the whole process: keys stay unpredictable to every peer.
next_mask_key = MaskKeys().next
