"""Speeding up wsproto where it is slow, without changing what it does.

Rules:
- The only module that touches wsproto internals. Every access is guarded:
  if wsproto's layout is not the one expected, nothing is changed, so a
  wsproto upgrade can cost speed but never correctness. A test checks that
  the fast path is active with the pinned wsproto.
- wsproto stays the protocol engine: it still parses every frame; only the
  unmasking of payloads is done by ``_masking`` (compiled when available).
- Memory: a wsproto ``Connection`` keeps a ``deque`` of pending events that
  is empty nearly all its life (wsproto only queues into it when the stream
  ends), yet an empty deque costs about 760 bytes. An idle connection lives
  long, so it gets a list (56 bytes empty) with the two deque methods
  wsproto calls on it.
"""

from __future__ import annotations

from collections import deque

from wsproto.connection import Connection
from wsproto.frame_protocol import FrameDecoder, XorMaskerSimple

from ._masking import RotatingMask


class _FastMasker(XorMaskerSimple):
    """wsproto's masker interface, backed by ``_masking.RotatingMask``."""

    def __init__(self, key: bytes | bytearray) -> None:
        super().__init__(key)
        self._rotating = RotatingMask(key)

    def process(self, data: bytearray) -> bytearray:
        return self._rotating.process(data)


class _FastUnmaskingDecoder(FrameDecoder):
    """wsproto's frame decoder, unmasking payloads with ``_FastMasker``."""

    def parse_header(self) -> bool:
        parsed = super().parse_header()
        masker = self.masker
        if parsed and type(masker) is XorMaskerSimple:
            key = getattr(masker, "_masking_key", None)
            if isinstance(key, (bytes, bytearray)) and len(key) == 4:
                self.masker = _FastMasker(key)
        return parsed


class _EventList(list):  # type: ignore[type-arg]
    """A small stand-in for the event ``deque`` of a wsproto ``Connection``:
    it only ever holds a close event or two, so ``pop(0)`` costs nothing."""

    __slots__ = ()

    def popleft(self) -> object:
        return self.pop(0)


def use_compact_event_queue(protocol: Connection) -> bool:
    """Give ``protocol`` a list in place of its event deque (see the module
    rules), keeping any event already queued. Returns whether it could."""
    events = getattr(protocol, "_events", None)
    if type(events) is not deque:
        return False
    protocol._events = _EventList(events)  # type: ignore[assignment]
    return True


def use_fast_unmasking(protocol: Connection) -> bool:
    """Make ``protocol`` unmask incoming payloads with the fast masker.
    Returns whether it could (False: wsproto's layout is not the known one)."""
    frame_protocol = getattr(protocol, "_proto", None)
    decoder = getattr(frame_protocol, "_frame_decoder", None)
    if type(decoder) is not FrameDecoder:
        return False
    decoder.__class__ = _FastUnmaskingDecoder
    return True
