"""Many WebSockets to one origin over shared HTTP/2 connections: the
session (:func:`open_websocket_session`).

Rules:
- A session belongs to its ``async with`` block: the block's nursery runs
  the session's HTTP/2 connections and its WebSockets' readers, in a
  nursery of their own under a shielded scope (``_Background``), so that
  a cancellation of the block from outside leaves them the time to carry
  the close frames. Leaving the block closes every WebSocket of the
  session still open (1000, or 1001 after a cancellation or an error,
  each within its ``disconnect_timeout``), then the connections, which
  have ``_FAREWELL_SECONDS`` more before they are cancelled. A failure
  among them cancels the block, as a nursery's child's does.
- A WebSocket goes on an HTTP/2 connection that can take one more stream;
  when none can (the first WebSocket, the server's
  SETTINGS_MAX_CONCURRENT_STREAMS reached, a GOAWAY, a lost connection),
  the session opens another. Openings are one at a time, so WebSockets
  opened together share the connection the first one opened.
- When the server does not take WebSockets over HTTP/2 (ALPN chose
  HTTP/1.1, or its SETTINGS lack ENABLE_CONNECT_PROTOCOL), the session
  remembers it: with ``http2=True`` each later WebSocket gets an HTTP/1.1
  connection of its own, with ``http2="require"`` each raises
  :exc:`HandshakeError`.
- Errors are the client's (``_client.client``): :exc:`HandshakeError` and
  its kinds, :exc:`ConnectionTimeout` after ``connect_timeout``, never an
  ``ExceptionGroup`` from the block.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING

import trio

from .._core.close import GOING_AWAY, NORMAL_CLOSURE
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
from .._core.errors import PHASE_HTTP, ConnectionTimeout, HandshakeError, Headers
from .._core.groups import collapse_exception_groups, combine
from .._core.url import WebSocketTarget, parse_ws_url
from .._h2 import alpn
from .._h2.limits import HTTP2Limits
from .client import (
    Progress,
    close_on_exit,
    connect_target,
    open_stream,
    start_or_close,
    timeout_message,
)
from .http2 import (
    negotiated_http2,
    open_http2_websocket,
    start_http2_client,
)
from .options import ClientOptions, SocketPath, check_headers, check_http2_mode
from .proxy_config import Proxy

if TYPE_CHECKING:
    from .._h2.connection import HTTP2Connection


class WebSocketSession:
    """WebSockets to one origin that share HTTP/2 connections; made by
    :func:`open_websocket_session` (see there), valid inside its block."""

    def __init__(
        self,
        nursery: trio.Nursery,
        target: WebSocketTarget,
        ssl_context: ssl.SSLContext | None,
        *,
        mode: str,
        credentials: Headers,
        connect_timeout: float,
        proxy: str | Proxy | bool | None,
        unix_socket_path: SocketPath | None,
        limits: HTTP2Limits,
    ) -> None:
        self._nursery = nursery
        self._target = target
        self._ssl_context = ssl_context
        self._mode = mode
        self._credentials = credentials
        self._connect_timeout = connect_timeout
        self._proxy = proxy
        self._unix_socket_path = unix_socket_path
        self._limits = limits
        self._connections: list[HTTP2Connection] = []
        self._opening = trio.Lock()
        # Set once the server showed it does not take WebSockets over HTTP/2.
        self._http1_only = False
        self._websockets: dict[WebSocketConnection, float] = {}
        self._closed = False

    @property
    def http_version(self) -> str | None:
        """``"2"`` once the session's WebSockets go over HTTP/2, ``"1.1"``
        once the server showed it does not take them, None before the
        first WebSocket was opened."""
        if self._http1_only:
            return "1.1"
        return "2" if self._connections else None

    @property
    def connection_count(self) -> int:
        """How many HTTP/2 connections the session has open now."""
        return sum(1 for connection in self._connections if not connection.ended)

    @property
    def websocket_count(self) -> int:
        """How many of the session's WebSockets are open now."""
        return sum(1 for websocket in self._websockets if websocket.closed is None)

    async def connect_websocket(
        self,
        resource: str | None = None,
        *,
        subprotocols: list[str] | None = None,
        extra_headers: Headers | None = None,
        message_queue_size: int = DEFAULT_MESSAGE_QUEUE_SIZE,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        receive_buffer_size: int | None = DEFAULT_RECEIVE_BUFFER_SIZE,
        disconnect_timeout: float = DEFAULT_DISCONNECT_TIMEOUT,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        max_buffered_bytes: int | None = None,
        compression: str | DeflateConfig | None = None,
    ) -> WebSocketConnection:
        """Open a WebSocket to ``resource`` (the session URL's own by
        default) and return it; it stays open until you close it or the
        session ends. The options are those of :func:`open_websocket`.

        :raises HandshakeError: as :func:`open_websocket` (and
            :exc:`ConnectionTimeout` after the session's
            ``connect_timeout``).
        :raises RuntimeError: when the session's block has ended.
        """
        if self._closed:
            raise RuntimeError("this WebSocket session has ended")
        disconnect_timeout = check_timeout("disconnect_timeout", disconnect_timeout)
        options = ClientOptions.build(
            subprotocols=subprotocols,
            extra_headers=[*self._credentials, *check_headers(extra_headers)],
            message_queue_size=message_queue_size,
            max_message_size=max_message_size,
            receive_buffer_size=receive_buffer_size,
            disconnect_timeout=disconnect_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            proxy=self._proxy,
            unix_socket_path=self._unix_socket_path,
            max_buffered_bytes=max_buffered_bytes,
            compression=compression,
        )
        target = self._target
        if resource is not None:
            target = replace(target, resource=resource)
        progress = Progress(where=target.host_header)
        try:
            with trio.fail_after(self._connect_timeout):
                websocket = await self._open(target, options, progress)
        except trio.TooSlowError:
            raise ConnectionTimeout(
                timeout_message(target.host_header, self._connect_timeout, progress),
                phase=progress.phase,
            ) from None
        self._websockets[websocket] = disconnect_timeout
        return websocket

    @asynccontextmanager
    async def open_websocket(
        self,
        resource: str | None = None,
        *,
        subprotocols: list[str] | None = None,
        extra_headers: Headers | None = None,
        message_queue_size: int = DEFAULT_MESSAGE_QUEUE_SIZE,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        receive_buffer_size: int | None = DEFAULT_RECEIVE_BUFFER_SIZE,
        disconnect_timeout: float = DEFAULT_DISCONNECT_TIMEOUT,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        max_buffered_bytes: int | None = None,
        compression: str | DeflateConfig | None = None,
    ) -> AsyncIterator[WebSocketConnection]:
        """A WebSocket for the duration of a block, as
        :meth:`connect_websocket` opens it; the block's end closes it (as
        :func:`open_websocket`'s does)::

            async with session.open_websocket("/chat") as ws:
                await ws.send_message("hello")
        """
        websocket = await self.connect_websocket(
            resource,
            subprotocols=subprotocols,
            extra_headers=extra_headers,
            message_queue_size=message_queue_size,
            max_message_size=max_message_size,
            receive_buffer_size=receive_buffer_size,
            disconnect_timeout=disconnect_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            max_buffered_bytes=max_buffered_bytes,
            compression=compression,
        )
        try:
            yield websocket
        except BaseException as exc:
            await close_on_exit(websocket, exc, disconnect_timeout)
            raise
        finally:
            self._websockets.pop(websocket, None)
        await close_on_exit(websocket, None, disconnect_timeout)

    # ------------------------------------------------------------------

    async def _open(
        self, target: WebSocketTarget, options: ClientOptions, progress: Progress
    ) -> WebSocketConnection:
        connection = await self._http2_connection(options, progress)
        if connection is None:
            # HTTP/1.1: a connection of the WebSocket's own.
            if self._ssl_context is not None:
                alpn.offer(self._ssl_context, alpn.HTTP1_ALPN)
            return await connect_target(
                self._nursery, target, self._ssl_context, options=options, progress=progress
            )
        progress.enter(PHASE_HTTP, "the extended CONNECT")
        websocket, stream = await open_http2_websocket(connection, target, options)
        await start_or_close(websocket, stream, self._nursery)
        return websocket

    async def _http2_connection(
        self, options: ClientOptions, progress: Progress
    ) -> HTTP2Connection | None:
        """An HTTP/2 connection that can take one more WebSocket (opened if
        need be), or None for HTTP/1.1 (see the module rules)."""
        async with self._opening:
            for connection in self._connections:
                if connection.can_open_stream:
                    return connection
                if not connection.stream_count:
                    # Full of streams left to a peer that never ends them,
                    # or told to go away: nothing of ours runs on it now.
                    connection.close_when_done()
            self._connections = [c for c in self._connections if not c.ended]
            if self._http1_only:
                return None
            target = self._target
            if self._ssl_context is not None:
                alpn.offer(self._ssl_context, alpn.HTTP2_ALPN)
            stream = await open_stream(
                target.host, target.port, self._ssl_context, options=options, progress=progress
            )
            progress.enter(PHASE_HTTP, "the HTTP/2 connection")
            if isinstance(stream, trio.SSLStream) and not negotiated_http2(stream):
                await trio.aclose_forcefully(stream)
                self._refused(f"{target.host_header} chose HTTP/1.1 by ALPN")
                return None
            try:
                new = await start_http2_client(self._nursery, stream, self._limits)
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
            if new is None:
                self._refused(
                    f"{target.host_header} does not take WebSockets over HTTP/2 "
                    "(no SETTINGS_ENABLE_CONNECT_PROTOCOL, RFC 8441)"
                )
                return None
            self._connections.append(new)
            return new

    def _refused(self, why: str) -> None:
        """The server does not take WebSockets over HTTP/2: remember it, or
        raise (``http2="require"``)."""
        if self._mode == "require":
            raise HandshakeError(f'{why}, and http2="require" was asked', phase=PHASE_HTTP)
        self._http1_only = True

    async def _aclose(self, cancelled: bool) -> None:
        """Close what the session still has open (see the module rules)."""
        self._closed = True
        code = GOING_AWAY if cancelled else NORMAL_CLOSURE
        with trio.CancelScope(shield=cancelled):
            async with trio.open_nursery() as closers:
                for websocket, timeout in list(self._websockets.items()):
                    if websocket.closed is None:
                        closers.start_soon(_close_within, websocket, code, timeout)
            for connection in self._connections:
                connection.close_when_done()


