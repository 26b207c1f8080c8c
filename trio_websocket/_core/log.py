"""What the library logs, under the ``trio_websocket`` logger.

Rules:
- ``trio-websocket`` (0.12.2's logger name) is the parent of
  ``trio_websocket``: a level, handler or ``propagate`` set on the old name
  applies to our records, and so do its filters (through a filter of
  ours). Records are named ``trio_websocket``.
- INFO: one record when a connection opens (side, endpoints, path,
  subprotocol) and one when its close is decided (code, reason, and who
  closed: us, the peer, or a lost connection). Nothing per message.
  A close that could not finish its handshake (timed out, cancelled)
  gets one more INFO record saying so and whether our close frame went out.
- ERROR: an exception raised by a server's handler, with its traceback.
- The logger has a ``NullHandler``: nothing is printed unless the
  application configures logging.
- DEBUG: one record per frame sent or received (opcode, flags, length; the
  code and reason of a close frame; never the payload of a data frame).
- Every record names its connection in the text (``str(connection)``: side,
  number and both endpoints) and carries ``websocket``, ``local`` and
  ``remote`` attributes (strings) for formatters and filters.
- Frame logging costs nothing when DEBUG is off: whether to log frames is
  decided once, when a connection starts, by wrapping its stream in a
  :class:`FrameLoggingStream`; a connection started while DEBUG was off
  never logs frames (and never checks again).
- The frame scanner reads headers only and skips payloads without copying
  them, so DEBUG costs per frame, not per byte.
"""

from __future__ import annotations

import logging
import struct
from typing import Any, Protocol

import trio

from .close import CloseReason
from .endpoint import Endpoint, describe_endpoint

logger = logging.getLogger("trio_websocket")
# A library's records go where the application's configuration sends them;
# without one, not even ERROR records reach stderr (Python's last resort).
logger.addHandler(logging.NullHandler())

#: The logger trio-websocket 0.12.2 logged under, which code in the wild
#: configures (``getLogger("trio-websocket").setLevel(logging.WARNING)``).
LEGACY_LOGGER_NAME = "trio-websocket"
legacy_logger = logging.getLogger(LEGACY_LOGGER_NAME)


def _legacy_logger_filters(record: logging.LogRecord) -> bool:
    """Applies the 0.12.2 logger's own filters to our records: unlike
    levels and handlers, a parent's filters are not applied to its
    children's records. (On Python 3.12+ a filter may return a changed
    record, which this passes on.) Its ``disabled`` flag is left out on
    purpose: ``logging.config`` sets it on every logger a configuration
    does not name, so one that names only ``trio_websocket`` would
    silence us."""
    return legacy_logger.filter(record)


# The 0.12.2 name is our parent: its level, handlers and ``propagate``
# apply to our records (and to our children's, ``trio_websocket.workers``
# and ``trio_websocket.hub``) as they applied to 0.12.2's, while a level
# set on ``trio_websocket`` itself wins. (No name of ours has a dot, so the
# logging module never re-parents this logger.)
logger.parent = legacy_logger
logger.addFilter(_legacy_logger_filters)
# Levels are cached per logger; re-parenting does not clear the cache.
logger.setLevel(logger.level)

_OPCODE_NAMES = {
    0x0: "CONTINUATION",
    0x1: "TEXT",
    0x2: "BINARY",
    0x8: "CLOSE",
    0x9: "PING",
    0xA: "PONG",
}
_MAX_HEADER = 14
_MAX_CONTROL_PAYLOAD = 125
_unpack_16 = struct.Struct("!H").unpack_from
_unpack_64 = struct.Struct("!Q").unpack_from


class Connection(Protocol):
    """What a log record needs to know about a connection."""

    @property
    def is_client(self) -> bool: ...
    @property
    def local(self) -> Endpoint | str: ...
    @property
    def remote(self) -> Endpoint | str: ...
    @property
    def path(self) -> str: ...
    @property
    def subprotocol(self) -> str | None: ...


def _extra(connection: Connection) -> dict[str, str]:
    return {
        "websocket": str(connection),
        "local": describe_endpoint(connection.local),
        "remote": describe_endpoint(connection.remote),
    }


def log_opened(connection: Connection) -> None:
    """INFO: the opening handshake is done."""
    if logger.isEnabledFor(logging.INFO):
        role = "client" if connection.is_client else "server"
        logger.info(
            "%s opened (%s, path %s, subprotocol %s)",
            connection,
            role,
            connection.path,
            connection.subprotocol,
            extra=_extra(connection),
        )


def log_closed(connection: Connection, reason: CloseReason, *, by_peer: bool) -> None:
    """INFO: the connection's close reason was just decided. ``by_peer``:
    the peer sent the first close frame."""
    if logger.isEnabledFor(logging.INFO):
        if reason.code == 1006:
            who = "connection lost"
        else:
            who = "closed by the peer" if by_peer else "closed by us"
        logger.info(
            "%s %s: code %d (%s)%s",
            connection,
            who,
            reason.code,
            reason.name,
            f", reason {reason.reason!r}" if reason.reason else "",
            extra=_extra(connection),
        )


def log_close_abandoned(connection: Connection, why: str, *, frame_sent: bool) -> None:
    """INFO: closing gave up waiting (``why``) and dropped the stream."""
    if logger.isEnabledFor(logging.INFO):
        logger.info(
            "%s closing handshake not completed (%s): %s; connection dropped",
            connection,
            why,
            "our close frame was sent" if frame_sent else "our close frame was never sent",
            extra=_extra(connection),
        )


