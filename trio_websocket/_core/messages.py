"""Incoming messages: fragment assembly with a size limit, and the bounded
inbox between the reader task and ``get_message()`` or a streamed receive.

Rules:
- No I/O. The inbox parks at most one reader task (the connection's) and any
  number of receivers; it never awaits anything but its own parking lots.
- Sizes are bytes on the wire: UTF-8 bytes for text, never characters.
- Flow control has two marks and a cap: the reader may read on while fewer
  than ``max_messages`` messages wait *or* they cost less than
  ``read_ahead_bytes``, and in any case only while they cost less than
  ``max_bytes`` (the user's byte budget; None: no cap). A waiting message
  (or streamed piece) costs its size plus ``ITEM_COST``, so even empty
  messages use up the budget: the count of waiting items is bounded too.
  Only data is held back this way; control frames are handled by the
  reader as soon as they are parsed.
- The budget holds within one read: :meth:`Inbox.put` says when it is
  reached, and the reader then stops *parsing* (the rest of the read waits,
  unparsed, in the protocol's buffer) until the application catches up.
  So the inbox goes past its budget by at most one message, however many
  small messages (or compressed ones, each inflating to
  ``max_message_size``) one read holds.
- A message in many fragments costs no more memory than its size: past
  ``MAX_PARTS`` pieces the assembler joins them into one growing buffer
  (a bytes object per 1-byte fragment would cost ~40 times the payload).
- Streamed receive: one message at a time may be handed over in pieces
  instead of whole. The inbox then holds its pieces (which count like a full
  queue: the reader stops at ``read_ahead_bytes`` of them, or the cap) and
  says whether the reader should route data pieces to it (``takes_pieces``)
  rather than assemble them. A streamed message is only ever started when no
  whole message waits, so pieces and whole messages never overtake each
  other. A stream given up half-way has the rest of its message dropped, as
  it arrives, by the inbox.
- One wake-up per batch: the reader puts every message parsed from one read,
  then wakes the receivers once. A receiver that finds a message waiting
  takes it without a scheduler pass (it only checks for cancellation).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable

import trio

from .waiters import Waiters

Message = str | bytes

#: What a waiting message or streamed piece costs in the inbox's budget
#: beyond its payload: roughly what CPython spends on a small ``bytes`` or
#: ``str`` and its slot in the queue. Without it an empty message would be
#: free, and a flood of them could grow the inbox without limit.
ITEM_COST = 64
#: The most pieces the assembler keeps as a list before joining them into
#: one buffer (see the module rules).
MAX_PARTS = 64


class MessageTooBig(Exception):
    """A message grew past the connection's ``max_message_size``."""


