"""The server side: reading the opening handshake, the request a handler
accepts or rejects, and the server that listens.

Rules:
- Builds on ``_connection`` and the pure modules; never imports ``_client``.
- Every connection is handled inside the server's nursery (or the user's
  ``handler_nursery``), so it is closed when its handler returns or raises:
  with 1000 after a return, 1011 after an exception. A request the handler
  neither accepted nor rejected gets 403 (returned) or 500 (raised).
- A client that sends garbage gets ``400 Bad Request``; one that does not
  finish its handshake within ``connect_timeout`` is dropped. Neither
  reaches the handler.
- An exception escaping a handler propagates out of ``serve_websocket``,
  as with ``trio.serve_tcp``: errors never pass silently.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, NoReturn

import trio
from wsproto import ConnectionType
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
from wsproto.extensions import Extension
from wsproto.handshake import H11Handshake
from wsproto.utilities import ProtocolError

from ._close import INTERNAL_ERROR, NORMAL_CLOSURE, CloseReason
from ._compression import DeflateConfig
from ._config import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DISCONNECT_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MESSAGE_QUEUE_SIZE,
    DEFAULT_RECEIVE_BUFFER_SIZE,
    ConnectionOptions,
    check_timeout,
)
from ._connection import STREAM_ERRORS, WebSocketConnection
from ._deflate import DeflateExtension
from ._endpoint import Endpoint, listener_endpoint, stream_endpoint
from ._errors import ConnectionClosed, HandshakeError, Headers

logger = logging.getLogger("trio_websocket")

Handler = Callable[["WebSocketRequest"], Awaitable[object]]

_BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 34\r\n"
    b"connection: close\r\n\r\n"
    b"Invalid WebSocket opening request\n"
)


class WebSocketRequest:
    """A client's opening handshake, waiting for the handler to
    :meth:`accept` or :meth:`reject` it."""

    __slots__ = (
        "_connection",
        "_event",
        "_handshake",
        "_local",
        "_nursery",
        "_options",
        "_remote",
        "_stream",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        handshake: H11Handshake,
        event: Request,
        nursery: trio.Nursery,
        options: ConnectionOptions,
    ) -> None:
        self._stream = stream
        self._handshake: H11Handshake | None = handshake
        self._event = event
        self._nursery = nursery
        self._options = options
        self._connection: WebSocketConnection | None = None
        self._local = stream_endpoint(stream, local=True)
        self._remote = stream_endpoint(stream, local=False)

    @property
    def headers(self) -> Headers:
        """The request's headers as ``(name, value)`` byte pairs (names in
        lower case; Host and the Sec-WebSocket-Protocol/-Extensions headers
        are parsed out)."""
        return self._event.extra_headers

    @property
    def path(self) -> str:
        """The requested resource: path and query string."""
        return self._event.target

    @property
    def proposed_subprotocols(self) -> tuple[str, ...]:
        """The subprotocols the client offered, in its order."""
        return tuple(self._event.subprotocols)

    @property
    def local(self) -> Endpoint | str:
        """The server's endpoint of this connection."""
        return self._local

    @property
    def remote(self) -> Endpoint | str:
        """The client's endpoint."""
        return self._remote

    def _claim(self) -> H11Handshake:
        """Take the handshake for the one decision on this request; the
        request then drops it (it is not needed once answered, and an
        idle connection should not keep its HTTP parser)."""
        handshake = self._handshake
        if handshake is None:
            raise RuntimeError("this request was already accepted or rejected")
        self._handshake = None
        return handshake

    async def accept(
        self,
        *,
        subprotocol: str | None = None,
        extra_headers: Headers | None = None,
    ) -> WebSocketConnection:
        """Accept the connection and return it.

        :param subprotocol: one of :attr:`proposed_subprotocols`, or None.
        :param extra_headers: more response headers as byte pairs.
        :raises ValueError: for a subprotocol the client did not offer.
        :raises ConnectionClosed: if the client is already gone.
        """
        if subprotocol is not None and subprotocol not in self._event.subprotocols:
            raise ValueError(f"the client did not offer subprotocol {subprotocol!r}")
        handshake = self._claim()
        extensions: list[Extension] = []
        compression = self._options.compression
        if compression is not None and self._event.extensions:
            # Accepts the client's first acceptable offer, if any.
            extensions.append(
                DeflateExtension(
                    compression, is_client=False, max_message_size=self._options.max_message_size
                )
            )
        data = handshake.send(
            AcceptConnection(
                subprotocol=subprotocol,
                extra_headers=list(extra_headers or []),
                extensions=extensions,
            )
        )
        protocol = handshake.connection
        assert protocol is not None
        connection = WebSocketConnection(
            self._stream,
            protocol,
            is_client=False,
            path=self._event.target,
            subprotocol=subprotocol,
            handshake_headers=self._event.extra_headers,
            options=self._options,
            extensions=[extension for extension in extensions if extension.enabled()],
            endpoints=(self._local, self._remote),
        )
        self._connection = connection
        try:
            await self._stream.send_all(data)
        except BaseException as exc:
            connection._set_close_reason(CloseReason(1006, None))
            await trio.aclose_forcefully(self._stream)
            if isinstance(exc, STREAM_ERRORS):
                raise ConnectionClosed(connection.closed) from exc
            raise
        connection._start(self._nursery)
        return connection

    async def reject(
        self,
        status_code: int,
        *,
        extra_headers: Headers | None = None,
        body: bytes | None = None,
    ) -> None:
        """Refuse the connection with an HTTP response, then close it.

        :param status_code: an HTTP status of 200 or more (1xx is refused).
        :param extra_headers: response headers as byte pairs.
        :param body: the response body, if any.
        """
        if isinstance(status_code, bool) or not isinstance(status_code, int):
            raise TypeError("status_code must be an int")
        if not 200 <= status_code <= 999:
            raise ValueError(f"cannot reject with HTTP status {status_code}")
        handshake = self._claim()
        await self._send_rejection(handshake, status_code, list(extra_headers or []), body or b"")

    async def _send_rejection(
        self, handshake: H11Handshake, status_code: int, headers: Headers, body: bytes
    ) -> None:
        if body:
            data = handshake.send(
                RejectConnection(status_code=status_code, headers=headers, has_body=True)
            )
            data += handshake.send(RejectData(data=body, body_finished=True))
        else:
            data = handshake.send(RejectConnection(status_code=status_code, headers=headers))
        try:
            await self._stream.send_all(data)
            await self._stream.aclose()
        except STREAM_ERRORS:
            pass
        finally:
            await trio.aclose_forcefully(self._stream)

    async def _finish(self, handler_failed: bool, disconnect_timeout: float) -> None:
        """Close whatever the handler left open."""
        with trio.move_on_after(disconnect_timeout):
            if self._connection is not None:
                code = INTERNAL_ERROR if handler_failed else NORMAL_CLOSURE
                await self._connection.aclose(code)
            elif self._handshake is not None:
                await self._send_rejection(
                    self._claim(), 500 if handler_failed else 403, [], b""
                )
        # The timeout cancelled aclose, which then aborted the connection.


