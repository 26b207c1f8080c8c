"""A connection's life cycle: one explicit state, and the one function
every close path goes through.

The states, and how a connection moves between them (a move only ever goes
down this table, never back up; ``_advance`` enforces it):

=============  =====  ==================================================  =========================
state          rank   what holds                                          entered by
=============  =====  ==================================================  =========================
``OPEN``       0      messages flow both ways; ``closed`` is None         the opening handshake
``FAILING``    1      the peer broke the protocol (a bad frame, a         ``_fail``
                      message too big): its data from then on is
                      dropped, what came before stays readable; our
                      close frame waits for the application to catch
                      up (or ``PROTOCOL_ERROR_GRACE``); ``closed`` is
                      still None and sends still go out
``CLOSING``    1      a close frame went out or came in (``close_sent``,  ``_close`` from OPEN
                      ``close_received`` say which); ``closed`` is set;
                      the peer's frames are still read
``FAILED``     2      closing, and the peer's data is dropped: a          ``_close`` from FAILING;
                      failure was enacted, or the peer broke the          ``_fail`` when closing
                      protocol while we were closing
``READ_DONE``  3      no more frames are parsed (the closing handshake    ``_reading_done``
                      is over, or the parser gave up): a server closes
                      the stream now; a client reads and drops until
                      the server closes TCP, within ``CLOSE_GRACE``
                      (RFC 6455 7.1.1)
``ABORTED``    4      given up: the reader is cancelled and drops the     ``_abort``
                      stream without a closing handshake
``ENDED``      5      the reader closed the stream; nothing runs          the reader, as it ends
=============  =====  ==================================================  =========================

Rules:
- ``_close`` is the one way into closing. It sets the close reason
  (``closed``) once, by whichever comes first: our close, the peer's
  close, a protocol failure, a late pong, a message cut short, the loss of
  the stream. One correction is allowed (``_give_up_closing``): a close of
  ours that gave up before its frame went out, with no frame from the peer
  either, becomes 1006, so ``closed`` never claims a close nobody saw.
- Closing wakes everything that waits on an open connection: pings in
  flight, the keepalive, senders waiting for the message turn or for the
  next piece of their source; and closes the inbox (unless the application
  asked to keep receiving).
- The close frame we sent and the one we received are kept apart
  (``close_sent``, ``close_received``); ``closed`` is whichever reason
  came first, as in 0.12.2.
- Closing is bounded: ``aclose`` waits at most the entry point's
  ``disconnect_timeout`` (``close_timeout``), then aborts. Its body,
  ``_close_and_wait``, has no scope of its own: ``aclose`` gives it one, and
  a server's closing after a handler runs it in the connection's scope,
  whose deadline is then that same ``disconnect_timeout``.
- A protocol failure takes effect (close reason set, close frame sent) only
  once the application has taken the messages delivered before it and
  waits for more, or after ``PROTOCOL_ERROR_GRACE``: a reply to a message
  that arrived in the same read as the fault still goes out before the
  close frame.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import cast

import trio
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection

from .close import ABNORMAL_CLOSURE, INTERNAL_ERROR, CloseReason
from .config import CLOSE_GRACE, PROTOCOL_ERROR_GRACE, ConnectionOptions
from .errors import ConnectionClosed
from .log import Connection as LoggedConnection
from .log import log_close_abandoned, log_closed, logger
from .messages import MessageAssembler
from .pings import PingTracker
from .sending import ConnectionSending

#: Close codes an endpoint must never put in a close frame (RFC 6455 7.4.1);
#: like wsproto, we send 1000 in their place.
LOCAL_ONLY_CODES = frozenset({1004, 1005, 1006, 1015})

KEEPALIVE_TIMEOUT_REASON = "keepalive ping timeout"
CUT_SHORT_REASON = "message cut short by the sender"

#: The wsproto states in which our close frame may still be serialized:
#: open, or the peer's close frame received and not yet echoed.
_MAY_SEND_CLOSE = (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING)


class State(enum.Enum):
    """A connection's life cycle (see the module's table)."""

    # The tens are the rank: FAILING and CLOSING share one (neither
    # follows the other).
    OPEN = 0
    FAILING = 10
    CLOSING = 11
    FAILED = 20
    READ_DONE = 30
    ABORTED = 40
    ENDED = 50

    def __init__(self, value: int) -> None:
        # Each member's rank, read as a plain attribute: ``value`` is a
        # descriptor (two Python calls), and so is an enum member's hash (a
        # dict keyed by members costs two more per lookup); ``_advance``
        # compares two ranks at every move.
        self._rank = value // 10

    @property
    def rank(self) -> int:
        return self._rank

OPEN = State.OPEN
FAILING = State.FAILING
CLOSING = State.CLOSING
FAILED = State.FAILED
READ_DONE = State.READ_DONE
ABORTED = State.ABORTED
ENDED = State.ENDED


class ConnectionLifecycle(ConnectionSending):
    """The life cycle of :class:`WebSocketConnection` (see the module
    rules). A base class only (see ``ConnectionSending``)."""

    __slots__ = (
        "_close_reason",
        "_close_received",
        "_failure",
        "_failure_ends_reading",
        "_finished",
        "_keepalive_scope",
        "_reader_dozing",
        "_reader_scope",
        "_state",
    )

    _state: State
    _options: ConnectionOptions
    _close_received: CloseReason | None
    # A protocol failure waiting for the application (state FAILING), and
    # whether the parser is finished with it.
    _failure: CloseReason | None
    _failure_ends_reading: bool
    _assembler: MessageAssembler
    _pings: PingTracker
    _keepalive_scope: trio.CancelScope | None
    _reader_scope: trio.CancelScope
    # Whether the reader left its task to doze (``_core.receiving``): any
    # move down the table starts it again, with ``_wake_reader_task``
    # (``ConnectionReceiving``'s).
    _reader_dozing: bool
    # Who reads the stream: nonzero while the reader stands aside (see
    # ``_core.receiving``, "Reading through"); any move down the table
    # gives the reader its turn back, with ``_wake_reader_task`` too.
    _read_turn: int
    _wake_reader_task: Callable[[], None]
    # Made only for a task that waits for the reader to end.
    _finished: trio.Event | None

    def _init_lifecycle(self) -> None:
        self._state = OPEN
        self._close_reason = None
        self._close_received = None
        self._failure = None
        self._failure_ends_reading = False
        self._keepalive_scope = None
        self._reader_scope = trio.CancelScope()
        self._reader_dozing = False
        self._finished = None

    def _loggable(self) -> LoggedConnection:
        # (The connection class, the only subclass, has what a log record
        # needs: its public properties.)
        return cast("LoggedConnection", self)

    def _advance(self, state: State) -> bool:
        """Move to ``state`` if it is further down the table; returns
        whether it moved."""
        if state._rank > self._state._rank:
            self._state = state
            if self._reader_dozing or self._read_turn:
                # (Only an open connection's reader dozes or stands aside:
                # every later state has work for it, or a deadline it
                # keeps.)
                self._wake_reader_task()
            return True
        return False

    def _delivers(self) -> bool:
        """Whether the peer's data is still delivered (not dropped)."""
        state = self._state
        return state is OPEN or state is CLOSING

    # ------------------------------------------------------------------
    # The one way into closing

    def _close(
        self,
        reason: CloseReason,
        *,
        frame: CloseReason | None = None,
        keep_receiving: bool = False,
    ) -> None:
        """Close for ``reason`` (see the module rules); a no-op for the
        reason if the connection is closing already. With ``frame``, our
        close frame with that code and reason is queued, if wsproto still
        lets us send one (whether or not this call set the reason: the
        echo of a peer's close frame goes out even while our own close
        waits for the write turn)."""
        if self._close_reason is None:
            self._close_reason = reason
            self._advance(FAILED if self._state is FAILING else CLOSING)
            if not keep_receiving:  # else the inbox closes once reading is done
                self._inbox.close(discard=False)
            self._pings.close()
            if self._keepalive_scope is not None:
                self._keepalive_scope.cancel()
            self._release_message_senders()
            if logger.isEnabledFor(logging.INFO):  # (the record's arguments cost calls)
                log_closed(
                    self._loggable(),
                    reason,
                    by_peer=self._proto.state is ConnectionState.REMOTE_CLOSING,
                )
        if frame is not None and self._proto.state in _MAY_SEND_CLOSE:
            self._queue_close_frame(frame.code, frame.reason)

    def _abort(self) -> None:
        """Give up on the connection now: the reader closes the stream."""
        self._close(CloseReason(ABNORMAL_CLOSURE, None))
        self._advance(ABORTED)
        self._reader_scope.cancel()

    def _reading_done(self) -> None:
        """No more frames will be parsed: the server closes now, the client
        waits (briefly) for the server to close TCP first, per RFC 6455."""
        inbox = self._inbox
        if not inbox.closed:  # (usually closed with the close reason, just before)
            inbox.close(discard=False)
        if self._advance(READ_DONE) and self._is_client:
            self._reader_scope.deadline = min(
                self._reader_scope.deadline, trio.current_time() + CLOSE_GRACE
            )

    def _reading_stopped(self) -> bool:
        """Whether the reader reads no more (a server once reading is done;
        a client reads on, dropping, until EOF: the server closes TCP
        first, RFC 6455 section 7.1.1, to keep TIME_WAIT on its side; over
        an HTTP/2 stream, which has no TIME_WAIT and which some servers
        never end, a client stops too)."""
        return self._state is READ_DONE and (not self._is_client or self._ends_with_close)

    # ------------------------------------------------------------------
    # The peer at fault

    def _fail(self, code: int, reason: str, *, parser_done: bool) -> None:
        """We found the peer at fault: stop delivering its data now (what
        was delivered stays readable) and close with ``code`` once the
        application has caught up (see the module rules)."""
        self._assembler.reset()
        if self._close_reason is None:
            self._advance(FAILING)
            if self._failure is None:
                self._failure = CloseReason(code, reason)
            self._failure_ends_reading = self._failure_ends_reading or parser_done
            if not self._inbox:
                self._enact_failure()
        else:
            self._advance(FAILED)
            if parser_done:
                self._reading_done()

    def _enact_failure(self) -> None:
        """Close for the pending protocol failure, if there is one."""
        failure = self._failure
        if failure is None:
            return
        self._failure = None
        self._close(failure, frame=failure)
        self._advance(FAILED)
        if self._failure_ends_reading:
            self._reading_done()

    async def _wait_then_enact_failure(self) -> None:
        with trio.move_on_after(PROTOCOL_ERROR_GRACE):
            await self._inbox.wait_until_consumed()
        self._enact_failure()

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
                self._close(failure, frame=failure)
            else:
                # The peer started the closing handshake: echo its code and
                # reason (as 0.12.2 did; browsers show the echoed reason).
                self._close(received, frame=received)
            self._reading_done()
        elif state is ConnectionState.CLOSED:
            # The answer to our close frame.
            received = CloseReason(event.code, event.reason or None)
            self._close_received = received
            self._close(received)
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
    # Closes of our own that cannot wait

    def _cut_message_short(self) -> None:
        """A message was started but cannot be finished: close with 1011, a
        control frame the peer reads in place of the missing rest."""
        if self._close_reason is not None:
            return  # already closed or aborted
        reason = CloseReason(INTERNAL_ERROR, CUT_SHORT_REASON)
        self._close(reason, frame=reason)
        self._flush_soon(or_abort=True)

    async def _fail_for_keepalive(self) -> None:
        """The pong is late: fail the connection (RFC 6455 section 7.1.7).
        Send a 1011 close frame if the stream takes it within
        ``CLOSE_GRACE``, then drop the stream without waiting for the
        peer's answer. Unread messages stay readable."""
        if self._close_reason is not None:
            return
        reason = CloseReason(INTERNAL_ERROR, KEEPALIVE_TIMEOUT_REASON)
        # A write in progress is stuck behind a peer that does not read
        # (our ping waited there): no close frame would get out.
        stuck = self._writing
        self._close(reason, frame=None if stuck else reason)
        try:
            if not stuck and self._outbox:
                with trio.move_on_after(CLOSE_GRACE):
                    await self._flush_outbox()
        except ConnectionClosed:
            pass
        finally:
            self._abort()

    def _give_up_closing(self, ours: bool, why: str) -> None:
        """Closing did not finish: drop the connection. If it was our close
        and its frame never went out (nor did the peer's come in), the
        close reason says so instead of claiming the code we meant to
        send."""
        if self._state is not ENDED:
            log_close_abandoned(self._loggable(), why, frame_sent=self._close_sent is not None)
        if (
            ours
            and self._close_sent is None
            and self._close_received is None
            and self._close_reason is not None
            and self._close_reason.code != ABNORMAL_CLOSURE
        ):
            self._close_reason = CloseReason(ABNORMAL_CLOSURE, f"close frame not sent ({why})")
        self._abort()

    async def _close_and_wait(
        self,
        code: int,
        reason: str | None,
        *,
        keep_receiving: bool = False,
        checkpoint_if_ended: bool = True,
    ) -> None:
        """``aclose(code, reason)`` without a time bound of its own: the
        caller's cancel scope bounds it (``aclose``'s, with
        ``close_timeout``; a server's after its handler, with
        ``disconnect_timeout``: one cancel scope less per connection). A
        deadline that passes, or a cancellation, gives the closing up (see
        :meth:`_give_up_closing`) and propagates. Without
        ``checkpoint_if_ended`` (the server's closing after a handler, not
        a public call), a connection over already returns at once."""
        if not keep_receiving:
            self._inbox.close(discard=True)
        self._enact_failure()
        ours = self._close_reason is None
        if not ours and self._state is ENDED:
            if checkpoint_if_ended:
                await trio.lowlevel.checkpoint()
            return
        try:
            if ours:
                self._close(CloseReason(code, reason), keep_receiving=keep_receiving)
                if code in LOCAL_ONLY_CODES:
                    code = 1000
                try:
                    await self._send_frame(self._queue_close_frame, code, reason)
                except ConnectionClosed:
                    pass
            await self._wait_reader_ended()
        except BaseException:
            late = trio.current_effective_deadline() <= trio.current_time()
            self._give_up_closing(ours, "timed out" if late else "cancelled")
            raise

    async def _wait_reader_ended(self) -> None:
        if self._reader_dozing or self._read_turn:
            self._wake_reader_task()
        if self._state is ENDED:
            await trio.lowlevel.checkpoint()
            return
        if self._finished is None:
            self._finished = trio.Event()
        await self._finished.wait()
