"""The server side: the server that listens, runs the handshake phase and
the handlers, and shuts down gracefully.

Rules:
- Builds on ``_server.request``, ``_core.connection`` and the pure modules; never
  imports ``_client.client``.
- Every connection is handled inside the server's nursery (or the user's
  ``handler_nursery``), so it is closed when its handler returns or raises:
  with 1000 after a return, 1011 after an exception. A request the handler
  neither accepted nor rejected gets 403 (returned) or 500 (raised).
- Before any handler runs, the *handshake phase* (bounded by
  ``connect_timeout``, so slow senders are dropped) reads the request head
  within its :class:`RequestLimits` (414/431), then in this order: the
  ``process_request`` hook may answer it; a request that is not a WebSocket
  upgrade gets ``426`` (a broken upgrade ``400``, garbage ``400`` as soon
  as its first bytes show it can never be a request); a
  disallowed ``Origin`` gets ``403``; a full server (``max_connections``)
  or one shutting down gets ``503``. None of these reach the handler, and
  every plain HTTP answer ends with ``Connection: close``.
- An exception escaping a handler (or the hook) propagates out of
  ``serve_websocket``, as with ``trio.serve_tcp``: errors never pass
  silently. The one exception: ``ConnectionClosed`` escaping a handler
  (at any time, ``accept()`` included; alone or in a group of nothing
  else, as a nursery in the handler raises it) is the peer's doing, not
  the server's: it is logged at DEBUG and never propagates, so that no
  peer can stop the server. ``KeyboardInterrupt`` and ``SystemExit`` leave
  ``run`` (and ``serve_websocket``) as themselves, never in a group.
- Graceful shutdown runs in the server's own ``run`` task, so it goes on
  even if the task that asked for it is cancelled; every waiting caller of
  :meth:`WebSocketServer.aclose` gets the same report. Handshakes in
  progress get 503, open connections a close frame, then handlers have
  until the deadline before they are cancelled (through their
  connection's cancel scope).
- One task and one cancel scope per connection, no nursery of its own:
  the connection's reader runs in the handlers' nursery, and the
  connection's task ends only after its reader has (an idle connection is
  ~1 KiB smaller this way). The scope's deadline is ``connect_timeout``
  during the handshake phase, none while the handler runs, and
  ``disconnect_timeout`` for the closing after it.
- A connection's task ends by having its stream, closed by then, give
  back the methods ``_wire.tls_stream`` gave it (a reference cycle): a
  finished connection is freed by reference counting.
- An HTTP/2 connection is one such task too, with a nursery of its own
  for its WebSockets: each runs its handshake phase in a scope of its
  own (none when there is nothing to wait for: its request has arrived
  whole, and without a ``process_request`` hook an accepted one needs no
  await before its handler), its handler under the nursery's one scope
  (what a forced shutdown cancels: many idle WebSockets share it), and
  the closing after it in a scope of its own. A handler's error leaves
  that nursery as itself.
- Reading and answering one request is ``_server.request``'s (see its rules).
- The options are validated once, into one ``_server.options.ServerOptions``
  (by :func:`serve_websocket` before it opens a listener), and the server
  reads them from that record.
"""

from __future__ import annotations

import errno
import inspect
import logging
import math
import ssl
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import trio

from .._core.close import GOING_AWAY, CloseReason
from .._core.compression import DeflateConfig
from .._core.config import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DISCONNECT_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MESSAGE_QUEUE_SIZE,
    DEFAULT_RECEIVE_BUFFER_SIZE,
    check_timeout,
)
from .._core.connection import WebSocketConnection
from .._core.endpoint import Endpoint, listener_endpoint
from .._core.errors import ConnectionClosed, HandshakeError, Headers
from .._core.groups import interruption, main_exception, only, reraise_as_is
from .._core.log import log_handler_error
from .._h2 import alpn
from .._h2.limits import HTTP2Limits
from .._h2.stream import HTTP2Stream
from .._wire.socket_stream import acceptor_for
from .._wire.tls_stream import forget_own_methods
from .http import (
    FORBIDDEN_ORIGIN,
    NOT_WEBSOCKET_HTTP2,
    SERVICE_UNAVAILABLE,
    SHUTTING_DOWN,
    HTTPRequest,
    HTTPResponse,
    text_response,
)
from .http2 import read_http2_request, start_http2_connection
from .limits import RequestLimits
from .options import DEFAULT_MAX_HANDSHAKES, ProcessRequest, ServerOptions
from .origins import AllowedOrigin
from .request import (
    HTTP2Start,
    NotWebSocket,
    WebSocketRequest,
    hook_view,
    read_request,
    send_http_answer,
)
from .shutdown import ShutdownReport
from .unix import SocketPath, open_unix_listener, remove_socket_file

if sys.version_info < (3, 11):  # pragma: no cover - trio installs the backport
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from .._h2.connection import HTTP2Connection

