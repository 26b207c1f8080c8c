"""The bounds of one HTTP/2 connection and its streams.

Rules:
- Pure data (no ``h2``): the server's and client's options hold one, so it
  must import without the ``http2`` extra.
- Every field is checked when the record is built (``TypeError`` /
  ``ValueError``), against the ranges RFC 9113 allows.
"""

from __future__ import annotations

from dataclasses import dataclass

from .frame_guard import FloodLimits

#: The largest flow-control window HTTP/2 allows (RFC 9113, section 6.9.1).
MAX_WINDOW = 2**31 - 1


@dataclass(frozen=True)
class HTTP2Limits:
    """The bounds of one HTTP/2 connection (the ``http2_limits`` option of
    the server and the client). A peer that goes past one gets GOAWAY
    with the matching error code, and the connection closes.

    The most bytes one connection buffers unread is
    ``max_concurrent_streams * stream_window`` (50 MiB by default), on
    top of what each WebSocket's own inbox holds.
    """

    #: WebSockets (streams) open at once on one connection: the
    #: SETTINGS_MAX_CONCURRENT_STREAMS this side announces.
    max_concurrent_streams: int = 100
    #: Each stream's receive window: the most bytes of one WebSocket that
    #: may wait unread. The window is handed back only as the WebSocket's
    #: reader takes the bytes, so this is also its backpressure. (512 KiB:
    #: a peer that sends in bulk keeps sending while half of it is handed
    #: back; at 256 KiB an echo of pipelined 64 KiB messages cost 20% more
    #: CPU per message. Still less than the kernel may buffer for one TCP
    #: connection, which HTTP/1.1 pays per WebSocket.)
    stream_window: int = 512 * 1024
    #: The most header bytes of one request or answer, as HPACK counts
    #: them (SETTINGS_MAX_HEADER_LIST_SIZE).
    max_header_list_size: int = 16 * 1024
    #: The largest frame the peer may send (SETTINGS_MAX_FRAME_SIZE).
    #: (64 KiB, one read of the connection: a 64 KiB WebSocket message then
    #: comes as one DATA frame, not four, and costs 7% less CPU. What a
    #: frame can make us hold before it is whole is at most this once per
    #: connection, a frame that ``h2`` reads (with the fast paths on, the
    #: DATA of an open WebSocket is handed on as it comes, never held
    #: whole); a header block is bounded on its own, see
    #: :attr:`header_block_bound`.)
    max_frame_size: int = 64 * 1024
    #: Frames that carry no data (SETTINGS, PING, PRIORITY, empty DATA,
    #: tiny WINDOW_UPDATE, unknown types...): a burst, then a rate per
    #: second; beyond it, GOAWAY ENHANCE_YOUR_CALM.
    control_frame_burst: int = 1000
    control_frames_per_second: float = 200.0
    #: Streams the peer resets (the "rapid reset" attack, CVE-2023-44487):
    #: a burst, then a rate per second.
    reset_burst: int = 200
    resets_per_second: float = 50.0

    def __post_init__(self) -> None:
        for name in (
            "max_concurrent_streams",
            "stream_window",
            "max_header_list_size",
            "max_frame_size",
            "control_frame_burst",
            "reset_burst",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int")
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        for name in ("control_frames_per_second", "resets_per_second"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number")
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.stream_window > MAX_WINDOW:
            raise ValueError(f"stream_window must be at most {MAX_WINDOW}")
        if not 2**14 <= self.max_frame_size <= 2**24 - 1:
            raise ValueError("max_frame_size must be in 16384..16777215 (RFC 9113)")

    @property
    def connection_window(self) -> int:
        """The connection's receive window: every stream's at once, so one
        stream whose reader stalls never stalls the others."""
        return min(MAX_WINDOW, self.max_concurrent_streams * self.stream_window)

    @property
    def header_block_bound(self) -> int:
        """The most bytes of one header block (HEADERS and its CONTINUATION
        frames) taken before the block ends; past it, GOAWAY
        ENHANCE_YOUR_CALM. An encoded header list is never much bigger than
        the size ``max_header_list_size`` counts (32 bytes a field more than
        its name and value), so a block twice that size plus padding is
        over the limit anyway; without this bound a peer could make the
        connection hold 64 frames of a block that never ends."""
        return 2 * self.max_header_list_size + 1024

    @property
    def floods(self) -> FloodLimits:
        return FloodLimits(
            control_burst=self.control_frame_burst,
            control_per_second=float(self.control_frames_per_second),
            reset_burst=self.reset_burst,
            reset_per_second=float(self.resets_per_second),
        )

    @property
    def receive_size(self) -> int:
        """How many bytes the connection's reader asks for at a time."""
        return 64 * 1024
