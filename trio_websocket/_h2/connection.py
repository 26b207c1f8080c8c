"""One HTTP/2 connection carrying WebSockets (RFC 8441): one task reads
and fans frames out to the streams, one task writes.

Rules:
- ``h2`` keeps the protocol state (streams, headers, settings); this
  module does the I/O around it. Every byte the peer sends passes
  ``_h2.frame_guard`` first (floods, GOAWAY), then ``h2``.
- The fast path (``_wire.fast_paths``, on by default) keeps DATA and flow
  control out of ``h2``, which costs more per frame than a whole HTTP/1.1
  echo: the guard delivers the DATA of routed streams and keeps the
  windows (see its rules); this module writes DATA and WINDOW_UPDATE
  frames itself, and tells ``h2`` only where a stream ends. With the fast
  paths off, ``h2`` does all of it; both ways behave alike (the suite runs
  both).
- One reader task, one writer task, both in :meth:`HTTP2Connection.run`.
  Streams never await the transport themselves: they queue frames, so
  that a WebSocket's send cancelled halfway can never leave half a frame
  on a connection other WebSockets share. A send waits while more than
  ``_WRITE_HIGH_WATER`` bytes are unwritten; it queues as many DATA frames
  at once as the windows allow up to there (headers and views of its
  data). On TLS (or any other transport) the writer joins the queue in
  one ``send_all``. On a lean socket stream (plain TCP), bytes leave only
  from the head of the queue, with ``send_now`` (one non-blocking
  ``sendmsg`` of the queued buffers, no join): at once, from the task that
  queued them (write-through: a send, a WINDOW_UPDATE, h2's answers),
  unless the socket was full; what the socket does not take stays queued
  for the writer, which waits for room and sends it, while write-through
  waits too (so order holds, and never two sends at once). A stream's
  send that must wait for room (past ``_WRITE_HIGH_WATER``) waits for it
  and writes itself, in the writer's place, when no one else does (one
  task wakes, not two, as over HTTP/1.1), and hands what is left to the
  writer once it is done or cancelled (``flush``). A
  WINDOW_UPDATE due while the reader takes its turns after a read (see
  below) is queued without a write of its own: the handlers' answers of
  those turns carry it, or the reader writes it when it resumes, before
  it reads again.
  The reader never waits on a stream: a stream's buffer is bounded by its
  receive window. It reads ``receive_size`` at a time, 128 KiB while its
  reads come back full; on a lean socket stream with ``receive_now`` and
  ``wait_readable``, taking its turn (a checkpoint) after each read is
  handed out rather than before, and a second one after a bulk read. It
  waits only when more is unwritten than the streams can have queued:
  answers (PING, SETTINGS) a peer sends for and does not read.
- Bounds, all from :class:`HTTP2Limits`: concurrent streams (our
  SETTINGS_MAX_CONCURRENT_STREAMS, enforced here: one stream too many is
  refused alone), the header list size (SETTINGS_MAX_HEADER_LIST_SIZE,
  and at most 64 CONTINUATION frames, ``h2``'s own limit, and the bytes
  of one header block, ``HTTP2Limits.header_block_bound``, counted by the
  guard), the frame size,
  each stream's receive window, the connection's window (the sum of its
  streams'), and the flood buckets of ``_h2.frame_guard`` (refused streams
  count as resets). A peer past one gets GOAWAY with the matching error
  code and the connection closes.
- Graceful ending (:meth:`HTTP2Connection.go_away`): a GOAWAY that names
  the last stream we will serve is written by this module (``h2`` would
  consider the connection dead after it), streams opened later are
  refused (REFUSED_STREAM), and the connection closes once its last
  stream has. A GOAWAY from the peer is handled the same way: the
  streams it does not refuse go on to their end.
- A connection with no stream for ``idle_timeout`` seconds (the server's
  ``connect_timeout``) is closed with GOAWAY: an HTTP/2 connection that
  carries nothing costs memory, like a handshake that never finishes.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
from collections.abc import Callable

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import trio

from .._core.endpoint import stream_endpoint
from .._core.waiters import Waiters
from .._wire import fast_paths
from .._wire.socket_stream import LeanSocketStream, drop_sent
from .frame_guard import (
    FLOW_CONTROL_ERROR,
    FRAME_HEADER_SIZE,
    MAX_WINDOW,
    SMALL_WINDOW_UPDATE,
    FrameGuard,
    GoAway,
    PeerError,
)
from .headers import Headers
from .limits import HTTP2Limits
from .stream import HTTP2Stream

logger = logging.getLogger("trio_websocket.http2")

#: Error codes (RFC 9113, section 7).
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB

DEFAULT_LIMITS = HTTP2Limits()

#: How long a stream closed cleanly is left to its peer to end before it is
#: reset (see HTTP2Connection._reset_left_streams).
_LEFT_TO_PEER_SECONDS = 1.0

#: A stream's send returns once no more than this is left for the writer
#: to write (a send buffer's worth): beyond it, the send waits.
_WRITE_HIGH_WATER = 256 * 1024

#: How often a server's connection looks for WebSockets whose stream had
#: no news since it last looked, and asks their readers to doze (see
#: _h2.stream): a WebSocket idle for one to two periods gives back its
#: reader task.
_DOZE_CHECK_SECONDS = 1.0

#: How much the reader asks for while the peer sends in bulk: a
#: WebSocket's reader takes up to 128 KiB at once (``_core``'s receive
#: buffer size), so a stream's part of a read reaches it without a join.
_BULK_RECEIVE_SIZE = 128 * 1024

#: A read at least this large is bulk (see _reader): three full DATA
#: frames of 16 KiB (the frame size most peers send, whatever they may).
_BULK_READ = 48 * 1024

#: The largest DATA frame we write, whatever the peer allows: frames of
#: different streams take turns on the wire, and what one stream may queue
#: stays small.
_MAX_DATA_FRAME = 64 * 1024

#: Who waits for the socket's room (HTTP2Connection._room_waiter).
_NO_ONE = 0
_WRITER = 1
_SENDER = 2

#: How long the writer may take to deliver the last frames (GOAWAY) of a
#: connection that is ending, before the transport is closed anyway.
_FAREWELL_SECONDS = 1.0


class HTTP2Connection:
    """The HTTP/2 side of one transport (see the module rules).

    ``on_request`` (a server's) is called, from the reader task, with each
    stream the peer opens and its request headers; it must not block.
    """

    def __init__(
        self,
        transport: trio.abc.Stream,
        *,
        is_client: bool,
        limits: HTTP2Limits = DEFAULT_LIMITS,
        on_request: Callable[[HTTP2Stream, Headers], None] | None = None,
        idle_timeout: float = math.inf,
        already_received: bytes = b"",
    ) -> None:
        self.transport = transport
        self.is_client = is_client
        self._limits = limits
        self._on_request = on_request
        self._idle_timeout = idle_timeout
        self._already_received = already_received
        config = h2.config.H2Configuration(
            client_side=is_client,
            header_encoding=None,
            validate_inbound_headers=True,
            normalize_inbound_headers=True,
            validate_outbound_headers=True,
        )
        self._h2 = h2.connection.H2Connection(config)
        codes = h2.settings.SettingCodes
        initial = {
            codes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
            codes.INITIAL_WINDOW_SIZE: limits.stream_window,
            codes.MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
            codes.MAX_FRAME_SIZE: limits.max_frame_size,
        }
        if is_client:
            initial[codes.ENABLE_PUSH] = 0
        else:
            initial[codes.ENABLE_CONNECT_PROTOCOL] = 1
        self._h2.local_settings = h2.settings.Settings(client=is_client, initial_values=initial)
        # h2 applies its own limits from our settings only once the peer
        # acknowledges them; ours hold from the first byte (a peer may not
        # send more before it has seen them, and a hostile one must not).
        self._h2.max_inbound_frame_size = limits.max_frame_size
        self._h2.decoder.max_header_list_size = limits.max_header_list_size
        self._h2.initiate_connection()
        if not is_client:
            # Announced, and enforced by _request_received, which refuses one
            # stream too many alone; h2 would end the whole connection for
            # it, so its own count is lifted once our SETTINGS are written.
            lifted = {**initial, codes.MAX_CONCURRENT_STREAMS: 2**31 - 1}
            self._h2.local_settings = h2.settings.Settings(client=False, initial_values=lifted)
        extra_window = limits.connection_window - self._h2.inbound_flow_control_window
        if extra_window > 0:
            self._h2.increment_flow_control_window(extra_window)
        self._guard = FrameGuard(
            expect_client_preface=not is_client,
            max_frame_size=limits.max_frame_size,
            max_header_block=limits.header_block_bound,
            limits=limits.floods,
            receive_window=limits.connection_window,
            # (The connection's send window starts at 65,535: RFC 9113.)
            send_window=65_535 if fast_paths.ENABLED else None,
        )
        # The fast path (``_wire.fast_paths``): the guard delivers the DATA
        # of open streams and this module keeps their receive windows, h2
        # never parsing them (see _h2.frame_guard's rules).
        self._route_data = fast_paths.ENABLED
        # Received bytes taken by the streams' readers and not handed back
        # yet (WINDOW_UPDATE), and when to hand them back: half a stream's
        # window (each update is a write of its own when nothing else is
        # going out: a quarter made 1 MiB messages cost 16 writes), a
        # quarter of the connection's (it is the sum of the streams').
        self._unacked = 0
        self._connection_update_at = max(1, limits.connection_window // 4)
        self._stream_update_at = max(1, limits.stream_window // 2)
        self._streams: dict[int, HTTP2Stream] = {}
        # What the writer writes next: frames, and views of the data of
        # DATA frames (see queue_frames).
        self._output: list[bytes | memoryview] = []
        # The writer, when it waits for output (no Event made per write).
        self._writer_waiting = Waiters()
        # On a lean socket stream (plain TCP), bytes leave only from the
        # head of _output, with ``send_now`` (no join: sendmsg of the
        # list), by whichever task queued them while the socket takes
        # them (write-through: no wake of the writer), else by the writer
        # once the socket has room again (_socket_full meanwhile).
        self._lean = transport if type(transport) is LeanSocketStream else None
        self._socket_full = False
        # Who waits for the socket's room, if anyone: the writer, or a
        # stream's send that drains the queue itself (see flush).
        self._room_waiter = _NO_ONE
        # Set while the reader takes its turns after a read (see _reader):
        # a WINDOW_UPDATE queued then waits for the answers of the
        # handlers, written with them, or for the reader's next read.
        self._reader_turning = False
        # Bytes queued for the writer and not written yet: what a
        # stream's send waits on beyond _WRITE_HIGH_WATER, in this lot.
        self._unwritten = 0
        self._written_lot = trio.lowlevel.ParkingLot()
        # More unwritten than the streams' sends can queue (each waits past
        # _WRITE_HIGH_WATER, with one frame at most) is answers the peer
        # does not read: the reader waits then (see _reader).
        self._answers_cap = 2 * (
            _WRITE_HIGH_WATER + limits.max_concurrent_streams * _MAX_DATA_FRAME
        )
        self._settings_event: trio.Event | None = trio.Event()
        self._peer_settings_seen = False
        #: Set once a GOAWAY went either way: no new streams.
        self.going_away = False
        self._last_stream_served: int | None = None
        self._broken: BaseException | None = None
        self._ended = trio.Event()
        #: Set once the connection is ending: the writer stops when it has
        #: written what is queued.
        self._closing = False
        self._close_when_done = False
        self._reader_scope = trio.CancelScope()
        # The scope of run()'s nursery, reader and writer (replaced by run()).
        self._run_scope = trio.CancelScope()
        # Streams handed to on_request and not closed by their user yet:
        # a stream the peer resets leaves h2's count at once, but its
        # handler may run on a while (see _request_received).
        self._unclosed_requests = 0
        self._idle_watch = trio.CancelScope()
        self._idle_wait: trio.CancelScope | None = None
        self._opened_since_idle = False
        # Streams we closed and ended whose peer had not ended them yet
        # (see close_stream), oldest first.
        self._left_to_peer: collections.deque[tuple[float, int]] = collections.deque()
        self._left_streams_waiting: trio.Event | None = None
        self._left_watch = trio.CancelScope()
        self._doze_watch = trio.CancelScope()
        self._all_streams_gone: trio.Event | None = None
        self._endpoints: tuple[object, object] | None = None
        self._queue_output()

    # ------------------------------------------------------------------
    # The connection's tasks

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read and write until the connection ends; then close the
        transport. Never raises for what the peer does."""
        try:
            async with trio.open_nursery() as nursery:
                self._run_scope = nursery.cancel_scope
                nursery.start_soon(self._writer)
                nursery.start_soon(self._reset_left_streams)
                if not self.is_client:
                    nursery.start_soon(self._let_quiet_readers_doze)
                if self._idle_timeout != math.inf:
                    nursery.start_soon(self._close_when_idle)
                task_status.started()
                with self._reader_scope:
                    await self._reader()
                # The reader is done: the writer delivers what is queued
                # (GOAWAY), briefly, then the connection ends.
                self._closing = True
                self._idle_watch.cancel()
                self._left_watch.cancel()
                self._doze_watch.cancel()
                self._output_ready()
                # The writer learns of the closing even when nothing is left
                # to write (or write-through has just written it): it would
                # otherwise wait for the farewell's deadline.
                self._writer_waiting.unpark_all()
                nursery.cancel_scope.deadline = trio.current_time() + _FAREWELL_SECONDS
        finally:
            self._closing = True
            self._end_streams(CANCEL)
            self._ended.set()
            if self._settings_event is not None:
                self._settings_event.set()
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self.transport)

    async def _reader(self) -> None:
        guard = self._guard
        # Reads of the limits' size; while they come back full (a peer
        # sending in bulk), larger ones: fewer reads, fewer wakes of each
        # stream's reader, and a stream's part of a read is what its
        # WebSocket takes at once (see _BULK_RECEIVE_SIZE).
        base_size = self._limits.receive_size
        bulk_size = max(base_size, _BULK_RECEIVE_SIZE)
        receive_size = base_size
        lean = self._lean
        try:
            if self._already_received:
                first, self._already_received = self._already_received, b""
                if not self._take_in(guard.feed(first)):
                    return
            while True:
                while self._unwritten > self._answers_cap:
                    # A peer that sends and does not read (a PING flood that
                    # never takes its ACKs): no more reading until it does.
                    await self._written_lot.park()
                try:
                    if lean is None:
                        received = await self.transport.receive_some(receive_size)
                    else:
                        now = lean.receive_now(receive_size)
                        if now is None:
                            await lean.wait_readable()
                            continue
                        received = now
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    self._broken = exc
                    return
                if not received:
                    return
                receive_size = bulk_size if len(received) == receive_size else base_size
                if not self._take_in(guard.feed(bytes(received))):
                    return
                if lean is not None:
                    # The turn is taken after the read is handed out, not
                    # between the read and that (as receive_some takes it):
                    # the streams' readers and their handlers run first, so
                    # the next read finds more (measured: 5% less CPU per
                    # 64 KiB message echoed, 7% per 1 MiB). After a bulk
                    # read, a second turn: their answers have gone out and
                    # the peer's next data has time to come, so reads are
                    # larger and fewer (10% less CPU per 64 KiB message).
                    self._reader_turning = True
                    try:
                        await trio.lowlevel.checkpoint()
                        if len(received) >= _BULK_READ:
                            await trio.lowlevel.cancel_shielded_checkpoint()
                    finally:
                        self._reader_turning = False
                    if self._output:
                        # (WINDOW_UPDATEs left to ride with an answer.)
                        self._output_ready()
        except PeerError as exc:
            logger.debug("closing an HTTP/2 connection: %s", exc)
            self._close_with(exc.error_code)

    def _take_in(self, data: bytes) -> bool:
        """Hand ``data`` to ``h2`` and handle its events; False when the
        connection must end."""
        guard = self._guard
        if not data and not (
            guard.goaways or guard.padding or guard.stream_errors or guard.send_window_opened
        ):
            # All routed DATA (a read of a bulk transfer): h2 read nothing,
            # so it has nothing to answer either.
            return True
        try:
            events = self._h2.receive_data(data) if data else []
        except h2.exceptions.ProtocolError as exc:
            # h2 has queued its GOAWAY.
            logger.debug("HTTP/2 protocol error from the peer: %s", exc)
            pending = self._h2.data_to_send()
            if _hpack_failed(exc) and pending[-17:-8] == _PLAIN_GOAWAY_HEADER:
                # A header block HPACK cannot decode is a COMPRESSION_ERROR
                # (RFC 9113, section 4.3), which h2 calls PROTOCOL_ERROR.
                last_stream_id = int.from_bytes(pending[-8:-4], "big")
                pending = pending[:-17] + _goaway_frame(last_stream_id, COMPRESSION_ERROR)
            if pending:
                self._output.append(pending)
                self._unwritten += len(pending)
            return False
        for event in events:
            self._handle(event)
        while guard.goaways:
            self._peer_goes_away(guard.goaways.pop(0))
        if guard.padding:
            for stream_id, size in guard.padding:
                self.acknowledge(stream_id, size)
            guard.padding.clear()
        if guard.stream_errors:
            for stream_id, error_code in guard.stream_errors:
                guard.count_reset()  # (a reset the peer made us send)
                stream = self._forget(stream_id)
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self._h2.reset_stream(stream_id, error_code)
                if stream is not None:
                    stream.broken(error_code)
                    self._stream_gone()
            guard.stream_errors.clear()
        if guard.send_window_opened:
            guard.send_window_opened = False
            self._open_all_windows()
        if self._queue_output():  # h2's answers: PING and SETTINGS ACKs, resets
            self._output_ready()
        return True

    async def _writer(self) -> None:
        if self._lean is not None:
            await self._lean_writer(self._lean)
            return
        transport = self.transport
        while True:
            if not self._output:
                if self._closing:
                    return
                await self._writer_waiting.park()
                if self._unwritten <= _WRITE_HIGH_WATER:
                    # Woken: let the tasks woken with us queue theirs first
                    # (a WINDOW_UPDATE for what a reader took, then the
                    # answer its handler sends), so that they leave in one
                    # write. (Past the high water no send queues more: the
                    # write goes at once.)
                    await trio.lowlevel.cancel_shielded_checkpoint()
                continue
            data = b"".join(self._output) if len(self._output) > 1 else self._output[0]
            self._output.clear()
            try:
                await transport.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._broken = exc
                self._end_streams(CANCEL)
                self._reader_scope.cancel()
                return
            self._unwritten -= len(data)
            if self._unwritten <= _WRITE_HIGH_WATER and self._written_lot:
                self._written_lot.unpark_all()

    async def _lean_writer(self, transport: LeanSocketStream) -> None:
        """The writer on a lean socket stream: what write-through left
        (see ``_output_ready``), once the socket has room."""
        output = self._output
        while True:
            if not output or self._room_waiter == _SENDER:
                # (A send draining the queue hands what it leaves back.)
                if self._closing and not output:
                    return
                await self._writer_waiting.park()
                if self._unwritten <= _WRITE_HIGH_WATER and not self._socket_full:
                    # As in _writer: the tasks woken with us first.
                    await trio.lowlevel.cancel_shielded_checkpoint()
                continue
            try:
                if self._socket_full:
                    self._room_waiter = _WRITER
                    try:
                        await transport.wait_send_all_might_not_block()
                    finally:
                        self._room_waiter = _NO_ONE
                    self._socket_full = False
                if output:
                    self._written(transport.send_now(output))
                    self._socket_full = bool(output)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._socket_full = True  # (no more write-through)
                self._broken = exc
                self._end_streams(CANCEL)
                self._reader_scope.cancel()
                return

    def _written(self, size: int) -> None:
        """``size`` bytes from the head of _output were sent: drop them."""
        if not size:
            return
        output = self._output
        self._unwritten -= size
        if not self._unwritten:
            output.clear()
        else:
            drop_sent(output, size)
        if self._unwritten <= _WRITE_HIGH_WATER and self._written_lot:
            self._written_lot.unpark_all()

    def _output_ready(self, *, wake: bool = True) -> None:
        """Write what is queued now if the socket takes it (write-through,
        on a lean socket stream); wake the writer for what is left (unless
        not ``wake``: the caller then sees to it, see flush), except while
        a send drains the queue itself (it hands the rest over when done)."""
        lean = self._lean
        if lean is not None and not self._socket_full and self._output:
            try:
                self._written(lean.send_now(self._output))
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
                # The writer finds out again and ends the connection.
                pass
            else:
                if not self._output:
                    return
                self._socket_full = True
        if wake and self._room_waiter != _SENDER:
            self._writer_waiting.unpark_all()

    async def _reset_left_streams(self) -> None:
        """Reset (NO_ERROR) each stream closed cleanly whose peer has not
        ended it ``_LEFT_TO_PEER_SECONDS`` later: at once, a reset could
        make a proxy drop the last data (nghttpx does); never, and a peer
        that never ends its streams (nghttpx again, towards a backend)
        runs out of them. One ended meanwhile is closed in h2, and its
        reset sends nothing."""
        with self._left_watch:
            while True:
                if not self._left_to_peer:
                    self._left_streams_waiting = trio.Event()
                    await self._left_streams_waiting.wait()
                    self._left_streams_waiting = None
                    continue
                deadline, stream_id = self._left_to_peer[0]
                await trio.sleep_until(deadline)
                if self._left_to_peer and self._left_to_peer[0][1] == stream_id:
                    self._left_to_peer.popleft()
                    self._reset_left(stream_id)
                    if self._queue_output():
                        self._output_ready()

    def _reset_left(self, stream_id: int) -> None:
        with contextlib.suppress(h2.exceptions.ProtocolError):
            stream = self._h2.streams.get(stream_id)
            if stream is not None and not stream.closed:
                self._h2.reset_stream(stream_id, NO_ERROR)

    async def _let_quiet_readers_doze(self) -> None:
        """Every ``_DOZE_CHECK_SECONDS``, ask the readers of quiet streams
        to doze (see ``HTTP2Stream.doze_if_quiet``); stopped with the
        connection's other tasks."""
        with self._doze_watch:
            while True:
                await trio.sleep(_DOZE_CHECK_SECONDS)
                for stream in self._streams.values():
                    stream.doze_if_quiet()

    async def _close_when_idle(self) -> None:
        """Close the connection (GOAWAY) once it has had no stream for the
        idle timeout."""
        with self._idle_watch:
            while True:
                if self._streams:
                    self._all_streams_gone = trio.Event()
                    await self._all_streams_gone.wait()
                    continue
                self._opened_since_idle = False
                with trio.move_on_after(self._idle_timeout) as waiting:
                    self._idle_wait = waiting
                    await trio.sleep_forever()
                self._idle_wait = None
                # (A stream opened meanwhile cancels the wait too, and may
                # be over already: it still was not idle time.)
                if not self._opened_since_idle and not self._streams:
                    logger.debug("closing an HTTP/2 connection idle for %s s", self._idle_timeout)
                    self.go_away()
                    return

    # ------------------------------------------------------------------
    # Events from h2

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            # DATA h2 read (all of it with the fast path off; with it on,
            # only what reached a stream before it was routed).
            stream = self._streams.get(event.stream_id)
            padding = event.flow_controlled_length - len(event.data)
            if padding:
                self._h2.acknowledge_received_data(padding, event.stream_id)
            if stream is None:
                self._h2.acknowledge_received_data(len(event.data), event.stream_id)
            elif event.data:
                if self._route_data and event.data:
                    # h2 counted these in its own windows: handed back
                    # through h2 now, and not again when they are read.
                    self._h2.acknowledge_received_data(len(event.data), event.stream_id)
                    stream.precredited += len(event.data)
                stream.data_received(event.data)
        elif isinstance(event, h2.events.StreamEnded):
            self._guard.routes.pop(event.stream_id, None)
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.remote_ended()
        elif isinstance(event, h2.events.WindowUpdated):
            if event.delta < SMALL_WINDOW_UPDATE:
                self._guard.small_window_update()
            if event.stream_id:
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream.window_opened()
            else:
                self._open_all_windows()
        elif isinstance(event, h2.events.RequestReceived):
            self._request_received(event)
        elif isinstance(event, h2.events.ResponseReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                headers = _plain(event.headers)
                if (
                    self._route_data
                    and event.stream_ended is None
                    and (b":status", b"200") in headers
                    and not _has_content_length(headers)
                ):
                    # Accepted: from now on the WebSocket's DATA is routed
                    # (a refusal's body stays h2's, checked against its
                    # content-length).
                    self._guard.routes[event.stream_id] = stream
                stream.response_received(headers)
        elif isinstance(event, h2.events.StreamReset):
            if not event.remote_reset:
                # h2 reset the stream for an error of the peer's: a reset
                # the peer made us send counts as one of its own
                # ("MadeYouReset", CVE-2025-8671).
                self._guard.count_reset()
            stream = self._forget(event.stream_id)
            if stream is not None:
                stream.broken(int(event.error_code))
                self._stream_gone()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            changed = event.changed_settings.get(h2.settings.SettingCodes.INITIAL_WINDOW_SIZE)
            senders = self._guard.senders
            if changed is not None and senders:
                # RFC 9113, section 6.9.2: every stream's window moves by
                # the change (it may go below zero).
                delta = changed.new_value - (changed.original_value or 65_535)
                for sender in senders.values():
                    sender.send_window += delta
                    if sender.send_window > MAX_WINDOW:
                        raise PeerError(FLOW_CONTROL_ERROR, "a stream's send window overflowed")
            self._peer_settings_seen = True
            if self._settings_event is not None:
                self._settings_event.set()
                self._settings_event = None
            self._open_all_windows()
        elif isinstance(event, h2.events.TrailersReceived):
            # No trailers on a WebSocket's stream (RFC 8441, section 5).
            stream = self._forget(event.stream_id)
            if stream is not None:
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self._h2.reset_stream(event.stream_id, PROTOCOL_ERROR)
                stream.broken(PROTOCOL_ERROR)
                self._stream_gone()
        elif isinstance(event, h2.events.InformationalResponseReceived):
            pass  # a 1xx before the answer: nothing to do
        # PingReceived, SettingsAcknowledged, PriorityUpdated and
        # UnknownFrameReceived need nothing more: h2 answers what needs an
        # answer, and frame_guard counts them.

    def _request_received(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        if self.is_client or self._on_request is None:
            self._refuse(stream_id, PROTOCOL_ERROR)
            return
        last = self._last_stream_served
        if self.going_away and (last is None or stream_id > last):
            self._refuse(stream_id, REFUSED_STREAM)
            return
        if self._unclosed_requests >= self._limits.max_concurrent_streams:
            # Our SETTINGS_MAX_CONCURRENT_STREAMS, enforced here rather than
            # by h2 (which would end the whole connection): one stream too
            # many is refused alone (RFC 9113, section 5.1.2), and so are
            # streams opened and reset faster than their handlers end
            # (rapid reset): no more handlers than the limit, ever.
            self._refuse(stream_id, REFUSED_STREAM)
            return
        self._opened_since_idle = True
        self._unclosed_requests += 1
        headers = _plain(event.headers)
        # (h2 checks a body against its content-length, which it cannot
        # when the body is routed: such a stream's DATA stays h2's.)
        stream = self._register(
            stream_id,
            route=event.stream_ended is None and not _has_content_length(headers),
        )
        if self._idle_wait is not None:
            self._idle_wait.cancel()
        self._on_request(stream, headers)

    def _refuse(self, stream_id: int, error_code: int) -> None:
        """Reset a stream the peer opened and we will not serve. It counts
        as a reset (a peer that makes us refuse streams in a loop floods
        as surely as one that resets them); h2 may have closed it already
        (the peer reset it in the same read)."""
        self._guard.count_reset()
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.reset_stream(stream_id, error_code)

    def _peer_goes_away(self, goaway: GoAway) -> None:
        """A GOAWAY from the peer: streams above its last stream id were
        never handled (they may be retried elsewhere); the others go on."""
        if goaway.error_code != NO_ERROR:
            logger.debug(
                "the HTTP/2 peer closes the connection with error %d: %r",
                goaway.error_code,
                goaway.debug_data,
            )
        self.going_away = True
        for stream_id, stream in list(self._streams.items()):
            local = (stream_id % 2 == 1) == self.is_client
            if (local and stream_id > goaway.last_stream_id) or goaway.error_code != NO_ERROR:
                self._forget(stream_id)
                stream.broken(REFUSED_STREAM if goaway.error_code == NO_ERROR else CANCEL)
        if self._settings_event is not None:
            self._settings_event.set()
            self._settings_event = None

    # ------------------------------------------------------------------
    # For the streams

    def send_room(self, stream_id: int) -> int:
        """How many bytes of DATA the stream may queue now."""
        senders = self._guard.senders
        if senders is not None:
            stream = senders.get(stream_id)
            if stream is None:
                return 0
            window = min(stream.send_window, self._guard.send_window)
        else:
            try:
                window = self._h2.local_flow_control_window(stream_id)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                return 0
        return min(window, self._h2.max_outbound_frame_size, _MAX_DATA_FRAME)

    @property
    def must_drain(self) -> bool:
        """Whether a stream must let the writer catch up before it queues
        more (see ``flush``)."""
        return self._unwritten > _WRITE_HIGH_WATER

    def queue_frames(self, stream: HTTP2Stream, view: memoryview, sent: int, *, end: bool) -> int:
        """Queue DATA frames of ``view[sent:]``, as many as the send windows
        allow until more than ``_WRITE_HIGH_WATER`` bytes are unwritten (one
        frame past it at most); END_STREAM on the frame that ends ``view``
        when ``end``. Returns where the queued part ends (``sent`` when the
        windows are shut). The frames are views of ``view``, written later:
        it must not change (the stream passes ``bytes``)."""
        guard = self._guard
        senders = guard.senders
        total = len(view)
        if senders is None:
            # h2 keeps the windows and writes the frames: one at a time.
            room = self.send_room(stream.stream_id)
            if room <= 0:
                return sent
            piece = view[sent : sent + room]
            sent += len(piece)
            self.queue_data(stream.stream_id, piece, end_stream=end and sent == total)
            return sent
        # The fast path: the frames are written here, their windows kept in
        # the guard; h2 only hears of the end of the stream.
        stream_id = stream.stream_id
        if senders.get(stream_id) is not stream:
            raise trio.BrokenResourceError("the HTTP/2 stream is gone")
        window = min(stream.send_window, guard.send_window)
        if window <= 0:
            return sent
        frame_size = min(self._h2.max_outbound_frame_size, _MAX_DATA_FRAME)
        limit = min(total, sent + window)
        start = sent
        output = self._output
        # The frames that fit before the high water is passed (the last of
        # them passes it), all full but the one that ends at ``limit``.
        frames = (_WRITE_HIGH_WATER - self._unwritten) // (FRAME_HEADER_SIZE + frame_size) + 1
        full_end = min(sent + frames * frame_size, limit - (limit - sent) % frame_size)
        if end and full_end == total:
            full_end -= frame_size  # (the last frame carries END_STREAM)
        if full_end > sent:
            # Header and data views in turn, the headers all the same.
            count = (full_end - sent) // frame_size
            queued: list[bytes | memoryview] = [_data_header(frame_size, 0, stream_id)] * (
                2 * count
            )
            queued[1::2] = [view[at : at + frame_size] for at in range(sent, full_end, frame_size)]
            output += queued
            self._unwritten += count * (FRAME_HEADER_SIZE + frame_size)
            sent = full_end
        after = b""  # (not h2 4.x: its own END_STREAM frame, after ours)
        try:
            if sent < limit and self._unwritten <= _WRITE_HIGH_WATER:
                # The last frame: shorter than the others, or the end.
                flags = 0
                if end and limit == total:
                    self._queue_output()  # (what h2 had queued goes first)
                    after = self._end_with_data(stream_id)
                    flags = 0 if after else _END_STREAM
                output.append(_data_header(limit - sent, flags, stream_id))
                output.append(view[sent:limit])
                self._unwritten += FRAME_HEADER_SIZE + limit - sent
                sent = limit
        finally:
            # (Also for the frames queued before a stream found gone.)
            queued_size = sent - start
            stream.send_window -= queued_size
            guard.send_window -= queued_size
        if after:  # pragma: no cover - not h2 4.x
            output.append(after)
            self._unwritten += len(after)
        return sent

    def _end_with_data(self, stream_id: int) -> bytes:
        """Tell h2 that the stream's sending side ends (the fast path): the
        frame about to be queued carries END_STREAM (b"" returned), or, with
        an h2 that writes something else, what h2 wrote, to follow that
        frame. Raises ``trio.BrokenResourceError`` when the stream is gone."""
        assert self._guard.senders is not None
        try:
            self._h2.end_stream(stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as exc:
            raise trio.BrokenResourceError(f"the HTTP/2 stream is gone: {exc}") from exc
        del self._guard.senders[stream_id]
        # h2 wrote its own empty END_STREAM frame: ours carries the flag on
        # the data instead (see _h2.stream: one frame, not two).
        own = self._h2.data_to_send()
        if own == _empty_end_stream(stream_id):
            return b""
        return own  # pragma: no cover - not h2 4.x

    def queue_data(self, stream_id: int, data: memoryview, *, end_stream: bool) -> None:
        """Queue one DATA frame through h2 (the fast paths off; ``send_room``
        bytes at most), the last of the stream's when ``end_stream``."""
        try:
            self._h2.send_data(stream_id, data.tobytes(), end_stream=end_stream)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as exc:
            raise trio.BrokenResourceError(f"the HTTP/2 stream is gone: {exc}") from exc
        self._queue_output()

    async def flush(self, *, more: bool = False) -> None:
        """Hand what is queued to the writer, and wait while more than
        ``_WRITE_HIGH_WATER`` bytes are still unwritten (the backpressure
        of a stream's ``send_all``, as a socket's send buffer gives it).
        (What ``h2`` writes is queued by each call that makes it write:
        its buffer is not asked here for nothing, once per send.)

        On a lean socket stream, a send that must wait for the socket's
        room waits for it itself and writes, when no one else does (no
        wake of the writer task, as over HTTP/1.1), and hands what is left
        to the writer when it is done; with ``more`` (the caller queues
        more at once and flushes again, or calls ``wake_writer`` if it
        fails) it leaves that to its next flush, and returns without a
        checkpoint when it need not wait (that flush makes one)."""
        lean = self._lean
        # (Over a lean socket the writer is woken below, only if this send
        # leaves it work.)
        self._output_ready(wake=lean is None)
        if self._unwritten <= _WRITE_HIGH_WATER:
            if more:
                return  # (not a checkpoint: the caller's next flush is one)
            if lean is not None and self._output:
                self._writer_waiting.unpark_all()
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        may_drain = lean is not None
        while self._unwritten > _WRITE_HIGH_WATER:
            if self._broken is not None or self._ended.is_set():
                raise trio.BrokenResourceError("the HTTP/2 connection is gone")
            if (
                may_drain
                and self._socket_full
                and self._room_waiter == _NO_ONE
                and not self._closing
            ):
                assert lean is not None
                # (After a failure, the writer's: the loop looks again
                # whether the connection is gone before it waits.)
                may_drain = await self._drain(lean)
                continue
            if lean is not None and self._room_waiter == _NO_ONE:
                self._writer_waiting.unpark_all()
            await self._written_lot.park()
        if lean is not None and self._output and not more and self._room_waiter == _NO_ONE:
            self._writer_waiting.unpark_all()

    async def _drain(self, lean: LeanSocketStream) -> bool:
        """For a send in ``flush``: wait for the socket's room and write
        what it takes from the head of the queue, in the writer's place
        (which keeps out meanwhile: order holds). False when the socket
        failed: the writer, woken, finds out and ends the connection."""
        self._room_waiter = _SENDER
        done = False
        try:
            await lean.wait_send_all_might_not_block()
            self._socket_full = False
            if self._output:
                self._written(lean.send_now(self._output))
                self._socket_full = bool(self._output)
            done = True
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
            pass
        finally:
            self._room_waiter = _NO_ONE
            if not done:
                # (Cancelled, or the socket failed: the writer takes over.)
                self._writer_waiting.unpark_all()
        return done

    def wake_writer(self) -> None:
        self._queue_output()
        self._output_ready()

    def acknowledge(self, stream_id: int, size: int) -> None:
        """The stream's reader took ``size`` bytes (or a closed stream
        dropped them): hand the window back."""
        if not size:
            return
        if not self._route_data:
            self._h2.acknowledge_received_data(size, stream_id)
            if self._queue_output():  # a WINDOW_UPDATE is due
                self._output_ready()
            return
        stream = self._streams.get(stream_id)
        if stream is not None and stream.precredited:
            taken = min(stream.precredited, size)
            stream.precredited -= taken
            size -= taken
            if not size:
                return
        updates: list[bytes] = []
        self._unacked += size
        if self._unacked >= self._connection_update_at:
            updates.append(_window_update_frame(0, self._unacked))
            self._guard.receive_window += self._unacked
            self._unacked = 0
        if stream is not None and stream_id in self._guard.routes:
            stream.unacked += size
            if stream.unacked >= self._stream_update_at:
                updates.append(_window_update_frame(stream_id, stream.unacked))
                stream.receive_window += stream.unacked
                stream.unacked = 0
        if updates:
            self._queue_output()
            self._output.extend(updates)
            self._unwritten += sum(map(len, updates))
            if not self._reader_turning:
                self._output_ready()
            # (Else the reader is taking its turns after a read: this
            # update goes out with the answers the handlers write then,
            # or when the reader resumes, before it reads again.)

    def end_stream(self, stream_id: int) -> None:
        if self._guard.senders is not None:
            self._guard.senders.pop(stream_id, None)
        try:
            self._h2.end_stream(stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        self.wake_writer()

    def close_stream(
        self, stream_id: int, *, end: bool, reset: bool, aborting: bool, peer_open: bool
    ) -> None:
        """A stream's user closed it (see ``_h2.stream`` for what goes out;
        ``peer_open``: the peer has not ended its side)."""
        if stream_id % 2 == 1 and not self.is_client:
            self._unclosed_requests -= 1
        if self._guard.senders is not None:
            self._guard.senders.pop(stream_id, None)
        self._guard.routes.pop(stream_id, None)
        if end:
            try:
                self._h2.end_stream(stream_id)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                reset = False
        if reset:
            try:
                self._h2.reset_stream(stream_id, CANCEL if aborting else NO_ERROR)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                pass
        elif peer_open:
            # Left to the peer to end for a moment (see _reset_left_streams);
            # past the stream limit's worth of such streams, the oldest is
            # reset at once.
            self._left_to_peer.append((trio.current_time() + _LEFT_TO_PEER_SECONDS, stream_id))
            if len(self._left_to_peer) > self._limits.max_concurrent_streams:
                self._reset_left(self._left_to_peer.popleft()[1])
            if self._left_streams_waiting is not None:
                self._left_streams_waiting.set()
        if self._streams.pop(stream_id, None) is not None:
            self._stream_gone()
        self.wake_writer()

    def _register(self, stream_id: int, *, route: bool) -> HTTP2Stream:
        """A new stream, open both ways: with the fast path, its send
        window is the guard's, and its DATA too when ``route``."""
        stream = HTTP2Stream(self, stream_id, self._limits.stream_window)
        self._streams[stream_id] = stream
        guard = self._guard
        if guard.senders is not None:
            stream.send_window = self._h2.remote_settings.initial_window_size
            guard.senders[stream_id] = stream
        if route and self._route_data:
            guard.routes[stream_id] = stream
        return stream

    def _forget(self, stream_id: int) -> HTTP2Stream | None:
        """Drop a stream that is over (reset, or broken by the peer)."""
        guard = self._guard
        guard.routes.pop(stream_id, None)
        if guard.senders is not None:
            guard.senders.pop(stream_id, None)
        return self._streams.pop(stream_id, None)

    def _stream_gone(self) -> None:
        if not self._streams and self._all_streams_gone is not None:
            self._all_streams_gone.set()
            self._all_streams_gone = None
        if (self.going_away or self._close_when_done) and not self._streams:
            # The last stream after a GOAWAY: end the connection.
            self._close_with(NO_ERROR)

    # ------------------------------------------------------------------
    # Opening streams (a client's) and ending the connection

    async def wait_for_settings(self) -> bool:
        """Wait for the peer's first SETTINGS; whether it allows extended
        CONNECT (RFC 8441). False also when the connection ended first."""
        if not self._peer_settings_seen and self._settings_event is not None:
            await self._settings_event.wait()
        if not self._peer_settings_seen or self._ended.is_set():
            return False
        return bool(self._h2.remote_settings.enable_connect_protocol)

    @property
    def can_open_stream(self) -> bool:
        """Whether one more stream may be opened here now."""
        if (
            self.going_away
            or self._close_when_done
            or self._closing
            or self._ended.is_set()
            or self._broken is not None
        ):
            return False
        return self._h2.open_outbound_streams < self._h2.remote_settings.max_concurrent_streams

    def open_stream(self, headers: Headers) -> HTTP2Stream:
        """Send a request (without END_STREAM) on a new stream; raises
        ``trio.BrokenResourceError`` when the connection cannot take one."""
        if not self.can_open_stream:
            raise trio.BrokenResourceError("this HTTP/2 connection takes no new stream")
        stream_id = self._h2.get_next_available_stream_id()
        try:
            self._h2.send_headers(stream_id, headers)
        except h2.exceptions.ProtocolError as exc:
            raise trio.BrokenResourceError(f"cannot open an HTTP/2 stream: {exc}") from exc
        stream = self._register(stream_id, route=False)  # (routed once accepted)
        self.wake_writer()
        return stream

    def send_headers(self, stream_id: int, headers: Headers) -> None:
        """Answer a request (a server's); the body, if any, follows as the
        stream's data."""
        try:
            self._h2.send_headers(stream_id, headers)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as exc:
            raise trio.BrokenResourceError(f"the HTTP/2 stream is gone: {exc}") from exc
        self.wake_writer()

    @property
    def endpoints(self) -> tuple[object, object]:
        """The transport's local and remote endpoints, made once: every
        stream's WebSocket has these (as ``local`` and ``remote``)."""
        if self._endpoints is None:
            self._endpoints = (
                stream_endpoint(self.transport, local=True),
                stream_endpoint(self.transport, local=False),
            )
        return self._endpoints

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    async def wait_ended(self) -> None:
        await self._ended.wait()

    def close_when_done(self) -> None:
        """End the connection once it has no stream left (a client's
        connection opened for one WebSocket)."""
        self._close_when_done = True
        if not self._streams:
            self._close_with(NO_ERROR)

    def go_away(self) -> None:
        """Stop taking new streams (GOAWAY NO_ERROR); the open ones go on,
        and the connection ends after the last (see the module rules)."""
        if self.going_away:
            if not self._streams:
                self._close_with(NO_ERROR)
            return
        self.going_away = True
        self._last_stream_served = self._h2.highest_inbound_stream_id
        self._queue_output()
        goaway = _goaway_frame(self._last_stream_served, NO_ERROR)
        self._output.append(goaway)
        self._unwritten += len(goaway)
        self._output_ready()
        if not self._streams:
            self._close_with(NO_ERROR)

    def _close_with(self, error_code: int) -> None:
        """End the connection now: h2's final GOAWAY, then the writer
        delivers what is queued and the transport closes."""
        try:
            self._h2.close_connection(error_code=error_code)
        except h2.exceptions.ProtocolError:
            pass
        self._queue_output()
        self._end_streams(CANCEL)
        # Stop the reader; run() gives the writer its farewell time.
        self._reader_scope.cancel()

    def abort(self) -> None:
        """End the connection at once, streams and all (a writer stuck on
        a peer that does not read included)."""
        self._end_streams(CANCEL)
        self._closing = True
        self._output.clear()
        self._reader_scope.cancel()
        self._run_scope.cancel()

    # ------------------------------------------------------------------

    def _queue_output(self) -> bool:
        """Move what h2 has to send to the writer's queue; whether there was
        anything."""
        data = self._h2.data_to_send()
        if data:
            self._output.append(data)
            self._unwritten += len(data)
            return True
        return False

    def _open_all_windows(self) -> None:
        for stream in self._streams.values():
            stream.window_opened()

    def _end_streams(self, error_code: int) -> None:
        streams = list(self._streams.values())
        self._streams.clear()
        self._guard.routes.clear()
        if self._guard.senders is not None:
            self._guard.senders.clear()
        for stream in streams:
            stream.broken(error_code)
        self._written_lot.unpark_all()


def _has_content_length(headers: Headers) -> bool:
    return any(name == b"content-length" for name, _ in headers)


def _plain(headers: object) -> Headers:
    """h2's header fields as plain ``(bytes, bytes)`` pairs: its own tuple
    subclass costs 64 bytes more per field, kept by every request."""
    return [(bytes(name), bytes(value)) for name, value in headers]  # type: ignore[attr-defined]


_END_STREAM = 0x1


def _data_header(size: int, flags: int, stream_id: int) -> bytes:
    """A DATA frame's header (the fast path writes its frames itself)."""
    return size.to_bytes(3, "big") + bytes((0, flags)) + stream_id.to_bytes(4, "big")


def _empty_end_stream(stream_id: int) -> bytes:
    return _data_header(0, _END_STREAM, stream_id)


def _window_update_frame(stream_id: int, increment: int) -> bytes:
    """A WINDOW_UPDATE frame, written without h2 (the fast path's windows
    are ours: see _h2.frame_guard)."""
    return (
        b"\x00\x00\x04\x08\x00"
        + stream_id.to_bytes(4, "big")
        + (increment & 0x7FFFFFFF).to_bytes(4, "big")
    )


#: The header of a GOAWAY frame without debug data, as h2 writes it last
#: when it ends a connection.
_PLAIN_GOAWAY_HEADER = b"\x00\x00\x08\x07\x00\x00\x00\x00\x00"


def _hpack_failed(exc: BaseException) -> bool:
    """Whether h2 failed on a header block HPACK could not decode (not
    one that was merely too large)."""
    cause = exc.__cause__
    return (
        cause is not None
        and type(cause).__module__.startswith("hpack")
        and not isinstance(exc, h2.exceptions.DenialOfServiceError)
    )


def _goaway_frame(last_stream_id: int, error_code: int) -> bytes:
    """A GOAWAY frame, written without telling ``h2`` (see the module rules)."""
    payload = (last_stream_id & 0x7FFFFFFF).to_bytes(4, "big") + error_code.to_bytes(4, "big")
    return len(payload).to_bytes(3, "big") + b"\x07\x00" + b"\x00\x00\x00\x00" + payload
