"""The WebSocket connection: ``WebSocketConnection``, the public face of
one connection over any trio stream.

The class is built in layers, each a module with its own rules, read
bottom up: ``sending`` (the write turn, the outbox and the one send path),
``lifecycle`` (the connection's one explicit state, with its table, and the
one function every close path goes through), ``receiving`` (the reader
task, the dispatch of parsed events, messages received in pieces), and
this module: construction, the public properties and methods, and the
keepalive's hooks.

Rules:
- One connection owns one trio stream, one wsproto ``Connection`` (after the
  opening handshake) and one reader task, started by the client or server
  module in a nursery that outlives the connection's use (``_start``).
- wsproto is the protocol engine: it validates every frame, runs the
  closing handshake's state and serializes control frames; data frames are
  framed and received through the wire layer's fast paths (``_wire``),
  which the ``TRIO_WEBSOCKET_FAST_PATHS=0`` switch turns off.
- Statistics are integer counters bumped on the hot paths (one add per
  message, per read, per write); the snapshot is built only when asked.
- The keepalive (``keepalive``), when configured, is one more task in the
  connection's nursery; closing the connection cancels it.
- Other modules use the connection through its public API and the
  methods under "Contracts for other modules", never its private state.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sequence

import trio
from wsproto.connection import Connection
from wsproto.events import Ping, Pong
from wsproto.extensions import Extension

from .._wire import fast_paths
from .._wire.frame_decoder import (
    use_compact_event_queue,
    use_fast_receive,
    use_fast_unmasking,
)
from .close import (
    ABNORMAL_CLOSURE,
    GOING_AWAY,
    NO_STATUS_RCVD,
    NORMAL_CLOSURE,
    CloseReason,
)
from .compression import DeflateParameters
from .config import READ_AHEAD_BYTES, ConnectionOptions
from .deflate import DeflateExtension
from .endpoint import Endpoint, describe_endpoint, stream_endpoint
from .errors import ConnectionClosed, Headers
from .keepalive import keep_alive
from .lifecycle import ENDED
from .log import log_opened, with_frame_logging
from .messages import Inbox, InboxClosed, Message, MessageAssembler
from .pings import PingTracker, PingWaiter
from .receiving import ConnectionReceiving, FragmentReceiver
from .sending import BINARY, FIN, STREAM_ERRORS, TEXT
from .stats import ConnectionStatistics

__all__ = ["NORMAL_CLOSE_CODES", "STREAM_ERRORS", "WebSocketConnection"]

#: Close codes after which iteration (and ``receive``) ends quietly instead
#: of raising: a normal close, a peer going away, and an empty close frame
#: (reported as 1005), which is how browsers close by default.
NORMAL_CLOSE_CODES = frozenset({NORMAL_CLOSURE, GOING_AWAY, NO_STATUS_RCVD})

_describe = describe_endpoint


class WebSocketConnection(ConnectionReceiving, trio.abc.Channel[Message]):
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
    # (Each layer declares the slots of the state it owns.)
    __slots__ = (
        "_assembler",
        "_deflate",
        "_handshake_headers",
        "_http_version",
        "_id",
        "_inbox",
        "_is_client",
        "_local",
        "_messages_sent",
        "_nursery",
        "_options",
        "_path",
        "_pings",
        "_proto",
        "_remote",
        "_stream",
        "_subprotocol",
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
        http_version: str = "1.1",
    ) -> None:
        self._id = next(WebSocketConnection.CONNECTION_ID)
        self._http_version = http_version
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
        self._nursery: trio.Nursery | None = None
        self._inbox = Inbox(
            options.message_queue_size, READ_AHEAD_BYTES, options.max_buffered_bytes
        )
        self._assembler = MessageAssembler(options.max_message_size)
        self._pings = PingTracker()
        self._messages_sent = 0
        self._deflate: DeflateExtension | None = None
        for extension in extensions:
            if isinstance(extension, DeflateExtension) and extension.enabled():
                self._deflate = extension
        # With no extension but ours (always, outside tests), data frames
        # are framed by hand unless the fast paths are off; with
        # permessage-deflate a compressed message is still one plain frame,
        # with RSV1 and a deflated payload.
        own_extensions = not extensions or all(
            isinstance(e, DeflateExtension) for e in extensions
        )
        self._init_sending(own_framing=own_extensions and fast_paths.ENABLED)
        self._init_lifecycle()
        self._init_receiving()
        if fast_paths.ENABLED:
            # Received payloads: fewer copies, and a message sent as one
            # frame handed over whole (see ``_wire.frame_decoder``); failing
            # that, at least the fast unmasking for a server.
            if not use_fast_receive(protocol, self._whole_frame_room) and not is_client:
                use_fast_unmasking(protocol)
            use_compact_event_queue(protocol)

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
    def http_version(self) -> str:
        """``"1.1"``, or ``"2"`` for a WebSocket carried by an HTTP/2 stream
        (RFC 8441; the ``http2`` options of the server and the client)."""
        return self._http_version

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
        inbox = self._inbox
        if not inbox and not inbox.closed:
            # The inbox is empty: until a message waits or the inbox
            # closes, read through while the reader stands aside, else wait
            # to be woken (by the reader's or another receiver's dispatch; a
            # receiver that read nothing for the others gives the turn to
            # the reader). (Inline, not a method of its own: that would be
            # one more coroutine frame kept by every idle connection whose
            # handler waits here.)
            while True:
                await self._read_through_or_wait()
                if inbox or inbox.closed:
                    break
            if not inbox:
                # Closed while this call waited, which was its schedule
                # point: no second one before it raises.
                raise ConnectionClosed(self._close_reason)
        try:
            message = await inbox.get()
        except InboxClosed:
            raise ConnectionClosed(self._close_reason) from None
        self._batch_task = trio.lowlevel.current_task() if inbox else None
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
        if self._streaming_sender is not None:
            await self._wait_for_message_turn()
        if isinstance(message, str):
            first_byte = FIN | TEXT
            payload = message.encode("utf-8")
        elif isinstance(message, bytes):
            first_byte = FIN | BINARY
            payload = message
        else:
            raise ValueError(f"message must be str or bytes, not {type(message).__name__}")
        deflate = self._deflate
        if deflate is not None and deflate.wants_to_compress(len(payload), compress):
            await self._send_frame(self._queue_compressed_frame, first_byte, payload)
        else:
            await self._send_frame(self._queue_data_frame, first_byte, payload)
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
        # Someone must read the pong: the reader, if it stands aside while
        # no receiver reads (see ``_core.receiving``, "Reading through"),
        # or dozes aside over TCP or TLS (the turn is not the reader's
        # then either: it is started here). A reader dozing on its HTTP/2
        # stream needs no call: the pong is news that wakes it.
        if self._read_turn:
            self._wake_reader_task()
        try:
            await self._send_frame(self._queue_control_frame, Ping(payload=payload))
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
        await self._send_frame(self._queue_control_frame, Pong(payload=payload))

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
        if self._state is ENDED:
            # All over already (a handler that returns after the peer
            # closed): nothing to wait for, so no bound to set up.
            await self._close_and_wait(code, reason, keep_receiving=keep_receiving)
            return
        with trio.move_on_after(self._options.close_timeout):
            await self._close_and_wait(code, reason, keep_receiving=keep_receiving)

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
        await self._send_message_in_pieces(pieces)

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
        return FragmentReceiver(self, max_size)

    # ------------------------------------------------------------------
    # Starting

    def _start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._stream = with_frame_logging(self._stream, self)
        log_opened(self)
        # (Task names without the endpoints: formatting them for every
        # connection costs more than a name is worth.)
        role = "client" if self._is_client else "server"
        self._start_reader()
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
        if self._close_reason is not None or not self._may_send_frames():
            return None
        payload = self._pings.new_payload()
        waiter = self._pings.add(payload, sent_at=trio.current_time(), shared=True)
        self._queue_control_frame(Ping(payload=payload))
        self._flush_soon()
        return waiter

    # ------------------------------------------------------------------
    # Contracts for other modules (see each docstring; ``_core.contracts``
    # declares them as Protocols, so mypy checks each user)

    async def _send_prebuilt_frame(self, frame: bytes, message: Message) -> None:
        """For ``_extras.hub`` (``PrebuiltFrameSink``): send ``message`` as
        ``frame``, its whole unmasked data frame built once for many
        connections. A client, or a connection using an extension
        (permessage-deflate included: the message may have to be
        compressed) or with the fast paths off, cannot share a frame: it
        sends ``message`` the usual way."""
        if self._is_client or not self._own_framing or self._deflate is not None:
            await self.send_message(message)
            return
        if self._close_reason is not None:
            raise ConnectionClosed(self._close_reason)
        if self._streaming_sender is not None:
            await self._wait_for_message_turn()
        await self._send_frame(self._queue_prebuilt_frame, frame)
        self._messages_sent += 1

    def _opening_failed(self) -> None:
        """For ``_client.client`` and ``_server.request``
        (``OpeningConnection``): the 101 was not written or the reader could
        not start; closed with 1006, no reader."""
        self._close(CloseReason(ABNORMAL_CLOSURE, None))

    @property
    def _reader_started(self) -> bool:
        """For ``_server.request`` (``ServedConnection``): whether
        ``_start`` ran, so there is a reader to stop and wait for."""
        return self._nursery is not None

    @property
    def _reader_ended(self) -> bool:
        """For ``_server.request`` (``ServedConnection``): whether the
        reader has closed the stream."""
        return self._state is ENDED
