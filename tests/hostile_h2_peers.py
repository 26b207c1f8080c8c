"""A hostile HTTP/2 client for tests/test_hostile_http2.py: frames built
by hand, sent over any trio stream, and the server's frames read back.

Rules:
- The peer writes exactly the frames a test asks for (built here; only
  header blocks are HPACK-encoded, by ``hpack``) and reads only when the
  test says so: a peer that "never reads" never calls ``receive_some``.
  It answers nothing by itself (no SETTINGS ACK, no PING ACK, no
  WINDOW_UPDATE) unless a test calls the method that does.
- Every header block the server sends is decoded in order (HPACK keeps
  state across blocks), whichever stream it is on.
- WebSockets run on a stream by hand too: masked frames (``hostile_peers``)
  in DATA frames, and the server's frames parsed from the stream's DATA.
- Every loop is bounded, by a count or by the caller's deadline.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import hpack
import trio
from hostile_peers import OP_CLOSE, OP_TEXT, Frame, close_payload, frame, parse_frame

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types and flags (RFC 9113, section 6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0x0, 0x1, 0x2, 0x3, 0x4
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0x5, 0x6, 0x7, 0x8, 0x9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20

# Error codes (RFC 9113, section 7).
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
SETTINGS_TIMEOUT, STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM = 0x4, 0x5, 0x6, 0x7
CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, ENHANCE_YOUR_CALM = 0x8, 0x9, 0xA, 0xB

# Settings (RFC 9113 section 6.5.2, RFC 8441 section 3).
SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6
SETTINGS_ENABLE_CONNECT_PROTOCOL = 0x8

#: The most bytes the peer buffers from the server before a test fails.
MAX_RECEIVED = 8 * 2**20
#: The most frames one read loop goes through.
FRAME_BOUND = 200_000


def h2_frame(kind: int, flags: int = 0, stream_id: int = 0, payload: bytes = b"") -> bytes:
    """One frame as bytes (its length is the payload's)."""
    return (
        len(payload).to_bytes(3, "big")
        + bytes([kind, flags])
        + (stream_id & 0x7FFFFFFF).to_bytes(4, "big")
        + payload
    )


def settings_frame(values: dict[int, int] | None = None, *, ack: bool = False) -> bytes:
    payload = b"".join(struct.pack("!HI", key, value) for key, value in (values or {}).items())
    return h2_frame(SETTINGS, ACK if ack else 0, 0, payload)


def ping_frame(opaque: bytes = b"\0" * 8, *, ack: bool = False) -> bytes:
    return h2_frame(PING, ACK if ack else 0, 0, opaque)


def window_update_frame(stream_id: int, increment: int) -> bytes:
    return h2_frame(WINDOW_UPDATE, 0, stream_id, struct.pack("!I", increment))


def rst_stream_frame(stream_id: int, error_code: int = CANCEL) -> bytes:
    return h2_frame(RST_STREAM, 0, stream_id, struct.pack("!I", error_code))


def priority_frame(stream_id: int, depends_on: int = 0, weight: int = 16) -> bytes:
    return h2_frame(PRIORITY, 0, stream_id, struct.pack("!IB", depends_on, weight - 1))


def data_frame(stream_id: int, data: bytes, *, end_stream: bool = False) -> bytes:
    return h2_frame(DATA, END_STREAM if end_stream else 0, stream_id, data)


def websocket_connect(
    path: str = "/echo",
    *,
    method: bytes = b"CONNECT",
    protocol: bytes | None = b"websocket",
    version: bytes | None = b"13",
    extra: list[tuple[bytes, bytes]] | None = None,
) -> list[tuple[bytes, bytes]]:
    """The header list of an extended CONNECT that opens a WebSocket
    (RFC 8441 section 4), or of a request that differs from it as asked."""
    headers = [(b":method", method)]
    if protocol is not None:
        headers.append((b":protocol", protocol))
    headers += [
        (b":scheme", b"http"),
        (b":path", path.encode()),
        (b":authority", b"example.com"),
    ]
    if version is not None:
        headers.append((b"sec-websocket-version", version))
    return headers + (extra or [])


def plain_get(path: str = "/") -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", path.encode()),
        (b":authority", b"example.com"),
    ]