class Request(Protocol):
    """What a log record needs to know about a server's request."""

    @property
    def local(self) -> Endpoint | str: ...
    @property
    def remote(self) -> Endpoint | str: ...
    @property
    def path(self) -> str: ...


def log_handler_error(
    request: Request, connection: Connection | None, error: BaseException
) -> None:
    """ERROR, with the traceback: the handler of ``request`` raised
    ``error``; ``connection`` is the one it accepted, if it did. A
    cancellation or KeyboardInterrupt is not an error and is not logged."""
    if not isinstance(error, Exception):
        return
    if connection is not None:
        subject, extra = str(connection), _extra(connection)
    else:
        remote = describe_endpoint(request.remote)
        subject = f"request from {remote} for {request.path}"
        extra = {"websocket": subject, "local": describe_endpoint(request.local), "remote": remote}
    logger.error(
        "%s: handler raised %s", subject, type(error).__name__, exc_info=error, extra=extra
    )


def with_frame_logging(stream: trio.abc.Stream, connection: Connection) -> trio.abc.Stream:
    """``stream`` wrapped to log its frames if DEBUG is on now, else
    ``stream`` itself (see the module rules)."""
    if logger.isEnabledFor(logging.DEBUG):
        return FrameLoggingStream(stream, connection)
    return stream


class FrameScanner:
    """Finds the frames in one direction of a WebSocket byte stream.

    :meth:`feed` takes the bytes in any chunks and returns a description of
    each frame whose header (and, for a close frame, payload) is complete.
    """

    __slots__ = ("_close_header", "_close_payload", "_header", "_payload_left")

    def __init__(self) -> None:
        self._header = bytearray()
        self._payload_left = 0
        # A close frame is described once its payload (code, reason) is in.
        self._close_header: tuple[str, int, bytes] | None = None
        self._close_payload = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> list[str]:
        described: list[str] = []
        view = memoryview(data)
        position = 0
        end = len(view)
        while position < end:
            if self._payload_left:
                take = min(self._payload_left, end - position)
                if self._close_header is not None:
                    # A valid close payload has at most 125 bytes; keep no
                    # more of a bogus one.
                    room = max(_MAX_CONTROL_PAYLOAD - len(self._close_payload), 0)
                    self._close_payload += view[position : position + min(take, room)]
                position += take
                self._payload_left -= take
                if not self._payload_left and self._close_header is not None:
                    described.append(self._describe_close())
                continue
            before = len(self._header)
            self._header += view[position : position + _MAX_HEADER - before]
            parsed = self._parse_header()
            if parsed is None:
                position = end  # all of it went into the partial header
                continue
            header_size, description, length, mask = parsed
            position += header_size - before
            self._header.clear()
            self._payload_left = length
            if description.startswith("CLOSE"):
                self._close_header = (description, length, mask)
                self._close_payload.clear()
                if not length:
                    described.append(self._describe_close())
            else:
                described.append(f"{description}, {length} bytes")
        return described

    def _parse_header(self) -> tuple[int, str, int, bytes] | None:
        """(header size, opcode and flags, payload length, mask key), or
        None while the header is incomplete."""
        header = self._header
        if len(header) < 2:
            return None
        first, second = header[0], header[1]
        size = 2
        length = second & 0x7F
        if length == 126:
            if len(header) < 4:
                return None
            (length,) = _unpack_16(header, 2)
            size = 4
        elif length == 127:
            if len(header) < 10:
                return None
            (length,) = _unpack_64(header, 2)
            size = 10
        mask = b""
        if second & 0x80:
            if len(header) < size + 4:
                return None
            mask = bytes(header[size : size + 4])
            size += 4
        opcode = first & 0x0F
        name = _OPCODE_NAMES.get(opcode, f"opcode {opcode:#x}")
        flags = [flag for bit, flag in ((0x80, "FIN"), (0x40, "RSV1")) if first & bit]
        if first & 0x30:
            flags.append(f"RSV2/3={first >> 4 & 0x3}")
        if mask:
            flags.append("masked")
        description = f"{name} [{' '.join(flags)}]" if flags else name
        return size, description, length, mask

    def _describe_close(self) -> str:
        assert self._close_header is not None
        description, length, mask = self._close_header
        payload = bytes(self._close_payload)
        self._close_header = None
        if mask:
            payload = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
        if len(payload) < 2:
            return f"{description}, {length} bytes, no code"
        (code,) = _unpack_16(payload, 0)
        reason = payload[2:].decode("utf-8", "replace")
        return f"{description}, code {code}" + (f", reason {reason!r}" if reason else "")


class FrameLoggingStream(trio.abc.Stream):
    """Passes everything through to ``stream`` and logs, at DEBUG, each frame
    sent or received. Attributes it does not have are looked up on the
    wrapped stream, so code that asks the stream for more (``send_eof``,
    ``socket``) keeps working."""

    def __init__(self, stream: trio.abc.Stream, connection: Connection) -> None:
        self.stream = stream
        self._connection = connection
        self._sent = FrameScanner()
        self._received = FrameScanner()

    def _log(self, direction: str, frames: list[str]) -> None:
        extra = _extra(self._connection)
        for frame in frames:
            logger.debug("%s %s %s", self._connection, direction, frame, extra=extra)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)
        self._log("sent", self._sent.feed(data))

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.stream.receive_some(max_bytes)
        self._log("received", self._received.feed(data))
        return data

    async def aclose(self) -> None:
        await self.stream.aclose()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)

    def __repr__(self) -> str:
        return f"<FrameLoggingStream around {self.stream!r}>"
