"""One HTTP/2 stream as a ``trio.abc.HalfCloseableStream``: what a
WebSocket carried by RFC 8441 reads from and writes to.

Rules:
- Flow control is the backpressure. What the peer sent waits here until
  :meth:`HTTP2Stream.receive_some` takes it; only then is its window
  handed back (WINDOW_UPDATE), so the peer can never have more than one
  receive window of data waiting in this stream (more is a flow-control
  error: ``_h2.frame_guard``'s on the fast path, ``h2``'s without it),
  and a stream whose reader is slow holds up no other.
  :meth:`HTTP2Stream.send_all` waits for the peer's window, hands
  the data to the connection's writer and returns once the connection has
  no more than a send buffer's worth (256 KiB) left to write. The frames
  queued are views of the data, which may be written after ``send_all``
  returns: data that is not ``bytes`` is copied first.
- Closing: :meth:`HTTP2Stream.send_eof` is END_STREAM. :meth:`aclose` ends
  the stream with END_STREAM (unless it was already) and leaves the rest
  to the peer for a moment: a reset right behind the last data would let a
  proxy drop that data (nghttpx does). The connection resets it
  (NO_ERROR) a second later if the peer has not ended it by then (see
  ``HTTP2Connection._reset_left_streams``). Closed under a cancelled scope
  (``trio.aclose_forcefully``: an abort), a stream is reset with CANCEL at
  once. Neither waits for the peer.
- A stream the peer reset, or whose connection broke, raises
  ``trio.BrokenResourceError`` from both directions; a stream the peer
  ended reads ``b""``.
- Only the connection (``_h2.connection``) feeds it, through the methods
  under "Fed by the connection", from its reader task; they never block.
- A reader may doze (``_core.contracts.DozingStream``: a server's
  WebSocket ends its reader task while there is nothing to read): the
  stream keeps the ``wake`` callback it was given instead of a parked
  task, and calls it once, from the connection's task, with the first
  news (data, the end, a reset, a close) that no parked task takes (a
  parked task is woken first, and the call stays due). The connection
  asks a reader parked in :meth:`HTTP2Stream.receive_or_doze` to doze
  once its stream has had no news for a while (``doze_if_quiet``); the
  task parked may be a receiver reading through in the reader's place,
  which passes the request on. A receive cancelled while it waits takes
  nothing, and one that finds data cannot be cancelled once it took it:
  no data is ever lost to a cancellation.
"""

from __future__ import annotations

from typing import Protocol

import trio

from .._core.contracts import DozingReader
from .headers import Headers, answer_headers


class StreamOwner(Protocol):
    """What a stream asks of its connection (``_h2.connection``)."""

    @property
    def transport(self) -> trio.abc.Stream: ...

    @property
    def endpoints(self) -> tuple[object, object]: ...

    def send_room(self, stream_id: int) -> int: ...

    @property
    def must_drain(self) -> bool: ...

    def queue_frames(
        self, stream: HTTP2Stream, view: memoryview, sent: int, *, end: bool
    ) -> int: ...

    async def flush(self, *, more: bool = False) -> None: ...

    def wake_writer(self) -> None: ...

    def acknowledge(self, stream_id: int, size: int) -> None: ...

    def end_stream(self, stream_id: int) -> None: ...

    def close_stream(
        self, stream_id: int, *, end: bool, reset: bool, aborting: bool, peer_open: bool
    ) -> None: ...

    def send_headers(self, stream_id: int, headers: Headers) -> None: ...