logger = logging.getLogger("trio_websocket")

Handler = Callable[[WebSocketRequest], Awaitable[object]]

#: accept() errors that mean "out of file descriptors or memory for now":
#: the server waits a little and goes on instead of crashing.
_ACCEPT_CAPACITY_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("EMFILE", "ENFILE", "ENOMEM", "ENOBUFS")
    if hasattr(errno, name)
)
_ACCEPT_RETRY_SECONDS = 0.1

class ServedRequest(Protocol):
    """What serving a request needs from a :class:`WebSocketRequest`
    beyond its public API (here, and in ``trio_websocket.testing``, which
    serves one request the same way). Uses go through a variable of this
    type, so mypy checks ``_server.request`` keeps each member."""

    @property
    def path(self) -> str: ...

    @property
    def _connection(self) -> WebSocketConnection | None:
        """The connection ``accept`` made (started or not), or None."""

    async def _finish(self, handler_failed: bool, disconnect_timeout: float) -> None:
        """After the handler: close what it left open (1000, or 1011 when
        it failed; 403/500 for a request it never decided), within
        ``disconnect_timeout``."""

    @property
    def _over(self) -> bool:
        """Whether the accepted connection is over already, so that
        :meth:`_close_after_handler` cannot wait."""

    async def _close_after_handler(self, handler_failed: bool) -> None:
        """:meth:`_finish` without a time limit of its own (the caller's
        cancel scope bounds it)."""

    async def _end(self) -> None:
        """Last: make sure the connection's reader has ended (abort it if
        need be) and a stream never accepted is closed."""

    def _closing_for_shutdown(
        self, reason: CloseReason
    ) -> tuple[Callable[[], Awaitable[object]] | None, bool]:
        """For a graceful shutdown: what to run to close the request (or
        None), and whether it was refused with 503."""


def _log_handler_closed(request: ServedRequest, closed: Exception) -> None:
    """DEBUG: a handler ended with ``ConnectionClosed`` (or a group of
    them); the close itself is already logged at INFO when it was decided."""
    connection = request._connection
    subject = str(connection) if connection is not None else f"request for {request.path}"
    logger.debug("%s: handler ended by ConnectionClosed (%r)", subject, closed)


#: The name of each connection's task: the one trio would give it, made
#: once rather than formatted for every connection (and kept by each).
_CONNECTION_TASK = f"{__name__}.WebSocketServer._handle_connection"

#: The name of the task of each WebSocket request over HTTP/2: one string
#: for all (trio would format one per task, 115 bytes each, kept by every
#: idle WebSocket).
_HTTP2_REQUEST_TASK = "trio_websocket HTTP/2 request"