def utf8_size(text: str) -> int:
    """The size of ``text`` encoded as UTF-8 (``isascii`` is O(1) in CPython)."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def wire_size(message: Message) -> int:
    """The payload size of ``message`` on the wire (UTF-8 bytes for text)."""
    if message.__class__ is str and not message.isascii():
        return len(message.encode("utf-8"))
    return len(message)


class MessageAssembler:
    """Joins the pieces of a fragmented message, counting its size in bytes
    (UTF-8 bytes for text) against ``limit`` as the pieces arrive.

    Up to ``MAX_PARTS`` pieces are kept as they came and joined once at the
    end (the usual case: a few large pieces, no extra copy). Past that the
    message so far goes into one ``bytearray`` (text as UTF-8, decoded at
    the end), which then grows by each piece: memory stays about the
    message's size however small the fragments."""

    __slots__ = ("_joined", "_joined_text", "_limit", "_parts", "_size")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._parts: list[Message] = []
        self._joined: bytearray | None = None
        self._joined_text = False
        self._size = 0

    @property
    def in_progress(self) -> bool:
        """Whether part of a message has been received."""
        return bool(self._parts) or self._joined is not None

    @property
    def room(self) -> int:
        """How many more bytes the message being assembled may take."""
        return self._limit - self._size

    def feed(self, piece: Message, finished: bool) -> Message | None:
        """Add one piece; return the whole message when ``finished``.

        Raises :class:`MessageTooBig` as soon as the pieces so far pass the
        limit (so an endless fragmented message never grows unbounded).
        """
        size = utf8_size(piece) if isinstance(piece, str) else len(piece)
        self._size += size
        if self._size > self._limit:
            self.reset()
            raise MessageTooBig(self._limit)
        joined = self._joined
        if joined is not None:
            if piece:
                joined += piece.encode("utf-8") if isinstance(piece, str) else piece
            return self._finish_joined() if finished else None
        if finished and not self._parts:
            self._size = 0
            return piece
        if piece:
            self._parts.append(piece)
        if not finished:
            if len(self._parts) >= MAX_PARTS:
                self._join_parts()
            return None
        parts = self._parts
        self.reset()
        if isinstance(piece, str):
            return "".join(parts)  # type: ignore[arg-type]
        return b"".join(parts)  # type: ignore[arg-type]

    def _join_parts(self) -> None:
        parts = self._parts
        self._joined_text = isinstance(parts[0], str)
        if self._joined_text:
            self._joined = bytearray("".join(parts).encode("utf-8"))  # type: ignore[arg-type]
        else:
            self._joined = bytearray(b"".join(parts))  # type: ignore[arg-type]
        self._parts = []

    def _joined_message(self) -> Message:
        joined = self._joined
        assert joined is not None
        # (wsproto checked the UTF-8 piece by piece; it decodes as it came.)
        return joined.decode("utf-8") if self._joined_text else bytes(joined)

    def _finish_joined(self) -> Message:
        message = self._joined_message()
        self.reset()
        return message

    def reset(self) -> None:
        """Forget any partial message."""
        self._parts = []
        self._joined = None
        self._size = 0

    def take_parts(self) -> list[Message]:
        """Hand over the pieces of the partial message received so far (to
        be streamed from here on) and forget it."""
        parts = self._parts
        if self._joined is not None:
            parts = [self._joined_message()]
        self.reset()
        return parts


class InboxClosed(Exception):
    """No more messages will come out of the inbox."""


#: What the reader does with the data pieces of the message it is parsing
#: (see ``Inbox.takes_pieces``).
_ASSEMBLE = 0  # assemble them into a whole message (the usual case)
_STREAM = 1  # hand them to the streamed receive as they come
_DROP = 2  # drop them: their streamed receive was given up