class HTTP2Stream(trio.abc.HalfCloseableStream):
    """One stream of an HTTP/2 connection (its :class:`StreamOwner`)."""

    __slots__ = (
        "_buffer",
        "_buffered",
        "_closed",
        "_connection",
        "_doze_requested",
        "_local_ended",
        "_news",
        "_reader_may_doze",
        "_reader_parked",
        "_remote_ended",
        "_reset_code",
        "_response",
        "_sender_parked",
        "_wake_on_news",
        "precredited",
        "receive_window",
        "send_window",
        "stream_id",
        "unacked",
    )

    def __init__(self, connection: StreamOwner, stream_id: int, receive_window: int) -> None:
        self._connection = connection
        self.stream_id = stream_id
        # Kept by the connection (its fast path keeps the windows itself):
        # what the peer may still send, bytes read and not handed back yet,
        # and bytes h2 already handed back that are not to be again.
        self.receive_window = receive_window
        self.unacked = 0
        self.precredited = 0
        # What this side may still send (kept by the connection's fast path).
        self.send_window = 0
        # (A list, not a deque: it rarely holds more than a chunk or two,
        # and an empty deque costs 600 bytes per idle WebSocket; None while
        # empty: an empty list is 56 bytes more per idle WebSocket.)
        self._buffer: list[bytes] | None = None
        self._buffered = 0
        # The task waiting for data (or the answer), and the one waiting for
        # the peer's window: parked by hand, no Event made per wait.
        self._reader_parked: trio.lowlevel.Task | None = None
        self._sender_parked: trio.lowlevel.Task | None = None
        # A dozing reader's wake-up call (see the module rules); whether
        # the parked reader may doze, was asked to, and whether anything
        # happened on the stream since the connection last looked.
        self._wake_on_news: DozingReader | None = None
        self._reader_may_doze = False
        self._doze_requested = False
        self._news = False
        self._remote_ended = False
        self._local_ended = False
        self._closed = False
        #: The peer's (or the connection's) reason this stream broke, once it did.
        self._reset_code: int | None = None
        #: The answer to a request this side sent (the client's side).
        self._response: Headers | None = None

    # ------------------------------------------------------------------
    # What a stream's user sees

    @property
    def transport_stream(self) -> trio.abc.Stream:
        """The stream the HTTP/2 connection runs over (TCP, or TLS over
        it): the endpoints of a WebSocket are that connection's."""
        return self._connection.transport

    @property
    def shared_endpoints(self) -> tuple[object, object]:
        """The local and remote endpoints of the connection, the same
        objects for all its streams (``_core.endpoint`` reads them)."""
        return self._connection.endpoints

    @property
    def buffered(self) -> int:
        """Bytes received and not yet read (at most one receive window)."""
        return self._buffered

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self.receive_or_doze(max_bytes, None)
        assert data is not None  # (only a reader that may doze is asked to)
        return data

    async def receive_or_doze(
        self, max_bytes: int | None, reader: DozingReader | None
    ) -> bytes | None:
        """``receive_some(max_bytes)``, or None once the connection asked
        this reader to doze while nothing was buffered: ``reader`` is then
        woken with the first news (see ``_core.contracts.DozingStream``).
        Without a ``reader``, never None."""
        if self._closed:
            raise trio.ClosedResourceError("this HTTP/2 stream was closed")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        # A receive that waits has had its checkpoint (the wait: cancellable,
        # and a turn for the others); one that finds data makes one, with
        # the data taken between its two halves, so a cancel never loses it.
        parked = False
        while not self._buffer:
            if self._reset_code is not None:
                raise trio.BrokenResourceError(
                    f"the HTTP/2 stream was reset (error code {self._reset_code})"
                )
            if self._remote_ended:
                await trio.lowlevel.checkpoint()
                return b""
            if self._doze_requested:
                self._doze_requested = False
                self._wake_on_news = reader
                return None
            self._reader_may_doze = reader is not None
            try:
                await self._park_reader()
            finally:
                self._reader_may_doze = False
            parked = True
            if self._closed:
                raise trio.ClosedResourceError("this HTTP/2 stream was closed")
        self._doze_requested = False  # (news came first)
        if not parked:
            await trio.lowlevel.checkpoint_if_cancelled()
        data = self._take(max_bytes)
        self._connection.acknowledge(self.stream_id, len(data))
        if not parked:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return data

    def wake_on_news(self, reader: DozingReader) -> bool:
        """Have ``reader`` woken with the first news (a reader that dozes
        from its start); False, with nothing to come, when there is news
        already (something to read, the end, a reset, a close)."""
        if (
            self._buffer
            or self._remote_ended
            or self._reset_code is not None
            or self._closed
        ):
            return False
        self._wake_on_news = reader
        return True

    def forget_wake(self) -> None:
        """The dozing reader was woken by its connection: no call is due."""
        self._wake_on_news = None

    def doze_if_quiet(self) -> None:
        """For the connection, every while: a reader parked in
        :meth:`receive_or_doze` with no news since the last look is asked
        to doze."""
        if self._reader_may_doze and not self._news and self._reader_parked is not None:
            self._doze_requested = True
            self._wake_reader()
        self._news = False

    def _take(self, max_bytes: int | None) -> bytes:
        buffer = self._buffer
        assert buffer is not None
        first = buffer[0]
        if max_bytes is not None and len(first) >= max_bytes:
            if len(first) == max_bytes:
                buffer.pop(0)
                if not buffer:
                    self._buffer = None
            else:
                buffer[0] = first[max_bytes:]
                first = first[:max_bytes]
            self._buffered -= len(first)
            return first
        buffer.pop(0)
        if not buffer:
            self._buffer = None
            self._buffered -= len(first)
            return first
        pieces = [first]
        size = len(first)
        while buffer and (max_bytes is None or size + len(buffer[0]) <= max_bytes):
            piece = buffer.pop(0)
            pieces.append(piece)
            size += len(piece)
        if not buffer:
            self._buffer = None
        self._buffered -= size
        return b"".join(pieces)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._send(data, end=False)

    async def send_all_and_end(self, data: bytes | bytearray | memoryview) -> None:
        """``send_all``, with END_STREAM on the DATA frame that carries the
        end of ``data`` (what a WebSocket's close frame is sent with; see
        ``_core.contracts.EndingStream``)."""
        await self._send(data, end=True)

    async def _send(self, data: bytes | bytearray | memoryview, *, end: bool) -> None:
        connection = self._connection
        self._check_sendable()
        if type(data) is not bytes:
            # The frames are queued as views of the data and may be written
            # after this returns: never views of a buffer the caller may
            # change or reuse.
            data = bytes(data)
        view = memoryview(data)
        sent = 0
        total = len(view)
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            while sent < total:
                if connection.must_drain:
                    # Queued enough for now: let the writer catch up first
                    # (what the socket leaves goes with what is queued next).
                    await connection.flush(more=True)
                    self._check_sendable()
                    continue
                queued = connection.queue_frames(self, view, sent, end=end)
                if queued == sent:
                    # Written what fits, the peer can answer with a window.
                    connection.wake_writer()
                    await self._park_sender()
                    self._check_sendable()
                    continue
                sent = queued
        except BaseException:
            # (What a flush with ``more`` left is the writer's now.)
            connection.wake_writer()
            raise
        if end:
            self._local_ended = True
            if not total:
                connection.end_stream(self.stream_id)
        await connection.flush()

    def _check_sendable(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this HTTP/2 stream was closed")
        if self._local_ended:
            raise trio.ClosedResourceError("cannot send after send_eof()")
        if self._reset_code is not None:
            raise trio.BrokenResourceError(
                f"the HTTP/2 stream was reset (error code {self._reset_code})"
            )

    async def wait_send_all_might_not_block(self) -> None:
        while (
            not self._closed
            and self._reset_code is None
            and self._connection.send_room(self.stream_id) <= 0
        ):
            await self._park_sender()
        await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this HTTP/2 stream was closed")
        if not self._local_ended:
            self._local_ended = True
            if self._reset_code is None:
                self._connection.end_stream(self.stream_id)
                await self._connection.flush()
                return
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        if not self._closed:
            # (aclose_forcefully calls this in a cancelled scope: an abort.)
            aborting = trio.current_effective_deadline() == -float("inf")
            self._closed = True
            if self._buffered:
                # Dropped unread: the connection's window gets them back.
                self._connection.acknowledge(self.stream_id, self._buffered)
            self._buffer = None
            self._buffered = 0
            self._connection.close_stream(
                self.stream_id,
                end=not self._local_ended and not aborting,
                reset=self._reset_code is None and aborting,
                aborting=aborting,
                peer_open=self._reset_code is None and not self._remote_ended,
            )
            self._local_ended = True
            self._wake_all()
        await trio.lowlevel.checkpoint()

    # ------------------------------------------------------------------
    # Answering a request (a server's streams)

    async def send_response_headers(self, status: int, headers: Headers) -> None:
        """Answer the request this stream carries; data may follow."""
        self._check_sendable()
        self._connection.send_headers(self.stream_id, answer_headers(status, headers))
        await self._connection.flush()

    async def respond(
        self, status: int, headers: Headers, body: bytes, *, head_only: bool = False
    ) -> None:
        """Answer with a whole HTTP response, then close the stream. Never
        raises a stream error (the peer may be gone already)."""
        try:
            if status not in (204, 304):
                headers = [*headers, (b"content-length", str(len(body)).encode("ascii"))]
            await self.send_response_headers(status, headers)
            if body and not head_only:
                await self.send_all(body)
            await self.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await self.aclose()

    # ------------------------------------------------------------------
    # Fed by the connection

    def data_received(self, data: bytes) -> None:
        """DATA from the peer. Once the stream is closed it is only
        acknowledged (the connection window must not shrink)."""
        if self._closed:
            self._connection.acknowledge(self.stream_id, len(data))
            return
        buffer = self._buffer
        if buffer is None:
            self._buffer = [data]
        else:
            buffer.append(data)
        self._buffered += len(data)
        self._wake_reader()

    def remote_ended(self) -> None:
        """The peer sent END_STREAM."""
        self._remote_ended = True
        self._wake_all()

    def broken(self, error_code: int) -> None:
        """The peer reset the stream, or the connection is gone."""
        if self._reset_code is None:
            self._reset_code = error_code
        self._wake_all()

    def window_opened(self) -> None:
        """The peer opened its window (for this stream, or all of them)."""
        self._wake_sender()

    def response_received(self, headers: Headers) -> None:
        """The peer answered this side's request."""
        self._response = headers
        self._wake_reader()

    async def wait_response(self) -> Headers:
        """The answer to the request this side sent on the stream."""
        while self._response is None:
            self._check_sendable_or_ended()
            await self._park_reader()
        return self._response

    def _check_sendable_or_ended(self) -> None:
        if self._reset_code is not None:
            raise trio.BrokenResourceError(
                f"the HTTP/2 stream was reset (error code {self._reset_code})"
            )
        if self._remote_ended:
            raise trio.BrokenResourceError("the HTTP/2 stream ended without an answer")

    @property
    def is_waiting(self) -> bool:
        """Whether a task waits on this stream (the connection wakes it)."""
        return self._reader_parked is not None or self._sender_parked is not None

    def _wake_all(self) -> None:
        self._wake_reader()
        self._wake_sender()

    # (_park_reader and _park_sender are twins on purpose: a
    # ``_core.waiters.Waiters`` for each, as the connection's writer has,
    # would be two more objects kept by every idle WebSocket, and one
    # helper taking the slot's name would read and write it by name on
    # every message's path.)

    async def _park_reader(self) -> None:
        task = trio.lowlevel.current_task()
        self._reader_parked = task

        def abort(_: object) -> trio.lowlevel.Abort:
            if self._reader_parked is task:
                self._reader_parked = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    async def _park_sender(self) -> None:
        task = trio.lowlevel.current_task()
        self._sender_parked = task

        def abort(_: object) -> trio.lowlevel.Abort:
            if self._sender_parked is task:
                self._sender_parked = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def _wake_reader(self) -> None:
        self._news = True
        task = self._reader_parked
        if task is not None:
            self._reader_parked = None
            trio.lowlevel.reschedule(task)
            return
        reader = self._wake_on_news
        if reader is not None:
            self._wake_on_news = None
            reader._wake_reader_task()

    def _wake_sender(self) -> None:
        task = self._sender_parked
        if task is not None:
            self._sender_parked = None
            trio.lowlevel.reschedule(task)