async def _close_within(websocket: WebSocketConnection, code: int, timeout: float) -> None:
    with trio.move_on_after(timeout):
        await websocket.aclose(code)


@asynccontextmanager
async def open_websocket_session(
    url: str,
    ssl_context: ssl.SSLContext | None = None,
    *,
    http2: bool | str = True,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    proxy: str | Proxy | bool | None = None,
    unix_socket_path: SocketPath | None = None,
    http2_limits: HTTP2Limits | None = None,
) -> AsyncIterator[WebSocketSession]:
    """A session of WebSockets to the origin of ``url`` that share one
    HTTP/2 connection (RFC 8441; needs the ``http2`` extra), for the
    duration of a block::

        async with open_websocket_session("wss://example.com/") as session:
            async with session.open_websocket("/prices") as prices, \\
                    session.open_websocket("/orders") as orders:
                ...

    One TCP and TLS handshake serves every WebSocket of the session, and
    they share the connection's congestion control; each WebSocket has its
    own flow-control window, so a slow one never stalls the others. See
    :doc:`http2`.

    :param url: a ``ws://`` or ``wss://`` URL: its origin is where every
        WebSocket goes, its resource the default one, its credentials
        (``user:password@``) are sent with every WebSocket.
    :param ssl_context: as :func:`open_websocket_url` (the session sets its
        ALPN protocols).
    :param http2: ``True`` (the default) falls back to one HTTP/1.1
        connection per WebSocket when the server does not take WebSockets
        over HTTP/2; ``"require"`` raises :exc:`HandshakeError` instead. On
        ``ws://``, HTTP/2 is h2c with prior knowledge.
    :param connect_timeout: seconds each WebSocket may take to open
        (a new connection included), else :exc:`ConnectionTimeout`.
    :param proxy: as :func:`open_websocket`.
    :param unix_socket_path: as :func:`open_websocket`.
    :param http2_limits: the bounds of each HTTP/2 connection (an
        :class:`HTTP2Limits`; its defaults when None).
    """
    mode = check_http2_mode(http2)
    if mode is None:
        raise ValueError('a WebSocket session needs http2=True or http2="require"')
    connect_timeout = check_timeout("connect_timeout", connect_timeout)
    # (Validates proxy, the socket path and the limits, and that h2 is there.)
    ClientOptions.build(
        proxy=proxy, unix_socket_path=unix_socket_path, http2=http2, http2_limits=http2_limits
    )
    target = parse_ws_url(url)
    if ssl_context is not None and not target.secure:
        raise ValueError("ssl_context given for a ws:// URL; use wss:// for TLS")
    if target.secure and ssl_context is None:
        ssl_context = ssl.create_default_context()
    credentials: Headers = []
    if target.authorization is not None:
        credentials.append((b"authorization", target.authorization))
    user_error: BaseException | None = None
    internal_error: BaseException | None = None
    try:
        with collapse_exception_groups():
            async with trio.open_nursery() as nursery:
                background = _Background()
                session = WebSocketSession(
                    await nursery.start(background.run),
                    replace(target, authorization=None),
                    ssl_context,
                    mode=mode,
                    credentials=credentials,
                    connect_timeout=connect_timeout,
                    proxy=proxy,
                    unix_socket_path=unix_socket_path,
                    limits=http2_limits or HTTP2Limits(),
                )
                try:
                    yield session
                except BaseException as exc:
                    # Raised below, outside the nursery (never in a group).
                    user_error = exc
                try:
                    await session._aclose(cancelled=user_error is not None)
                finally:
                    # Whatever still runs (a connection that does not
                    # close) ends within the farewell.
                    background.end(trio.current_time() + _FAREWELL_SECONDS)
    except BaseException as exc:
        internal_error = exc
    error = combine(user_error, internal_error)
    if error is not None:
        try:
            raise error
        finally:
            del error, user_error, internal_error


#: How long a session's connections have to say goodbye once its WebSockets
#: are closed, before they are cancelled.
_FAREWELL_SECONDS = 1.0


class _Background:
    """The nursery of a session's connections and readers, under a scope
    shielded from the block's cancellation until :meth:`end` (see the
    module rules)."""

    def __init__(self) -> None:
        self._scope = trio.CancelScope(shield=True)
        self._ended = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[trio.Nursery]) -> None:
        with self._scope:
            async with trio.open_nursery() as nursery:
                task_status.started(nursery)
                await self._ended.wait()

    def end(self, deadline: float) -> None:
        """No more work comes: what still runs has until ``deadline``."""
        self._scope.deadline = min(self._scope.deadline, deadline)
        self._ended.set()
