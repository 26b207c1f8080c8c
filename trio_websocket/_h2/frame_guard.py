"""What a peer's HTTP/2 byte stream holds, frame by frame, before ``h2``
reads it: the floods a hostile peer can send within the protocol's rules
are counted here, and GOAWAY frames are taken out.

Rules:
- Pure: no I/O, no trio, no ``h2``. Fed every byte the peer sends, in
  order; returns the bytes ``h2`` must read (the same object when nothing
  was taken out, which is the common case: no copy).
- Only frame headers are read (9 bytes each); payloads are passed through
  untouched, except a GOAWAY's, which is kept (at most one maximum frame
  size) and handed to the connection. ``h2`` treats a GOAWAY as the end of
  everything, while RFC 9113 lets the streams it does not refuse run to
  their end; the connection handles it itself.
- Floods are measured with token buckets on the peer's frames that cost
  us work but carry no data (SETTINGS, PING, PRIORITY, RST_STREAM, empty
  DATA, small WINDOW_UPDATE, CONTINUATION, unknown types) and, separately,
  on stream resets (CVE-2023-44487, "rapid reset"). An exhausted bucket
  raises :exc:`PeerFlood`: the connection answers GOAWAY ENHANCE_YOUR_CALM
  and closes. The buckets refill with time, so a well-behaved peer that
  runs for hours never runs out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

#: What an HTTP/2 client sends first (RFC 9113, section 3.4).
CLIENT_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

FRAME_HEADER_SIZE = 9

# Frame types (RFC 9113, section 6).
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

_FLAG_ACK = 0x1
_FLAG_END_STREAM = 0x1

#: A WINDOW_UPDATE smaller than this counts as a control frame: real
#: peers open windows in large steps, a flood opens them a byte at a time.
SMALL_WINDOW_UPDATE = 1024


class PeerFlood(Exception):
    """The peer sent more of some kind of frame than the limits allow."""


@dataclass(frozen=True)
class FloodLimits:
    """The token buckets (burst, then per second) of one connection."""

    #: Control frames (see the module rules): a burst, then a rate.
    control_burst: int = 1000
    control_per_second: float = 200.0
    #: Streams the peer resets (RST_STREAM it sends).
    reset_burst: int = 200
    reset_per_second: float = 50.0


class _Bucket:
    __slots__ = ("_capacity", "_clock", "_rate", "_stamp", "_tokens")

    def __init__(self, capacity: int, rate: float, clock: Callable[[], float]) -> None:
        self._capacity = float(capacity)
        self._rate = rate
        self._clock = clock
        self._tokens = float(capacity)
        self._stamp = clock()

    def take(self) -> bool:
        """Take a token; False when none is left."""
        if self._tokens < 1.0:
            now = self._clock()
            self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
            if self._tokens < 1.0:
                return False
        self._tokens -= 1.0
        return True


@dataclass(frozen=True)
class GoAway:
    """A GOAWAY the peer sent."""

    last_stream_id: int
    error_code: int
    debug_data: bytes


class FrameGuard:
    """Reads the frame headers of what one peer sends (see the module rules)."""

    __slots__ = (
        "_control",
        "_goaway",
        "_goaway_left",
        "_head",
        "_max_frame_size",
        "_payload_left",
        "_preface_left",
        "_resets",
        "goaways",
    )

    def __init__(
        self,
        *,
        expect_client_preface: bool,
        max_frame_size: int,
        limits: FloodLimits = FloodLimits(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._preface_left = len(CLIENT_PREFACE) if expect_client_preface else 0
        self._max_frame_size = max_frame_size
        self._head = b""
        self._payload_left = 0
        self._goaway: bytearray | None = None
        self._goaway_left = 0
        self._control = _Bucket(limits.control_burst, limits.control_per_second, clock)
        self._resets = _Bucket(limits.reset_burst, limits.reset_per_second, clock)
        #: GOAWAY frames taken out of the stream, oldest first; the
        #: connection empties this list.
        self.goaways: list[GoAway] = []

    def feed(self, data: bytes) -> bytes:
        """The part of ``data`` that ``h2`` must read. Raises
        :exc:`PeerFlood` when a limit is exceeded."""
        if self._head:
            # A header cut by the previous read (held back then): rare, so
            # the copy does not matter.
            data = self._head + data
            self._head = b""
        size = len(data)
        position = 0
        run_start = 0  # data[run_start:position] is handed over as it is
        pieces: list[bytes] | None = None  # set once something is held back
        while position < size:
            if self._preface_left:
                taken = min(self._preface_left, size - position)
                self._preface_left -= taken
                position += taken
            elif self._payload_left:
                taken = min(self._payload_left, size - position)
                self._payload_left -= taken
                position += taken
            elif self._goaway is not None:
                taken = min(self._goaway_left, size - position)
                self._goaway += data[position : position + taken]
                self._goaway_left -= taken
                position += taken
                run_start = position
                if not self._goaway_left:
                    self._finish_goaway()
            elif size - position < FRAME_HEADER_SIZE:
                self._head = data[position:]
                break
            else:
                header_end = position + FRAME_HEADER_SIZE
                if self._read_header(data[position:header_end]):
                    if pieces is None:
                        pieces = []
                    pieces.append(data[run_start:position])
                    run_start = header_end
                position = header_end
        if pieces is None and run_start == 0 and not self._head:
            return data
        if pieces is None:
            pieces = []
        pieces.append(data[run_start:position])
        return b"".join(pieces)

    def _read_header(self, head: bytes) -> bool:
        """Account for one frame header; True when it starts a GOAWAY,
        whose payload this guard then keeps."""
        length = int.from_bytes(head[0:3], "big")
        kind = head[3]
        flags = head[4]
        if kind == GOAWAY and length <= self._max_frame_size and length >= 8:
            self._control_frame()
            self._goaway = bytearray()
            self._goaway_left = length
            if not length:
                self._finish_goaway()
            return True
        self._payload_left = length
        if kind == DATA:
            if length == 0 and not flags & _FLAG_END_STREAM:
                self._control_frame()
        elif kind == RST_STREAM:
            if not self._resets.take():
                raise PeerFlood("too many stream resets (rapid reset)")
        elif kind == WINDOW_UPDATE:
            if length != 4:
                return False  # h2 refuses it as malformed
            # (The increment is in the payload, which is not read here: a
            # WINDOW_UPDATE counts as control unless it is for a large
            # window, which the connection checks; see below.)
        elif kind in (SETTINGS, PING):
            if not flags & _FLAG_ACK:
                self._control_frame()
        elif kind != HEADERS:
            # PRIORITY, CONTINUATION, PUSH_PROMISE and unknown types.
            self._control_frame()
        return False

    def _control_frame(self) -> None:
        if not self._control.take():
            raise PeerFlood("too many control frames")

    def small_window_update(self) -> None:
        """Count a WINDOW_UPDATE whose increment was small (the
        connection reads increments from ``h2``'s events)."""
        self._control_frame()

    def _finish_goaway(self) -> None:
        payload = bytes(self._goaway or b"")
        self._goaway = None
        self._goaway_left = 0
        self.goaways.append(
            GoAway(
                last_stream_id=int.from_bytes(payload[0:4], "big") & 0x7FFFFFFF,
                error_code=int.from_bytes(payload[4:8], "big"),
                debug_data=payload[8:],
            )
        )
