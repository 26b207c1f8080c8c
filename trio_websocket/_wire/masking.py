"""Masking of frame payloads (RFC 6455 section 5.3) and masking keys.

Rules:
- Pure functions and small value objects; no trio, no wsproto.
- Three maskers, each compiled (``_wire._speedups``) when it was built, else the
  ``*_python`` one; the tests compare both with each other and with
  wsproto's own masker. All take ``(data, mask, offset=0)``: ``offset`` is
  where ``data`` starts in the payload (byte ``i`` is XORed with
  ``mask[(offset + i) % 4]``), so a payload that arrives in pieces is
  unmasked by passing the count of bytes done so far.

  * ``apply_mask`` returns a new ``bytearray``;
  * ``apply_mask_bytes`` a new ``bytes``, with one copy: what a received
    payload should become (wsproto's ``bytes()`` of it is then no copy);
  * ``apply_mask_joined`` takes the pieces of one payload (any iterable of
    bytes-like objects, e.g. the reads a frame spans) and returns them
    masked and joined as one ``bytes``, written once.

  Inputs are only read (read-only buffers are fine; a strided memoryview is
  read in C order, as ``bytes()`` reads it); a non-bytes-like input is a
  ``TypeError`` and a mask that is not 4 bytes a ``ValueError``.
- Masking keys come from ``os.urandom`` (the RFC asks for keys a peer cannot
  predict), read a few KiB at a time instead of one system call per frame.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Iterable
from typing import Protocol

Buffer = bytes | bytearray | memoryview


class Mask(Protocol):
    """The signature of ``apply_mask``."""

    def __call__(self, data: Buffer, mask: Buffer, offset: int = 0, /) -> bytearray: ...


class MaskToBytes(Protocol):
    """The signature of ``apply_mask_bytes``."""

    def __call__(self, data: Buffer, mask: Buffer, offset: int = 0, /) -> bytes: ...


class MaskJoined(Protocol):
    """The signature of ``apply_mask_joined``."""

    def __call__(self, pieces: Iterable[Buffer], mask: Buffer, offset: int = 0, /) -> bytes: ...


# _XOR_TABLES[k] maps each byte b to b ^ k, for bytes.translate.
_XOR_TABLES: list[bytes] = []


def _rotated_key(mask: Buffer, offset: int) -> bytes:
    """The mask as it applies from payload position ``offset``."""
    key = bytes(memoryview(mask))
    if len(key) != 4:
        raise ValueError("mask must be exactly 4 bytes")
    shift = operator.index(offset) % 4
    return key[shift:] + key[:shift]


def _xor_in_place(data: bytearray, key: bytes) -> bytearray:
    """XOR ``data`` with the repeated ``key``: each of the four interleaved
    byte columns goes through one translate call (the fastest pure-Python
    way measured; a big-int XOR was 2.5 times slower)."""
    if not _XOR_TABLES:
        _XOR_TABLES.extend(bytes(b ^ k for b in range(256)) for k in range(256))
    for column in range(4):
        data[column::4] = data[column::4].translate(_XOR_TABLES[key[column]])
    return data


def apply_mask_python(data: Buffer, mask: Buffer, offset: int = 0) -> bytearray:
    """``data`` XORed with the repeated 4-byte ``mask``, in pure Python."""
    key = _rotated_key(mask, offset)
    # memoryview first: bytearray(5) would be five zero bytes, not an error.
    return _xor_in_place(bytearray(memoryview(data)), key)


def apply_mask_bytes_python(data: Buffer, mask: Buffer, offset: int = 0) -> bytes:
    """``apply_mask_python`` returning ``bytes``."""
    return bytes(apply_mask_python(data, mask, offset))


def apply_mask_joined_python(pieces: Iterable[Buffer], mask: Buffer, offset: int = 0) -> bytes:
    """The ``pieces`` of one payload masked and joined, in pure Python."""
    key = _rotated_key(mask, offset)
    if isinstance(pieces, (bytes, bytearray, memoryview)):
        # Iterating it would give ints.
        raise TypeError(
            "apply_mask_joined() takes an iterable of bytes-like objects, not a single one"
        )
    joined = bytearray()
    for piece in pieces:
        joined += bytes(memoryview(piece))  # a strided view too, in C order
    return bytes(_xor_in_place(joined, key))


try:
    from ._speedups import apply_mask as _compiled_apply_mask
    from ._speedups import apply_mask_bytes as _compiled_apply_mask_bytes
    from ._speedups import apply_mask_joined as _compiled_apply_mask_joined
except ImportError:  # pragma: no cover - depends on the build
    apply_mask: Mask = apply_mask_python
    apply_mask_bytes: MaskToBytes = apply_mask_bytes_python
    apply_mask_joined: MaskJoined = apply_mask_joined_python
    COMPILED = False
else:
    apply_mask = _compiled_apply_mask
    apply_mask_bytes = _compiled_apply_mask_bytes
    apply_mask_joined = _compiled_apply_mask_joined
    COMPILED = True


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
