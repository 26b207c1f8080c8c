"""The WebSocket connection: a thin trio driver around wsproto.

Rules:
- One connection owns one trio stream, one wsproto ``Connection`` (after the
  opening handshake) and one reader task, started by the client or server
  module in a nursery that outlives the connection's use.
- The reader is the only task that receives. It feeds wsproto, answers
  control frames the moment they are parsed (pongs and the close echo are
  queued as bytes and written at once, or by the task already writing, right
  after its frame), and puts finished messages in the inbox. It never awaits
  the application: a full inbox only stops further *reads* (see
  ``_messages``), and that bound is in bytes.
- One writer at a time holds the write turn. A frame is serialized (data
  frames here, compressed ones too, everything else by wsproto) only at the
  moment it is written or appended to the outbox, both in order, so nothing
  can follow a close frame, and permessage-deflate's shared compressor sees
  messages in the order the peer will inflate them. A write that is cancelled or fails may have
  left half a frame on the wire, so it aborts the connection.
- Write coalescing: when the task that sends is the one that just took a
  message while more still wait in the inbox, it is working through a batch
  (get, send, get, send...), so ``send_message`` appends its frame to the
  outbox instead of making a system call per message. Other senders (a
  separate producer task) write directly. The batch is written in one go
  by a one-shot flusher task scheduled with the first deferred frame, which
  runs once the application waits; the outbox is capped in bytes, past
  which sends write directly (and wait: that is the backpressure). Whoever
  holds the write turn empties the outbox before giving the turn up, so a
  queued close echo is never left behind.
- ``_close_reason is None`` exactly while the connection is open for sending
  and receiving; it is set once, by whichever comes first: our close, the
  peer's close, a protocol failure, or the loss of the stream.
- A protocol failure found by the reader (a bad frame, invalid UTF-8, a
  message over the size limit) stops delivery at once, but takes effect
  (close reason set, close frame sent) only once the application has taken
  the messages delivered before it and waits for more, or after
  ``PROTOCOL_ERROR_GRACE``: a reply to a message that arrived in the same
  read as the fault still goes out before the close frame.
- Stream errors (``trio.BrokenResourceError``, ``trio.ClosedResourceError``,
  ``OSError``) are translated to ``ConnectionClosed`` here and nowhere else.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Sequence

import trio
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.extensions import Extension

from ._close import ABNORMAL_CLOSURE, MESSAGE_TOO_BIG, CloseReason
from ._compression import DeflateParameters
from ._config import (
    CLOSE_GRACE,
    COALESCE_BYTES,
    PROTOCOL_ERROR_GRACE,
    READ_AHEAD_BYTES,
    ConnectionOptions,
)
from ._deflate import DeflateExtension
from ._endpoint import Endpoint, stream_endpoint
from ._errors import ConnectionClosed, Headers
from ._fastpath import use_fast_unmasking
from ._masking import apply_mask, next_mask_key
from ._messages import Inbox, InboxClosed, Message, MessageAssembler, MessageTooBig
from ._pings import PingTracker
from ._url import bracket_host

#: What a broken or closed trio stream raises.
STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)

#: Close codes an endpoint must never put in a close frame (RFC 6455 7.4.1);
#: like wsproto, we send 1000 in their place.
_LOCAL_ONLY_CODES = frozenset({1004, 1005, 1006, 1015})

_OPEN = ConnectionState.OPEN


def _describe(endpoint: Endpoint | str) -> str:
    if isinstance(endpoint, Endpoint):
        return f"{bracket_host(endpoint.address)}:{endpoint.port}"
    return endpoint

_TEXT = 0x1
_BINARY = 0x2
_FIN = 0x80
#: RSV1 in a frame's first byte: "compressed" under permessage-deflate. In
#: an opcode handed to ``_queue`` it asks for the payload to be compressed
#: when the frame is serialized (so in wire order).
_RSV1 = 0x40
_MASKED = 0x80
_pack_header_16 = struct.Struct("!BBH").pack
_pack_header_64 = struct.Struct("!BBQ").pack
#: Frames in the outbox are joined into one write up to this many bytes: a
#: copy costs less than an extra write (a system call and a scheduler pass).
#: A bigger payload is written on its own, uncopied.
_JOIN_PAYLOAD_BYTES = 256 * 1024


class WebSocketConnection(trio.abc.AsyncResource):
    """A WebSocket connection, client or server side.

    Do not build one yourself: :func:`open_websocket`,
    :func:`connect_websocket`, :func:`wrap_client_stream` and
    :meth:`WebSocketRequest.accept` return them, started and ready.
    """

    #: Numbers connections in ``str()`` (the 0.12.2 class attribute).
    CONNECTION_ID = itertools.count()

    # Slots: an idle connection should cost as little memory as possible.
    __slots__ = (
        "_assembler",
        "_batch_task",
        "_close_reason",
        "_deflate",
        "_discarding",
        "_draining",
        "_failure",
        "_failure_ends_reading",
        "_finished",
        "_flush_scheduled",
        "_handshake_headers",
        "_id",
        "_inbox",
        "_is_client",
        "_local",
        "_nursery",
        "_options",
        "_outbox",
        "_outbox_bytes",
        "_path",
        "_pings",
        "_plain_frames",
        "_proto",
        "_reader_scope",
        "_remote",
        "_stop_reading",
        "_stream",
        "_subprotocol",
        "_write_waiters",
        "_writing",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        protocol: Connection,
        *,
        is_client: bool,
        path: str,
        subprotocol: str | None,
        handshake_headers: Headers,
        options: ConnectionOptions,
        extensions: Sequence[Extension] = (),
        endpoints: tuple[Endpoint | str, Endpoint | str] | None = None,
    ) -> None:
        self._id = next(WebSocketConnection.CONNECTION_ID)
        self._stream = stream
        self._proto = protocol
        self._is_client = is_client
        self._path = path
        self._subprotocol = subprotocol
        self._handshake_headers = handshake_headers
        self._options = options
        if endpoints is None:
            endpoints = (
                stream_endpoint(stream, local=True),
                stream_endpoint(stream, local=False),
            )
        self._local, self._remote = endpoints

        self._inbox = Inbox(options.message_queue_size, READ_AHEAD_BYTES)
        self._assembler = MessageAssembler(options.max_message_size)
        self._pings = PingTracker()
        self._close_reason: CloseReason | None = None
        # Data received after we gave up on the connection is dropped.
        self._discarding = False
        # A protocol failure waiting for the application (see the rules).
        self._failure: CloseReason | None = None
        self._failure_ends_reading = False
        # Serialized frames waiting to be written, in order, and their size.
        self._outbox: list[bytes | bytearray] = []
        self._outbox_bytes = 0
        self._flush_scheduled = False
        # The task working through a batch of received messages, if any.
        self._batch_task: trio.lowlevel.Task | None = None
        self._nursery: trio.Nursery | None = None
        self._writing = False
        self._write_waiters: trio.lowlevel.ParkingLot | None = None
        # With no extension in use, a data frame is a plain header and the
        # payload (masked by a client): we build it without wsproto's three
        # payload copies and pure-Python masking. Control frames, and data
        # frames when an extension other than ours is in use, are
        # serialized by wsproto. With permessage-deflate a compressed
        # message is still one plain frame, with RSV1 and a deflated payload.
        self._deflate: DeflateExtension | None = None
        for extension in extensions:
            if isinstance(extension, DeflateExtension) and extension.enabled():
                self._deflate = extension
        self._plain_frames = all(isinstance(e, DeflateExtension) for e in extensions)
        if not is_client:
            use_fast_unmasking(protocol)
        # The reader stops (server) or drains until EOF (client) once the
        # closing handshake is over or the parser has given up.
        self._stop_reading = False
        self._draining = False
        self._reader_scope = trio.CancelScope()
        self._finished = trio.Event()

    # ------------------------------------------------------------------
    # Public properties

    @property
    def closed(self) -> CloseReason | None:
        """Why the connection closed (or is closing), else ``None`` while it
        is open."""
        return self._close_reason

    @property
    def is_client(self) -> bool:
        """Whether this is the client side of the connection."""
        return self._is_client

    @property
    def is_server(self) -> bool:
        """Whether this is the server side of the connection."""
        return not self._is_client

    @property
    def local(self) -> Endpoint | str:
        """The local endpoint (``str`` of the stream when it is not TCP)."""
        return self._local

    @property
    def remote(self) -> Endpoint | str:
        """The remote endpoint (``str`` of the stream when it is not TCP)."""
        return self._remote

    @property
    def path(self) -> str:
        """The requested resource: path and query string."""
        return self._path

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server chose, if any."""
        return self._subprotocol

    @property
    def handshake_headers(self) -> Headers:
        """The other side's opening-handshake headers: the request's on a
        server, the response's on a client."""
        return self._handshake_headers

    @property
    def compression(self) -> DeflateParameters | None:
        """The permessage-deflate parameters agreed in the opening
        handshake, or None when messages are not compressed (not asked
        for, or declined by the other side)."""
        deflate = self._deflate
        return None if deflate is None else deflate.parameters

    def __str__(self) -> str:
        role = "client" if self._is_client else "server"
        return f"{role}-{self._id} {_describe(self._local)}<->{_describe(self._remote)}"

    def __repr__(self) -> str:
        return f"<WebSocketConnection {self}>"

    # ------------------------------------------------------------------
    # Public methods

    async def get_message(self) -> Message:
        """The next message: ``str`` for text, ``bytes`` for binary.

        Messages that arrived before the peer closed can still be read; then
        this raises :exc:`ConnectionClosed`. After a local :meth:`aclose` it
        raises at once.
        """
        try:
            message = await self._inbox.get()
        except InboxClosed:
            raise ConnectionClosed(self._close_reason) from None
        self._batch_task = trio.lowlevel.current_task() if self._inbox else None
        return message

    async def send_message(self, message: str | bytes, *, compress: bool | None = None) -> None:
        """Send a text (``str``) or binary (``bytes``) message.

        :param compress: only matters when permessage-deflate is in use
            (see :attr:`compression`). None: compress the message unless it
            is shorter than the configured ``threshold``; False: send it
            uncompressed (for data that is already compressed, such as
            images or zip files); True: compress it whatever its size.
        :raises ConnectionClosed: once the connection is closed.
        :raises ValueError: for a message that is not ``str`` or ``bytes``.
        :raises TypeError: for a ``compress`` that is not None or a bool.
        """
        if self._close_reason is not None:
            raise ConnectionClosed(self._close_reason)
        if compress is not None and not isinstance(compress, bool):
            raise TypeError("compress must be None, True or False")
        if isinstance(message, str):
            if self._plain_frames:
                payload = message.encode("utf-8")
                deflate = self._deflate
                if deflate is not None and deflate.wants_to_compress(len(payload), compress):
                    await self._send(None, _TEXT | _RSV1, payload)
                else:
                    await self._send(None, _TEXT, payload)
            else:
                await self._send(TextMessage(data=message))
        elif isinstance(message, bytes):
            if self._plain_frames:
                deflate = self._deflate
                if deflate is not None and deflate.wants_to_compress(len(message), compress):
                    await self._send(None, _BINARY | _RSV1, message)
                else:
                    await self._send(None, _BINARY, message)
            else:
                await self._send(BytesMessage(data=message))
        else:
            raise ValueError(
                f"message must be str or bytes, not {type(message).__name__}"
            )

    async def ping(self, payload: bytes | None = None) -> None:
        """Send a ping and wait for the matching pong.

        :param payload: up to 125 bytes; ``None`` picks 4 random bytes.
        :raises ValueError: if a ping with this payload is already in flight.
        :raises ConnectionClosed: if the connection closes before the pong.
        """
        if self._close_reason is not None:
            raise ConnectionClosed(self._close_reason)
        if payload is None:
            payload = self._pings.new_payload()
        elif not isinstance(payload, bytes) or len(payload) > 125:
            raise ValueError("ping payload must be bytes of at most 125 bytes")
        waiter = self._pings.add(payload)
        try:
            await self._send(Ping(payload=payload))
            await waiter.event.wait()
        except BaseException:
            self._pings.discard(payload, waiter)
            raise
        if not waiter.answered:
            raise ConnectionClosed(self._close_reason)

    async def pong(self, payload: bytes | None = None) -> None:
        """Send an unsolicited pong (a one-way heartbeat)."""
        if self._close_reason is not None:
            raise ConnectionClosed(self._close_reason)
        payload = b"" if payload is None else payload
        if not isinstance(payload, bytes) or len(payload) > 125:
            raise ValueError("pong payload must be bytes of at most 125 bytes")
        await self._send(Pong(payload=payload))

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        """Close the connection: send a close frame with ``code`` and
        ``reason``, wait for the peer's, then close the stream.

        Idempotent: later calls wait for the same close to finish. If this is
        cancelled, the stream is closed at once without the handshake.
        """
        if isinstance(code, bool) or not isinstance(code, int):
            raise TypeError("close code must be an int")
        if not 1000 <= code <= 4999:
            raise ValueError(f"close code must be in 1000..4999, got {code}")
        self._inbox.close(discard=True)
        self._enact_failure()
        try:
            if self._close_reason is None:
                self._set_close_reason(CloseReason(code, reason))
                if code in _LOCAL_ONLY_CODES:
                    code = 1000
                try:
                    await self._send(CloseConnection(code=code, reason=reason))
                except ConnectionClosed:
                    pass
            await self._finished.wait()
        except BaseException:
            self._abort()
            raise

    # ------------------------------------------------------------------
    # Writing

    async def _acquire_write_turn(self) -> None:
        if self._writing:
            # The task that releases the turn hands it straight to us.
            if self._write_waiters is None:
                self._write_waiters = trio.lowlevel.ParkingLot()
            await self._write_waiters.park()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
            self._writing = True

    def _release_write_turn(self) -> None:
        if self._write_waiters:
            self._write_waiters.unpark()
        else:
            self._writing = False

    def _queue_frame(self, data: bytes | bytearray) -> None:
        self._outbox.append(data)
        self._outbox_bytes += len(data)

    def _queue(self, event: Event | None, opcode: int, payload: bytes) -> None:
        """Serialize one frame into the outbox: ``event`` through wsproto,
        or, when it is None, a plain data frame (see ``_plain_frames``)."""
        if event is not None:
            self._queue_frame(self._proto.send(event))
            return
        if opcode & _RSV1:
            assert self._deflate is not None
            payload = self._deflate.compress_message(payload)
        size = len(payload)
        mask_bit = _MASKED if self._is_client else 0
        if size < 126:
            header = bytes((_FIN | opcode, mask_bit | size))
        elif size < 65536:
            header = _pack_header_16(_FIN | opcode, mask_bit | 126, size)
        else:
            header = _pack_header_64(_FIN | opcode, mask_bit | 127, size)
        if mask_bit:
            key = next_mask_key()
            self._queue_frame(header + key)
            self._queue_frame(apply_mask(payload, key))
        else:
            self._queue_frame(header)
            self._queue_frame(payload)

    async def _send(self, event: Event | None, opcode: int = 0, payload: bytes = b"") -> None:
        """Serialize a frame (see :meth:`_queue`) and write it, or defer the
        write to the end of the batch (see the module rules)."""
        if (
            self._inbox
            and self._batch_task is trio.lowlevel.current_task()
            and self._outbox_bytes < COALESCE_BYTES
            and self._nursery is not None
        ):
            await trio.lowlevel.checkpoint_if_cancelled()
            if self._proto.state is not _OPEN:
                raise ConnectionClosed(self._close_reason)
            self._queue(event, opcode, payload)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                try:
                    self._nursery.start_soon(self._deferred_flush)
                except RuntimeError:  # the nursery is closing: write now
                    self._flush_scheduled = False
                    await self._flush_outbox()
            return
        await self._acquire_write_turn()
        try:
            is_open = self._proto.state is _OPEN
            if is_open:
                self._queue(event, opcode, payload)
            await self._write_outbox()
            if not is_open:
                raise ConnectionClosed(self._close_reason)
        finally:
            self._release_write_turn()

    async def _deferred_flush(self) -> None:
        try:
            await self._flush_outbox()
        except ConnectionClosed:
            pass  # the connection is aborted; its users see ConnectionClosed
        finally:
            self._flush_scheduled = False

    async def _flush_outbox(self) -> None:
        """Write the outbox, if anything is in it, taking the write turn."""
        await self._acquire_write_turn()
        try:
            await self._write_outbox()
        finally:
            self._release_write_turn()

    async def _write_outbox(self) -> None:
        """Write the outbox while holding the turn; translate stream errors.

        Small frames are joined into one write; a big piece is written on
        its own rather than copied into a join.
        """
        stream = self._stream
        try:
            while self._outbox:
                pieces = self._outbox
                total = self._outbox_bytes
                self._outbox = []
                self._outbox_bytes = 0
                if len(pieces) == 1:
                    await stream.send_all(pieces[0])
                elif total <= _JOIN_PAYLOAD_BYTES:
                    await stream.send_all(b"".join(pieces))
                else:
                    await self._write_pieces(pieces)
        except trio.Cancelled:
            # Part of a frame may be on the wire: the stream is unusable.
            self._abort()
            raise
        except STREAM_ERRORS as exc:
            self._abort()
            raise ConnectionClosed(self._close_reason) from exc

    async def _write_pieces(self, pieces: list[bytes | bytearray]) -> None:
        small: list[bytes | bytearray] = []
        for piece in pieces:
            if len(piece) > _JOIN_PAYLOAD_BYTES:
                if small:
                    await self._stream.send_all(b"".join(small))
                    small = []
                await self._stream.send_all(piece)
            else:
                small.append(piece)
        if small:
            await self._stream.send_all(b"".join(small))

    # ------------------------------------------------------------------
    # Closing

    def _set_close_reason(self, reason: CloseReason) -> None:
        if self._close_reason is None:
            self._close_reason = reason
            self._inbox.close(discard=False)
            self._pings.close()

    def _abort(self) -> None:
        """Give up on the connection now: the reader closes the stream."""
        self._set_close_reason(CloseReason(ABNORMAL_CLOSURE, None))
        self._discarding = True
        self._reader_scope.cancel()

    def _fail(self, code: int, reason: str, *, parser_done: bool) -> None:
        """We found the peer at fault: stop delivering its data now (what
        was delivered stays readable) and close with ``code`` once the
        application has caught up (see the module rules)."""
        self._discarding = True
        self._assembler.reset()
        if self._close_reason is None:
            if self._failure is None:
                self._failure = CloseReason(code, reason)
            self._failure_ends_reading = self._failure_ends_reading or parser_done
            if not self._inbox:
                self._enact_failure()
        elif parser_done:
            self._reading_done()

    def _enact_failure(self) -> None:
        """Close for the pending protocol failure, if there is one."""
        failure = self._failure
        if failure is None:
            return
        self._failure = None
        self._set_close_reason(failure)
        if self._proto.state is _OPEN:
            self._queue_frame(self._proto.send(CloseConnection(failure.code, failure.reason)))
        if self._failure_ends_reading:
            self._reading_done()

    async def _wait_then_enact_failure(self) -> None:
        with trio.move_on_after(PROTOCOL_ERROR_GRACE):
            await self._inbox.wait_until_consumed()
        self._enact_failure()

    def _reading_done(self) -> None:
        """No more frames will be parsed: the server closes now, the client
        waits (briefly) for the server to close TCP first, per RFC 6455."""
        self._discarding = True
        if self._is_client:
            if not self._draining:
                self._draining = True
                self._reader_scope.deadline = min(
                    self._reader_scope.deadline,
                    trio.current_time() + CLOSE_GRACE,
                )
        else:
            self._stop_reading = True

    def _on_close_frame(self, event: CloseConnection) -> None:
        state = self._proto.state
        if state is ConnectionState.REMOTE_CLOSING:
            # The peer started the closing handshake: echo its code and
            # reason (as 0.12.2 did; browsers show the echoed reason).
            self._set_close_reason(CloseReason(event.code, event.reason or None))
            self._queue_frame(
                self._proto.send(CloseConnection(code=event.code, reason=event.reason))
            )
            self._reading_done()
        elif state is ConnectionState.CLOSED:
            # The answer to our close frame.
            self._set_close_reason(CloseReason(event.code, event.reason or None))
            self._reading_done()
        else:
            # wsproto reports a frame it could not parse as a close event
            # without changing state; its parser is finished. A failure in
            # permessage-deflate comes with a generic reason: use ours.
            reason = event.reason or ""
            if self._deflate is not None and self._deflate.failure is not None:
                reason = self._deflate.failure
            self._fail(event.code, reason, parser_done=True)

    # ------------------------------------------------------------------
    # Reading

    def _start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        nursery.start_soon(self._reader_task, name=f"{self} reader")

    async def _reader_task(self) -> None:
        clean = False
        try:
            with self._reader_scope:
                await self._read_loop()
                clean = True
        finally:
            self._set_close_reason(CloseReason(ABNORMAL_CLOSURE, None))
            closed = False
            try:
                if clean:
                    closed = await self._close_stream_gracefully()
            finally:
                if not closed:
                    # Cannot block or be interrupted (it is also what runs
                    # when this task is cancelled).
                    try:
                        await trio.aclose_forcefully(self._stream)
                    except STREAM_ERRORS:
                        pass
                self._finished.set()

    async def _close_stream_gracefully(self) -> bool:
        """Send what is still queued (the close echo), then close the stream
        (a TLS stream says goodbye), giving up after a grace period. Returns
        whether the stream closed in time."""
        with trio.move_on_after(CLOSE_GRACE) as scope:
            try:
                if self._outbox:
                    await self._flush_outbox()
                await self._stream.aclose()
            except (ConnectionClosed, *STREAM_ERRORS):
                return False
        return not scope.cancelled_caught

    async def _read_loop(self) -> None:
        stream = self._stream
        inbox = self._inbox
        max_bytes = self._options.receive_buffer_size
        self._dispatch()  # events parsed from bytes that came with the handshake
        while not self._stop_reading:
            if self._outbox and not self._writing:
                try:
                    await self._flush_outbox()
                except ConnectionClosed:
                    return
                continue
            if self._failure is not None:
                await self._wait_then_enact_failure()
                continue
            if inbox.reader_must_wait():
                await inbox.wait_for_room()
                continue
            try:
                data = await stream.receive_some(max_bytes)
            except STREAM_ERRORS:
                return
            if not data:
                return
            if not self._draining:
                self._proto.receive_data(data)  # type: ignore[arg-type]
                self._dispatch()

    def _dispatch(self) -> None:
        """Handle every event wsproto has parsed so far. Synchronous: control
        frames to send go to the outbox, messages to the inbox."""
        inbox = self._inbox
        assembler = self._assembler
        limit = self._options.max_message_size
        for event in self._proto.events():
            kind = type(event)
            if kind is BytesMessage or kind is TextMessage:
                if self._discarding:
                    continue
                data = event.data  # type: ignore[attr-defined]
                if (
                    kind is BytesMessage
                    and event.message_finished  # type: ignore[attr-defined]
                    and not assembler.in_progress
                    and len(data) <= limit
                ):
                    inbox.put(data)
                    continue
                try:
                    message = assembler.feed(data, event.message_finished)  # type: ignore[attr-defined]
                except MessageTooBig:
                    self._fail(
                        MESSAGE_TOO_BIG, f"message exceeds {limit} bytes", parser_done=False
                    )
                    continue
                if message is not None:
                    inbox.put(message)
            elif kind is Ping:
                if self._proto.state is _OPEN:
                    self._queue_frame(self._proto.send(Pong(event.payload)))  # type: ignore[attr-defined]
            elif kind is Pong:
                self._pings.pong_received(event.payload)  # type: ignore[attr-defined]
            elif kind is CloseConnection:
                self._on_close_frame(event)  # type: ignore[arg-type]
        inbox.wake_receivers()
