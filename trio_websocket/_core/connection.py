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
  ``_core.messages``), and that bound is in bytes. The bound holds within a
  read: once the inbox says its budget is reached, or the outbox holds
  ``OUTBOX_LIMIT`` (pongs and close echoes for a peer that sends but does
  not read), the reader stops *parsing* (``_parse_paused``: the rest of the
  read waits in wsproto's buffer) and parses on, before reading anything
  more, once the application has caught up or the outbox is written.
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
  peer's close, a protocol failure, or the loss of the stream. One
  correction is allowed: a close of ours that gave up (``aclose`` timed out
  or was cancelled) before its frame went out, with no frame from the peer
  either, becomes 1006, so ``closed`` never claims a close nobody saw.
- Closing is bounded: ``aclose`` waits at most the entry point's
  ``disconnect_timeout`` (``close_timeout``), then aborts. With the
  ``close_on_cancel`` option (``open_websocket``'s connections), a reader
  cancelled from outside sends 1001 and waits for the answer, shielded,
  within ``CLOSE_GRACE``, before it ends; other connections are dropped at
  once, as a cancellation asks.
- A protocol failure found by the reader (a bad frame, invalid UTF-8, a
  message over the size limit) stops delivery at once, but takes effect
  (close reason set, close frame sent) only once the application has taken
  the messages delivered before it and waits for more, or after
  ``PROTOCOL_ERROR_GRACE``: a reply to a message that arrived in the same
  read as the fault still goes out before the close frame.
- Stream errors (``trio.BrokenResourceError``, ``trio.ClosedResourceError``,
  ``OSError``) are translated to ``ConnectionClosed`` here and nowhere else.
- The close frame we sent and the one we received are kept apart
  (``close_sent``, ``close_received``); ``closed`` is whichever reason
  came first, as in 0.12.2.
- Statistics are integer counters bumped on the hot paths (one add per
  message, per read, per write); the snapshot is built only when asked.
- The keepalive (``_core.keepalive``), when configured, is one more task in the
  connection's nursery; closing the connection cancels it.
- Streamed messages. Sending: a message sent in pieces holds the *message
  turn* from its first frame to its last, so no other data frame can come
  between (RFC 6455 5.4); it takes the write turn one frame at a time, so
  pings, pongs and the close frame still go out between its frames. A
  message that cannot be finished once started (a piece of the wrong type,
  the pieces' source failed, the sender was cancelled between frames) is
  cut short by closing the connection with 1011; a write cancelled
  mid-frame aborts, as always. Receiving: the inbox hands one message at a
  time over in pieces (see ``_core.messages``); the receive that claimed it owns
  it until its last piece. Any other receive started meanwhile gives that
  message up (its rest is dropped) or, if a task is waiting for its next
  piece, raises ``trio.BusyResourceError``.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sequence

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

from .._wire.frame_decoder import (
    has_unparsed_bytes,
    stop_holding,
    use_compact_event_queue,
    use_fast_receive,
    use_fast_unmasking,
)
from .._wire.framing import MASKED, frame_header
from .._wire.masking import apply_mask, next_mask_key
from .close import (
    ABNORMAL_CLOSURE,
    GOING_AWAY,
    INTERNAL_ERROR,
    MESSAGE_TOO_BIG,
    NO_STATUS_RCVD,
    NORMAL_CLOSURE,
    CloseReason,
)
from .compression import DeflateParameters
from .config import (
    CLOSE_GRACE,
    COALESCE_BYTES,
    OUTBOX_LIMIT,
    PROTOCOL_ERROR_GRACE,
    READ_AHEAD_BYTES,
    ConnectionOptions,
)
from .deflate import DeflateExtension
from .endpoint import Endpoint, describe_endpoint, stream_endpoint
from .errors import ConnectionClosed, Headers
from .keepalive import keep_alive
from .log import log_close_abandoned, log_closed, log_opened, with_frame_logging
from .messages import (
    ITEM_COST,
    Inbox,
    InboxClosed,
    Message,
    MessageAssembler,
    MessageTooBig,
    wire_size,
)
from .pings import PingTracker, PingWaiter
from .stats import ConnectionStatistics

#: What a broken or closed trio stream raises.
STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)

#: Close codes an endpoint must never put in a close frame (RFC 6455 7.4.1);
#: like wsproto, we send 1000 in their place.
_LOCAL_ONLY_CODES = frozenset({1004, 1005, 1006, 1015})

_OPEN = ConnectionState.OPEN

#: Close codes after which iteration (and ``receive``) ends quietly instead
#: of raising: a normal close, a peer going away, and an empty close frame
#: (reported as 1005), which is how browsers close by default.
NORMAL_CLOSE_CODES = frozenset({NORMAL_CLOSURE, GOING_AWAY, NO_STATUS_RCVD})

KEEPALIVE_TIMEOUT_REASON = "keepalive ping timeout"


_describe = describe_endpoint

_TEXT = 0x1
_BINARY = 0x2
_FIN = 0x80
#: RSV1 in a frame's first byte: "compressed" under permessage-deflate. In
#: an opcode handed to ``_queue`` it asks for the payload to be compressed
#: when the frame is serialized (so in wire order).
_RSV1 = 0x40
#: The most events one pass of the reader handles before it lets the other
#: tasks run: a read can hold some 20,000 tiny frames, and parsing them all
#: in one go would stall every other connection for tens of milliseconds.
_EVENTS_PER_TURN = 1024
#: Why the reader stopped parsing part-way through a read
#: (``_parse_paused``): it did not; the inbox's budget was reached (it
#: parses on once the application has taken some); the outbox holds
#: ``OUTBOX_LIMIT`` of pongs (it waits for them to be written, behind any
#: other writer); it handled a turn's worth of events (it lets the other
#: tasks run first).
_PARSING, _PAUSED_FOR_INBOX, _PAUSED_FOR_OUTBOX, _PAUSED_FOR_TURN = 0, 1, 2, 3
#: Frames in the outbox are joined into one write up to this many bytes: a
#: copy costs less than an extra write (a system call and a scheduler pass).
#: A bigger payload is written on its own, uncopied.
_JOIN_PAYLOAD_BYTES = 256 * 1024


class WebSocketConnection(trio.abc.Channel[Message]):
    """A WebSocket connection, client or server side.

    Do not build one yourself: :func:`open_websocket`,
    :func:`connect_websocket`, :func:`wrap_client_stream` and
    :meth:`WebSocketRequest.accept` return them, started and ready.

    It is a ``trio.abc.Channel[str | bytes]``: :meth:`send`,
    :meth:`receive`, ``async for message in ws`` (which ends quietly when
    the connection closes normally) and ``async with ws``.
    """

    #: Numbers connections in ``str()`` (the 0.12.2 class attribute).
    CONNECTION_ID = itertools.count()

    # Slots: an idle connection should cost as little memory as possible.
    __slots__ = (
        "_assembler",
        "_batch_task",
        "_bytes_received",
        "_bytes_sent",
        "_close_reason",
        "_close_received",
        "_close_sent",
        "_deflate",
        "_discarding",
        "_draining",
        "_failure",
        "_failure_ends_reading",
        "_finished",
        "_flush_scheduled",
        "_fragment_receiver",
        "_fragment_source_scope",
        "_fragmenting",
        "_handshake_headers",
        "_id",
        "_inbox",
        "_is_client",
        "_keepalive_scope",
        "_local",
        "_message_waiters",
        "_messages_received",
        "_messages_sent",
        "_nursery",
        "_options",
        "_outbox",
        "_outbox_bytes",
        "_parse_paused",
        "_path",
        "_pings",
        "_plain_frames",
        "_proto",
        "_reader_ended",
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

        self._inbox = Inbox(
            options.message_queue_size, READ_AHEAD_BYTES, options.max_buffered_bytes
        )
        self._assembler = MessageAssembler(options.max_message_size)
        self._pings = PingTracker()
        self._close_reason: CloseReason | None = None
        self._close_sent: CloseReason | None = None
        self._close_received: CloseReason | None = None
        self._keepalive_scope: trio.CancelScope | None = None
        self._messages_sent = 0
        self._messages_received = 0
        self._bytes_sent = 0
        self._bytes_received = 0
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
        # Received payloads: fewer copies, and a message sent as one frame
        # handed over whole (see ``_wire.frame_decoder``); failing that, at least the
        # fast unmasking for a server.
        if not use_fast_receive(protocol, self._whole_frame_room) and not is_client:
            use_fast_unmasking(protocol)
        use_compact_event_queue(protocol)
        # The reader stops (server) or drains until EOF (client) once the
        # closing handshake is over or the parser has given up.
        self._stop_reading = False
        self._draining = False
        # Whether parsing stopped part-way through a read, and why (see
        # _PARSING): the rest of the read waits in wsproto's buffer and is
        # parsed before anything more is read.
        self._parse_paused = _PARSING
        self._reader_scope = trio.CancelScope()
        # Set once the reader has closed the stream; the Event is made only
        # for a task that has to wait for that (most connections never
        # need one, and an Event costs ~270 bytes for as long as it lives).
        self._reader_ended = False
        self._finished: trio.Event | None = None
        # The task sending a message in pieces holds the message turn;
        # other senders of data wait here (see the rules).
        self._fragmenting: trio.lowlevel.Task | None = None
        self._message_waiters: trio.lowlevel.ParkingLot | None = None
        # Cancels the wait for the next piece of an async source on close.
        self._fragment_source_scope: trio.CancelScope | None = None
        # The streamed receive that owns the message being handed over.
        self._fragment_receiver: _FragmentReceiver | None = None

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

    @property
    def close_sent(self) -> CloseReason | None:
        """The code and reason of the close frame we sent, or ``None`` if we
        sent none (yet, or ever: a connection lost before it closed, or one
        whose writes were stuck, sends none). "Sent" means handed to the
        stream: if the stream breaks at that moment, the peer may never see
        it.

        An echo of the peer's close frame counts: it repeats the peer's
        code. 1005 (``NO_STATUS_RCVD``) stands for an empty close frame.
        """
        return self._close_sent

    @property
    def close_received(self) -> CloseReason | None:
        """The code and reason of the peer's close frame, or ``None`` if
        none arrived. 1005 (``NO_STATUS_RCVD``) means the frame was empty.

        :attr:`closed` is whichever of the two came first (or 1006,
        ``ABNORMAL_CLOSURE``, when the connection was lost without any).
        """
        return self._close_received

    @property
    def latency(self) -> float | None:
        """The round-trip time of the latest ping answered, in seconds:
        from queueing a ping (ours, by :meth:`ping` or the keepalive) to
        reading its pong. ``None`` until the first pong."""
        return self._pings.latency

    def statistics(self) -> ConnectionStatistics:
        """A snapshot of this connection's counters (see
        :class:`ConnectionStatistics`). Cheap: it only copies numbers."""
        return ConnectionStatistics(
            messages_sent=self._messages_sent,
            messages_received=self._messages_received,
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
            messages_buffered=len(self._inbox),
            buffered_bytes=self._inbox.buffered_bytes,
            unsent_bytes=self._outbox_bytes,
            pings_in_flight=len(self._pings),
            latency=self._pings.latency,
            compression_ratio=self._compression_ratio(),
        )

    def _compression_ratio(self) -> float | None:
        """Uncompressed bytes over compressed bytes, both directions, of
        the messages that were compressed; None without compression or
        before the first compressed message."""
        deflate = self._deflate
        if deflate is None:
            return None
        compressed = deflate.bytes_sent_compressed + deflate.bytes_received_compressed
        if compressed == 0:
            return None
        uncompressed = deflate.bytes_sent_uncompressed + deflate.bytes_received_uncompressed
        return uncompressed / compressed

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

        A message being received with :meth:`receive_fragments` and left
        unfinished is given up (the rest of it is discarded) and the next
        one returned; if a task is waiting for its next piece, this raises
        ``trio.BusyResourceError`` instead (see :doc:`streaming`).
        """
        if self._fragment_receiver is not None:
            self._give_up_fragment_receive(self._fragment_receiver)
        try:
            message = await self._inbox.get()
        except InboxClosed:
            raise ConnectionClosed(self._close_reason) from None
        self._batch_task = trio.lowlevel.current_task() if self._inbox else None
        return message

    async def receive(self) -> Message:
        """The next message, as a ``trio.abc.ReceiveChannel`` gives it.

        Like :meth:`get_message`, except at the end: after a normal close
        (1000, 1001, or an empty close frame, by either side) this raises
        ``trio.EndOfChannel``, so ``async for message in ws`` simply ends;
        after any other close it raises :exc:`ConnectionClosed`, with the
        reason.
        """
        try:
            return await self.get_message()
        except ConnectionClosed as exc:
            if exc.reason is not None and exc.reason.code in NORMAL_CLOSE_CODES:
                raise trio.EndOfChannel from exc
            raise

    async def send(self, value: Message) -> None:
        """Send a message, as a ``trio.abc.SendChannel`` does: the same as
        :meth:`send_message` (so a closed connection raises
        :exc:`ConnectionClosed`)."""
        await self.send_message(value)

    async def send_message(self, message: str | bytes, *, compress: bool | None = None) -> None:
        """Send a text (``str``) or binary (``bytes``) message.

        While a message is being sent in pieces with :meth:`send_fragments`,
        this waits for it to end.

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
        if self._fragmenting is not None:
            await self._wait_for_message_turn()
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
        self._messages_sent += 1

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
        waiter = self._pings.add(payload, sent_at=trio.current_time())
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

    async def aclose(
        self, code: int = 1000, reason: str | None = None, *, keep_receiving: bool = False
    ) -> None:
        """Close the connection: send a close frame with ``code`` and
        ``reason``, wait for the peer's, then close the stream.

        Idempotent: later calls wait for the same close to finish. The wait
        is bounded: after the entry point's ``disconnect_timeout`` (for the
        turn to write the close frame, behind a send stuck on a peer that
        does not read, and then for the peer's answer) the connection is
        dropped without the handshake. If this is cancelled, the stream is
        closed at once without the handshake. Either way, what happened is
        in :attr:`close_sent` (None: our close frame never went out, and
        :attr:`closed` then says 1006, ``ABNORMAL_CLOSURE``) and
        :attr:`close_received` (None: the peer never answered).

        :param keep_receiving: by default, messages not yet read are dropped
            and :meth:`get_message` raises at once. With ``True``, they stay
            readable, and so do the messages the peer sends until it answers
            the close frame (RFC 6455 lets it finish what it was sending);
            then :meth:`get_message` raises :exc:`ConnectionClosed`. Another
            task must keep reading meanwhile: messages nobody reads
            eventually stop the connection from reading the peer's answer.
        """
        if isinstance(code, bool) or not isinstance(code, int):
            raise TypeError("close code must be an int")
        if not 1000 <= code <= 4999:
            raise ValueError(f"close code must be in 1000..4999, got {code}")
        if not keep_receiving:
            self._inbox.close(discard=True)
        self._enact_failure()
        ours = self._close_reason is None
        if not ours and self._reader_ended:
            # All over already (the usual case for a server's handler that
            # returns after the peer closed): no bound to set up.
            await trio.lowlevel.checkpoint()
            return
        try:
            with trio.move_on_after(self._options.close_timeout) as bound:
                if self._close_reason is None:
                    self._set_close_reason(CloseReason(code, reason), keep_receiving)
                    if code in _LOCAL_ONLY_CODES:
                        code = 1000
                    try:
                        await self._send(CloseConnection(code=code, reason=reason))
                    except ConnectionClosed:
                        pass
                await self._wait_reader_ended()
        except BaseException:
            # (A deadline passed, such as open_websocket's disconnect_timeout,
            # or a plain cancellation.)
            late = trio.current_effective_deadline() <= trio.current_time()
            self._give_up_closing(ours, "timed out" if late else "cancelled")
            raise
        if bound.cancelled_caught:
            self._give_up_closing(ours, "timed out")

    def _give_up_closing(self, ours: bool, why: str) -> None:
        """Closing did not finish: drop the connection. If it was our close
        and its frame never went out (nor did the peer's come in), the
        close reason says so instead of claiming the code we meant to
        send."""
        if not self._reader_ended:
            log_close_abandoned(self, why, frame_sent=self._close_sent is not None)
        if (
            ours
            and self._close_sent is None
            and self._close_received is None
            and self._close_reason is not None
            and self._close_reason.code != ABNORMAL_CLOSURE
        ):
            self._close_reason = CloseReason(ABNORMAL_CLOSURE, f"close frame not sent ({why})")
        self._abort()

    async def _wait_reader_ended(self) -> None:
        if self._reader_ended:
            await trio.lowlevel.checkpoint()
            return
        if self._finished is None:
            self._finished = trio.Event()
        await self._finished.wait()

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

    def _outbox_full(self) -> bool:
        """Whether the outbox holds so much (``OUTBOX_LIMIT``, each frame
        costing ``ITEM_COST`` more than its bytes) that the reader must
        parse no further until it is written: pongs and close echoes for a
        peer that sends but does not read must not pile up."""
        return self._outbox_bytes + ITEM_COST * len(self._outbox) >= OUTBOX_LIMIT

    def _queue_frame(self, data: bytes | bytearray) -> None:
        self._outbox.append(data)
        self._outbox_bytes += len(data)

    def _queue(self, event: Event | None, opcode: int, payload: bytes) -> None:
        """Serialize one frame into the outbox: ``event`` through wsproto,
        or, when it is None, a plain data frame (see ``_plain_frames``)."""
        if event is not None:
            if type(event) is CloseConnection:
                self._note_close_sent(event.code, event.reason)
            self._queue_frame(self._proto.send(event))
            return
        if opcode & _RSV1:
            assert self._deflate is not None
            payload = self._deflate.compress_message(payload)
        self._queue_plain_frame(_FIN | opcode, payload)

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

    async def _send_prebuilt_frame(self, frame: bytes, message: str | bytes) -> None:
        """Send ``message`` as ``frame``, its complete unmasked data frame
        built once by the caller for many connections (the hub's fan-out).
        A client, or a connection using an extension, cannot share a frame:
        it sends ``message`` the usual way."""
        if self._is_client or not self._plain_frames:
            await self.send_message(message)
            return
        if self._close_reason is not None:
            raise ConnectionClosed(self._close_reason)
        await self._acquire_write_turn()
        try:
            is_open = self._proto.state is _OPEN
            if is_open:
                self._queue_frame(frame)
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
                self._bytes_sent += total
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

    def _set_close_reason(self, reason: CloseReason, keep_receiving: bool = False) -> None:
        if self._close_reason is None:
            self._close_reason = reason
            if not keep_receiving:  # else the inbox closes once reading is done
                self._inbox.close(discard=False)
            self._pings.close()
            if self._keepalive_scope is not None:
                self._keepalive_scope.cancel()
            self._release_message_senders()
            log_closed(self, reason, by_peer=self._proto.state is ConnectionState.REMOTE_CLOSING)

    def _note_close_sent(self, code: int, reason: str | None) -> None:
        self._close_sent = CloseReason(code, reason or None)

    def _close_frame(self, code: int, reason: str | None) -> bytes:
        """Serialize our close frame (the only one wsproto lets us send)."""
        self._note_close_sent(code, reason)
        return self._proto.send(CloseConnection(code=code, reason=reason))

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
            self._queue_frame(self._close_frame(failure.code, failure.reason))
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
        self._inbox.close(discard=False)
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
            received = CloseReason(event.code, event.reason or None)
            self._close_received = received
            failure = self._failure
            if failure is not None:
                # We had found the peer at fault (a message too big...) and
                # were waiting for the application to catch up: answer with
                # that code, not an echo, so the peer learns what it did.
                self._failure = None
                self._set_close_reason(failure)
                self._queue_frame(self._close_frame(failure.code, failure.reason))
            else:
                # The peer started the closing handshake: echo its code and
                # reason (as 0.12.2 did; browsers show the echoed reason).
                self._set_close_reason(received)
                self._queue_frame(self._close_frame(event.code, event.reason))
            self._reading_done()
        elif state is ConnectionState.CLOSED:
            # The answer to our close frame.
            received = CloseReason(event.code, event.reason or None)
            self._close_received = received
            self._set_close_reason(received)
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
        self._stream = with_frame_logging(self._stream, self)
        log_opened(self)
        # (Task names without the endpoints: formatting them for every
        # connection costs more than a name is worth.)
        role = "client" if self._is_client else "server"
        nursery.start_soon(self._reader_task, name=f"{role}-{self._id} reader")
        if self._options.ping_interval is not None:
            self._keepalive_scope = trio.CancelScope()
            nursery.start_soon(self._keepalive_task, name=f"{role}-{self._id} keepalive")

    # ------------------------------------------------------------------
    # Keepalive (the loop is in ``_core.keepalive``)

    async def _keepalive_task(self) -> None:
        interval = self._options.ping_interval
        timeout = self._options.ping_timeout
        scope = self._keepalive_scope
        assert interval is not None and timeout is not None and scope is not None
        timed_out = False
        with scope:
            if self._close_reason is None:
                timed_out = await keep_alive(self, interval, timeout)
        if timed_out:
            await self._fail_for_keepalive()

    def _send_keepalive_ping(self) -> PingWaiter | None:
        """Queue a keepalive ping and make sure it gets written; never
        waits (see ``_core.keepalive``)."""
        if self._close_reason is not None or self._proto.state is not _OPEN:
            return None
        payload = self._pings.new_payload()
        waiter = self._pings.add(payload, sent_at=trio.current_time(), shared=True)
        self._queue_frame(self._proto.send(Ping(payload=payload)))
        self._flush_soon()
        return waiter

    async def _fail_for_keepalive(self) -> None:
        """The pong is late: fail the connection (RFC 6455 section 7.1.7).
        Send a 1011 close frame if the stream takes it within
        ``CLOSE_GRACE``, then drop the stream without waiting for the
        peer's answer. Unread messages stay readable."""
        if self._close_reason is not None:
            return
        self._set_close_reason(CloseReason(INTERNAL_ERROR, KEEPALIVE_TIMEOUT_REASON))
        try:
            # A write in progress is stuck behind a peer that does not read
            # (our ping waited there): no close frame would get out.
            if self._proto.state is _OPEN and not self._writing:
                self._queue_frame(self._close_frame(INTERNAL_ERROR, KEEPALIVE_TIMEOUT_REASON))
                with trio.move_on_after(CLOSE_GRACE):
                    await self._flush_outbox()
        except ConnectionClosed:
            pass
        finally:
            self._abort()

    def _flush_soon(self, *, or_abort: bool = False) -> None:
        """Have the outbox written without waiting here: by the task holding
        the write turn (it empties the outbox before letting go), else by a
        one-shot flusher task. When no flusher can start (the nursery is
        gone or closed), the reader's last flush writes the frames, or,
        with ``or_abort``, the connection is given up (for frames that must
        not wait: the close frame of a message cut short) and the frames
        are dropped.

        A nursery cannot close while the reader, its child, runs, and the
        reader sets the close reason as it ends; so for a connection still
        open, only a nursery abandoned by its owner task (trio's "Nursery
        stack corrupted") gets here (tests/test_flush_without_a_flusher.py)."""
        if self._writing or self._flush_scheduled or not self._outbox:
            return
        if self._nursery is not None:
            self._flush_scheduled = True
            try:
                self._nursery.start_soon(self._deferred_flush)
                return
            except RuntimeError:  # the nursery is closed to new tasks
                self._flush_scheduled = False
        if or_abort:
            # Nothing queued will be written. The outbox is not empty, and a
            # close frame is the last frame ever queued (none follows it),
            # so a close frame serialized is still in it: none was sent.
            self._outbox = []
            self._outbox_bytes = 0
            self._close_sent = None
            self._abort()

    async def _reader_task(self) -> None:
        closed = False
        try:
            try:
                with self._reader_scope as scope:
                    # (The loop is inline, not a method of its own: that would
                    # be one more frame kept by every idle connection.)
                    stream = self._stream
                    inbox = self._inbox
                    max_bytes = self._options.receive_buffer_size
                    self._dispatch()  # events parsed from bytes that came with the handshake
                    while not self._stop_reading:
                        if self._outbox and (
                            not self._writing or self._parse_paused == _PAUSED_FOR_OUTBOX
                        ):
                            # (Behind another writer stuck on a peer that does
                            # not read, this waits: the reader reads no more.)
                            try:
                                await self._flush_outbox()
                            except ConnectionClosed:
                                break
                            continue
                        if self._failure is not None:
                            await self._wait_then_enact_failure()
                            continue
                        if inbox.reader_must_wait():
                            await inbox.wait_for_room()
                            continue
                        if self._parse_paused:
                            paused_for_turn = self._parse_paused == _PAUSED_FOR_TURN
                            self._parse_paused = _PARSING
                            if not self._draining:
                                if paused_for_turn:
                                    # Let the other tasks have their turn
                                    # first. (After a budget, the wait for
                                    # room or for the write turn did that.)
                                    await trio.lowlevel.checkpoint()
                                self._dispatch()
                            continue
                        try:
                            data = await stream.receive_some(max_bytes)
                        except STREAM_ERRORS:
                            break
                        if not data:
                            break
                        self._bytes_received += len(data)
                        if not self._draining:
                            self._proto.receive_data(data)  # type: ignore[arg-type]
                            self._dispatch()
                    self._set_close_reason(CloseReason(ABNORMAL_CLOSURE, None))
                    self._inbox.close(discard=False)
                    # The graceful close runs in the same scope (a scope less to
                    # enter per connection), with the grace period as deadline;
                    # an abort cuts it short.
                    scope.deadline = min(scope.deadline, trio.current_time() + CLOSE_GRACE)
                    closed = await self._close_stream_gracefully()
            except trio.Cancelled:
                # Cancelled from outside (an abort stops at the reader's scope).
                closed = await self._close_when_cancelled()
                raise
        finally:
            self._set_close_reason(CloseReason(ABNORMAL_CLOSURE, None))
            self._inbox.close(discard=False)
            try:
                if not closed:
                    # Cannot block (it is also what runs when this task is
                    # cancelled), but raises Cancelled when an outer scope
                    # is cancelled too.
                    try:
                        await trio.aclose_forcefully(self._stream)
                    except STREAM_ERRORS:
                        pass
            finally:
                # Whatever happened: the server's connection task waits for
                # this (see ``WebSocketRequest._end``).
                self._reader_ended = True
                if self._finished is not None:
                    self._finished.set()

    async def _close_when_cancelled(self) -> bool:
        """The reader's nursery is cancelled. With the ``close_on_cancel``
        option (``open_websocket``'s connections, whose block the
        cancellation is leaving): rather than vanish (the peer would see
        1006), close with 1001 (``GOING_AWAY``; or the close already under
        way), and wait for the peer's answer, shielded, within
        ``CLOSE_GRACE``. Returns whether the stream closed cleanly. Other
        connections, and one already given up (aborted), are dropped at
        once, as a cancellation asks."""
        if not self._options.close_on_cancel or self._reader_scope.cancel_called:
            return False
        closed = False
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + CLOSE_GRACE
            self._reader_scope = scope  # a failed write cuts this short
            self._inbox.close(discard=True)  # nobody is left to read
            self._enact_failure()
            ours = self._close_reason is None
            if ours:
                self._set_close_reason(CloseReason(GOING_AWAY, None))
            reason = self._close_reason
            assert reason is not None
            if self._proto.state is _OPEN:
                if reason.code in _LOCAL_ONLY_CODES:
                    reason = CloseReason(GOING_AWAY, None)
                self._queue_frame(self._close_frame(reason.code, reason.reason))
            closed = await self._finish_closing()
        if not closed:
            self._give_up_closing(ours, "cancelled")
        return closed

    async def _finish_closing(self) -> bool:
        """Write what is queued, read until the closing handshake is over
        (the server) or the peer closes TCP (the client), then close the
        stream; the caller's scope bounds it. Returns whether the stream
        closed cleanly."""
        max_bytes = self._options.receive_buffer_size
        try:
            while not self._stop_reading:
                if self._outbox:
                    await self._flush_outbox()
                elif self._parse_paused and not self._draining:
                    self._parse_paused = _PARSING
                    self._dispatch()
                else:
                    data = await self._stream.receive_some(max_bytes)
                    if not data:
                        break
                    self._bytes_received += len(data)
                    if not self._draining:
                        self._proto.receive_data(data)  # type: ignore[arg-type]
                        self._dispatch()
        except (ConnectionClosed, *STREAM_ERRORS):
            return False
        return await self._close_stream_gracefully()

    async def _close_stream_gracefully(self) -> bool:
        """Send what is still queued (the close echo), then close the stream
        (a TLS stream says goodbye). Returns whether the stream closed; the
        reader's scope bounds this with the grace period."""
        try:
            if self._outbox:
                await self._flush_outbox()
            await self._stream.aclose()
        except (ConnectionClosed, *STREAM_ERRORS):
            return False
        return True

    def _whole_frame_room(self) -> int:
        """How many payload bytes a data frame may have and still be handed
        over whole by the frame decoder (see ``_wire.frame_decoder``): what the message
        being assembled may still take, or 0 (pieces as they arrive) while a
        streamed receive takes them or received data is dropped."""
        if self._discarding or self._inbox.takes_pieces:
            return 0
        return self._assembler.room

    def _dispatch(self) -> None:
        """Handle every event wsproto has parsed so far. Synchronous: control
        frames to send go to the outbox, messages to the inbox."""
        inbox = self._inbox
        assembler = self._assembler
        limit = self._options.max_message_size
        received = 0
        handled = 0
        pieces_wanted = inbox.takes_pieces
        # At most a turn's worth of events at a time (see _EVENTS_PER_TURN).
        for event in itertools.islice(self._proto.events(), _EVENTS_PER_TURN):
            handled += 1
            kind = type(event)
            if kind is BytesMessage or kind is TextMessage:
                if self._discarding:
                    continue
                data = event.data  # type: ignore[attr-defined]
                if pieces_wanted:
                    if not inbox.put_piece(data, event.message_finished):  # type: ignore[attr-defined]
                        self._fail(
                            MESSAGE_TOO_BIG,
                            f"message exceeds {inbox.piece_limit} bytes",
                            parser_done=False,
                        )
                    elif inbox.reader_must_wait() and has_unparsed_bytes(self._proto):
                        self._parse_paused = _PAUSED_FOR_INBOX
                        break
                    pieces_wanted = inbox.takes_pieces
                    continue
                if (
                    kind is BytesMessage
                    and event.message_finished  # type: ignore[attr-defined]
                    and not assembler.in_progress
                    and len(data) <= limit
                ):
                    received += 1
                    if inbox.put(data) and has_unparsed_bytes(self._proto):
                        self._parse_paused = _PAUSED_FOR_INBOX
                        break
                    continue
                try:
                    message = assembler.feed(data, event.message_finished)  # type: ignore[attr-defined]
                except MessageTooBig:
                    self._fail(
                        MESSAGE_TOO_BIG, f"message exceeds {limit} bytes", parser_done=False
                    )
                    continue
                if message is not None:
                    received += 1
                    if inbox.put(message) and has_unparsed_bytes(self._proto):
                        self._parse_paused = _PAUSED_FOR_INBOX
                        break
            elif kind is Ping:
                if self._proto.state is _OPEN:
                    self._queue_frame(self._proto.send(Pong(event.payload)))  # type: ignore[attr-defined]
                    if self._outbox_full():
                        # Written (behind any other writer) before more is
                        # read or parsed.
                        self._parse_paused = _PAUSED_FOR_OUTBOX
                        break
            elif kind is Pong:
                self._pings.pong_received(event.payload, trio.current_time())  # type: ignore[attr-defined]
            elif kind is CloseConnection:
                self._on_close_frame(event)  # type: ignore[arg-type]
        if handled == _EVENTS_PER_TURN:
            self._parse_paused = _PAUSED_FOR_TURN  # (there may be more)
        self._messages_received += received
        inbox.wake_receivers()

    # ------------------------------------------------------------------
    # Streamed messages

    async def send_fragments(
        self,
        fragments: Iterable[str] | Iterable[bytes] | AsyncIterable[str] | AsyncIterable[bytes],
    ) -> None:
        """Send one message in pieces, each piece as one frame, without
        holding the whole message::

            async def chunks():
                async with await trio.open_file(path, "rb") as file:
                    while chunk := await file.read(65536):
                        yield chunk

            await ws.send_fragments(chunks())

        The message is text if the pieces are ``str``, binary if they are
        ``bytes`` (``bytearray`` and ``memoryview`` are copied to
        ``bytes``); all pieces must be of the one kind. From a plain
        iterable, the last piece's frame ends the message; from an async
        iterable, which cannot tell which piece is the last without waiting
        for the next, an empty final frame ends it. Empty pieces are sent as
        empty frames.

        While the message is being sent, other calls to
        :meth:`send_message` or :meth:`send_fragments` wait for it to end
        (RFC 6455 forbids other data inside a fragmented message); pings,
        pongs and the closing handshake still go through between its frames.

        :param fragments: an iterable or async iterable of ``str``, or of
            ``bytes``.
        :raises TypeError: ``fragments`` is not an iterable of pieces, or a
            piece is of another kind than the first. If that piece comes
            after the first frame was sent, the message cannot be finished:
            the connection is closed with code 1011 (``INTERNAL_ERROR``).
            Likewise, an exception raised by the iterable, or a
            cancellation, after the first frame closes the connection with
            1011 (or aborts it, if a frame was being written) and is
            re-raised.
        :raises ValueError: ``fragments`` is empty (the message's type is
            unknown, so nothing is sent; the connection stays usable).
        :raises ConnectionClosed: the connection is closed (or closes before
            the last frame was sent; a wait for the next piece of an async
            iterable is then cancelled).
        :raises RuntimeError: called (or :meth:`send_message` called) from
            inside the iterable of a message this task is sending, which
            could only wait forever.

        See :doc:`streaming` for the details.
        """
        if self._close_reason is not None:
            raise ConnectionClosed(self._close_reason)
        if isinstance(fragments, (str, bytes, bytearray, memoryview)):
            raise TypeError(
                "fragments must be an iterable of pieces; send a single str or "
                "bytes with send_message()"
            )
        if isinstance(fragments, AsyncIterable):
            pieces: AsyncIterator[object] | Iterator[object] = aiter(fragments)
        elif isinstance(fragments, Iterable):
            pieces = iter(fragments)
        else:
            raise TypeError(
                "fragments must be an iterable or async iterable of str or bytes, "
                f"not {type(fragments).__name__}"
            )
        await self._take_message_turn()
        try:
            if isinstance(pieces, Iterator):
                await self._send_pieces(pieces)
            else:
                await self._send_async_pieces(pieces)
        finally:
            self._give_message_turn()

    def receive_fragments(self, *, max_size: int | None = None) -> AsyncIterator[Message]:
        """Receive the next message piece by piece, as it arrives::

            async for piece in ws.receive_fragments():
                await file.write(piece)

        The pieces are ``str`` for a text message (each one valid text: a
        character split across frames is never split across pieces) and
        ``bytes`` for a binary one. They come as the network delivers them,
        at most ``receive_buffer_size`` bytes each (a message that was
        already received whole, while nobody was streaming, comes as one
        piece). Every message gives at least one piece (an empty message,
        one empty piece), so its type is always known. Memory held for the
        message is bounded by the read-ahead bound (256 KiB, or
        ``max_buffered_bytes`` if smaller), not by its size, and
        ``max_message_size`` does not apply to the streamed part of it.

        The message is claimed by the first iteration. It belongs to this
        iterator until its last piece: starting :meth:`get_message` or
        another ``receive_fragments`` before that gives it up (the rest of
        the message is discarded and this iterator raises ``RuntimeError``
        if used again), unless a task is waiting for its next piece, in
        which case the other receive raises ``trio.BusyResourceError``. The
        iterator's ``aclose()`` gives the message up explicitly. Iteration
        cannot start while another task waits in :meth:`get_message`
        (``trio.BusyResourceError``).

        :param max_size: the largest message accepted by this receive, in
            bytes (UTF-8 bytes for text); a larger one closes the connection
            with 1009 (``MESSAGE_TOO_BIG``) after the pieces within the limit
            were delivered. None: no limit.
        :raises ConnectionClosed: (from the iteration) the connection closed
            before the message was complete.

        See :doc:`streaming` for the details.
        """
        if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int)):
            raise TypeError("max_size must be an int or None")
        if max_size is not None and max_size < 0:
            raise ValueError(f"max_size must be >= 0, got {max_size}")
        return _FragmentReceiver(self, max_size)

    # Sending in pieces

    async def _wait_for_message_turn(self) -> None:
        while self._fragmenting is not None:
            if self._close_reason is not None:
                raise ConnectionClosed(self._close_reason)
            if self._fragmenting is trio.lowlevel.current_task():
                # From inside the source of the message being sent: waiting
                # for that message to end would wait forever.
                raise RuntimeError(
                    "cannot send a message while this task is sending one with "
                    "send_fragments() (from inside its source?)"
                )
            if self._message_waiters is None:
                self._message_waiters = trio.lowlevel.ParkingLot()
            await self._message_waiters.park()

    async def _take_message_turn(self) -> None:
        if self._fragmenting is not None:
            await self._wait_for_message_turn()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
        self._fragmenting = trio.lowlevel.current_task()

    def _give_message_turn(self) -> None:
        self._fragmenting = None
        if self._message_waiters:
            self._message_waiters.unpark_all()

    def _release_message_senders(self) -> None:
        """The connection closed: senders waiting for the message turn, or
        for the next piece of an async source, must not wait on."""
        if self._message_waiters:
            self._message_waiters.unpark_all()
        scope = self._fragment_source_scope
        # Unless the source itself is closing the connection: its own close
        # must not be cancelled (it finds ConnectionClosed on its next piece).
        if scope is not None and self._fragmenting is not trio.lowlevel.current_task():
            scope.cancel()

    async def _next_async_piece(self, pieces: AsyncIterator[object]) -> object:
        """The next item of an async source (``_NO_PIECE`` at its end); the
        wait is cancelled, and ConnectionClosed raised, if the connection
        closes meanwhile."""
        if self._close_reason is not None:
            raise ConnectionClosed(self._close_reason)
        with trio.CancelScope() as scope:
            self._fragment_source_scope = scope
            try:
                return await anext(pieces, _NO_PIECE)
            finally:
                self._fragment_source_scope = None
        raise ConnectionClosed(self._close_reason)

    async def _send_pieces(self, pieces: Iterator[object]) -> None:
        """Send the pieces of a plain iterable, reading one ahead so that
        the last piece's frame carries FIN."""
        item = next(pieces, _NO_PIECE)
        if item is _NO_PIECE:
            raise ValueError(_EMPTY_MESSAGE)
        is_text = isinstance(item, str)
        current = _checked_piece(item, is_text)
        started = False
        try:
            while True:
                item = next(pieces, _NO_PIECE)
                last = item is _NO_PIECE
                following = current if last else _checked_piece(item, is_text)
                await self._send_piece(current, not started, last)
                started = True
                if last:
                    return
                current = following
        except BaseException:
            if started:
                self._cut_message_short()
            raise

    async def _send_async_pieces(self, pieces: AsyncIterator[object]) -> None:
        """Send the pieces of an async iterable, each as soon as it comes;
        an empty frame ends the message."""
        item = await self._next_async_piece(pieces)
        if item is _NO_PIECE:
            raise ValueError(_EMPTY_MESSAGE)
        is_text = isinstance(item, str)
        current = _checked_piece(item, is_text)
        started = False
        try:
            while True:
                await self._send_piece(current, not started, False)
                started = True
                item = await self._next_async_piece(pieces)
                if item is _NO_PIECE:
                    break
                current = _checked_piece(item, is_text)
            await self._send_piece("" if is_text else b"", False, True)
        except BaseException:
            if started:
                self._cut_message_short()
            raise

    async def _send_piece(self, piece: str | bytes, first: bool, last: bool) -> None:
        """Write one frame of a message sent in pieces (always at once: no
        coalescing, so that a slow peer pushes back on every piece)."""
        event: Event | None = None
        payload = b""
        first_byte = 0
        if self._plain_frames:
            if isinstance(piece, str):
                opcode = _TEXT
                payload = piece.encode("utf-8")
            else:
                opcode = _BINARY
                payload = piece
            first_byte = (_FIN if last else 0) | (opcode if first else _CONTINUATION)
        elif isinstance(piece, str):
            event = TextMessage(data=piece, message_finished=last)
        else:
            event = BytesMessage(data=piece, message_finished=last)
        await self._acquire_write_turn()
        try:
            is_open = self._proto.state is _OPEN
            if is_open:
                if event is None:
                    self._queue_plain_frame(first_byte, payload)
                else:
                    self._queue_frame(self._proto.send(event))
            await self._write_outbox()
            if not is_open:
                raise ConnectionClosed(self._close_reason)
        finally:
            self._release_write_turn()

    def _queue_plain_frame(self, first_byte: int, payload: bytes) -> None:
        """Serialize a data frame with the given FIN bit and opcode (see
        ``_plain_frames``)."""
        if self._is_client:
            header = frame_header(first_byte, len(payload), MASKED)
            key = next_mask_key()
            self._queue_frame(header + key)
            self._queue_frame(apply_mask(payload, key))
        else:
            self._queue_frame(frame_header(first_byte, len(payload)))
            self._queue_frame(payload)

    def _cut_message_short(self) -> None:
        """A message was started but cannot be finished: close with 1011, a
        control frame the peer reads in place of the missing rest."""
        if self._close_reason is not None:
            return  # already closed or aborted
        self._set_close_reason(CloseReason(INTERNAL_ERROR, _CUT_SHORT_REASON))
        if self._proto.state is _OPEN:
            self._queue_frame(self._close_frame(INTERNAL_ERROR, _CUT_SHORT_REASON))
        self._flush_soon(or_abort=True)

    # Receiving in pieces

    def _give_up_fragment_receive(self, receiver: _FragmentReceiver) -> None:
        """Another receive starts: the streamed message is given up."""
        if receiver._waiting:
            raise trio.BusyResourceError(
                "another task is waiting for the next piece of a message received "
                "with receive_fragments()"
            )
        receiver._state = _ABANDONED
        self._fragment_receiver = None
        self._inbox.abandon_pieces()

    def _claim_message(self, receiver: _FragmentReceiver) -> None:
        """Make the next message ``receiver``'s: whole if it is already
        waiting, else in pieces from the part received so far."""
        if self._fragment_receiver is not None:
            self._give_up_fragment_receive(self._fragment_receiver)
        inbox = self._inbox
        limit = receiver._max_size
        if inbox.whole_messages:
            message = inbox.take_nowait()
            if limit is not None and wire_size(message) > limit:
                self._refuse_streamed_message(limit)
                receiver._state = _DONE
                raise ConnectionClosed(self._close_reason)
            receiver._whole = message
            receiver._state = _WHOLE
            return
        if inbox.has_receivers:
            raise trio.BusyResourceError(
                "another task is waiting in get_message(); it takes the next message"
            )
        receiver._state = _PIECES
        self._fragment_receiver = receiver
        if inbox.closed:
            return  # the iteration raises ConnectionClosed
        parts = [] if self._discarding else self._assembler.take_parts()
        if not inbox.start_pieces(parts, limit):
            self._refuse_streamed_message(limit)
            return
        # A frame held until whole (see ``_wire.frame_decoder``) comes in pieces now.
        stop_holding(self._proto)

    def _refuse_streamed_message(self, limit: int | None) -> None:
        self._fail(MESSAGE_TOO_BIG, f"message exceeds {limit} bytes", parser_done=False)
        self._enact_failure()
        self._flush_soon(or_abort=True)

    # Contracts for other modules (see each docstring)

    def _opening_failed(self) -> None:
        """For ``_client.client`` and ``_server.request``
        (``_core.contracts.OpeningConnection``): the 101 was not written or
        the reader could not start; closed with 1006, no reader."""
        self._set_close_reason(CloseReason(ABNORMAL_CLOSURE, None))

    @property
    def _reader_started(self) -> bool:
        """For ``_server.request`` (``_core.contracts.ServedConnection``):
        whether ``_start`` ran, so there is a reader to stop and wait for."""
        return self._nursery is not None


#: Marks the end of the pieces of a message being sent.
_NO_PIECE = object()
_EMPTY_MESSAGE = (
    "fragments is empty: a message needs at least one piece (send an empty "
    "message with send_message('') or send_message(b''))"
)
_CUT_SHORT_REASON = "message cut short by the sender"
_CONTINUATION = 0x0


def _checked_piece(piece: object, is_text: bool) -> str | bytes:
    """``piece`` if it is of the message's kind (bytes-likes as ``bytes``);
    TypeError otherwise."""
    if is_text:
        if isinstance(piece, str):
            return piece
    elif isinstance(piece, bytes):
        return piece
    elif isinstance(piece, (bytearray, memoryview)):
        return bytes(piece)
    kind = "str (the first piece was str)" if is_text else "bytes (the first piece was bytes)"
    if not isinstance(piece, (str, bytes, bytearray, memoryview)):
        kind = "str or bytes"
    raise TypeError(f"every piece of a message must be {kind}, not {type(piece).__name__}")


# What a streamed receive holds: nothing yet, the whole message, its pieces
# (from the inbox), nothing more (it ended or was closed), or nothing ever
# (it was given up for another receive).
_NEW, _WHOLE, _PIECES, _DONE, _ABANDONED = range(5)


class _FragmentReceiver:
    """The async iterator :meth:`WebSocketConnection.receive_fragments`
    returns (see the module rules)."""

    __slots__ = ("_connection", "_max_size", "_state", "_waiting", "_whole")

    def __init__(self, connection: WebSocketConnection, max_size: int | None) -> None:
        self._connection = connection
        self._max_size = max_size
        self._state = _NEW
        self._waiting = False
        self._whole: Message | None = None

    def __aiter__(self) -> _FragmentReceiver:
        return self

    async def __anext__(self) -> Message:
        state = self._state
        if state == _DONE:
            await trio.lowlevel.checkpoint()
            raise StopAsyncIteration
        if state == _ABANDONED:
            raise RuntimeError(
                "the rest of this message was discarded: another receive started "
                "before it was read to the end"
            )
        if self._waiting:
            raise trio.BusyResourceError(
                "another task is already waiting for the next piece of this message"
            )
        connection = self._connection
        if state == _NEW:
            connection._claim_message(self)
        if self._state == _WHOLE:
            await trio.lowlevel.checkpoint()
            message = self._whole
            assert message is not None
            self._whole = None
            self._state = _DONE
            return message
        self._waiting = True
        try:
            piece, last = await connection._inbox.get_piece()
        except InboxClosed:
            raise ConnectionClosed(connection._close_reason) from None
        finally:
            self._waiting = False
        if last:
            self._state = _DONE
            connection._fragment_receiver = None
        if piece is None:  # the message ended with an empty frame
            raise StopAsyncIteration
        return piece

    async def aclose(self) -> None:
        """Stop receiving: the rest of the message, if any, is discarded."""
        connection = self._connection
        if connection._fragment_receiver is self:
            connection._give_up_fragment_receive(self)
        self._state = _DONE
        self._whole = None
        await trio.lowlevel.checkpoint()
