"""What a peer's HTTP/2 byte stream holds, frame by frame, before ``h2``
reads it: the floods a hostile peer can send within the protocol's rules
are counted here, GOAWAY frames are taken out, and (the fast path) the
DATA of the streams the connection names is delivered here, never
reaching ``h2``.

Rules:
- Pure: no I/O, no trio, no ``h2``. Fed every byte the peer sends, in
  order; returns the bytes ``h2`` must read (the same object when nothing
  was taken out).
- Only frame headers are read (9 bytes each); payloads are passed through
  untouched, except a GOAWAY's, which is kept (at most one maximum frame
  size) and handed to the connection, and the DATA of a routed stream.
  ``h2`` treats a GOAWAY as the end of everything, while RFC 9113 lets the
  streams it does not refuse run to their end; the connection handles it
  itself.
- Routing (``routes``, filled by the connection with the streams whose
  peer side is open): the DATA of a routed stream goes to its sink, padding
  dropped, once per ``feed`` (what each routed stream had in that read,
  joined: one copy and one wake of its reader per read, not per frame),
  before ``feed`` returns or raises. The whole, unpadded frames of one
  stream that follow each other are taken in one call of
  ``scan_data_run`` (see its rules below); any other frame, frame by
  frame. Its flow control is kept here
  (the stream's and the connection's receive windows, both ours: ``h2``
  never sees these bytes, so its own windows only count the DATA it does
  see); a frame beyond either window raises :exc:`PeerError`
  (FLOW_CONTROL_ERROR). Padding counts against the windows and is listed
  in ``padding`` for the connection to hand back at once. A routed
  frame's END_STREAM reaches ``h2`` as an empty DATA frame with that flag,
  in its place in the byte stream, so that ``h2`` keeps the stream's
  state; the stream then leaves ``routes``. Everything else (DATA of other
  streams, every other frame) goes to ``h2`` as it came. ``h2``'s own
  parsing of DATA is the slow path this replaces: per frame it builds
  objects, runs two state machines and formats the frame for a log line.
- Send windows (``senders``, when the connection keeps them: the fast
  path writes its DATA frames itself, so ``h2``'s windows would not count
  them): a WINDOW_UPDATE stops here and opens the stream's or the
  connection's window; an overflow past 2**31-1 or an increment of 0 is
  the error RFC 9113 (section 6.9) says.
- ``scan_data_run(data, position, stream_id, max_frame_size, limit)``
  (compiled in ``_wire._speedups`` when it was built, else
  :func:`scan_data_run_python`; the same results, tests compare them)
  reads frame headers from ``position`` and takes each frame that is, in
  turn: DATA, of ``stream_id`` (the reserved bit ignored), not PADDED, at
  most ``max_frame_size`` long, not empty unless it has END_STREAM, whole
  in ``data``, and no more than ``limit`` less the data taken before it
  (a receive window). It stops at the first frame that is not, and after
  a frame with END_STREAM. Returns the data of the frames taken joined as
  one new ``bytes`` (one copy), where the run ends (``position`` when no
  frame was taken) and whether it ended with END_STREAM. What it leaves
  goes frame by frame (errors, padding, cut frames...).
- Header blocks (``max_header_block``, when given): the payload bytes of
  one header block (a HEADERS or PUSH_PROMISE frame and the CONTINUATION
  frames up to END_HEADERS, padding counted) are added up from the frame
  headers; a block that goes past the bound raises :exc:`PeerFlood` on the
  header of the frame that crosses it, before its payload is waited for.
  (``h2`` would buffer up to 64 frames of a block before it decodes any:
  64 maximum frames, 4 MiB at a 64 KiB frame size.)
- Floods are measured with token buckets on the peer's frames that cost
  us work but carry no data (SETTINGS, PING, PRIORITY, RST_STREAM, empty
  DATA, small WINDOW_UPDATE, CONTINUATION, unknown types) and, separately,
  on stream resets (CVE-2023-44487, "rapid reset"). An exhausted bucket
  raises :exc:`PeerFlood`: the connection answers GOAWAY ENHANCE_YOUR_CALM
  and closes. The buckets refill with time, so a well-behaved peer that
  runs for hours never runs out.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

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

#: A frame header's fields: its length (a byte and 16 bits), type, flags
#: and stream id (with the reserved bit).
_unpack_header = struct.Struct(">BHBBL").unpack_from

_FLAG_END_STREAM = 0x1
_FLAG_END_HEADERS = 0x4
_FLAG_PADDED = 0x8

#: Error codes this module raises with (RFC 9113, section 7).
PROTOCOL_ERROR = 0x1
FLOW_CONTROL_ERROR = 0x3
FRAME_SIZE_ERROR = 0x6
ENHANCE_YOUR_CALM = 0xB

#: The largest flow-control window HTTP/2 allows (RFC 9113, section 6.9.1).
MAX_WINDOW = 2**31 - 1

#: A WINDOW_UPDATE smaller than this counts as a control frame: real
#: peers open windows in large steps, a flood opens them a byte at a time.
SMALL_WINDOW_UPDATE = 1024


#: (The scan of runs of DATA frames: see the module rules.)
class ScanDataRun(Protocol):
    """The signature of ``scan_data_run``."""

    def __call__(
        self, data: bytes, position: int, stream_id: int, max_frame_size: int, limit: int, /
    ) -> tuple[bytes, int, bool]: ...


def scan_data_run_python(
    data: bytes, position: int, stream_id: int, max_frame_size: int, limit: int, /
) -> tuple[bytes, int, bool]:
    """``scan_data_run`` in Python (see the module rules)."""
    if min(position, stream_id, max_frame_size, limit) < 0:
        raise ValueError("scan_data_run() takes no negative numbers")
    size = len(data)
    if position > size:
        raise ValueError("scan_data_run() position is past the data")
    view = memoryview(data)
    parts: list[memoryview] = []
    at = position
    total = 0
    ended = False
    while size - at >= FRAME_HEADER_SIZE:
        high, low, kind, flags, frame_stream = _unpack_header(data, at)
        length = high << 16 | low
        start = at + FRAME_HEADER_SIZE
        if (
            kind != DATA
            or frame_stream & 0x7FFFFFFF != stream_id
            or flags & _FLAG_PADDED
            or length > max_frame_size
            or (not length and not flags & _FLAG_END_STREAM)
            or length > size - start
            or length > limit - total
        ):
            break
        parts.append(view[start : start + length])
        total += length
        at = start + length
        if flags & _FLAG_END_STREAM:
            ended = True
            break
    return b"".join(parts), at, ended


try:
    from .._wire._speedups import scan_data_run as _compiled_scan_data_run
except ImportError:  # pragma: no cover - depends on the build
    scan_data_run: ScanDataRun = scan_data_run_python
    SCAN_COMPILED = False
else:
    scan_data_run = _compiled_scan_data_run
    SCAN_COMPILED = True


class PeerError(Exception):
    """The peer broke a rule this module enforces: the connection ends
    with GOAWAY ``error_code``."""

    def __init__(self, error_code: int, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code


class PeerFlood(PeerError):
    """The peer sent more of some kind of frame than the limits allow."""

    def __init__(self, message: str) -> None:
        super().__init__(ENHANCE_YOUR_CALM, message)


class SendSink(Protocol):
    """A stream whose send window this module keeps."""

    #: What this side may still send on the stream.
    send_window: int

    def window_opened(self) -> None: ...


class DataSink(Protocol):
    """Where a routed stream's DATA goes (an ``_h2.stream.HTTP2Stream``)."""

    #: What the peer may still send on the stream (ours to keep).
    receive_window: int

    def data_received(self, data: bytes) -> None: ...


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
        "_block_size",
        "_control",
        "_deliver_left",
        "_head",
        "_kept",
        "_kept_kind",
        "_kept_left",
        "_kept_stream",
        "_max_frame_size",
        "_max_header_block",
        "_pad_byte_due",
        "_payload_left",
        "_preface_left",
        "_resets",
        "_route_end",
        "_route_id",
        "_route_sink",
        "_skip_left",
        "goaways",
        "padding",
        "receive_window",
        "routes",
        "send_window",
        "send_window_opened",
        "senders",
        "stream_errors",
    )

    def __init__(
        self,
        *,
        expect_client_preface: bool,
        max_frame_size: int,
        limits: FloodLimits = FloodLimits(),
        clock: Callable[[], float] = time.monotonic,
        receive_window: int = 0,
        send_window: int | None = None,
        max_header_block: int | None = None,
    ) -> None:
        self._preface_left = len(CLIENT_PREFACE) if expect_client_preface else 0
        self._max_frame_size = max_frame_size
        self._max_header_block = max_header_block
        # The bytes of the header block being read; -1 between blocks.
        self._block_size = -1
        self._head = b""
        self._payload_left = 0
        # A frame kept here whose payload is being collected (GOAWAY, or
        # WINDOW_UPDATE when the send windows are ours), and its stream.
        self._kept: bytearray | None = None
        self._kept_kind = 0
        self._kept_left = 0
        self._kept_stream = 0
        self._control = _Bucket(limits.control_burst, limits.control_per_second, clock)
        self._resets = _Bucket(limits.reset_burst, limits.reset_per_second, clock)
        #: GOAWAY frames taken out of the stream, oldest first; the
        #: connection empties this list.
        self.goaways: list[GoAway] = []
        #: The streams whose DATA is delivered here (see the module rules).
        self.routes: dict[int, DataSink] = {}
        #: The connection's receive window for routed DATA (ours to keep).
        self.receive_window = receive_window
        #: ``(stream id, bytes)`` of padding received on routed streams, for
        #: the connection to hand back; it empties the list.
        self.padding: list[tuple[int, int]] = []
        #: The send windows, when they are ours (``send_window`` given: the
        #: fast path's own DATA frames, which h2 does not count): the
        #: connection's, and each stream's on the streams in ``senders``
        #: (filled by the connection). WINDOW_UPDATE frames then stop here.
        self.send_window = 0 if send_window is None else send_window
        self.senders: dict[int, SendSink] | None = None if send_window is None else {}
        #: Set when the connection's send window opened (the connection
        #: wakes its senders and clears it).
        self.send_window_opened = False
        #: ``(stream id, error code)`` of streams to reset (a bad
        #: WINDOW_UPDATE); the connection empties it.
        self.stream_errors: list[tuple[int, int]] = []
        # The routed DATA frame being read: its sink and stream, the data
        # bytes still to deliver, whether its pad length byte is still to
        # come, the padding still to drop, and its END_STREAM.
        self._route_sink: DataSink | None = None
        self._route_id = 0
        self._deliver_left = 0
        self._pad_byte_due = False
        self._skip_left = 0
        self._route_end = False

    def feed(self, data: bytes) -> bytes:
        """The part of ``data`` that ``h2`` must read. Raises
        :exc:`PeerError` (or :exc:`PeerFlood`) when the peer broke a rule."""
        if self._head:
            # A header cut by the previous read (held back then): rare, so
            # the copy does not matter.
            data = self._head + data
            self._head = b""
        size = len(data)
        position = 0
        run_start = 0  # data[run_start:position] is handed over as it is
        pieces: list[bytes] | None = None  # set once something is held back
        # The routed DATA of this read, by stream: each stream gets its part
        # once, at the end (one copy, one wake of its reader per read, not
        # per frame), before h2 reads what follows it.
        routed: dict[DataSink, list[bytes | memoryview]] = {}
        view = memoryview(data)
        routes = self.routes
        max_frame_size = self._max_frame_size
        # (The stream whose list the last routed frame went to.)
        last_sink: DataSink | None = None
        last_parts: list[bytes | memoryview] = []
        try:
            while position < size:
                if self._payload_left:
                    taken = min(self._payload_left, size - position)
                    self._payload_left -= taken
                    position += taken
                elif self._route_sink is not None:
                    position = self._route(view, position, size, routed)
                    run_start = position
                    if self._route_sink is None and self._route_end:
                        if pieces is None:
                            pieces = []
                        pieces.append(_end_stream_frame(self._route_id))
                elif self._preface_left:
                    taken = min(self._preface_left, size - position)
                    self._preface_left -= taken
                    position += taken
                elif self._kept is not None:
                    taken = min(self._kept_left, size - position)
                    self._kept += data[position : position + taken]
                    self._kept_left -= taken
                    position += taken
                    run_start = position
                    if not self._kept_left:
                        self._finish_kept()
                elif size - position < FRAME_HEADER_SIZE:
                    self._head = data[position:]
                    break
                else:
                    high, low, kind, flags, stream_id = _unpack_header(data, position)
                    length = high << 16 | low
                    sink = routes.get(stream_id & 0x7FFFFFFF) if kind == DATA and routes else None
                    if sink is None or length > max_frame_size:
                        header_end = position + FRAME_HEADER_SIZE
                        if self._read_header(length, kind, flags, stream_id):
                            # Kept here (a GOAWAY, a WINDOW_UPDATE): hand
                            # over what came before it, not the frame.
                            if pieces is None:
                                pieces = []
                            pieces.append(data[run_start:position])
                            run_start = header_end
                        position = header_end
                        continue
                    # Routed DATA, taken out of what h2 reads: this frame
                    # and the routed DATA frames right behind it.
                    if run_start < position:
                        if pieces is None:
                            pieces = []
                        pieces.append(data[run_start:position])
                    while True:
                        stream_id &= 0x7FFFFFFF
                        header_end = position + FRAME_HEADER_SIZE
                        frame_end = header_end + length
                        if flags & _FLAG_PADDED or frame_end > size:
                            # Padded, or cut by the read: _route goes on.
                            self._start_route(stream_id, sink, length, flags)
                            position = run_start = header_end
                            break
                        # The common case: this frame and the stream's whole
                        # frames right behind it, in one piece.
                        window = self.receive_window
                        if sink.receive_window < window:
                            window = sink.receive_window
                        payload, end, ended = scan_data_run(
                            data, position, stream_id, max_frame_size, max(window, 0)
                        )
                        if end > position:
                            taken = len(payload)
                            self.receive_window -= taken
                            sink.receive_window -= taken
                            if taken:
                                if sink is not last_sink:
                                    last_sink = sink
                                    last_parts = routed.setdefault(sink, [])
                                last_parts.append(payload)
                            position = run_start = end
                        else:
                            # One frame the run does not take (empty, or
                            # beyond a window): on its own.
                            self.receive_window -= length
                            sink.receive_window -= length
                            if self.receive_window < 0 or sink.receive_window < 0:
                                raise PeerError(
                                    FLOW_CONTROL_ERROR,
                                    f"DATA beyond the receive window (stream {stream_id})",
                                )
                            if length:
                                if sink is not last_sink:
                                    last_sink = sink
                                    last_parts = routed.setdefault(sink, [])
                                last_parts.append(view[header_end:frame_end])
                            elif not flags & _FLAG_END_STREAM:
                                self._control_frame()
                            position = run_start = frame_end
                            ended = (flags & _FLAG_END_STREAM) != 0
                        if ended:
                            # The peer is done with the stream: h2 hears of
                            # it here; later DATA goes to h2 (which refuses it).
                            routes.pop(stream_id, None)
                            if pieces is None:
                                pieces = []
                            pieces.append(_end_stream_frame(stream_id))
                        if size - position < FRAME_HEADER_SIZE:
                            break
                        high, low, kind, flags, stream_id = _unpack_header(data, position)
                        length = high << 16 | low
                        if kind != DATA or length > max_frame_size:
                            break
                        sink = routes.get(stream_id & 0x7FFFFFFF)
                        if sink is None:
                            break
        finally:
            for sink, parts in routed.items():
                sink.data_received(
                    parts[0] if len(parts) == 1 and type(parts[0]) is bytes else b"".join(parts)
                )
        if pieces is None and run_start == 0 and not self._head:
            return data
        if pieces is None:
            pieces = []
        pieces.append(data[run_start:position])
        return b"".join(pieces)

    def _route(
        self,
        view: memoryview,
        position: int,
        size: int,
        routed: dict[DataSink, list[bytes | memoryview]],
    ) -> int:
        """Go on with the routed DATA frame (padded, or cut by a read) from
        ``position``, its data collected in ``routed``; where its part of
        the read ends."""
        sink = self._route_sink
        assert sink is not None
        if self._pad_byte_due:
            pad = view[position]
            position += 1
            self._pad_byte_due = False
            if pad > self._deliver_left:
                raise PeerError(PROTOCOL_ERROR, "DATA padding longer than the frame")
            self._deliver_left -= pad
            self._skip_left = pad
            self.padding.append((self._route_id, pad + 1))
        if self._deliver_left and position < size:
            taken = min(self._deliver_left, size - position)
            self._deliver_left -= taken
            routed.setdefault(sink, []).append(view[position : position + taken])
            position += taken
        if not self._deliver_left and self._skip_left and position < size:
            taken = min(self._skip_left, size - position)
            self._skip_left -= taken
            position += taken
        if not (self._deliver_left or self._pad_byte_due or self._skip_left):
            self._end_route()
        return position

    def _end_route(self) -> None:
        self._route_sink = None
        if self._route_end:
            # The peer is done with the stream: h2 hears of it (the caller
            # inserts the frame), later DATA goes to h2 (which refuses it).
            self.routes.pop(self._route_id, None)

    def _read_header(self, length: int, kind: int, flags: int, stream_id: int) -> bool:
        """Account for one frame header (of a frame not routed); True when
        the frame is kept here (a GOAWAY, whose payload this guard then
        keeps, or a WINDOW_UPDATE when the send windows are ours)."""
        if length > self._max_frame_size:
            # Refused on its header, before its payload is waited for.
            raise PeerError(FRAME_SIZE_ERROR, f"a frame of {length} bytes")
        if self._max_header_block is not None and kind in (HEADERS, PUSH_PROMISE, CONTINUATION):
            self._header_block(length, kind, flags)
        if kind == DATA:
            if length == 0 and not flags & _FLAG_END_STREAM:
                self._control_frame()
        elif kind == GOAWAY and length >= 8:
            self._control_frame()
            self._keep(GOAWAY, 0, length)
            return True
        elif kind == WINDOW_UPDATE and length == 4 and self.senders is not None:
            self._keep(WINDOW_UPDATE, stream_id & 0x7FFFFFFF, length)
            return True
        self._payload_left = length
        if kind == RST_STREAM:
            if not self._resets.take():
                raise PeerFlood("too many stream resets (rapid reset)")
        elif kind in (SETTINGS, PING):
            # (ACKs too: one answers each of ours, and we send few.)
            self._control_frame()
        elif kind not in (DATA, HEADERS, WINDOW_UPDATE, GOAWAY):
            # PRIORITY, CONTINUATION, PUSH_PROMISE and unknown types. (A
            # WINDOW_UPDATE counts when its increment is small: see
            # _window_update, or small_window_update when h2 reads it.)
            self._control_frame()
        return False

    def _header_block(self, length: int, kind: int, flags: int) -> None:
        """Add a header block frame to its block's size (see the module
        rules). A CONTINUATION outside a block is h2's to refuse."""
        if kind != CONTINUATION:
            self._block_size = length
        elif self._block_size >= 0:
            self._block_size += length
        else:
            return
        assert self._max_header_block is not None
        if self._block_size > self._max_header_block:
            raise PeerFlood(f"a header block of more than {self._max_header_block} bytes")
        if flags & _FLAG_END_HEADERS:
            self._block_size = -1

    def _start_route(self, stream_id: int, sink: DataSink, length: int, flags: int) -> None:
        self.receive_window -= length
        sink.receive_window -= length
        if self.receive_window < 0 or sink.receive_window < 0:
            raise PeerError(
                FLOW_CONTROL_ERROR, f"DATA beyond the receive window (stream {stream_id})"
            )
        padded = bool(flags & _FLAG_PADDED)
        if padded and not length:
            raise PeerError(PROTOCOL_ERROR, "a padded DATA frame without its pad length")
        self._route_sink = sink
        self._route_id = stream_id
        self._route_end = bool(flags & _FLAG_END_STREAM)
        self._pad_byte_due = padded
        self._deliver_left = length - 1 if padded else length
        self._skip_left = 0

    def _control_frame(self) -> None:
        if not self._control.take():
            raise PeerFlood("too many control frames")

    def count_reset(self) -> None:
        """Count a stream reset the peer made us send (a refused stream, or
        a stream error of its making)."""
        if not self._resets.take():
            raise PeerFlood("too many refused streams")

    def small_window_update(self) -> None:
        """Count a WINDOW_UPDATE whose increment was small (the
        connection reads increments from ``h2``'s events)."""
        self._control_frame()

    def _keep(self, kind: int, stream_id: int, length: int) -> None:
        self._kept = bytearray()
        self._kept_kind = kind
        self._kept_stream = stream_id
        self._kept_left = length

    def _finish_kept(self) -> None:
        payload = bytes(self._kept or b"")
        self._kept = None
        self._kept_left = 0
        if self._kept_kind == WINDOW_UPDATE:
            self._window_update(self._kept_stream, int.from_bytes(payload, "big") & 0x7FFFFFFF)
            return
        self.goaways.append(
            GoAway(
                last_stream_id=int.from_bytes(payload[0:4], "big") & 0x7FFFFFFF,
                error_code=int.from_bytes(payload[4:8], "big"),
                debug_data=payload[8:],
            )
        )

    def _window_update(self, stream_id: int, increment: int) -> None:
        """The peer opened a send window (RFC 9113, section 6.9)."""
        if increment < SMALL_WINDOW_UPDATE:
            self._control_frame()
        if not stream_id:
            if not increment:
                raise PeerError(PROTOCOL_ERROR, "a WINDOW_UPDATE of 0 for the connection")
            self.send_window += increment
            if self.send_window > MAX_WINDOW:
                raise PeerError(FLOW_CONTROL_ERROR, "the connection's send window overflowed")
            self.send_window_opened = True
            return
        assert self.senders is not None
        sink = self.senders.get(stream_id)
        if sink is None:
            return  # a stream that is over: nothing to open
        if not increment:
            self.stream_errors.append((stream_id, PROTOCOL_ERROR))
            return
        sink.send_window += increment
        if sink.send_window > MAX_WINDOW:
            self.stream_errors.append((stream_id, FLOW_CONTROL_ERROR))
            return
        sink.window_opened()


def _end_stream_frame(stream_id: int) -> bytes:
    """An empty DATA frame with END_STREAM: what ``h2`` reads in place of
    a routed frame that ended its stream."""
    return b"\x00\x00\x00" + bytes((DATA, _FLAG_END_STREAM)) + stream_id.to_bytes(4, "big")