@dataclass(frozen=True)
class H2Frame:
    kind: int
    flags: int
    stream_id: int
    payload: bytes

    @property
    def error_code(self) -> int:
        """The error code of a GOAWAY or an RST_STREAM."""
        if self.kind == GOAWAY:
            return int.from_bytes(self.payload[4:8], "big")
        assert self.kind == RST_STREAM, self
        return int.from_bytes(self.payload[0:4], "big")

    @property
    def last_stream_id(self) -> int:
        assert self.kind == GOAWAY, self
        return int.from_bytes(self.payload[0:4], "big") & 0x7FFFFFFF

    def settings(self) -> dict[int, int]:
        assert self.kind == SETTINGS, self
        return {
            key: value
            for key, value in struct.iter_unpack("!HI", self.payload[: len(self.payload) // 6 * 6])
        }


@dataclass
class StreamSeen:
    """What the server sent on one stream."""

    headers: list[tuple[bytes, bytes]] | None = None
    data: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None

    @property
    def status(self) -> int | None:
        if self.headers is None:
            return None
        return int(dict(self.headers)[b":status"])


class H2Peer:
    """A client's end of an HTTP/2 connection driven by hand (see the rules)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self._buffer = bytearray()
        self._header_block: bytearray | None = None
        self._header_stream = 0
        self._header_end_stream = False
        self.streams: dict[int, StreamSeen] = {}
        #: Every frame read so far, in order.
        self.frames: list[H2Frame] = []
        self.goaway: H2Frame | None = None
        self.server_settings: dict[int, int] = {}
        #: Set once the stream ended or broke under the reader.
        self.eof = False

    # -- Sending --------------------------------------------------------

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def try_send(self, data: bytes) -> bool:
        """Send, or say False once the server has hung up."""
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return False
        return True

    async def start(self, settings: dict[int, int] | None = None) -> None:
        """The connection preface and our SETTINGS."""
        await self.send(PREFACE + settings_frame(settings))

    def header_block(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        return bytes(self.encoder.encode(headers))

    def headers_frame(
        self,
        stream_id: int,
        headers: list[tuple[bytes, bytes]],
        *,
        end_stream: bool = False,
        end_headers: bool = True,
    ) -> bytes:
        flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        return h2_frame(HEADERS, flags, stream_id, self.header_block(headers))

    async def request(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], *, end_stream: bool = False
    ) -> None:
        await self.send(self.headers_frame(stream_id, headers, end_stream=end_stream))

    async def send_ws(self, stream_id: int, opcode: int, payload: bytes = b"") -> None:
        """One masked WebSocket frame in one DATA frame."""
        await self.send(data_frame(stream_id, frame(opcode, payload)))

    # -- Reading --------------------------------------------------------

    async def next_frame(self) -> H2Frame | None:
        """The next frame, or None once the stream ended or broke."""
        while True:
            if len(self._buffer) >= 9:
                length = int.from_bytes(self._buffer[0:3], "big")
                if len(self._buffer) >= 9 + length:
                    raw = bytes(self._buffer[: 9 + length])
                    del self._buffer[: 9 + length]
                    found = H2Frame(
                        raw[3], raw[4], int.from_bytes(raw[5:9], "big") & 0x7FFFFFFF, raw[9:]
                    )
                    self._note(found)
                    return found
            if self.eof:
                return None
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                data = b""
            if not data:
                self.eof = True
                continue
            self._buffer += data
            assert len(self._buffer) < MAX_RECEIVED, "the server sent too much"

    def _note(self, found: H2Frame) -> None:
        self.frames.append(found)
        kind = found.kind
        if kind == GOAWAY and self.goaway is None:
            self.goaway = found
        elif kind == SETTINGS and not found.flags & ACK:
            self.server_settings.update(found.settings())
        elif kind in (HEADERS, CONTINUATION):
            if kind == HEADERS:
                payload = found.payload
                if found.flags & PADDED:
                    payload = payload[1 : len(payload) - payload[0]]
                if found.flags & PRIORITY_FLAG:
                    payload = payload[5:]
                self._header_block = bytearray(payload)
                self._header_stream = found.stream_id
                self._header_end_stream = bool(found.flags & END_STREAM)
            else:
                assert self._header_block is not None, "CONTINUATION out of the blue"
                self._header_block += found.payload
            if found.flags & END_HEADERS:
                assert self._header_block is not None
                seen = self.stream_seen(self._header_stream)
                block = self.decoder.decode(bytes(self._header_block), raw=True)
                seen.headers = [(bytes(name), bytes(value)) for name, value in block]
                seen.ended = seen.ended or self._header_end_stream
                self._header_block = None
        elif kind == DATA:
            seen = self.stream_seen(found.stream_id)
            payload = found.payload
            if found.flags & PADDED:
                payload = payload[1 : len(payload) - payload[0]]
            seen.data += payload
            if found.flags & END_STREAM:
                seen.ended = True
        elif kind == RST_STREAM:
            self.stream_seen(found.stream_id).reset = found.error_code

    def stream_seen(self, stream_id: int) -> StreamSeen:
        return self.streams.setdefault(stream_id, StreamSeen())

    async def read_until(self, done: object) -> bool:
        """Read frames until ``done()`` (a callable) is true: True, or
        False if the connection ended first."""
        assert callable(done)
        for _ in range(FRAME_BOUND):
            if done():
                return True
            if await self.next_frame() is None:
                return bool(done())
        raise AssertionError("no end within the frame bound")

    async def read_to_end(self) -> None:
        """Read until the server closes the connection."""
        await self.read_until(lambda: False)

    async def goaway_code(self) -> int | None:
        """Read up to the end of the connection; the first GOAWAY's error
        code, or None if the server closed without one."""
        await self.read_to_end()
        return None if self.goaway is None else self.goaway.error_code

    async def answer(self, stream_id: int) -> StreamSeen:
        """Read until the server answered ``stream_id`` (headers, or a
        reset); the connection must not end first."""
        seen = self.stream_seen(stream_id)
        assert await self.read_until(lambda: seen.headers is not None or seen.reset is not None), (
            f"the connection ended before stream {stream_id} was answered: {self.goaway}"
        )
        return seen

    async def whole_answer(self, stream_id: int) -> StreamSeen:
        """Read until the server ended or reset ``stream_id``."""
        seen = self.stream_seen(stream_id)
        assert await self.read_until(lambda: seen.ended or seen.reset is not None), (
            f"the connection ended before stream {stream_id} did: {self.goaway}"
        )
        return seen

    async def ws_frame(self, stream_id: int) -> Frame:
        """The next WebSocket frame the server sent on ``stream_id``
        (its DATA window is handed back as it is read)."""
        seen = self.stream_seen(stream_id)
        while True:
            parsed = parse_frame(seen.data)
            if parsed is not None:
                found, size = parsed
                del seen.data[:size]
                await self.send(window_update_frame(stream_id, size) + window_update_frame(0, size))
                return found
            before = len(seen.data)

            def more(before: int = before) -> bool:
                return len(seen.data) > before or seen.reset is not None or seen.ended

            assert await self.read_until(more), (
                f"the connection ended within a WebSocket frame: {self.goaway}"
            )
            assert seen.reset is None, f"stream {stream_id} reset ({seen.reset})"
            assert len(seen.data) > before, f"stream {stream_id} ended within a frame"

    async def ws_echo(self, stream_id: int, text: str) -> None:
        """A WebSocket on ``stream_id`` (already accepted) echoes ``text``."""
        await self.send_ws(stream_id, OP_TEXT, text.encode())
        echoed = await self.ws_frame(stream_id)
        assert (echoed.opcode, echoed.payload) == (OP_TEXT, text.encode()), echoed

    async def open_ws(self, stream_id: int, path: str = "/echo") -> None:
        """Open a WebSocket on ``stream_id`` and see it accepted."""
        await self.request(stream_id, websocket_connect(path))
        seen = await self.answer(stream_id)
        assert seen.status == 200, seen

    async def close_ws(self, stream_id: int) -> None:
        """The closing handshake of the WebSocket on ``stream_id``."""
        await self.send_ws(stream_id, OP_CLOSE, close_payload(1000))
        for _ in range(100):
            if (await self.ws_frame(stream_id)).opcode == OP_CLOSE:
                return
        raise AssertionError("no close frame")


def encoded(headers: list[tuple[bytes, bytes]]) -> bytes:
    """A header block as the first block of a connection (a fresh HPACK
    encoder: no reference to an earlier block)."""
    return bytes(hpack.Encoder().encode(headers))
