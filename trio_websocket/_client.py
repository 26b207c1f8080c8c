"""The client side: connecting, the opening handshake, and the context
managers that own a connection's lifetime.

Rules:
- Builds on ``_connection`` and the pure modules; never imports ``_server``.
- Every failure before the connection is open is a :exc:`HandshakeError`
  (``ConnectionTimeout``, ``ConnectionRejected``, or the base class with the
  low-level cause chained).
- ``open_websocket*`` own a nursery but raise single exceptions: the user's
  own exception leaves their block unwrapped (see ``_groups``).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from wsproto import ConnectionType
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
from wsproto.extensions import Extension
from wsproto.handshake import H11Handshake
from wsproto.utilities import ProtocolError

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
from ._errors import (
    ConnectionRejected,
    ConnectionTimeout,
    DisconnectionTimeout,
    HandshakeError,
    Headers,
)
from ._groups import collapse_exception_groups, combine
from ._url import host_with_port, parse_ws_url


def _check_subprotocols(subprotocols: object) -> list[str]:
    if subprotocols is None:
        return []
    if isinstance(subprotocols, str):
        raise TypeError("subprotocols must be an iterable of str, not a str")
    result: list[str] = list(subprotocols)  # type: ignore[call-overload]
    if not all(isinstance(item, str) for item in result):
        raise TypeError("each subprotocol must be a str")
    return result


def _check_headers(extra_headers: object) -> Headers:
    if extra_headers is None:
        return []
    result: Headers = list(extra_headers)  # type: ignore[call-overload]
    for item in result:
        if (
            not isinstance(item, tuple)
            or len(item) != 2
            or not all(isinstance(part, bytes) for part in item)
        ):
            raise TypeError("extra_headers must be a list of (bytes, bytes) pairs")
    return result


def _ssl_context_for(use_ssl: bool | ssl.SSLContext) -> ssl.SSLContext | None:
    if isinstance(use_ssl, ssl.SSLContext):
        return use_ssl
    if use_ssl is True:
        return ssl.create_default_context()
    if use_ssl is False:
        return None
    raise TypeError("use_ssl must be a bool or an ssl.SSLContext")


async def _open_stream(
    host: str, port: int, ssl_context: ssl.SSLContext | None
) -> trio.abc.Stream:
    try:
        if ssl_context is None:
            return await trio.open_tcp_stream(host, port)
        stream = await trio.open_ssl_over_tcp_stream(
            host, port, ssl_context=ssl_context, https_compatible=True
        )
        # Finish TLS now so that a certificate failure is reported as such.
        await stream.do_handshake()
        return stream
    except (*STREAM_ERRORS, ssl.SSLError) as exc:
        raise HandshakeError(f"could not connect to {host}:{port}: {exc}") from exc


async def _handshake(
    stream: trio.abc.Stream,
    host_header: str,
    resource: str,
    subprotocols: list[str],
    extra_headers: Headers,
    options: ConnectionOptions,
) -> WebSocketConnection:
    """Run the client's opening handshake over ``stream``; the connection it
    returns is not started yet."""
    handshake = H11Handshake(ConnectionType.CLIENT)
    extensions: list[Extension] = []
    if options.compression is not None:
        extensions.append(
            DeflateExtension(
                options.compression, is_client=True, max_message_size=options.max_message_size
            )
        )
    request = Request(
        host=host_header,
        target=resource,
        subprotocols=subprotocols,
        extensions=extensions,
        extra_headers=extra_headers,
    )
    try:
        await stream.send_all(handshake.send(request))
        rejection: RejectConnection | None = None
        body = bytearray()
        while True:
            data = await stream.receive_some(options.receive_buffer_size)
            if not data:
                if rejection is not None:  # a body delimited by the end of the stream
                    raise ConnectionRejected(
                        rejection.status_code, list(rejection.headers), bytes(body)
                    )
                raise HandshakeError("connection closed during the opening handshake")
            handshake.receive_data(data)  # type: ignore[arg-type]
            for event in handshake.events():
                if isinstance(event, AcceptConnection):
                    protocol = handshake.connection
                    assert protocol is not None
                    return WebSocketConnection(
                        stream,
                        protocol,
                        is_client=True,
                        path=resource,
                        subprotocol=event.subprotocol,
                        handshake_headers=list(event.extra_headers),
                        options=options,
                        extensions=event.extensions,
                    )
                if isinstance(event, RejectConnection):
                    if not event.has_body:
                        raise ConnectionRejected(event.status_code, list(event.headers), None)
                    rejection = event
                elif isinstance(event, RejectData) and rejection is not None:
                    body += event.data
                    if event.body_finished or len(body) > options.max_message_size:
                        raise ConnectionRejected(
                            rejection.status_code, list(rejection.headers), bytes(body)
                        )
    except ProtocolError as exc:
        raise HandshakeError(f"invalid handshake response: {exc}") from exc
    except STREAM_ERRORS as exc:
        raise HandshakeError(f"connection lost during the opening handshake: {exc}") from exc


async def wrap_client_stream(
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    host: str,
    resource: str,
    *,
    subprotocols: list[str] | None = None,
    extra_headers: Headers | None = None,
    message_queue_size: int = DEFAULT_MESSAGE_QUEUE_SIZE,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    receive_buffer_size: int | None = DEFAULT_RECEIVE_BUFFER_SIZE,
    compression: str | DeflateConfig | None = None,
) -> WebSocketConnection:
    """Run the client handshake over a stream you already have.

    :param nursery: where the connection's reader task runs.
    :param stream: any ``trio.abc.Stream`` (TCP, TLS, in-memory...).
    :param host: the value of the ``Host`` header.
    :param resource: the request target (path and query).
    :returns: the open connection; closing it is up to you.
    """
    options = ConnectionOptions.build(
        message_queue_size, max_message_size, receive_buffer_size, compression
    )
    protocols = _check_subprotocols(subprotocols)
    headers = _check_headers(extra_headers)
    try:
        connection = await _handshake(stream, host, resource, protocols, headers, options)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    connection._start(nursery)
    return connection


async def connect_websocket(
    nursery: trio.Nursery,
    host: str,
    port: int,
    resource: str,
    *,
    use_ssl: bool | ssl.SSLContext,
    subprotocols: list[str] | None = None,
    extra_headers: Headers | None = None,
    message_queue_size: int = DEFAULT_MESSAGE_QUEUE_SIZE,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    receive_buffer_size: int | None = DEFAULT_RECEIVE_BUFFER_SIZE,
    compression: str | DeflateConfig | None = None,
) -> WebSocketConnection:
    """Connect to ``host:port`` and open a WebSocket to ``resource``.

    The reader task runs in ``nursery``; closing the connection is up to
    you. There is no timeout: wrap the call in ``trio.fail_after`` if you
    need one. See :func:`open_websocket` for the parameters.
    """
    options = ConnectionOptions.build(
        message_queue_size, max_message_size, receive_buffer_size, compression
    )
    protocols = _check_subprotocols(subprotocols)
    headers = _check_headers(extra_headers)
    ssl_context = _ssl_context_for(use_ssl)
    stream = await _open_stream(host, port, ssl_context)
    host_header = host_with_port(host, port, ssl_context is not None)
    try:
        connection = await _handshake(stream, host_header, resource, protocols, headers, options)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    connection._start(nursery)
    return connection


def _url_arguments(
    url: str, ssl_context: ssl.SSLContext | None, extra_headers: Headers | None
) -> tuple[str, int, str, ssl.SSLContext | bool, Headers | None]:
    """``connect_websocket`` arguments from a URL (host, port, resource,
    use_ssl, extra headers with credentials from the URL)."""
    target = parse_ws_url(url)
    if ssl_context is not None and not target.secure:
        raise ValueError("ssl_context given for a ws:// URL; use wss:// for TLS")
    use_ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else target.secure
    headers = extra_headers
    if target.authorization is not None:
        headers = [*_check_headers(extra_headers), (b"Authorization", target.authorization)]
    return target.host, target.port, target.resource, use_ssl, headers


async def connect_websocket_url(
    nursery: trio.Nursery,
    url: str,
    ssl_context: ssl.SSLContext | None = None,
    *,
    subprotocols: list[str] | None = None,
    extra_headers: Headers | None = None,
    message_queue_size: int = DEFAULT_MESSAGE_QUEUE_SIZE,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    receive_buffer_size: int | None = DEFAULT_RECEIVE_BUFFER_SIZE,
    compression: str | DeflateConfig | None = None,
) -> WebSocketConnection:
    """:func:`connect_websocket` from a ``ws://`` or ``wss://`` URL."""
    host, port, resource, use_ssl, headers = _url_arguments(url, ssl_context, extra_headers)
    return await connect_websocket(
        nursery,
        host,
        port,
        resource,
        use_ssl=use_ssl,
        subprotocols=subprotocols,
        extra_headers=headers,
        message_queue_size=message_queue_size,
        max_message_size=max_message_size,
        receive_buffer_size=receive_buffer_size,
        compression=compression,
    )


