"""A connection's send side: the write turn, the outbox, the message turn
and the one send path every frame takes.

Rules:
- One writer at a time holds the *write turn*. A frame is serialized only
  at the moment it is written or appended to the outbox, both in order, so
  nothing can follow a close frame, and permessage-deflate's shared
  compressor sees messages in the order the peer will inflate them.
- Every frame goes out through :meth:`ConnectionSending._send_frame`: a
  *serializer* (``_queue_data_frame``, ``_queue_compressed_frame``,
  ``_queue_prebuilt_frame``, ``_queue_control_frame``,
  ``_queue_close_frame``) says what the frame is; the send path decides
  when it is serialized and written (turn taking, the open check, batching,
  stream errors). Nothing else writes to the stream.
- Data frames are framed here (``_wire.framing``, ``_wire.masking``);
  control frames, and every frame when the fast paths are off
  (``_wire.fast_paths``), are serialized by wsproto, which must see the
  close frame to keep its state.
- A write that is cancelled or fails may have left half a frame on the
  wire, so it aborts the connection (``_abort``, the life cycle's).
- Batching: when the task that sends is the one that just took a message
  while more still wait in the inbox, it is working through a batch (get,
  send, get, send...), so its frame is appended to the outbox instead of
  costing a system call per message. Other senders write directly. The
  batch is written in one go by a one-shot flusher task scheduled with the
  first deferred frame, which runs once the application waits; the outbox
  is capped in bytes (``COALESCE_BYTES``), past which sends write directly
  (and wait: that is the backpressure). Whoever holds the write turn
  empties the outbox before giving the turn up, so a queued close echo is
  never left behind. With no write under way, the outbox can also be
  written at once (``_write_outbox_now``: a stream's non-blocking
  ``send_now``, no schedule point), which the reader does with the close
  echo just before it closes the stream; what the socket does not take
  then goes the usual way.
- Streamed messages: a message sent in pieces holds the *message turn*
  from its first frame to its last, so no other data frame can come
  between (RFC 6455 5.4); it takes the write turn one frame at a time, so
  pings, pongs and the close frame still go out between its frames, and is
  never batched, so a slow peer pushes back on every piece. A message that
  cannot be finished once started is cut short (``_cut_message_short``,
  the life cycle's: close 1011).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING

import trio
from wsproto.connection import Connection, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from .._wire.close_frames import close_frame
from .._wire.framing import MASKED, frame_header
from .._wire.masking import apply_mask, next_mask_key
from .._wire.socket_stream import drop_sent
from .._wire.tls_stream import send_before_closing
from .close import CloseReason
from .config import COALESCE_BYTES, OUTBOX_LIMIT
from .contracts import EndingStream
from .deflate import DeflateExtension
from .errors import ConnectionClosed
from .messages import ITEM_COST, Inbox

if TYPE_CHECKING:
    from typing_extensions import TypeVarTuple, Unpack

    #: A serializer's arguments (see ``_send_frame``).
    Args = TypeVarTuple("Args")

#: What a broken or closed trio stream raises.
STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)

_OPEN = ConnectionState.OPEN

TEXT = 0x1
BINARY = 0x2
CONTINUATION = 0x0
FIN = 0x80
#: RSV1 in a data frame's first byte: "compressed" (RFC 7692).
RSV1 = 0x40
#: Frames in the outbox are joined into one write up to this many bytes: a
#: copy costs less than an extra write (a system call and a scheduler pass).
#: A bigger payload is written on its own, uncopied.
_JOIN_PAYLOAD_BYTES = 256 * 1024

#: Marks the end of the pieces of a message being sent.
_NO_PIECE = object()
_EMPTY_MESSAGE = (
    "fragments is empty: a message needs at least one piece (send an empty "
    "message with send_message('') or send_message(b''))"
)


class ConnectionSending:
    """The send side of :class:`WebSocketConnection` (see the module rules).
    A base class only: each layer declares the slots of the state it
    owns; the others it reads are annotated."""

    __slots__ = (
        "_batch_task",
        "_bytes_sent",
        "_close_sent",
        "_ends_with_close",
        "_flush_scheduled",
        "_message_waiters",
        "_outbox",
        "_outbox_bytes",
        "_own_framing",
        "_piece_source_scope",
        "_streaming_sender",
        "_streaming_text",
        "_write_waiters",
        "_writing",
    )

    _stream: trio.abc.Stream
    _proto: Connection
    _is_client: bool
    _inbox: Inbox
    _nursery: trio.Nursery | None
    _close_reason: CloseReason | None
    _close_sent: CloseReason | None
    _close_received: CloseReason | None
    _bytes_sent: int
    _deflate: DeflateExtension | None
    # Whether data frames are framed here (the fast path: no extension but
    # ours, fast paths on) or by wsproto.
    _own_framing: bool
    # Whether the stream's sending side ends with the write that carries
    # our close frame (an HTTP/2 stream, see ``_core.contracts.EndingStream``).
    _ends_with_close: bool
    # Serialized frames waiting to be written, in order, and their size.
    # (A memoryview only as the rest of a piece ``_write_outbox_now``
    # wrote in part.)
    _outbox: list[bytes | bytearray | memoryview]
    _outbox_bytes: int
    # Scheduling, not life cycle: who holds the write turn and who waits
    # for it, whether a flusher task is on its way, the task working
    # through a batch of received messages.
    _writing: bool
    _write_waiters: trio.lowlevel.ParkingLot | None
    _flush_scheduled: bool
    _batch_task: trio.lowlevel.Task | None
    # The task sending a message in pieces holds the message turn; other
    # senders of data wait here. (With the fast paths off, whether that
    # message is text, for wsproto's continuation frames.)
    _streaming_sender: trio.lowlevel.Task | None
    _message_waiters: trio.lowlevel.ParkingLot | None
    _streaming_text: bool
    # Cancels the wait for the next piece of an async source on close.
    _piece_source_scope: trio.CancelScope | None

    def _init_sending(self, own_framing: bool) -> None:
        self._own_framing = own_framing
        self._ends_with_close = callable(getattr(self._stream, "send_all_and_end", None))
        self._bytes_sent = 0
        self._close_sent = None
        self._outbox = []
        self._outbox_bytes = 0
        self._writing = False
        self._write_waiters = None
        self._flush_scheduled = False
        self._batch_task = None
        self._streaming_sender = None
        self._message_waiters = None
        self._streaming_text = False
        self._piece_source_scope = None

    if TYPE_CHECKING:
        # Defined by the life cycle (``lifecycle``), the layer built on this
        # one, which the send path calls on a failed write or a message it
        # cannot finish. Declared for the type checker only: no stub exists
        # at run time that could be reached instead.

        def _abort(self) -> None: ...

        def _cut_message_short(self) -> None: ...

    # ------------------------------------------------------------------
    # The one send path

    def _may_send_frames(self) -> bool:
        """Whether frames may still go out: no close frame sent or received
        (wsproto keeps that state, and refuses to serialize otherwise)."""
        return self._proto.state is _OPEN

    async def _send_frame(
        self,
        queue: Callable[[Unpack[Args]], None],
        *args: Unpack[Args],
        may_batch: bool = True,
    ) -> None:
        """Send one frame: ``queue(*args)`` serializes it into the outbox at
        the moment it is this frame's turn, and it is written, or left for
        the end of the batch (``may_batch``, see the module rules).

        :raises ConnectionClosed: frames may no longer be sent (the frame
            was not serialized), or the stream failed.
        """
        if (
            may_batch
            and self._inbox
            and self._batch_task is trio.lowlevel.current_task()
            and self._outbox_bytes < COALESCE_BYTES
            and self._nursery is not None
        ):
            await trio.lowlevel.checkpoint_if_cancelled()
            if not self._may_send_frames():
                raise ConnectionClosed(self._close_reason)
            queue(*args)
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
            may_send = self._may_send_frames()
            if may_send:
                queue(*args)
            await self._write_outbox()
            if not may_send:
                raise ConnectionClosed(self._close_reason)
        finally:
            self._release_write_turn()

    # ------------------------------------------------------------------
    # Serializers: what a frame is (called by the send path, in turn)

    def _queue(self, data: bytes | bytearray) -> None:
        self._outbox.append(data)
        self._outbox_bytes += len(data)

    def _queue_data_frame(self, first_byte: int, payload: bytes) -> None:
        """A data frame: ``first_byte`` holds FIN and the opcode."""
        if not self._own_framing:
            self._queue_data_frame_by_wsproto(first_byte, payload, compress=False)
        elif self._is_client:
            key = next_mask_key()
            self._queue(frame_header(first_byte, len(payload), MASKED) + key)
            self._queue(apply_mask(payload, key))
        else:
            self._queue(frame_header(first_byte, len(payload)))
            self._queue(payload)

    def _queue_compressed_frame(self, first_byte: int, payload: bytes) -> None:
        """A whole message compressed (permessage-deflate), now, so that
        the compressor sees messages in wire order."""
        deflate = self._deflate
        assert deflate is not None
        if not self._own_framing:
            self._queue_data_frame_by_wsproto(first_byte, payload, compress=True)
        else:
            self._queue_data_frame(first_byte | RSV1, deflate.compress_message(payload))

    def _queue_prebuilt_frame(self, frame: bytes) -> None:
        """A server's whole unmasked data frame, built once for many
        connections (the hub's fan-out)."""
        self._queue(frame)

    def _queue_control_frame(self, event: Ping | Pong) -> None:
        self._queue(self._proto.send(event))

    def _queue_close_frame(self, code: int, reason: str | None) -> None:
        """Our close frame (the only one wsproto lets us send)."""
        self._close_sent = CloseReason(code, reason or None)
        if self._own_framing:
            frame = close_frame(self._proto, code, reason)
            if frame is not None:
                self._queue(frame)
                return
        self._queue(self._proto.send(CloseConnection(code=code, reason=reason)))

    def _queue_data_frame_by_wsproto(self, first_byte: int, payload: bytes, compress: bool) -> None:
        """With the fast paths off: the same frame, serialized by wsproto
        (which calls our extension for the compression decided here)."""
        opcode = first_byte & 0x0F
        if opcode != CONTINUATION:
            self._streaming_text = opcode == TEXT
        finished = bool(first_byte & FIN)
        if self._deflate is not None:
            self._deflate.compress_next = compress
        if self._streaming_text:
            event: TextMessage | BytesMessage = TextMessage(
                data=payload.decode("utf-8"), message_finished=finished
            )
        else:
            event = BytesMessage(data=payload, message_finished=finished)
        self._queue(self._proto.send(event))

    # ------------------------------------------------------------------
    # The write turn and the outbox

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

    async def _deferred_flush(self) -> None:
        try:
            if self._writing:
                # The task holding the write turn empties the outbox before
                # it lets go (see the module rules): waiting in line would
                # cost a pass of the scheduler to find the outbox empty.
                return
            await self._flush_outbox()
        except ConnectionClosed:
            pass  # the connection is aborted; its users see ConnectionClosed
        finally:
            self._flush_scheduled = False

    async def _flush_outbox(self, *, then_closing: bool = False) -> None:
        """Write the outbox, if anything is in it, taking the write turn;
        ``then_closing``: the caller closes the stream right after (see
        :meth:`_write`)."""
        await self._acquire_write_turn()
        try:
            await self._write_outbox(then_closing)
        finally:
            self._release_write_turn()

    def _write_outbox_now(self) -> bool:
        """Write the outbox without waiting and without a schedule point,
        where the stream can (``send_now``: a lean socket stream) and no
        write is under way; whether the outbox is now empty. What the
        socket did not take stays queued, for :meth:`_flush_outbox`.
        Stream errors abort, as :meth:`_write_outbox`'s do."""
        outbox = self._outbox
        if self._writing or not outbox or self._ends_with_close:
            return not outbox and not self._writing
        send_now: Callable[[list[bytes | bytearray]], int] | None
        send_now = getattr(self._stream, "send_now", None)
        if send_now is None:
            return False
        try:
            sent = send_now(outbox)
        except STREAM_ERRORS as exc:
            self._abort()
            raise ConnectionClosed(self._close_reason) from exc
        self._bytes_sent += sent
        if sent == self._outbox_bytes:
            self._outbox = []
            self._outbox_bytes = 0
            return True
        self._outbox_bytes -= sent
        drop_sent(outbox, sent)
        return False

    def _flush_soon(self, *, or_abort: bool = False) -> None:
        """Have the outbox written without waiting here: by the task holding
        the write turn (it empties the outbox before letting go), else by a
        one-shot flusher task. When no flusher can start (the nursery is
        gone or closed), the reader's last flush writes the frames, or,
        with ``or_abort``, the connection is given up (for frames that must
        not wait: the close frame of a message cut short) and the frames
        are dropped.

        A nursery cannot close while the reader, its child, runs (or, for
        a reader that dozes, while the server's task for the request waits
        for it: see ``_core.receiving``), and the reader sets the close
        reason as it ends; so for a connection still open, only a nursery
        abandoned by its owner task (trio's "Nursery
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

    async def _write_outbox(self, then_closing: bool = False) -> None:
        """Write the outbox while holding the turn; translate stream errors.

        Small frames are joined into one write; a big piece is written on
        its own rather than copied into a join. ``then_closing``: see
        :meth:`_write`.
        """
        try:
            while self._outbox:
                pieces = self._outbox
                total = self._outbox_bytes
                self._outbox = []
                self._outbox_bytes = 0
                self._bytes_sent += total
                # Nothing is queued after a close frame: once it is queued,
                # this batch holds it and is the last write ever. It ends
                # the stream when it answers the peer's close, or is a
                # client's (nothing follows a client's close: the end of
                # its stream is a half-close, as a proxy passes it on); a
                # server's own close does not (nghttpx turns the end of
                # that stream into a TCP close towards the client, which
                # loses the client's answer), its end comes with aclose.
                last = (
                    self._ends_with_close
                    and self._close_sent is not None
                    and (self._is_client or self._close_received is not None)
                )
                if len(pieces) == 1:
                    await self._write(pieces[0], last, then_closing)
                elif total <= _JOIN_PAYLOAD_BYTES:
                    await self._write(b"".join(pieces), last, then_closing)
                else:
                    await self._write_pieces(pieces, last)
        except trio.Cancelled:
            # Part of a frame may be on the wire: the stream is unusable.
            self._abort()
            raise
        except STREAM_ERRORS as exc:
            self._abort()
            raise ConnectionClosed(self._close_reason) from exc

    async def _write(
        self, data: bytes | bytearray | memoryview, last: bool, then_closing: bool = False
    ) -> None:
        """One write; the ``last`` one (with our close frame) also ends the
        stream's sending side where the stream can (RFC 8441: END_STREAM
        on the DATA frame that carries the close frame, so that a peer
        never gets a frame for a stream it is done with). ``then_closing``:
        the stream is closed right after, and its ``aclose`` makes the
        schedule point (``_wire.tls_stream.send_before_closing``)."""
        if last:
            ending: EndingStream = self._stream  # type: ignore[assignment]
            await ending.send_all_and_end(data)
        elif then_closing:
            await send_before_closing(self._stream, data)
        else:
            await self._stream.send_all(data)

    async def _write_pieces(self, pieces: list[bytes | bytearray | memoryview], last: bool) -> None:
        small: list[bytes | bytearray | memoryview] = []
        for index, piece in enumerate(pieces):
            if len(piece) > _JOIN_PAYLOAD_BYTES:
                if small:
                    await self._stream.send_all(b"".join(small))
                    small = []
                await self._write(piece, last and index == len(pieces) - 1)
            else:
                small.append(piece)
        if small:
            await self._write(b"".join(small), last)

    # ------------------------------------------------------------------
    # Messages in pieces: the message turn

    async def _wait_for_message_turn(self) -> None:
        while self._streaming_sender is not None:
            if self._close_reason is not None:
                raise ConnectionClosed(self._close_reason)
            if self._streaming_sender is trio.lowlevel.current_task():
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
        if self._streaming_sender is not None:
            await self._wait_for_message_turn()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
        self._streaming_sender = trio.lowlevel.current_task()

    def _give_message_turn(self) -> None:
        self._streaming_sender = None
        if self._message_waiters:
            self._message_waiters.unpark_all()

    def _release_message_senders(self) -> None:
        """The connection closed: senders waiting for the message turn, or
        for the next piece of an async source, must not wait on."""
        if self._message_waiters:
            self._message_waiters.unpark_all()
        scope = self._piece_source_scope
        # Unless the source itself is closing the connection: its own close
        # must not be cancelled (it finds ConnectionClosed on its next piece).
        if scope is not None and self._streaming_sender is not trio.lowlevel.current_task():
            scope.cancel()

    async def _send_message_in_pieces(
        self, pieces: AsyncIterator[object] | Iterator[object]
    ) -> None:
        """The message turn around sending ``pieces`` (see
        ``send_fragments``)."""
        await self._take_message_turn()
        try:
            if isinstance(pieces, Iterator):
                await self._send_pieces(pieces)
            else:
                await self._send_async_pieces(pieces)
        finally:
            self._give_message_turn()

    async def _next_async_piece(self, pieces: AsyncIterator[object]) -> object:
        """The next item of an async source (``_NO_PIECE`` at its end); the
        wait is cancelled, and ConnectionClosed raised, if the connection
        closes meanwhile."""
        if self._close_reason is not None:
            raise ConnectionClosed(self._close_reason)
        with trio.CancelScope() as scope:
            self._piece_source_scope = scope
            try:
                return await anext(pieces, _NO_PIECE)
            finally:
                self._piece_source_scope = None
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
        """Write one frame of a message sent in pieces (never batched)."""
        if isinstance(piece, str):
            opcode = TEXT
            payload = piece.encode("utf-8")
        else:
            opcode = BINARY
            payload = piece
        first_byte = (FIN if last else 0) | (opcode if first else CONTINUATION)
        await self._send_frame(self._queue_data_frame, first_byte, payload, may_batch=False)


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