async def _read_request(
    stream: trio.abc.Stream, nursery: trio.Nursery, options: ConnectionOptions
) -> WebSocketRequest:
    """Read the opening request; answer garbage with 400 and raise
    :exc:`HandshakeError`."""
    handshake = H11Handshake(ConnectionType.SERVER)
    try:
        while True:
            data = await stream.receive_some(options.receive_buffer_size)
            if not data:
                raise HandshakeError("client closed the connection during the handshake")
            try:
                handshake.receive_data(data)  # type: ignore[arg-type]
            except ProtocolError as exc:
                await stream.send_all(_BAD_REQUEST)
                raise HandshakeError(f"invalid opening request: {exc}") from exc
            for event in handshake.events():
                if isinstance(event, Request):
                    return WebSocketRequest(stream, handshake, event, nursery, options)
    except STREAM_ERRORS as exc:
        raise HandshakeError(f"connection lost during the opening handshake: {exc}") from exc


async def wrap_server_stream(
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    message_queue_size: int = DEFAULT_MESSAGE_QUEUE_SIZE,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    receive_buffer_size: int | None = DEFAULT_RECEIVE_BUFFER_SIZE,
    *,
    compression: str | DeflateConfig | None = None,
) -> WebSocketRequest:
    """Read a client's opening handshake from a stream you accepted.

    :param nursery: where the connection's reader runs once accepted.
    :param compression: ``"deflate"`` or a :class:`DeflateConfig` to accept
        permessage-deflate (RFC 7692) when the client offers it; None (the
        default) never compresses.
    :returns: the request, for you to accept or reject.
    :raises HandshakeError: the client sent no valid request (a 400 answer
        was sent and the stream closed).
    """
    options = ConnectionOptions.build(
        message_queue_size, max_message_size, receive_buffer_size, compression
    )
    try:
        return await _read_request(stream, nursery, options)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


