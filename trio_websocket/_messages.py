"""Incoming messages: fragment assembly with a size limit, and the bounded
inbox between the reader task and ``get_message()``.

Rules:
- No I/O. The inbox parks at most one reader task (the connection's) and any
  number of receivers; it never awaits anything but its own parking lots.
- Flow control has two marks: the reader may read on while fewer than
  ``max_messages`` messages wait *or* they hold fewer than
  ``read_ahead_bytes``. Only data is held back this way; control frames are
  handled by the reader as soon as they are parsed.
- One wake-up per batch: the reader puts every message parsed from one read,
  then wakes the receivers once. A receiver that finds a message waiting
  takes it without a scheduler pass (it only checks for cancellation).
"""

from __future__ import annotations

import trio

Message = str | bytes


class MessageTooBig(Exception):
    """A message grew past the connection's ``max_message_size``."""


def utf8_size(text: str) -> int:
    """The size of ``text`` encoded as UTF-8 (``isascii`` is O(1) in CPython)."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


class MessageAssembler:
    """Joins the pieces of a fragmented message, counting its size in bytes
    (UTF-8 bytes for text) against ``limit`` as the pieces arrive."""

    __slots__ = ("_limit", "_parts", "_size")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._parts: list[Message] = []
        self._size = 0

    @property
    def in_progress(self) -> bool:
        """Whether part of a message has been received."""
        return bool(self._parts)

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
        if finished and not self._parts:
            self._size = 0
            return piece
        if piece:
            self._parts.append(piece)
        if not finished:
            return None
        parts = self._parts
        self.reset()
        if isinstance(piece, str):
            return "".join(parts)  # type: ignore[arg-type]
        return b"".join(parts)  # type: ignore[arg-type]

    def reset(self) -> None:
        """Forget any partial message."""
        self._parts = []
        self._size = 0


class InboxClosed(Exception):
    """No more messages will come out of the inbox."""


class Inbox:
    """The bounded queue of received messages (see the module rules)."""

    __slots__ = (
        "_bytes",
        "_closed",
        "_head",
        "_items",
        "_max_messages",
        "_read_ahead_bytes",
        "_reader_lot",
        "_receivers",
    )

    def __init__(self, max_messages: int, read_ahead_bytes: int) -> None:
        # A list read from ``_head`` and cleared when drained: O(1) per
        # message, and an empty list is far smaller than an empty deque
        # (this object lives as long as an idle connection).
        self._items: list[Message] = []
        self._head = 0
        self._bytes = 0
        self._max_messages = max_messages
        self._read_ahead_bytes = read_ahead_bytes
        self._closed = False
        self._receivers = trio.lowlevel.ParkingLot()
        self._reader_lot: trio.lowlevel.ParkingLot | None = None

    def __len__(self) -> int:
        return len(self._items) - self._head

    @property
    def buffered_bytes(self) -> int:
        """Bytes (characters for text) of the messages waiting."""
        return self._bytes

    def put(self, message: Message) -> None:
        """Queue a message; call :meth:`wake_receivers` after a batch."""
        if not self._closed:
            self._items.append(message)
            self._bytes += len(message)

    def wake_receivers(self) -> None:
        if self._receivers:
            self._receivers.unpark_all()

    def reader_must_wait(self) -> bool:
        """Whether the reader should stop reading until messages are taken."""
        return (
            len(self._items) - self._head >= self._max_messages
            and self._bytes >= self._read_ahead_bytes
            and not self._closed
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
        self._receivers.unpark_all()
        if self._reader_lot:
            self._reader_lot.unpark_all()

    async def get(self) -> Message:
        """The next message; raises :class:`InboxClosed` once the inbox is
        closed and empty."""
        items = self._items
        if len(items) > self._head:
            await trio.lowlevel.checkpoint_if_cancelled()
        else:
            while len(items) <= self._head:
                if self._closed:
                    await trio.lowlevel.checkpoint()
                    raise InboxClosed
                if self._reader_lot:
                    # The reader may be waiting for us to catch up.
                    self._reader_lot.unpark_all()
                await self._receivers.park()
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
        self._bytes -= len(message)
        if self._reader_lot and not self.reader_must_wait():
            self._reader_lot.unpark_all()
        return message
