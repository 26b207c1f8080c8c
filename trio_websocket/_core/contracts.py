"""What other modules may ask of a ``WebSocketConnection`` beyond its public
API: each need as a small typed Protocol.

Rules:
- A module that drives a connection from outside (starts it, ends it,
  feeds it prebuilt frames) names the members it uses here and reaches
  them only through a variable typed as the Protocol, so mypy checks that
  ``_core.connection`` still provides each one. The members keep their
  leading underscore: they are not the users' API (and stay out of the
  documentation); the Protocol is what makes them a contract.
  ``tests/test_layering.py`` refuses any other cross-module use of an
  underscore name.
- ``_core.keepalive.KeepaliveHost`` is the keepalive's contract, kept
  beside the loop it serves.
- Declarations only: no trio at run time, no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import trio


class OpeningConnection(Protocol):
    """What the modules that open a connection (``_client.client`` after
    the server's 101, ``_server.request`` in ``accept``) need: start it,
    or record that it never opened."""

    def _start(self, nursery: trio.Nursery) -> None:
        """Start the reader (and the keepalive, if configured) in
        ``nursery``; the connection is open from here on."""

    def _opening_failed(self) -> None:
        """The opening could not be finished after the connection was
        built (the 101 was not written, or the reader could not be
        started): closed with 1006, no frame sent or received, no reader."""


class ServedConnection(Protocol):
    """What the server's request (``_server.request``) needs to end an
    accepted connection after its handler: whether there is a reader to
    stop, closing, and stopping it."""

    @property
    def _reader_started(self) -> bool:
        """Whether :meth:`OpeningConnection._start` ran (``accept`` may
        have failed, or be writing the 101 right now)."""

    @property
    def _reader_ended(self) -> bool:
        """Whether the reader has closed the stream and ended."""

    def _abort(self) -> None:
        """Give up on the connection now; the reader closes the stream."""

    async def _close_and_wait(
        self,
        code: int,
        reason: str | None,
        *,
        keep_receiving: bool = False,
        checkpoint_if_ended: bool = True,
    ) -> None:
        """``aclose(code, reason)`` bounded by the caller's cancel scope
        instead of a scope of its own (without ``checkpoint_if_ended``, no
        schedule point for a connection already over)."""

    async def _wait_reader_ended(self) -> None:
        """Return once the reader has ended."""


class PrebuiltFrameSink(Protocol):
    """What the hub's fan-out (``_extras.hub``) needs: send one message
    as a frame serialized once for many connections."""

    async def _send_prebuilt_frame(self, frame: bytes, message: str | bytes) -> None:
        """Send ``message`` as ``frame`` (its unmasked, uncompressed data
        frame); a connection that cannot share frames (a client, one with
        an extension) sends ``message`` the usual way."""


class EndingStream(Protocol):
    """A stream whose sending side can end with a write (an HTTP/2 stream
    of RFC 8441: END_STREAM on the DATA frame). ``_core.sending`` ends it
    with the write that carries a close frame answering the peer's, or a
    client's close: a peer never gets a frame for a stream it is done
    with. A client over one stops reading once the closing handshake is
    over (no TCP TIME_WAIT to leave to the server)."""

    async def send_all_and_end(self, data: bytes | bytearray | memoryview) -> None:
        """``send_all(data)``, then no more: the peer sees the end of the
        stream with the last of ``data``."""


class DozingReader(Protocol):
    """What a :class:`DozingStream` wakes: the connection whose reader
    dozes (the object, not a bound method: 64 bytes less per idle
    WebSocket)."""

    def _wake_reader_task(self) -> None:
        """Start the reader again; a no-op once it runs."""


class DozingStream(Protocol):
    """A stream a server's reader may leave while there is nothing to read
    (an HTTP/2 stream of RFC 8441: many WebSockets share one connection,
    and an idle WebSocket's parked reader task, with its frames and cancel
    scope, weighs more than the rest of it). The reader ends its task
    instead of waiting, and starts again when the stream wakes ``reader``:
    once, from another task, without blocking, with the stream's first news
    (data, its end, a reset, a close) that no task waiting in a receive
    takes. A connection over one receives no bytes with its handshake
    (there is nothing to parse before the first read). Its receives lose
    no data when cancelled, so a receiver may read through it in the
    reader's place (``_core.receiving``, "Reading through")."""

    async def receive_or_doze(self, max_bytes: int, reader: DozingReader) -> bytes | None:
        """``receive_some(max_bytes)``; or None when the stream asks the
        reader to doze (nothing is buffered): waking ``reader`` is then
        due. (The task that waits may be a receiver reading through for
        ``reader``: it passes the request on.)"""

    def wake_on_news(self, reader: DozingReader) -> bool:
        """Doze from the start: waking ``reader`` is due with the first
        news; False (nothing due) when there is news already."""

    def forget_wake(self) -> None:
        """The reader was woken otherwise (its connection closes): no call
        is due any more."""