class WebSocketServer:
    """Serves WebSocket connections on already-open listeners.

    Most programs use :func:`serve_websocket`, which opens TCP (or TLS)
    listeners and runs one of these. The options are those of
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
        compression: str | DeflateConfig | None = None,
    ) -> None:
        if not listeners:
            raise ValueError("a WebSocketServer needs at least one listener")
        self._handler = handler
        self._listeners = list(listeners)
        self._handler_nursery = handler_nursery
        self._options = ConnectionOptions.build(
            message_queue_size, max_message_size, receive_buffer_size, compression
        )
        self._connect_timeout = check_timeout("connect_timeout", connect_timeout)
        self._disconnect_timeout = check_timeout("disconnect_timeout", disconnect_timeout)

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

    async def run(
        self, *, task_status: trio.TaskStatus[WebSocketServer] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Serve until cancelled; ``nursery.start(server.run)`` returns the
        server once it is listening."""
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(
                    trio.serve_listeners,
                    self._handle_connection,
                    self._listeners,
                    handler_nursery=self._handler_nursery,
                )
            )
            logger.debug("listening on %s", ", ".join(map(str, self.listeners)))
            task_status.started(self)
            await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _handle_connection(self, stream: trio.abc.Stream) -> None:
        handler_error: BaseException | None = None
        request: WebSocketRequest | None = None
        async with trio.open_nursery() as nursery:
            with trio.move_on_after(self._connect_timeout):
                try:
                    request = await wrap_server_stream(
                        nursery,
                        stream,
                        self._options.message_queue_size,
                        self._options.max_message_size,
                        self._options.receive_buffer_size,
                        compression=self._options.compression,
                    )
                except HandshakeError as exc:
                    logger.debug("handshake failed: %s", exc)
                    return
            if request is None:  # the client was too slow; it has been dropped
                return
            try:
                await self._handler(request)
            except BaseException as exc:
                # Raised below, outside this nursery, so that serve_listeners
                # sees the handler's own exception, not a group around it.
                handler_error = exc
            await request._finish(handler_error is not None, self._disconnect_timeout)
        if handler_error is not None:
            try:
                raise handler_error
            finally:
                del handler_error


async def serve_websocket(
    handler: Handler,
    host: str | bytes | Sequence[str | bytes] | None,
    port: int,
    ssl_context: ssl.SSLContext | None,
    *,
    handler_nursery: trio.Nursery | None = None,
    message_queue_size: int = DEFAULT_MESSAGE_QUEUE_SIZE,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    receive_buffer_size: int | None = DEFAULT_RECEIVE_BUFFER_SIZE,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    disconnect_timeout: float = DEFAULT_DISCONNECT_TIMEOUT,
    task_status: trio.TaskStatus[WebSocketServer] = trio.TASK_STATUS_IGNORED,
    compression: str | DeflateConfig | None = None,
) -> NoReturn:
    """Listen on ``host:port`` and run ``await handler(request)`` for each
    WebSocket connection, until cancelled::

        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        print(server.port)

    :param handler: an async function taking a :class:`WebSocketRequest`.
    :param host: the address to listen on; None for all interfaces.
    :param port: the TCP port; 0 for any free port.
    :param ssl_context: an ``ssl.SSLContext`` for wss://, or None.
    :param handler_nursery: run handlers (and their connections' readers)
        in this nursery instead of the server's own.
    :param message_queue_size: see :func:`open_websocket`.
    :param max_message_size: see :func:`open_websocket`.
    :param receive_buffer_size: see :func:`open_websocket`.
    :param connect_timeout: seconds a client has to finish its opening
        handshake before it is dropped.
    :param disconnect_timeout: seconds allowed for the closing handshake
        after the handler finishes.
    :param compression: ``"deflate"`` or a :class:`DeflateConfig` to accept
        permessage-deflate (RFC 7692) from clients that offer it; None (the
        default) never compresses. Each connection's
        :attr:`WebSocketConnection.compression` says what was agreed.
    """
    listen_host: Any = host
    listeners: Sequence[trio.abc.Listener[Any]]
    if ssl_context is None:
        listeners = await trio.open_tcp_listeners(port, host=listen_host)
    else:
        listeners = await trio.open_ssl_over_tcp_listeners(
            port, ssl_context, host=listen_host, https_compatible=True
        )
    server = WebSocketServer(
        handler,
        listeners,
        handler_nursery=handler_nursery,
        message_queue_size=message_queue_size,
        max_message_size=max_message_size,
        receive_buffer_size=receive_buffer_size,
        connect_timeout=connect_timeout,
        disconnect_timeout=disconnect_timeout,
        compression=compression,
    )
    await server.run(task_status=task_status)