class WebSocketServer:
    """Serves WebSocket connections on already-open listeners.

    Most programs use :func:`serve_websocket`, which opens TCP (or TLS, or
    Unix socket) listeners and runs one of these. The options are those of
    :func:`serve_websocket`.
    """

    def __init__(
        self,
        handler: Handler,
        listeners: Sequence[trio.abc.Listener[Any]],
        *,
        handler_nursery: trio.Nursery | None = None,
        message_queue_size: int = DEFAULT_MESSAGE_QUEUE_SIZE,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        receive_buffer_size: int | None = DEFAULT_RECEIVE_BUFFER_SIZE,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        disconnect_timeout: float = DEFAULT_DISCONNECT_TIMEOUT,
        process_request: ProcessRequest | None = None,
        origins: Iterable[AllowedOrigin] | None = None,
        max_connections: int | None = None,
        request_limits: RequestLimits | None = None,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        max_buffered_bytes: int | None = None,
        compression: str | DeflateConfig | None = None,
        max_handshakes: int | None = DEFAULT_MAX_HANDSHAKES,
        http2: bool = False,
        http2_limits: HTTP2Limits | None = None,
    ) -> None:
        if not listeners:
            raise ValueError("a WebSocketServer needs at least one listener")
        options = ServerOptions.build(
            message_queue_size=message_queue_size,
            max_message_size=max_message_size,
            receive_buffer_size=receive_buffer_size,
            connect_timeout=connect_timeout,
            disconnect_timeout=disconnect_timeout,
            process_request=process_request,
            origins=origins,
            max_connections=max_connections,
            request_limits=request_limits,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            max_buffered_bytes=max_buffered_bytes,
            compression=compression,
            max_handshakes=max_handshakes,
            http2=http2,
            http2_limits=http2_limits,
        )
        self._set_up(handler, listeners, handler_nursery=handler_nursery, options=options)

    @classmethod
    def _with_options(
        cls,
        handler: Handler,
        listeners: Sequence[trio.abc.Listener[Any]],
        *,
        handler_nursery: trio.Nursery | None,
        options: ServerOptions,
    ) -> WebSocketServer:
        """The server :func:`serve_websocket` runs, from the options it
        built (and validated) before opening its listeners (which trio
        never returns empty)."""
        server: WebSocketServer = cls.__new__(cls)
        server._set_up(handler, listeners, handler_nursery=handler_nursery, options=options)
        return server

    def _set_up(
        self,
        handler: Handler,
        listeners: Sequence[trio.abc.Listener[Any]],
        *,
        handler_nursery: trio.Nursery | None,
        options: ServerOptions,
    ) -> None:
        self._handler = handler
        self._listeners = list(listeners)
        self._handler_nursery = handler_nursery
        self._options = options
        # Connection tracking: handshake-phase cancel scopes, and each
        # request whose handler runs, with its connection's cancel scope.
        self._handshakes: set[trio.CancelScope] = set()
        # The scopes of the connections reading their request, oldest
        # first (a dict keeps insertion order): what max_handshakes bounds.
        self._reading: dict[trio.CancelScope, None] = {}
        self._live: dict[ServedRequest, trio.CancelScope] = {}
        # The HTTP/2 connections being served (their WebSockets are in
        # _live like any other): a shutdown sends each a GOAWAY.
        self._http2_connections: set[HTTP2Connection] = set()
        # Lifecycle: started once; closing from the first aclose() on.
        self._started = False
        self._running = False
        self._accept_scope = trio.CancelScope()
        self._shutdown_requested = trio.Event()
        self._shutdown_done = trio.Event()
        self._closing = False
        self._close_reason = CloseReason(GOING_AWAY, None)
        self._deadline = 0.0
        self._idle: trio.Event | None = None
        self._refused = 0
        self._report: ShutdownReport | None = None

    @property
    def port(self) -> int:
        """The listening port, when there is exactly one TCP listener;
        ``RuntimeError`` otherwise."""
        endpoints = [e for e in self.listeners if isinstance(e, Endpoint)]
        if len(self._listeners) != 1 or len(endpoints) != 1:
            raise RuntimeError(
                "the server has no single TCP listener; look at .listeners instead"
            )
        return endpoints[0].port

    @property
    def listeners(self) -> list[Endpoint | str]:
        """Each listener as an :class:`Endpoint`, or its ``repr()`` when it
        is not a TCP listener (as in 0.12.2)."""
        return [listener_endpoint(listener) for listener in self._listeners]

    @property
    def connection_count(self) -> int:
        """How many connections have passed the handshake phase and are in
        their handler now (what ``max_connections`` limits)."""
        return len(self._live)

    async def run(
        self, *, task_status: trio.TaskStatus[WebSocketServer] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled or shut down by :meth:`aclose`;
        ``nursery.start(server.run)`` returns the server once it is
        listening.

        A failure to start (a listener that cannot accept) raises that one
        error, never a group; once started, a handler's error leaves by
        Trio's nursery rules (see :func:`serve_websocket`), except
        ``ConnectionClosed``, which never leaves (the peer went away), and
        ``KeyboardInterrupt`` and ``SystemExit``, which leave as themselves.

        :raises RuntimeError: if the server already ran or was closed.
        """
        if self._started or self._shutdown_requested.is_set():
            raise RuntimeError("a WebSocketServer runs only once")
        self._started = True
        self._running = True
        listening = False
        try:
            async with trio.open_nursery() as nursery:
                handler_nursery = self._handler_nursery or nursery
                await nursery.start(self._accept_all, handler_nursery)
                logger.debug("listening on %s", ", ".join(map(str, self.listeners)))
                task_status.started(self)
                listening = True
                await self._shutdown_requested.wait()
                self._report = await self._shut_down()
        except BaseExceptionGroup as group:
            stop = interruption(group)
            if stop is not None:
                reraise_as_is(stop)
            if listening:
                raise
            reraise_as_is(main_exception(group))
        finally:
            self._running = False
            if self._report is None:
                self._report = ShutdownReport()
            self._shutdown_done.set()

    async def aclose(
        self,
        *,
        code: int = GOING_AWAY,
        reason: str | None = "server shutting down",
        timeout: float = 10.0,
    ) -> ShutdownReport:
        """Shut the server down gracefully and say how it went.

        The server stops accepting (its listeners close), answers clients
        still in their opening handshake with ``503``, sends every open
        connection a close frame with ``code`` and ``reason``, and waits
        for the handlers to return. Handlers still running ``timeout``
        seconds after the call are cancelled and their connections aborted.
        :meth:`run` (and so :func:`serve_websocket`) then returns.

        Safe to call more than once and from several tasks: later calls
        wait for the same shutdown and return the same report (their own
        arguments are ignored). If the caller is cancelled, the shutdown
        goes on.

        :param code: the close code sent to open connections.
        :param reason: the close reason, or None for none.
        :param timeout: seconds the handlers have before they are cancelled.
        :returns: a :class:`ShutdownReport`.
        """
        if isinstance(code, bool) or not isinstance(code, int):
            raise TypeError("close code must be an int")
        if not 1000 <= code <= 4999:
            raise ValueError(f"close code must be in 1000..4999, got {code}")
        timeout = check_timeout("timeout", timeout)
        if not self._shutdown_requested.is_set():
            self._close_reason = CloseReason(code, reason)
            self._deadline = trio.current_time() + timeout
            self._shutdown_requested.set()
            if not self._running:
                # Never started (or already stopped): just free the listeners.
                for listener in self._listeners:
                    await trio.aclose_forcefully(listener)
                if self._report is None:
                    self._report = ShutdownReport()
                self._shutdown_done.set()
        await self._shutdown_done.wait()
        assert self._report is not None
        return self._report

    async def _shut_down(self) -> ShutdownReport:
        """The graceful shutdown, run by :meth:`run` (see :meth:`aclose`)."""
        self._closing = True
        self._accept_scope.cancel()
        reason = self._close_reason
        logger.info("shutting down: %d connections open", len(self._live))
        # Handshakes in progress stop where they are and answer 503 (each
        # in its own task, bounded by the deadline).
        for scope in self._handshakes:
            scope.cancel()
        self._refused += len(self._handshakes)
        for connection in list(self._http2_connections):
            connection.go_away()
        open_at_start = {request for request in self._live if request._connection is not None}
        async with trio.open_nursery() as closers:
            closers.cancel_scope.deadline = self._deadline
            for request in list(self._live):
                closing, refused = request._closing_for_shutdown(reason)
                self._refused += refused
                if closing is not None:
                    closers.start_soon(closing)
            with trio.move_on_at(self._deadline):
                await self._wait_idle()
            # The closers (close handshakes, 503 answers) end by themselves,
            # or at the deadline.
        still_running = dict(self._live)
        for scope in still_running.values():
            scope.cancel()
        await self._wait_idle()
        for connection in list(self._http2_connections):
            connection.abort()
        report = ShutdownReport(
            closed_cleanly=len(open_at_start - still_running.keys()),
            forced=len(still_running),
            refused=self._refused,
        )
        logger.info(
            "shut down: %d closed cleanly, %d forced, %d refused",
            report.closed_cleanly,
            report.forced,
            report.refused,
        )
        return report

    async def _wait_idle(self) -> None:
        if self._live:
            self._idle = trio.Event()
            await self._idle.wait()

    async def _accept_all(
        self,
        handler_nursery: trio.Nursery,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with self._accept_scope:
            async with trio.open_nursery() as loops:
                for listener in self._listeners:
                    loops.start_soon(self._accept_loop, listener, handler_nursery)
                task_status.started()

    async def _accept_loop(
        self, listener: trio.abc.Listener[Any], handler_nursery: trio.Nursery
    ) -> None:
        # A trio socket listener is accepted from directly, as our own
        # lean streams (see _socket_stream); any other listener as is.
        accept = acceptor_for(listener)
        async with listener:
            while True:
                try:
                    stream = await accept()
                except OSError as exc:
                    if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                        raise
                    logger.error("accept failed (%s); retrying in %s s", exc, _ACCEPT_RETRY_SECONDS)
                    await trio.sleep(_ACCEPT_RETRY_SECONDS)
                    continue
                handler_nursery.start_soon(
                    self._handle_connection, stream, handler_nursery, name=_CONNECTION_TASK
                )
                # (Not kept here until the next connection: a finished
                # connection's stream goes with it.)
                del stream

    async def _handle_connection(self, stream: trio.abc.Stream, nursery: trio.Nursery) -> None:
        # One cancel scope per connection for its whole life: its deadline
        # is connect_timeout until the request is decided (see
        # _handshake_phase), then none while the handler runs (a forced
        # shutdown cancels it through this scope), then disconnect_timeout
        # for the closing. The connection's reader runs in ``nursery`` (the
        # handlers' nursery) rather than in a nursery of this connection's:
        # an idle connection is ~1 KiB smaller and a handshake enters fewer
        # scopes. This task still waits for the reader to end before it
        # ends (see WebSocketRequest._end).
        handler_error: BaseException | None = None
        request: WebSocketRequest | HTTP2Start | None = None
        try:
            deadline = trio.current_time() + self._options.connect_timeout
            with trio.CancelScope(deadline=deadline) as scope:
                request = await self._handshake_phase(stream, nursery, scope)
                if request is None:
                    await trio.aclose_forcefully(stream)
                    return
                if isinstance(request, HTTP2Start):
                    # The HTTP/2 connection bounds its own idle time.
                    scope.deadline = math.inf
                    await self._serve_http2(stream, request.received)
                    return
                # The handler, then the closing of what it left open, inline
                # rather than in a method of their own: one coroutine frame
                # less kept by every idle connection, and resumed at every
                # wake-up of the handler. (An HTTP/2 WebSocket's task does the
                # same: see _handle_http2_stream.)
                served: ServedRequest = request
                scope.deadline = math.inf
                self._live[served] = scope
                try:
                    handler_failed = False
                    try:
                        await self._handler(request)
                    except Exception as exc:
                        handler_failed = True
                        handler_error = self._handler_failed(request, exc)
                    # (A cancellation, KeyboardInterrupt or SystemExit
                    # leaves at once: the closing below is for errors
                    # and returns only.)
                    # The closing is bounded by disconnect_timeout (and cut
                    # short, like the handler, by a forced shutdown). A
                    # connection already over has nothing left to wait for:
                    # no deadline to register and take back.
                    if not served._over:
                        scope.deadline = trio.current_time() + self._options.disconnect_timeout
                    await served._close_after_handler(handler_failed)
                finally:
                    await self._served_ended(served)
            if request is None:
                await self._drop_undecided(stream)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        finally:
            # A TLS stream's own methods make it a reference cycle: once it
            # is closed, it gives them back, so that the connection is
            # freed by reference counting, not by the cyclic collector.
            forget_own_methods(stream)
        if handler_error is not None:
            try:
                raise handler_error
            finally:
                del handler_error

    async def _drop_undecided(self, stream: trio.abc.Stream) -> None:
        """End a connection (or HTTP/2 stream) whose request was never
        decided: the handshake phase ran out of time, or a shutdown stopped
        it. A shutdown answers 503 (it counted the request as refused);
        a client too slow is dropped without an answer."""
        if self._closing:
            with trio.move_on_at(self._deadline):
                await send_http_answer(stream, SHUTTING_DOWN)
        await trio.aclose_forcefully(stream)

    def _handler_failed(self, request: WebSocketRequest, exc: Exception) -> Exception | None:
        """Log what the handler raised; the error to raise once the
        connection is over (None: the peer went away, or the shutdown
        closed the connection, which is news, not a server error; also in
        a group, from a nursery in the handler)."""
        served: ServedRequest = request
        if only(exc, ConnectionClosed):
            _log_handler_closed(served, exc)
            return None
        log_handler_error(request, served._connection, exc)
        return exc

    async def _served_ended(self, served: ServedRequest) -> None:
        """The request's connection is over: wait for its reader, and
        forget the request."""
        await served._end()
        del self._live[served]
        if not self._live and self._idle is not None:
            self._idle.set()

    # ------------------------------------------------------------------
    # HTTP/2 (RFC 8441)

    async def _serve_http2(self, transport: trio.abc.Stream, received: bytes) -> None:
        """Serve one HTTP/2 connection: each WebSocket it opens is handled
        like a connection of its own (see :meth:`_handle_http2_stream`)."""
        limits = self._options.http2
        assert limits is not None
        try:
            # The connection's WebSockets run in a nursery of its own, under
            # its one cancel scope (a forced shutdown cancels them together),
            # so that no WebSocket keeps a scope of its own while it idles.
            async with trio.open_nursery() as streams:
                connection = start_http2_connection(
                    transport,
                    received,
                    limits=limits,
                    idle_timeout=self._options.connect_timeout,
                    on_request=lambda stream, headers: streams.start_soon(
                        self._handle_http2_stream,
                        stream,
                        headers,
                        streams,
                        name=_HTTP2_REQUEST_TASK,
                    ),
                )
                self._http2_connections.add(connection)
                try:
                    if self._closing:
                        connection.go_away()
                    await connection.run()
                finally:
                    self._http2_connections.discard(connection)
        except BaseExceptionGroup as group:
            # A handler's error leaves as it would from an HTTP/1.1
            # connection's task: itself, not wrapped once more.
            if len(group.exceptions) == 1:
                reraise_as_is(group.exceptions[0])
            raise

    async def _handle_http2_stream(
        self, stream: HTTP2Stream, headers: Headers, streams: trio.Nursery
    ) -> None:
        """One WebSocket request on an HTTP/2 stream, from the checks to the
        handler's end (as :meth:`_handle_connection` for HTTP/1.1), in the
        nursery of its HTTP/2 connection (``streams``)."""
        handler_error: BaseException | None = None
        request: WebSocketRequest | None = None
        try:
            subject, view = self._screen_http2(stream, headers, streams)
            # (The request keeps what it needs of the header block: this
            # frame would keep all of it for the WebSocket's life.)
            del headers
            if self._options.process_request is None:
                # Nothing to wait for, so no deadline: a deadline's entry
                # stays in trio's heap, and keeps its scope, until it
                # passes, which over HTTP/2 came to a fifth of an idle
                # WebSocket's memory.
                outcome: WebSocketRequest | tuple[HTTPResponse, str] | None
                outcome = self._admit(subject)
                if isinstance(outcome, WebSocketRequest):
                    request = outcome
            else:
                outcome = None
            if request is None:
                with trio.move_on_after(self._options.connect_timeout) as scope:
                    self._handshakes.add(scope)
                    try:
                        if outcome is None:
                            outcome = await self._judge(stream, subject, view)
                        if not isinstance(outcome, WebSocketRequest):
                            response, method = outcome
                            await send_http_answer(stream, response, method)
                            return
                        request = outcome
                    finally:
                        self._handshakes.discard(scope)
                del scope  # (112 bytes the frame would keep for the WebSocket's life)
            del subject, view, outcome  # (the request keeps what it needs)
            if request is None:
                await self._drop_undecided(stream)
            else:
                # The handler, inline as in _handle_connection: it runs
                # under the connection's scope (see _serve_http2), the
                # closing after it under one of its own.
                served: ServedRequest = request
                self._live[served] = streams.cancel_scope
                try:
                    handler_failed = False
                    try:
                        await self._handler(request)
                    except Exception as exc:
                        handler_failed = True
                        handler_error = self._handler_failed(request, exc)
                    with trio.move_on_after(self._options.disconnect_timeout):
                        await served._close_after_handler(handler_failed)
                finally:
                    await self._served_ended(served)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        if handler_error is not None:
            try:
                raise handler_error
            finally:
                del handler_error

    def _screen_http2(
        self, stream: HTTP2Stream, headers: Headers, nursery: trio.Nursery
    ) -> tuple[WebSocketRequest | NotWebSocket, HTTPRequest]:
        """What :meth:`_judge` decides on for one HTTP/2 request, and the
        hook's view of it."""
        request, view, problem = read_http2_request(
            stream, headers, nursery, options=self._options.connection
        )
        if request is None:
            assert problem is not None
            logger.debug("refused an HTTP/2 %s %s: %s", view.method, view.path, problem)
            return NotWebSocket(view, NOT_WEBSOCKET_HTTP2, problem), view
        return request, view

    async def _handshake_phase(
        self, stream: trio.abc.Stream, nursery: trio.Nursery, scope: trio.CancelScope
    ) -> WebSocketRequest | HTTP2Start | None:
        """Everything before the handler (see the module rules), inside
        ``scope`` (whose deadline is ``connect_timeout``): the request for
        the handler, or None once the client was answered or dropped."""
        self._handshakes.add(scope)
        try:
            outcome = await self._screen(stream, nursery, scope)
        except HandshakeError as exc:
            logger.debug("handshake failed: %s", exc)
            return None
        finally:
            # Decided: a shutdown from now on leaves this one alone.
            self._handshakes.discard(scope)
        if isinstance(outcome, (WebSocketRequest, HTTP2Start)):
            return outcome
        response, method = outcome
        await send_http_answer(stream, response, method)
        return None

    def _start_reading(self, scope: trio.CancelScope) -> None:
        """Count a connection that starts reading its request; beyond
        ``max_handshakes``, the one reading the longest is dropped to make
        room (see :func:`serve_websocket` for why)."""
        max_handshakes = self._options.max_handshakes
        if max_handshakes is not None and len(self._reading) >= max_handshakes:
            oldest = next(iter(self._reading))
            del self._reading[oldest]
            oldest.cancel()  # its task drops the connection
            logger.debug(
                "dropped the oldest incomplete request: %d requests being read",
                max_handshakes,
            )
        self._reading[scope] = None

    async def _screen(
        self, stream: trio.abc.Stream, nursery: trio.Nursery, scope: trio.CancelScope
    ) -> WebSocketRequest | HTTP2Start | tuple[HTTPResponse, str]:
        """The request for the handler, or the answer it gets instead (and
        the request's method, which decides whether a body goes with it),
        or a client that speaks HTTP/2."""
        self._start_reading(scope)
        options = self._options
        try:
            detect_http2 = False
            if options.http2 is not None:
                if isinstance(stream, trio.SSLStream):
                    if await _chose_http2(stream):
                        return HTTP2Start(b"")
                else:
                    detect_http2 = True
            request, head = await read_request(
                stream,
                nursery,
                options=options.connection,
                limits=options.request_limits,
                detect_http2=detect_http2,
            )
        finally:
            self._reading.pop(scope, None)
        if isinstance(request, HTTP2Start):
            return request
        if options.process_request is None:
            return self._admit(request)
        # (The hook's view parses the head once more: only for a hook.)
        return await self._judge(stream, request, hook_view(request, head))

    async def _judge(
        self, stream: trio.abc.Stream, request: WebSocketRequest | NotWebSocket, view: HTTPRequest
    ) -> WebSocketRequest | tuple[HTTPResponse, str]:
        """The checks every request goes through, in order (see the module
        rules), whichever HTTP version carried it: the ``process_request``
        hook first (it sees ``view``), then :meth:`_admit`."""
        if self._options.process_request is not None:
            response = await self._call_hook(stream, view)
            if response is not None:
                return response, view.method
        return self._admit(request)

    def _admit(
        self, request: WebSocketRequest | NotWebSocket
    ) -> WebSocketRequest | tuple[HTTPResponse, str]:
        """The checks after the hook (see :meth:`_judge`): the request for
        the handler, or the answer it gets instead and its method."""
        if isinstance(request, NotWebSocket):
            logger.debug("refused %s: %s", request.request.path, request.problem)
            return request.answer, request.request.method
        origins = self._options.origins
        if origins is not None and not origins.allows(request.headers):
            return FORBIDDEN_ORIGIN, "GET"
        if self._closing:
            self._refused += 1
            return SHUTTING_DOWN, "GET"
        max_connections = self._options.max_connections
        if max_connections is not None and len(self._live) >= max_connections:
            logger.debug("refused a connection: %d connections open", len(self._live))
            return SERVICE_UNAVAILABLE, "GET"
        return request

    async def _call_hook(self, stream: trio.abc.Stream, view: HTTPRequest) -> HTTPResponse | None:
        process_request = self._options.process_request
        assert process_request is not None
        try:
            result = process_request(view)
            if inspect.isawaitable(result):
                result = await result
            if result is not None and not isinstance(result, HTTPResponse):
                raise TypeError(
                    f"process_request must return an HTTPResponse or None, not {result!r}"
                )
        except Exception:
            await send_http_answer(stream, text_response(500, "500 Internal Server Error\n"))
            raise
        return result


async def _chose_http2(stream: trio.SSLStream[Any]) -> bool:
    """Finish the TLS handshake; whether the client chose HTTP/2 (ALPN)."""
    try:
        await stream.do_handshake()
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise HandshakeError(f"TLS handshake failed: {exc}") from exc
    return bool(stream.selected_alpn_protocol() == "h2")


async def serve_websocket(
    handler: Handler,
    host: str | bytes | Sequence[str | bytes] | None,
    port: int | None,
    ssl_context: ssl.SSLContext | None,
    *,
    handler_nursery: trio.Nursery | None = None,
    message_queue_size: int = DEFAULT_MESSAGE_QUEUE_SIZE,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    receive_buffer_size: int | None = DEFAULT_RECEIVE_BUFFER_SIZE,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    disconnect_timeout: float = DEFAULT_DISCONNECT_TIMEOUT,
    task_status: trio.TaskStatus[WebSocketServer] = trio.TASK_STATUS_IGNORED,
    process_request: ProcessRequest | None = None,
    origins: Iterable[AllowedOrigin] | None = None,
    max_connections: int | None = None,
    request_limits: RequestLimits | None = None,
    unix_socket_path: SocketPath | None = None,
    ping_interval: float | None = None,
    ping_timeout: float | None = None,
    max_buffered_bytes: int | None = None,
    compression: str | DeflateConfig | None = None,
    max_handshakes: int | None = DEFAULT_MAX_HANDSHAKES,
    http2: bool = False,
    http2_limits: HTTP2Limits | None = None,
) -> None:
    """Listen on ``host:port`` and run ``await handler(request)`` for each
    WebSocket connection, until cancelled or shut down with
    :meth:`WebSocketServer.aclose`::

        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        print(server.port)

    :param handler: an async function taking a :class:`WebSocketRequest`.
        Its connection is closed with 1000 when it returns and 1011 when it
        raises. Its exceptions propagate out of ``serve_websocket`` (in an
        ``ExceptionGroup``, as from any Trio nursery), except
        :exc:`ConnectionClosed`: the client went away, which is no server
        error (logged at DEBUG). ``KeyboardInterrupt`` and ``SystemExit``
        leave as themselves.
    :param host: the address to listen on; None for all interfaces (and
        with ``unix_socket_path``).
    :param port: the TCP port; 0 for any free port; None with
        ``unix_socket_path``.
    :param ssl_context: an ``ssl.SSLContext`` for wss://, or None.
    :param handler_nursery: run handlers (and their connections' readers)
        in this nursery instead of the server's own.
    :param message_queue_size: see :func:`open_websocket`.
    :param max_message_size: see :func:`open_websocket`.
    :param receive_buffer_size: see :func:`open_websocket`.
    :param connect_timeout: seconds a client has to send its whole opening
        request (and the ``process_request`` hook to decide on it) before
        it is dropped; this is what stops slow senders ("slowloris").
    :param disconnect_timeout: seconds allowed for the closing handshake
        after the handler finishes.
    :param process_request: a function (sync or async) called with an
        :class:`HTTPRequest` for every request, WebSocket upgrade or not,
        before anything else is decided. It returns an
        :class:`HTTPResponse` to answer the request itself (a health
        check, a redirect, a 401...), or None to let the server go on.
        Without it (or when it returns None), a request that is not a
        WebSocket upgrade gets ``426 Upgrade Required``. An exception it
        raises is answered with 500 and propagates like a handler's.
    :param origins: the ``Origin`` headers allowed: exact strings,
        compiled regular expressions (matched against the whole header)
        and ``None`` for requests without the header (non-browser
        clients). Other requests get ``403 Forbidden``. None (the default)
        allows every origin.
    :param max_connections: the most connections in their handlers at
        once; a handshake beyond it gets ``503 Service Unavailable``.
        None (the default) means no limit. Clients still sending their
        request do not count: ``connect_timeout`` and ``request_limits``
        bound those.
    :param request_limits: limits on the request line and headers (see
        :class:`RequestLimits`, whose defaults apply when this is None).
    :param unix_socket_path: listen on this Unix domain socket path instead
        of TCP; ``host`` and ``port`` must then be None. A stale socket file
        is replaced, a live one raises ``OSError``; the file is removed when
        the server stops. ``ssl_context`` still applies.
    :param ping_interval: see :func:`open_websocket` (the keepalive runs
        next to each accepted connection's reader).
    :param ping_timeout: see :func:`open_websocket`.
    :param max_buffered_bytes: see :func:`open_websocket`.
    :param compression: ``"deflate"`` or a :class:`DeflateConfig` to accept
        permessage-deflate (RFC 7692) from clients that offer it; None (the
        default) never compresses. Each connection's
        :attr:`WebSocketConnection.compression` says what was agreed.
    :param max_handshakes: the most connections reading their opening
        request at once (1024 by default; None for no limit). Each may
        buffer up to a request head (16 KiB at most) for up to
        ``connect_timeout``; beyond the limit, a new connection makes room
        by dropping the one that has been reading the longest, without an
        answer. Legitimate clients send their request within a round trip,
        so the oldest incomplete request is almost always a slow or
        hostile sender's ("slowloris"): new clients are served at once
        instead of waiting for a place, and memory stays bounded.
    :param http2: also serve WebSockets over HTTP/2 (RFC 8441; needs the
        ``http2`` extra: the h2 package, ``pip install "h2>=4.1"``). Over TLS
        the server offers ``h2`` and ``http/1.1`` by ALPN (it sets them on
        ``ssl_context``); on plain TCP, a client that starts with the
        HTTP/2 connection preface (h2c with prior knowledge, as proxies
        speak to their backends) is served over HTTP/2, any other as
        before. Each WebSocket on an HTTP/2 connection is handled like a
        connection of its own (its :attr:`WebSocketRequest.http_version`
        is ``"2"``), and every option above applies to it. See
        :doc:`http2`.
    :param http2_limits: the bounds of each HTTP/2 connection (an
        :class:`HTTP2Limits`; its defaults when None).
    """
    # Bad options fail before any listener is opened (and left open).
    options = ServerOptions.build(
        message_queue_size=message_queue_size,
        max_message_size=max_message_size,
        receive_buffer_size=receive_buffer_size,
        connect_timeout=connect_timeout,
        disconnect_timeout=disconnect_timeout,
        process_request=process_request,
        origins=origins,
        max_connections=max_connections,
        request_limits=request_limits,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        max_buffered_bytes=max_buffered_bytes,
        compression=compression,
        max_handshakes=max_handshakes,
        http2=http2,
        http2_limits=http2_limits,
    )
    if ssl_context is not None:
        if http2:
            alpn.offer(ssl_context, alpn.HTTP2_ALPN)
        else:
            alpn.without_http2(ssl_context)
    if unix_socket_path is not None:
        if host is not None or port is not None:
            raise ValueError("with unix_socket_path, host and port must be None")
    elif port is None:
        raise ValueError("port must be an int (0 for any free port)")
    listen_host: Any = host
    listeners: Sequence[trio.abc.Listener[Any]]
    socket_file: tuple[int, int] | None = None
    if unix_socket_path is not None:
        unix_listener, socket_file = await open_unix_listener(unix_socket_path)
        if ssl_context is None:
            listeners = [unix_listener]
        else:
            listeners = [trio.SSLListener(unix_listener, ssl_context, https_compatible=True)]
    elif ssl_context is None:
        assert port is not None
        listeners = await trio.open_tcp_listeners(port, host=listen_host)
    else:
        assert port is not None
        listeners = await trio.open_ssl_over_tcp_listeners(
            port, ssl_context, host=listen_host, https_compatible=True
        )
    try:
        server = WebSocketServer._with_options(
            handler, listeners, handler_nursery=handler_nursery, options=options
        )
        await server.run(task_status=task_status)
    finally:
        if unix_socket_path is not None:
            remove_socket_file(unix_socket_path, socket_file)