@asynccontextmanager
async def open_websocket(
    host: str,
    port: int,
    resource: str,
    *,
    use_ssl: bool | ssl.SSLContext,
    subprotocols: list[str] | None = None,
    extra_headers: Headers | None = None,
    message_queue_size: int = DEFAULT_MESSAGE_QUEUE_SIZE,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    receive_buffer_size: int | None = DEFAULT_RECEIVE_BUFFER_SIZE,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    disconnect_timeout: float = DEFAULT_DISCONNECT_TIMEOUT,
    compression: str | DeflateConfig | None = None,
) -> AsyncIterator[WebSocketConnection]:
    """Open a WebSocket client connection for the duration of a block::

        async with open_websocket("example.com", 443, "/chat", use_ssl=True) as ws:
            await ws.send_message("hello")

    :param host: the host to connect to (name, IPv4 or IPv6 literal).
    :param port: the TCP port.
    :param resource: the request target, path and query (``"/"`` at least).
    :param use_ssl: ``True`` for TLS with a default context, an
        ``ssl.SSLContext`` to use that, ``False`` for plain TCP.
    :param subprotocols: subprotocols to offer, in order of preference.
    :param extra_headers: more request headers, as ``(bytes, bytes)`` pairs.
    :param message_queue_size: how many received messages may wait unread
        before the connection stops reading from the network (it still
        reads up to 256 KiB more so that control frames are answered).
    :param max_message_size: the largest message accepted, in bytes; a
        larger one closes the connection with 1009.
    :param receive_buffer_size: the most bytes read from the network at once.
    :param connect_timeout: seconds allowed to connect and finish the opening
        handshake, else :exc:`ConnectionTimeout`.
    :param disconnect_timeout: seconds allowed for the closing handshake when
        the block exits, else :exc:`DisconnectionTimeout`.
    :param compression: ``"deflate"`` or a :class:`DeflateConfig` to offer
        permessage-deflate (RFC 7692); None (the default) offers nothing.
        Whether the server took it is :attr:`WebSocketConnection.compression`.
    :raises HandshakeError: the connection could not be opened (the cause is
        chained); :exc:`ConnectionRejected` when the server answered with an
        HTTP error.
    """
    connect_timeout = check_timeout("connect_timeout", connect_timeout)
    disconnect_timeout = check_timeout("disconnect_timeout", disconnect_timeout)
    user_error: BaseException | None = None
    internal_error: BaseException | None = None
    try:
        with collapse_exception_groups():
            async with trio.open_nursery() as nursery:
                try:
                    with trio.fail_after(connect_timeout):
                        connection = await connect_websocket(
                            nursery,
                            host,
                            port,
                            resource,
                            use_ssl=use_ssl,
                            subprotocols=subprotocols,
                            extra_headers=extra_headers,
                            message_queue_size=message_queue_size,
                            max_message_size=max_message_size,
                            receive_buffer_size=receive_buffer_size,
                            compression=compression,
                        )
                except trio.TooSlowError:
                    raise ConnectionTimeout(
                        f"no WebSocket connection to {host}:{port} within {connect_timeout} s"
                    ) from None
                try:
                    yield connection
                except BaseException as exc:
                    # Held here and raised below, outside the nursery, so it
                    # is not wrapped in an ExceptionGroup.
                    user_error = exc
                try:
                    with trio.fail_after(disconnect_timeout):
                        await connection.aclose()
                except trio.TooSlowError:
                    raise DisconnectionTimeout(
                        f"closing handshake took longer than {disconnect_timeout} s"
                    ) from None
    except BaseException as exc:
        internal_error = exc
    error = combine(user_error, internal_error)
    if error is not None:
        try:
            raise error
        finally:
            del error, user_error, internal_error


