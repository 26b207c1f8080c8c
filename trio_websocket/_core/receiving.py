"""A connection's receive side: the reader task, the dispatch of parsed
events, the end of reading, and messages received in pieces.

Rules:
- The reader reads, unless it stands aside (see "Reading through"). It
  feeds wsproto, answers
  control frames the moment they are parsed (pongs and the close echo are
  queued as bytes and written at once, or by the task already writing,
  right after its frame), and puts finished messages in the inbox. It
  never awaits the application: a full inbox only stops further *reads*
  (see ``messages``), and that bound is in bytes. The bound holds within a
  read: once the inbox says its budget is reached, or the outbox holds
  ``OUTBOX_LIMIT`` (pongs and close echoes for a peer that sends but does
  not read), the reader stops *parsing* (``_parse_paused``: the rest of
  the read waits in wsproto's buffer) and parses on, before reading
  anything more, once the application has caught up or the outbox is
  written.
- The messages at the start of a read that are each one whole frame skip
  wsproto's parsing (``_wire.quick_frames``, tried on each read while
  open and not streaming a message, by the reader or a receiver reading
  through): they go to the inbox as ``_dispatch`` would put them, under
  the same budget and turn bound, and the rest of the read goes to
  wsproto. So does a binary frame held until whole: the read that
  completes it (its message first), the reads within it, and the start
  of one that a read ends in (``hold_frame_start``, once the messages
  before it are in the inbox, unless parsing stopped at the budget: then
  wsproto gets their bytes and it behind them); a read that leaves
  wsproto nothing to parse is not given to it.
- Stream errors (``trio.BrokenResourceError``, ``trio.ClosedResourceError``,
  ``OSError``) are translated to ``ConnectionClosed`` here and in the send
  path, nowhere else.
- With the ``close_on_cancel`` option (``open_websocket``'s connections),
  a reader cancelled from outside sends 1001 and waits for the answer,
  shielded, within ``CLOSE_GRACE``, before it ends; other connections are
  dropped at once, as a cancellation asks.
- Messages in pieces: the inbox hands one message at a time over in pieces
  (see ``messages``); the receive that claimed it owns it until its last
  piece. Any other receive started meanwhile gives that message up (its
  rest is dropped) or, if a task is waiting for its next piece, raises
  ``trio.BusyResourceError``.
- Dozing: a server's reader over a stream that allows it
  (``_core.contracts.DozingStream``: a WebSocket over HTTP/2) ends its
  task while the connection is open and there is nothing to read, and is
  started again, in the same nursery, by the stream's first news or by
  any move of the life cycle (``_advance``) or a wait for its end. It
  dozes from the start, and again whenever the stream asks (after a
  quiet while). The nursery stays open meanwhile: the server's task for
  the request, its child, waits for the reader to end
  (``_server.request``'s ``_end``).
- A server's reader over a stream a receiver reads through
  (``_CANCEL_SAFE_STREAMS``: TCP, TLS, memory streams), open and without
  ``close_on_cancel``, dozes *aside* (see below) once the connection has
  been quiet for ``_QUIET_DOZE`` while a receiver waits for a message:
  its task's first read has that deadline (one scope per task start, no
  deadline on later reads; none either when that read finds data on a
  lean socket at once: see "The first read"), and if it passes with nothing read and a
  receiver waiting for a whole message, the reader hands the turn over
  (``_ASIDE``, the receivers woken: one reads through) and ends its task;
  while it stands aside, its park has that deadline while a receiver is
  in its read, and if the same read through is still going on then, it
  ends its task. Such a stream cannot wake it: the receiver reading does,
  whenever it stops reading through for any reason (a message, a
  cancellation, anything the reader must deal with: ``_read_through``),
  so the reader dozes only while a receiver is in its read; the peer's
  pings and close are never left unread because the application went
  elsewhere. Everything that wakes a dozing reader over HTTP/2 wakes this
  one too (``_advance``, ``_abort``, a ping waiting for its pong, a wait
  for the end). Cost: a task start per wake after a quiet while, nothing
  per message in a busy exchange (the reader then stands aside with its
  timers as below). A handler that does not wait in ``get_message`` keeps
  its reader.
- Reading through: handing each message from the reader task to the
  receiving task costs a task switch and a scheduler pass per message,
  which is most of what a request/response exchange costs. So once the
  reader has handed a message to the one task that was waiting for it, it
  stands aside (``_read_turn`` ``_ASIDE``: parked, not reading), and a
  ``get_message`` that finds the inbox empty reads and parses itself
  (``_RECEIVER``), with the same ``_dispatch``, as long as nothing but
  whole messages comes: anything else (a control frame to answer, the
  peer's close, a protocol failure, the end of the stream or an error,
  parsing paused for the inbox's budget, a streamed receive, another
  receiver waiting) hands the turn back to the reader at once
  (``_give_turn_to_reader``), which then deals with it as above. So does
  any move of the life cycle (``_advance``), a ping waiting for its pong
  and a wait for the end; while a receiver is in the middle of a read, it
  hands the turn back as soon as that read is done (``_RECEIVER_RETURNING``;
  two tasks never read at once, and the receiver's read is not
  interrupted: a local close that drops the inbox lets it go when the
  peer answers, or when the close times out and the stream is closed).
  A receiver cancelled in its read loses nothing (only streams whose
  ``receive_some`` keeps the data of a cancelled call read through:
  ``_CANCEL_SAFE_STREAMS``). When no receiver has read for
  ``_ASIDE_TIMEOUT`` (the application is busy elsewhere), the reader takes
  the stream back, so the peer's pings and close are never left unread
  for long; while a receiver waits in its read, the reader parks with
  no deadline but the doze's (``_QUIET_DOZE``, see "Dozing"; none where
  it may not doze), which the receiver shortens to ``_ASIDE_TIMEOUT``
  when it leaves its read. A reader cancelled while it stands aside that
  reads on to close (``close_on_cancel``) first waits for a receiver's
  read to end (``_take_read_turn``).
- The first read: a reader task's first read with the quiet deadline
  above, on a lean socket (``_wire.socket_stream.LeanSocketStream``) or
  a TLS stream over one, first takes what the stream has now
  (``receive_now``; ``_wire.tls_stream.receive_at_once``), after a
  cancellation check and without a schedule point (the task's step has
  only just begun, and its next await makes one): a client that sends
  right after the 101 (often its close) costs no deadline scope and no
  pass of the scheduler for it. Only when nothing is there does the read
  wait, with the deadline.
- Reading through a ``DozingStream`` (a WebSocket over HTTP/2: its
  receives lose nothing when cancelled either): the stream's news goes
  straight to the receiver waiting in it, no reader task between them.
  The stream's request to doze (no news for a while) comes to that
  receiver, which passes it on to the reader standing aside: the reader
  ends its task (``_stand_aside`` returns True: it dozes *aside*, the
  turn still aside or the receiver's), so an idle WebSocket keeps no
  reader task here either. The stream then wakes it with the first news
  no receiver waits for; any call that gives the turn back starts it
  again, and a reader started while a receiver reads waits for the turn
  first. (Its aside timer is gone with its task: news a receiver does not
  take wakes it at once instead.)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Awaitable, Sequence
from typing import cast

import trio
import trio.testing
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from .._wire.close_frames import take_close_frame
from .._wire.frame_decoder import forget_room, has_unparsed_bytes, stop_holding
from .._wire.quick_frames import frames_size, hold_frame_start, take_whole_messages
from .._wire.socket_stream import LeanSocketStream
from .._wire.tls_stream import receive_at_once
from .close import ABNORMAL_CLOSURE, GOING_AWAY, MESSAGE_TOO_BIG, CloseReason
from .config import CLOSE_GRACE
from .contracts import DozingStream
from .errors import ConnectionClosed
from .lifecycle import (
    CLOSING,
    ENDED,
    LOCAL_ONLY_CODES,
    OPEN,
    READ_DONE,
    ConnectionLifecycle,
)
from .messages import InboxClosed, Message, MessageTooBig, wire_size
from .sending import STREAM_ERRORS

#: The most events one pass of the reader handles before it lets the other
#: tasks run: a read can hold some 20,000 tiny frames, and parsing them all
#: in one go would stall every other connection for tens of milliseconds.
_EVENTS_PER_TURN = 1024
#: The first byte of a whole close frame (FIN and the close opcode).
_CLOSE_FRAME_START = 0x88
#: Why the reader stopped parsing part-way through a read
#: (``_parse_paused``): it did not; the inbox's budget was reached (it
#: parses on once the application has taken some); the outbox holds
#: ``OUTBOX_LIMIT`` of pongs (it waits for them to be written, behind any
#: other writer); it handled a turn's worth of events (it lets the other
#: tasks run first).
_PARSING, _PAUSED_FOR_INBOX, _PAUSED_FOR_OUTBOX, _PAUSED_FOR_TURN = 0, 1, 2, 3


#: Who reads the stream (see the module rules, "Reading through"): the
#: reader task; nobody (the reader stands aside, parked); a receiver; a
#: receiver that hands the turn to the reader as soon as its read is done.
_READER, _ASIDE, _RECEIVER, _RECEIVER_RETURNING = 0, 1, 2, 3
#: How long the reader stands aside while no receiver reads before it takes
#: the stream back: the longest a peer's ping or close waits unread for an
#: application that stopped receiving for a while.
_ASIDE_TIMEOUT = 0.25
#: How long a server's reader over a stream of ``_CANCEL_SAFE_STREAMS``
#: waits, with a receiver waiting for a message and nothing read, before it
#: dozes aside (see "Dozing"): its first read's deadline, or its park's
#: while one read through goes on.
_QUIET_DOZE = 1.0
#: Streams whose ``receive_some``, when cancelled, loses no data (so a
#: cancelled ``get_message`` reading through loses none); a
#: ``trio.StapledStream`` counts as its receive stream.
_CANCEL_SAFE_STREAMS = frozenset(
    {
        LeanSocketStream,
        trio.SocketStream,
        trio.SSLStream,
        trio.testing.MemoryReceiveStream,
    }
)


def _cancel_safe(stream: trio.abc.Stream) -> bool:
    """Whether ``stream`` is of ``_CANCEL_SAFE_STREAMS`` (a
    ``trio.StapledStream`` as its receive stream)."""
    if isinstance(stream, trio.StapledStream):
        return type(stream.receive_stream) in _CANCEL_SAFE_STREAMS
    return type(stream) in _CANCEL_SAFE_STREAMS


def _reads_through(stream: trio.abc.Stream) -> bool:
    """Whether a receiver may read ``stream`` in place of the reader: a
    stream of ``_CANCEL_SAFE_STREAMS``, or one a reader may doze on (a
    ``DozingStream`` loses nothing to a cancelled receive either)."""
    return _cancel_safe(stream) or hasattr(stream, "receive_or_doze")


#: The reader's scope while it dozes (it has no task to cancel): never
#: entered, never cancelled; the reader gets a new scope when it wakes.
#: One for all, rather than a scope kept by every idle connection.
_DOZING_SCOPE = trio.CancelScope()


class ConnectionReceiving(ConnectionLifecycle):
    """The receive side of :class:`WebSocketConnection` (see the module
    rules). A base class only (see ``ConnectionSending``)."""

    __slots__ = (
        "_aside_task",
        "_aside_timer",
        "_bytes_received",
        "_fragment_receiver",
        "_messages_received",
        "_parse_paused",
        "_read_turn",
        "_reads_through",
    )

    _messages_received: int
    _bytes_received: int
    # Scheduling, not life cycle: whether parsing stopped part-way through
    # a read, and why (see _PARSING); the streamed receive that owns the
    # message being handed over.
    _parse_paused: int
    _fragment_receiver: FragmentReceiver | None
    _id: int
    # Reading through (see the module rules): who reads; the reader's task
    # while it is parked aside; its timer's scope while that has no
    # deadline (the receiver leaving its read sets one); how many reads
    # through have begun.
    _read_turn: int
    _aside_task: trio.lowlevel.Task | None
    _aside_timer: trio.CancelScope | None
    _reads_through: int

    def _init_receiving(self) -> None:
        self._messages_received = 0
        self._bytes_received = 0
        self._parse_paused = _PARSING
        self._fragment_receiver = None
        self._read_turn = _READER
        self._aside_task = None
        self._aside_timer = None
        self._reads_through = 0

    # ------------------------------------------------------------------
    # The reader task

    def _start_reader(self) -> None:
        """Start the reader task in the connection's nursery, or let it
        doze until there is something to read (see the module rules)."""
        stream = self._stream
        if self._may_doze(stream) and cast(DozingStream, stream).wake_on_news(self):
            self._reader_dozing = True
            self._reader_scope = _DOZING_SCOPE
            return
        self._spawn_reader()

    def _spawn_reader(self) -> None:
        nursery = self._nursery
        assert nursery is not None
        role = "client" if self._is_client else "server"
        nursery.start_soon(self._reader_task, name=f"{role}-{self._id} reader")

    def _reader_may_give_up_task(self) -> bool:
        """What any doze asks of the connection: a server's, open, without
        ``close_on_cancel`` (see "Dozing")."""
        return (
            not self._is_client and self._state is OPEN and not self._options.close_on_cancel
        )

    def _may_doze(self, stream: trio.abc.Stream) -> bool:
        """Whether the reader may doze on ``stream`` itself (a
        ``DozingStream``: the sockets' types first, with no attribute
        lookup that fails there, and costs through ``trio.SSLStream``'s
        ``__getattr__``)."""
        return (
            self._reader_may_give_up_task()
            and type(stream) not in _CANCEL_SAFE_STREAMS
            and hasattr(stream, "receive_or_doze")
        )

    def _wake_reader_task(self) -> None:
        """The reader is needed: start a dozing reader again, in a new
        scope (a reader dozes only while open and uncancelled: its scope
        then is ``_DOZING_SCOPE``, with nothing to carry over); give the
        turn back to a reader standing aside (at once, or once the
        receiver reading is done)."""
        turn = self._read_turn
        if turn:
            if turn == _RECEIVER:
                self._read_turn = _RECEIVER_RETURNING
            elif turn == _ASIDE:
                self._read_turn = _READER
                task = self._aside_task
                if task is not None:
                    self._aside_task = None
                    trio.lowlevel.reschedule(task)
        if not self._reader_dozing:
            return
        self._reader_dozing = False
        stream = self._stream
        # (Only a DozingStream has a call to forget; the class is asked:
        # ``trio.SSLStream``'s instances look a missing name up in their
        # transport.)
        if getattr(type(stream), "forget_wake", None) is not None:
            cast(DozingStream, stream).forget_wake()
        self._reader_scope = trio.CancelScope()
        try:
            # (Never straight back to its doze: it is woken for work, which
            # may be no news of the stream's, such as a pong to write.)
            self._spawn_reader()
        except RuntimeError:
            # The nursery closed under a dozing reader: its owner left
            # without waiting for the reader (see the module rules), so
            # nobody is left to close the stream in an orderly way; the
            # connection is over all the same.
            self._close(CloseReason(ABNORMAL_CLOSURE, None))
            self._inbox.close(discard=False)
            self._state = ENDED
            if self._finished is not None:
                self._finished.set()

    async def _reader_task(self) -> None:
        closed = False
        dozing = False
        try:
            try:
                with self._reader_scope as scope:
                    # (The loop is inline, not a method of its own: that would
                    # be one more frame kept by every idle connection.)
                    stream = self._stream
                    inbox = self._inbox
                    max_bytes = self._options.receive_buffer_size
                    doze = None
                    if self._may_doze(stream):
                        doze = cast(DozingStream, stream).receive_or_doze
                    may_stand_aside = _reads_through(stream)
                    # Whether it may doze aside over a stream that cannot
                    # wake it (see "Dozing"): its first read then has a
                    # deadline, and so has its park while a receiver reads.
                    quiet = self._reader_may_give_up_task() and _cancel_safe(stream)
                    first_read = quiet
                    if self._read_turn:
                        # Woken from a doze aside while a receiver reads
                        # (see "Reading through"): it gives the turn back
                        # once its read is done.
                        await self._take_read_turn()
                    # Whether the last dispatch handed messages to the one
                    # receiver that waited (see "Reading through").
                    handed_over = self._dispatch() == 1  # what came with the handshake
                    while not self._reading_stopped():
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
                            if self._state is not READ_DONE:
                                if paused_for_turn:
                                    # Let the other tasks have their turn
                                    # first. (After a budget, the wait for
                                    # room or for the write turn did that.)
                                    await trio.lowlevel.checkpoint()
                                handed_over = self._dispatch() == 1
                            continue
                        if handed_over and may_stand_aside:
                            handed_over = False
                            if (
                                self._state is OPEN
                                and self._fragment_receiver is None
                                and not inbox.takes_pieces
                            ):
                                if await self._stand_aside(doze is not None, quiet):
                                    # Dozing aside: the task ends here and
                                    # starts again with news.
                                    dozing = self._reader_dozing = True
                                    self._reader_scope = _DOZING_SCOPE
                                    return
                                continue
                        try:
                            received: bytes | bytearray | None
                            if doze is not None and self._state is OPEN:
                                received = await doze(max_bytes, self)
                                if received is None:
                                    if self._state is not OPEN or scope.cancel_called:
                                        continue  # closing meanwhile: read on
                                    # Nothing to read: the task ends here
                                    # and starts again with news.
                                    dozing = self._reader_dozing = True
                                    self._reader_scope = _DOZING_SCOPE
                                    return
                            elif first_read:
                                first_read = False
                                # What a lean socket has now, if anything
                                # (see "The first read").
                                received = None
                                if type(stream) is LeanSocketStream:
                                    await trio.lowlevel.checkpoint_if_cancelled()
                                    received = stream.receive_now(max_bytes)
                                elif type(stream) is trio.SSLStream:
                                    await trio.lowlevel.checkpoint_if_cancelled()
                                    received = receive_at_once(stream, max_bytes)
                                if received is None:
                                    with trio.CancelScope(
                                        deadline=trio.current_time() + _QUIET_DOZE
                                    ) as first:
                                        received = await stream.receive_some(max_bytes)
                                    if first.cancelled_caught:
                                        # Nothing came for a while: a
                                        # receiver waiting for a message
                                        # reads through instead, and wakes
                                        # the reader when it stops (else
                                        # the reader reads on).
                                        if self._may_doze_quietly():
                                            self._read_turn = _ASIDE
                                            inbox.wake_receivers()
                                            dozing = self._reader_dozing = True
                                            self._reader_scope = _DOZING_SCOPE
                                            return
                                        continue
                            else:
                                received = await stream.receive_some(max_bytes)
                            data = received
                        except STREAM_ERRORS:
                            break
                        if not data:
                            break
                        self._bytes_received += len(data)
                        if self._state is not READ_DONE:
                            handed_over = self._receive(data) == 1
                    self._close(CloseReason(ABNORMAL_CLOSURE, None))
                    self._inbox.close(discard=False)
                    # The graceful close runs in the same scope (a scope less to
                    # enter per connection), with the grace period as deadline
                    # where it can wait; an abort cuts it short.
                    closed = await self._close_stream_gracefully(scope)
            except trio.Cancelled:
                # Cancelled from outside (an abort stops at the reader's scope).
                closed = await self._close_when_cancelled()
                raise
        finally:
            if not dozing:
                await self._end_reading(closed)

    async def _end_reading(self, closed: bool) -> None:
        """The reader's last act, whatever happened: the stream is closed
        (forcefully unless ``closed``) and the connection ends."""
        self._close(CloseReason(ABNORMAL_CLOSURE, None))
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
            self._state = ENDED
            # No frame is parsed from now on: the decoder's callback into
            # this connection (a reference cycle) goes.
            forget_room(self._proto)
            if self._finished is not None:
                self._finished.set()

    def _receive(self, data: bytes | bytearray) -> int:
        """Parse one read: the messages at its start that are each one
        whole frame go straight to the inbox (``_wire.quick_frames``: what
        wsproto would make of them, without its per-frame cost), the rest
        to wsproto and ``_dispatch``; a read that is one close frame and
        nothing else is handled as ``_dispatch`` handles it, without
        wsproto's parse (``_wire.close_frames``). Returns what
        ``_dispatch`` returns."""
        if data[0] == _CLOSE_FRAME_START:
            close = take_close_frame(self._proto, data)
            if close is not None:
                self._on_close_frame(close)
                return 0
        if self._state is OPEN and not self._inbox.takes_pieces:
            max_size = self._options.max_message_size
            messages, rest = take_whole_messages(self._proto, data, max_size, _EVENTS_PER_TURN)
            if messages:
                woken = self._put_whole_messages(messages, data, rest)
                if self._parse_paused or not rest:
                    return woken
                if rest[0] == _CLOSE_FRAME_START:
                    close = take_close_frame(self._proto, bytes(rest))
                    if close is not None:
                        self._on_close_frame(close)
                        return woken
                if hold_frame_start(self._proto, rest, max_size):
                    return woken
                self._proto.receive_data(rest)  # type: ignore[arg-type]
                return min(woken + self._dispatch(), 2)
            if not rest or hold_frame_start(self._proto, rest, max_size):
                return 0  # all of it went to a frame held until whole
        self._proto.receive_data(data)  # type: ignore[arg-type]
        return self._dispatch()

    def _put_whole_messages(
        self,
        messages: Sequence[Message],
        data: bytes | bytearray,
        rest: bytes | bytearray | memoryview,
    ) -> int:
        """Put messages taken by ``_wire.quick_frames`` in the inbox, as
        ``_dispatch`` puts whole messages: up to the inbox's budget (then
        the messages not put and the rest of the read wait, unparsed, in
        wsproto's buffer) and a turn's worth of events. Returns how many
        receivers it woke (2 for several)."""
        inbox = self._inbox
        put = inbox.put
        count = 0
        for message in messages:
            count += 1
            if put(message) and (count < len(messages) or rest):
                # (Counted from the end: the first message may be a held
                # frame's, only its last bytes in this read.)
                untaken = frames_size(messages[count:], not self._is_client)
                unparsed = data[len(data) - len(rest) - untaken :]
                self._proto.receive_data(unparsed)  # type: ignore[arg-type]
                self._parse_paused = _PAUSED_FOR_INBOX
                break
        else:
            if count == _EVENTS_PER_TURN and rest:
                self._proto.receive_data(rest)  # type: ignore[arg-type]
                self._parse_paused = _PAUSED_FOR_TURN
        self._messages_received += count
        return inbox.wake_receivers()

    def _dispatch(self) -> int:
        """Handle every event wsproto has parsed so far. Synchronous: control
        frames to send go to the outbox, messages to the inbox. Returns how
        many receivers waiting for messages it woke (2 for several; see
        "Reading through")."""
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
                state = self._state
                if state is not OPEN and state is not CLOSING:
                    continue  # dropped (see the life cycle's table)
                data = event.data  # type: ignore[attr-defined]
                if pieces_wanted:
                    finished: bool = event.message_finished  # type: ignore[attr-defined]
                    if not inbox.put_piece(data, finished):
                        self._fail(
                            MESSAGE_TOO_BIG,
                            f"message exceeds {inbox.piece_limit} bytes",
                            parser_done=False,
                        )
                    else:
                        received += finished  # (a streamed message counts once whole)
                        if inbox.reader_must_wait() and has_unparsed_bytes(self._proto):
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
                    self._fail(MESSAGE_TOO_BIG, f"message exceeds {limit} bytes", parser_done=False)
                    continue
                if message is not None:
                    received += 1
                    if inbox.put(message) and has_unparsed_bytes(self._proto):
                        self._parse_paused = _PAUSED_FOR_INBOX
                        break
            elif kind is Ping:
                if self._may_send_frames():
                    self._queue(self._proto.send(Pong(event.payload)))  # type: ignore[attr-defined]
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
        if not received:
            if handled and inbox.has_receivers:
                inbox.wake_receivers()  # (pieces)
            return 0
        self._messages_received += received
        return inbox.wake_receivers()

    def _whole_frame_room(self) -> int:
        """How many payload bytes a data frame may have and still be handed
        over whole by the frame decoder (see ``_wire.frame_decoder``): what
        the message being assembled may still take, or 0 (pieces as they
        arrive) while a streamed receive takes them or received data is
        dropped."""
        state = self._state  # (per frame: no call to _delivers)
        if (state is not OPEN and state is not CLOSING) or self._inbox.takes_pieces:
            return 0
        return self._assembler.room

    # ------------------------------------------------------------------
    # Reading through (see the module rules)

    async def _stand_aside(self, may_doze: bool, quiet: bool) -> bool:
        """Park the reader until the turn is the reader's again: given back,
        or taken back after ``_ASIDE_TIMEOUT`` with no read through. With
        ``may_doze`` (a ``DozingStream``), a receiver reading through a
        quiet stream may ask it to doze instead (see
        ``_let_reader_doze_aside``); with ``quiet`` (a stream of
        ``_CANCEL_SAFE_STREAMS``, see ``_reader_task``), it dozes once one
        read through has gone on for ``_QUIET_DOZE``. Then it returns True,
        the turn still aside (or the receiver's), and the stream's news or
        the receiver leaving its read wakes it."""
        self._read_turn = _ASIDE
        if self._inbox.has_receivers:
            # The receiver it handed a message to took it while the reader
            # waited (for room, or to write) and waits again, for the
            # reader: it reads through instead.
            self._inbox.wake_receivers()
        task = trio.lowlevel.current_task()
        seen = self._reads_through
        deadline = trio.current_time() + _ASIDE_TIMEOUT
        # Whether the park's deadline is for a receiver in its read (which
        # sets it shorter when it leaves the read).
        reading = False
        dozed = False
        try:
            while self._read_turn != _READER:
                with trio.CancelScope(deadline=deadline) as timer:
                    if reading:
                        self._aside_timer = timer  # the receiver sets it
                    self._aside_task = task
                    await trio.lowlevel.wait_task_rescheduled(self._aside_wait_ended)
                self._aside_timer = None
                turn = self._read_turn
                if turn == _READER:
                    continue
                if not timer.cancelled_caught:
                    # Woken with the turn not given back: asked to doze
                    # (see _let_reader_doze_aside).
                    if may_doze and self._may_doze_aside():
                        dozed = True
                        return True
                    continue
                if self._reads_through == seen:
                    if turn == _ASIDE:
                        # Nobody read meanwhile: the application is busy
                        # elsewhere, so the reader reads again.
                        self._read_turn = _READER
                        break
                    if (
                        quiet
                        and reading
                        and turn == _RECEIVER
                        and self._state is OPEN
                        and not self._reader_scope.cancel_called
                    ):
                        # One read through went on for _QUIET_DOZE: the
                        # reader dozes aside; the receiver wakes it when
                        # it stops reading (see _read_through).
                        dozed = True
                        return True
                seen = self._reads_through
                # A receiver waiting in its read needs no timer but the
                # doze's; one that read lately may come back soon.
                reading = turn != _ASIDE
                if not reading:
                    deadline = trio.current_time() + _ASIDE_TIMEOUT
                elif quiet:
                    deadline = trio.current_time() + _QUIET_DOZE
                else:
                    deadline = math.inf
        finally:
            self._aside_task = None
            self._aside_timer = None
            if self._read_turn == _ASIDE and not dozed:
                # Cancelled: the reader ends (the stream is closed under any
                # receiver still reading).
                self._read_turn = _READER
        return False

    def _may_doze_quietly(self) -> bool:
        """Whether the reader, its first read timed out (see
        ``_reader_task``), may hand the turn to a receiver waiting for a
        message and doze aside: the connection open, its reader
        uncancelled, and a receiver waiting for a whole message."""
        inbox = self._inbox
        return (
            inbox.has_receivers
            and self._state is OPEN
            and not self._reader_scope.cancel_called
            and self._fragment_receiver is None
            and not inbox.takes_pieces
        )

    def _may_doze_aside(self) -> bool:
        """Whether the reader, asked to doze while it stands aside, may:
        the turn is still aside (or a receiver's), the connection open
        and its reader uncancelled, and the stream takes the call for its
        first news (it has none yet: else the reader stays, and needs no
        call)."""
        stream = cast(DozingStream, self._stream)
        turn = self._read_turn
        if (
            turn in (_ASIDE, _RECEIVER)
            and self._state is OPEN
            and not self._reader_scope.cancel_called
            and stream.wake_on_news(self)
        ):
            return True
        stream.forget_wake()
        return False

    def _let_reader_doze_aside(self) -> None:
        """A receiver reading through a ``DozingStream`` was asked to doze
        (the stream had no news for a while): the reader standing aside
        is asked instead, so an idle WebSocket keeps no reader task."""
        task = self._aside_task
        if task is not None and self._read_turn == _RECEIVER:
            # (Woken with the turn still aside, it knows why, and decides
            # once it runs: see _may_doze_aside.)
            self._aside_task = None
            trio.lowlevel.reschedule(task)
        elif not self._reader_dozing:
            # The reader is about to read again: no call is due.
            cast(DozingStream, self._stream).forget_wake()

    def _aside_wait_ended(self, _: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        # The reader's park, aside or waiting for the turn, ends by a
        # deadline or a cancellation: nobody may reschedule it any more.
        self._aside_task = None
        return trio.lowlevel.Abort.SUCCEEDED

    async def _take_read_turn(self) -> None:
        """The reader, cancelled while standing aside, reads on to close:
        it waits for a receiver in the middle of a read to finish it."""
        turn = self._read_turn
        if turn == _READER:
            return
        if turn == _ASIDE:
            self._read_turn = _READER
            return
        self._read_turn = _RECEIVER_RETURNING
        self._aside_task = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._aside_wait_ended)

    def _give_turn_to_reader(self) -> None:
        self._read_turn = _READER
        task = self._aside_task
        if task is not None:
            self._aside_task = None
            trio.lowlevel.reschedule(task)
        elif self._reader_dozing:
            # It dozed aside: it starts again, to read.
            self._wake_reader_task()

    def _read_through_or_wait(self) -> Awaitable[object]:
        """One turn of a receive that found the inbox empty (see
        ``get_message``): read through while the reader stands aside, else
        wait to be woken (by the reader's or another receiver's dispatch).
        Not a coroutine function: the waiting receiver keeps no frame of
        it; the result must be awaited at once."""
        if self._read_turn == _ASIDE:
            return self._read_through()
        return self._inbox.wait_for_message()

    async def _read_through(self) -> None:
        """A receive found the inbox empty while the reader stands aside:
        read and parse here until a message waits, or give the turn back to
        the reader (see the module rules)."""
        self._read_turn = _RECEIVER
        self._reads_through += 1
        inbox = self._inbox
        stream = self._stream
        max_bytes = self._options.receive_buffer_size
        # Over a stream a reader may doze on, the stream's request to doze
        # while this waits goes to the reader standing aside.
        # (The sockets' types first: no attribute lookup that fails there.)
        doze = None
        if type(stream) not in _CANCEL_SAFE_STREAMS and self._may_doze(stream):
            doze = cast(DozingStream, stream).receive_or_doze
        keep_turn = False
        try:
            while self._read_turn == _RECEIVER:
                try:
                    if doze is None:
                        data = await stream.receive_some(max_bytes)
                    else:
                        received = await doze(max_bytes, self)
                        if received is None:
                            self._let_reader_doze_aside()
                            continue
                        data = received
                except STREAM_ERRORS:
                    break  # (the reader meets it again: errors and EOF stay)
                if not data:
                    break
                self._bytes_received += len(data)
                others_woken = self._receive(data)
                if (
                    self._state is not OPEN
                    or self._outbox
                    or self._parse_paused
                    or inbox.takes_pieces
                ):
                    break
                if inbox:
                    keep_turn = not others_woken
                    break
            else:
                return  # (the turn went to the reader meanwhile)
        except trio.Cancelled:
            keep_turn = True  # nothing was lost; the turn stays aside
            raise
        finally:
            if self._read_turn == _RECEIVER and keep_turn and not inbox.has_receivers:
                self._read_turn = _ASIDE
                timer = self._aside_timer
                if timer is not None:
                    self._aside_timer = None
                    timer.deadline = trio.current_time() + _ASIDE_TIMEOUT
                elif self._reader_dozing and doze is None:
                    # It dozes aside over a stream that cannot wake it:
                    # nobody may be reading from now on (see "Dozing").
                    self._wake_reader_task()
            elif self._read_turn != _READER:
                self._give_turn_to_reader()

    # ------------------------------------------------------------------
    # The end of reading

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
            self._close(CloseReason(GOING_AWAY, None))
            reason = self._close_reason
            assert reason is not None
            if reason.code in LOCAL_ONLY_CODES:
                reason = CloseReason(GOING_AWAY, None)
            if self._may_send_frames():
                self._close(reason, frame=reason)
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
            while not self._reading_stopped():
                if self._outbox:
                    await self._flush_outbox()
                elif self._parse_paused and self._state is not READ_DONE:
                    self._parse_paused = _PARSING
                    self._dispatch()
                else:
                    # (Our close frame is out: a receiver reading through
                    # gets the answer, and then gives the turn back.)
                    await self._take_read_turn()
                    data = await self._stream.receive_some(max_bytes)
                    if not data:
                        break
                    self._bytes_received += len(data)
                    if self._state is not READ_DONE:
                        self._proto.receive_data(data)  # type: ignore[arg-type]
                        self._dispatch()
        except (ConnectionClosed, *STREAM_ERRORS):
            return False
        return await self._close_stream_gracefully()

    async def _close_stream_gracefully(self, grace: trio.CancelScope | None = None) -> bool:
        """Send what is still queued (the close echo), and let a write under
        way (our close frame, behind a slow link) finish, then close the
        stream (a TLS stream says goodbye). Returns whether the stream
        closed; the reader's scope bounds this with the grace period. With
        ``grace`` (the reader's scope), the grace period becomes its
        deadline first, unless nothing here can wait: the outbox written
        at once (or empty, no write under way) and a lean socket's
        ``aclose``, which never waits (a deadline less to register and
        take back per connection)."""
        try:
            if (self._outbox or self._writing) and not self._write_outbox_now():
                if grace is not None:
                    grace.deadline = min(grace.deadline, trio.current_time() + CLOSE_GRACE)
                # (Taking the write turn waits for the writer.)
                await self._flush_outbox(then_closing=True)
            elif grace is not None and type(self._stream) is not LeanSocketStream:
                grace.deadline = min(grace.deadline, trio.current_time() + CLOSE_GRACE)
            # (Written at once, or over TLS by a write that did not wait,
            # the close echo takes no schedule point of its own before the
            # one of closing.)
            await self._stream.aclose()
        except (ConnectionClosed, *STREAM_ERRORS):
            return False
        return True

    # ------------------------------------------------------------------
    # Messages received in pieces

    def _give_up_fragment_receive(self, receiver: FragmentReceiver) -> None:
        """Another receive starts: the streamed message is given up."""
        if receiver._waiting:
            raise trio.BusyResourceError(
                "another task is waiting for the next piece of a message received "
                "with receive_fragments()"
            )
        receiver._state = _ABANDONED
        self._fragment_receiver = None
        self._inbox.abandon_pieces()

    def _claim_message(self, receiver: FragmentReceiver) -> None:
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
        if inbox.has_receivers or self._read_turn >= _RECEIVER:
            raise trio.BusyResourceError(
                "another task is waiting in get_message(); it takes the next message"
            )
        if self._read_turn == _ASIDE:
            # The pieces come from the reader (see "Reading through").
            self._give_turn_to_reader()
        receiver._state = _PIECES
        self._fragment_receiver = receiver
        if inbox.closed:
            return  # the iteration raises ConnectionClosed
        parts = self._assembler.take_parts() if self._delivers() else []
        if not inbox.start_pieces(parts, limit):
            self._refuse_streamed_message(limit)
            return
        # A frame held until whole (see ``_wire.frame_decoder``) comes in
        # pieces now.
        stop_holding(self._proto)

    def _refuse_streamed_message(self, limit: int | None) -> None:
        self._fail(MESSAGE_TOO_BIG, f"message exceeds {limit} bytes", parser_done=False)
        self._enact_failure()
        self._flush_soon(or_abort=True)


# What a streamed receive holds: nothing yet, the whole message, its pieces
# (from the inbox), nothing more (it ended or was closed), or nothing ever
# (it was given up for another receive).
_NEW, _WHOLE, _PIECES, _DONE, _ABANDONED = range(5)


class FragmentReceiver:
    """The async iterator :meth:`WebSocketConnection.receive_fragments`
    returns (see the module rules)."""

    __slots__ = ("_connection", "_max_size", "_state", "_waiting", "_whole")

    def __init__(self, connection: ConnectionReceiving, max_size: int | None) -> None:
        self._connection = connection
        self._max_size = max_size
        self._state = _NEW
        self._waiting = False
        self._whole: Message | None = None

    def __aiter__(self) -> FragmentReceiver:
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