class Inbox:
    """The bounded queue of received messages (see the module rules)."""

    __slots__ = (
        "_after_drop",
        "_bytes",
        "_closed",
        "_head",
        "_items",
        "_max_bytes",
        "_max_messages",
        "_piece_bytes",
        "_piece_count",
        "_piece_limit",
        "_pieces",
        "_read_ahead_bytes",
        "_reader_lot",
        "_reader_mode",
        "_receivers",
        "_stream_complete",
    )

    def __init__(
        self, max_messages: int, read_ahead_bytes: int, max_bytes: int | None = None
    ) -> None:
        # A list read from ``_head`` and cleared when drained: O(1) per
        # message, and an empty list is far smaller than an empty deque
        # (this object lives as long as an idle connection).
        self._items: list[Message] = []
        self._head = 0
        self._bytes = 0
        self._max_messages = max_messages
        if max_bytes is None:
            self._max_bytes = float("inf")
        else:
            self._max_bytes = max_bytes
            read_ahead_bytes = min(read_ahead_bytes, max_bytes)
        self._read_ahead_bytes = read_ahead_bytes
        self._closed = False
        self._receivers = Waiters()
        self._reader_lot: trio.lowlevel.ParkingLot | None = None
        # The streamed message: its pieces not yet taken, how many were
        # queued in all, and whether the last one has been queued.
        self._pieces: deque[Message] | None = None
        self._piece_count = 0
        self._piece_bytes = 0
        self._piece_limit: int | None = None
        self._stream_complete = False
        self._reader_mode = _ASSEMBLE
        # What the reader does once the dropped message ends.
        self._after_drop = _ASSEMBLE

    def __len__(self) -> int:
        """Messages and streamed pieces waiting to be taken."""
        pieces = self._pieces
        return len(self._items) - self._head + (len(pieces) if pieces else 0)

    @property
    def buffered_bytes(self) -> int:
        """Bytes (UTF-8 bytes for text) of the messages and pieces waiting."""
        return self._bytes

    @property
    def closed(self) -> bool:
        """Whether no more messages will be put."""
        return self._closed

    @property
    def has_receivers(self) -> bool:
        """Whether a task waits for a message or a piece."""
        return bool(self._receivers)

    @property
    def takes_pieces(self) -> bool:
        """Whether the reader must hand the data pieces it parses to
        :meth:`put_piece` instead of assembling them."""
        return self._reader_mode != _ASSEMBLE

    @property
    def whole_messages(self) -> int:
        """How many whole messages wait."""
        return len(self._items) - self._head

    def put(self, message: Message) -> bool:
        """Queue a message; call :meth:`wake_receivers` after a batch.
        Returns :meth:`reader_must_wait`: True once the budget is reached,
        when the reader must parse no further (see the module rules)."""
        if self._closed:
            return False
        items = self._items
        items.append(message)
        # ``isascii`` is O(1) for str; bytes never get that far.
        if message.__class__ is bytes or message.isascii():
            self._bytes += len(message)
        else:
            self._bytes += wire_size(message)
        # (The usual case, below the read-ahead, which is never above the
        # cap, decided without a call.)
        if self._bytes + ITEM_COST * (len(items) - self._head) < self._read_ahead_bytes:
            return False
        return self.reader_must_wait()

    def wake_receivers(self) -> int:
        """Wake the receivers waiting; returns how many (2 for several)."""
        if self._receivers:
            return self._receivers.unpark_all()
        return 0

    def reader_must_wait(self) -> bool:
        """Whether the reader should stop reading (and parsing) until data
        is taken."""
        if self._closed:
            return False
        waiting = len(self._items) - self._head
        pieces = self._pieces
        if pieces:
            waiting += len(pieces)
        cost = self._bytes + ITEM_COST * waiting
        if cost >= self._max_bytes:
            return True
        return cost >= self._read_ahead_bytes and (
            bool(pieces) or waiting >= self._max_messages
        )

    async def wait_for_room(self) -> None:
        """Park the reader until :meth:`reader_must_wait` turns false."""
        while self.reader_must_wait():
            if self._reader_lot is None:
                self._reader_lot = trio.lowlevel.ParkingLot()
            await self._reader_lot.park()

    async def wait_until_consumed(self) -> None:
        """Park the reader until every message was taken and a receiver
        waits for more (or the inbox is closed)."""
        while not self._closed and (len(self) or not self._receivers):
            if self._reader_lot is None:
                self._reader_lot = trio.lowlevel.ParkingLot()
            await self._reader_lot.park()

    def close(self, *, discard: bool) -> None:
        """No more messages will be put. With ``discard``, the waiting ones
        are dropped too (a local close); otherwise they stay readable."""
        self._closed = True
        if discard:
            self._items.clear()
            self._head = 0
            self._bytes = 0
            self._pieces = None
            self._stream_complete = False
        self._receivers.unpark_all()
        self._wake_reader()

    def _wake_reader(self) -> None:
        if self._reader_lot:
            self._reader_lot.unpark_all()

    def wait_for_message(self) -> Awaitable[object]:
        """Park a receiver until the next batch is put, the inbox closes,
        or (with :meth:`get`'s loop left to the caller) anything else wakes
        the receivers: ``await inbox.wait_for_message()``, at once."""
        if self._reader_lot:
            # The reader may be waiting for us to catch up.
            self._reader_lot.unpark_all()
        return self._receivers.park()

    async def get(self) -> Message:
        """The next message; raises :class:`InboxClosed` once the inbox is
        closed and empty."""
        items = self._items
        if len(items) > self._head:
            await trio.lowlevel.checkpoint_if_cancelled()
        else:
            parked = False
            while len(items) <= self._head:
                if self._closed:
                    if not parked:  # (a task that parked has yielded already)
                        await trio.lowlevel.checkpoint()
                    raise InboxClosed
                if self._reader_lot:
                    # The reader may be waiting for us to catch up.
                    self._reader_lot.unpark_all()
                await self._receivers.park()
                parked = True
        head = self._head
        message = items[head]
        head += 1
        if head == len(items):
            items.clear()
            head = 0
        elif head >= 64 and head * 2 >= len(items):
            # Never fully drained (a steady stream): drop what was taken so
            # the list neither grows nor keeps old messages alive.
            del items[:head]
            head = 0
        self._head = head
        if message.__class__ is bytes or message.isascii():
            self._bytes -= len(message)
        else:
            self._bytes -= wire_size(message)
        if self._reader_lot and not self.reader_must_wait():
            self._reader_lot.unpark_all()
        return message

    def take_nowait(self) -> Message:
        """The next whole message, which must be waiting (see
        :attr:`whole_messages`)."""
        items = self._items
        head = self._head
        message = items[head]
        head += 1
        if head == len(items):
            items.clear()
            head = 0
        elif head >= 64 and head * 2 >= len(items):
            del items[:head]  # as in get(): keep no taken message alive
            head = 0
        self._head = head
        self._bytes -= wire_size(message)
        self._wake_reader()
        return message

    # ------------------------------------------------------------------
    # Streamed receive

    @property
    def piece_limit(self) -> int | None:
        """The size limit of the streamed message, if it has one."""
        return self._piece_limit

    def start_pieces(self, parts: list[Message], limit: int | None) -> bool:
        """Stream the next message in pieces, starting with ``parts`` (the
        part of it already assembled), refusing it once it passes ``limit``
        bytes. Only when no whole message waits. Returns False if ``parts``
        are already over the limit (nothing is queued then)."""
        assert self.whole_messages == 0 and not self._pieces
        self._pieces = deque()
        self._piece_count = 0
        self._piece_bytes = 0
        self._piece_limit = limit
        self._stream_complete = False
        if self._reader_mode == _DROP:
            # The rest of a given-up message comes first; the assembler has
            # not seen it, so ``parts`` is empty.
            self._after_drop = _STREAM
            return True
        self._reader_mode = _STREAM
        size = sum(map(wire_size, parts))
        if limit is not None and size > limit:
            return False
        self._piece_bytes = size
        for part in parts:
            self._queue_piece(part)
        return True

    def _queue_piece(self, piece: Message) -> None:
        assert self._pieces is not None
        self._pieces.append(piece)
        self._piece_count += 1
        self._bytes += wire_size(piece)

    def put_piece(self, piece: Message, finished: bool) -> bool:
        """Queue one piece of the streamed message (see :meth:`put`).
        Returns False, queuing nothing, if it takes the message over its
        limit.

        Empty pieces are skipped, except a message's only one: a receiver
        always gets at least one piece, which tells it the message's type.
        """
        if self._closed:
            return True
        if self._reader_mode == _DROP:
            if finished:
                self._reader_mode = self._after_drop
                self._after_drop = _ASSEMBLE
            return True
        if self._piece_limit is not None:
            self._piece_bytes += wire_size(piece)
            if self._piece_bytes > self._piece_limit:
                return False
        if piece or (finished and self._piece_count == 0):
            self._queue_piece(piece)
        if finished:
            self._reader_mode = _ASSEMBLE
            self._stream_complete = True
        return True

    async def get_piece(self) -> tuple[Message | None, bool]:
        """The next piece of the streamed message and whether it is the
        last; ``(None, True)`` when the message ended with pieces already
        taken (its last frame was empty). Raises :class:`InboxClosed` once
        the inbox is closed before the message's end."""
        if self._pieces or self._stream_complete:
            await trio.lowlevel.checkpoint_if_cancelled()
        else:
            while not self._pieces and not self._stream_complete:
                if self._closed or self._pieces is None:
                    await trio.lowlevel.checkpoint()
                    raise InboxClosed
                self._wake_reader()
                await self._receivers.park()
        pieces = self._pieces
        if not pieces:
            self._pieces = None
            self._stream_complete = False
            return None, True
        piece = pieces.popleft()
        self._bytes -= wire_size(piece)
        last = self._stream_complete and not pieces
        if last:
            self._pieces = None
            self._stream_complete = False
        if self._reader_lot and not self.reader_must_wait():
            self._reader_lot.unpark_all()
        return piece, last

    def abandon_pieces(self) -> None:
        """Give up the streamed message: drop its waiting pieces, and the
        rest of it as it arrives."""
        pieces = self._pieces
        if pieces:
            self._bytes -= sum(map(wire_size, pieces))
        self._pieces = None
        self._stream_complete = False
        if self._reader_mode == _STREAM:
            self._reader_mode = _DROP
        self._after_drop = _ASSEMBLE
        self._wake_reader()