@asynccontextmanager
async def open_websocket_url(
    url: str,
    ssl_context: ssl.SSLContext | None = None,
    *,
    subprotocols: list[str] | None = None,
    extra_headers: Headers | None = None,
    message_queue_size: int = DEFAULT_MESSAGE_QUEUE_SIZE,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    disconnect_timeout: float = DEFAULT_DISCONNECT_TIMEOUT,
    receive_buffer_size: int | None = DEFAULT_RECEIVE_BUFFER_SIZE,
    compression: str | DeflateConfig | None = None,
) -> AsyncIterator[WebSocketConnection]:
    """:func:`open_websocket` from a ``ws://`` or ``wss://`` URL.

    ``wss://`` uses ``ssl_context``, or a default context when it is None;
    ``ssl_context`` with a ``ws://`` URL, another scheme, or a URL without a
    host raise ``ValueError``. ``user:password@`` in the URL is sent as HTTP
    Basic credentials.
    """
    host, port, resource, use_ssl, headers = _url_arguments(url, ssl_context, extra_headers)
    async with open_websocket(
        host,
        port,
        resource,
        use_ssl=use_ssl,
        subprotocols=subprotocols,
        extra_headers=headers,
        message_queue_size=message_queue_size,
        max_message_size=max_message_size,
        receive_buffer_size=receive_buffer_size,
        connect_timeout=connect_timeout,
        disconnect_timeout=disconnect_timeout,
        compression=compression,
    ) as connection:
        yield connection
