"""The client side: connecting, the opening handshake, and the context
managers that own a connection's lifetime.

Rules:
- Builds on ``_core.connection`` and the pure modules; never imports ``_server.server``.
- Every failure before the connection is open is a :exc:`HandshakeError`
  (``ConnectionTimeout``, ``ConnectionRejected``, or the base class with the
  low-level cause chained) whose ``phase`` names the step that failed: DNS,
  connect (TCP or Unix socket), TLS, HTTP. A failed step closes what it
  opened before raising. An answer wsproto cannot read is one too, never
  its raw ``ValueError`` or ``ProtocolError`` (``_client.bad_response`` words it,
  and names TLS spoken on one side only).
- Arguments the upgrade request cannot carry raise ``ValueError`` before
  anything is sent, never h11's own exception.
- Redirects are followed only when ``max_redirects`` allows (0 by default,
  as in 0.12.2); where they may lead, and which headers go along, is
  decided by ``_client.redirects``.
- ``open_websocket*`` own a nursery but raise single exceptions: the user's
  own exception leaves their block unwrapped (see ``_core.groups``).
- Each entry point validates its options once, into one
  ``_client.options.ClientOptions``, before anything is opened; the
  functions below take that record (keyword-only), never the options one
  by one.
"""

from __future__ import annotations

import os
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import trio
from wsproto import ConnectionType
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
from wsproto.extensions import Extension
from wsproto.handshake import H11Handshake
from wsproto.utilities import ProtocolError

from .._core.close import GOING_AWAY, NORMAL_CLOSURE
from .._core.compression import DeflateConfig
from .._core.config import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DISCONNECT_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MESSAGE_QUEUE_SIZE,
    DEFAULT_RECEIVE_BUFFER_SIZE,
    ConnectionOptions,
    check_timeout,
)
from .._core.connection import STREAM_ERRORS, WebSocketConnection
from .._core.contracts import OpeningConnection
from .._core.deflate import DeflateExtension
from .._core.errors import (
    PHASE_CONNECT,
    PHASE_DNS,
    PHASE_HTTP,
    PHASE_TLS,
    ConnectionRejected,
    ConnectionTimeout,
    DisconnectionTimeout,
    HandshakeError,
    Headers,
)
from .._core.groups import collapse_exception_groups, combine
from .._core.url import WebSocketTarget, host_with_port, parse_ws_url
from .._h2 import alpn
from .._h2.limits import HTTP2Limits
from .._wire.socket_stream import lean_stream
from .._wire.tls_stream import tls_stream
from .bad_response import (
    TLS_TIMEOUT_HINT,
    closed_before_answer,
    invalid_response,
    not_tls_hint,
    tls_answer,
)
from .http2 import (
    negotiated_http2,
    open_http2_websocket,
    start_http2_client,
)
from .options import ClientOptions, SocketPath, check_headers
from .proxy import open_tunnel
from .proxy_config import Proxy, choose_proxy
from .redirects import (
    REDIRECT_STATUSES,
    headers_for_redirect,
    redirect_target,
    same_origin,
    target_url,
)

if sys.version_info < (3, 11):  # pragma: no cover - trio installs the backport
    from exceptiongroup import BaseExceptionGroup

def _ssl_context_for(use_ssl: bool | ssl.SSLContext) -> ssl.SSLContext | None:
    if isinstance(use_ssl, ssl.SSLContext):
        return use_ssl
    if use_ssl is True:
        return ssl.create_default_context()
    if use_ssl is False:
        return None
    # The words of trio-websocket 0.12.2, which code and tests may match.
    raise TypeError("`use_ssl` argument must be bool or ssl.SSLContext")


@dataclass
class Progress:
    """The phase an opening connection is in, for the timeout's message."""

    phase: str = PHASE_CONNECT
    #: What is being done, as the timeout's message says it.
    doing: str = "connecting"
    #: Whom to: ``host:port`` or the Unix socket.
    where: str = ""

    def enter(self, phase: str, doing: str) -> None:
        self.phase = phase
        self.doing = doing


def _is_ip_literal(host: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return True
    return False


async def _open_transport(
    host: str, port: int, unix_socket_path: SocketPath | None, progress: Progress
) -> trio.abc.Stream:
    """A TCP stream to ``host:port``, or a stream over the Unix socket."""
    if unix_socket_path is not None:
        progress.where = f"Unix socket {os.fsdecode(unix_socket_path)!r}"
        progress.enter(PHASE_CONNECT, "connecting")
        try:
            return lean_stream(await trio.open_unix_socket(unix_socket_path))
        except OSError as exc:
            raise HandshakeError(
                f"could not connect to {progress.where}: {exc}", phase=PHASE_CONNECT
            ) from exc
    # trio looks the name up and connects in one call: a failed lookup is
    # told apart by its exception, but a timeout in that call can only be
    # reported as the connect phase (its message says both).
    progress.where = f"{host}:{port}"
    if _is_ip_literal(host):
        progress.enter(PHASE_CONNECT, "the TCP connection")
    else:
        progress.enter(PHASE_CONNECT, "the DNS lookup or the TCP connection")
    try:
        return lean_stream(await trio.open_tcp_stream(host, port))
    except socket.gaierror as exc:
        raise HandshakeError(
            f"could not resolve {host!r} (DNS lookup failed): {exc}", phase=PHASE_DNS
        ) from exc
    except OSError as exc:
        cause, detail = _connect_failure(exc)
        raise HandshakeError(
            f"could not connect to {host}:{port} (TCP): {detail}", phase=PHASE_CONNECT
        ) from cause


def _connect_failure(exc: OSError) -> tuple[OSError, str]:
    """The error to chain and the text to show for a failed TCP connect.

    trio raises one ``OSError("all attempts to connect ... failed")`` with
    the error of each address it tried grouped as its cause; when there was
    a single address, that error (``ConnectionRefusedError``...) is the one
    worth chaining and showing."""
    group = exc.__cause__
    if isinstance(group, BaseExceptionGroup):
        errors = [error for error in group.exceptions if isinstance(error, OSError)]
        if len(errors) == 1 and len(group.exceptions) == 1:
            return errors[0], str(errors[0])
        if errors:
            return exc, f"{exc}: " + "; ".join(dict.fromkeys(map(str, errors)))
    return exc, str(exc)


def _tls_failure(exc: BaseException) -> BaseException:
    """The ``ssl`` error behind a failed TLS handshake, when there is one
    (trio wraps it in ``BrokenResourceError``)."""
    if isinstance(exc, ssl.SSLError):
        return exc
    if isinstance(exc.__cause__, ssl.SSLError):
        return exc.__cause__
    return exc


async def open_stream(
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    *,
    options: ClientOptions,
    progress: Progress,
) -> trio.abc.Stream:
    """The stream a WebSocket handshake runs over: TCP (or a Unix socket,
    or a tunnel through a proxy), with TLS on top when ``ssl_context`` is
    given. The TLS handshake is finished here, so that a certificate failure
    raises at once."""
    unix_socket_path = options.unix_socket_path
    if unix_socket_path is None:
        through = choose_proxy(options.proxy, host, port, secure=ssl_context is not None)
        if through is not None:
            progress.where = f"{host}:{port}"
            progress.enter(PHASE_CONNECT, "the connection through the proxy")
            return await open_tunnel(through, host, port, ssl_context)
    stream = await _open_transport(host, port, unix_socket_path, progress)
    if ssl_context is None:
        return stream
    progress.enter(PHASE_TLS, "the TLS handshake")
    tls = tls_stream(stream, ssl_context, server_hostname=host, https_compatible=True)
    try:
        await tls.do_handshake()
    except (*STREAM_ERRORS, ssl.SSLError) as exc:
        await trio.aclose_forcefully(stream)
        cause = _tls_failure(exc)
        if isinstance(cause, ssl.SSLCertVerificationError):
            detail = f"certificate verification failed: {cause.verify_message}"
        else:
            detail = str(cause) or type(cause).__name__
        raise HandshakeError(
            f"TLS handshake with {progress.where} failed: {detail}{not_tls_hint(cause)}",
            phase=PHASE_TLS,
        ) from cause
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return tls


def _opening_request(
    host_header: str, resource: str, options: ClientOptions
) -> tuple[H11Handshake, bytes]:
    """A fresh client handshake and the upgrade request it sends.

    Arguments a request cannot carry (a header value with CR or LF or a
    leading space, a resource with a space, a non-ASCII subprotocol) raise
    ``ValueError``, before anything is sent."""
    handshake = H11Handshake(ConnectionType.CLIENT)
    extensions: list[Extension] = []
    connection = options.connection
    if connection.compression is not None:
        extensions.append(
            DeflateExtension(
                connection.compression,
                is_client=True,
                max_message_size=connection.max_message_size,
            )
        )
    request = Request(
        host=host_header,
        target=resource,
        subprotocols=options.subprotocols,
        extensions=extensions,
        extra_headers=options.extra_headers,
    )
    try:
        return handshake, handshake.send(request)
    except Exception as exc:
        # Mostly h11's LocalProtocolError (h11 checks every header and the
        # target; it is not our direct dependency), or a UnicodeEncodeError
        # that would not say which argument: one error that says it.
        raise ValueError(f"cannot build the opening handshake request: {exc}") from exc


async def _handshake(
    stream: trio.abc.Stream,
    handshake: H11Handshake,
    request_bytes: bytes,
    *,
    resource: str,
    options: ConnectionOptions,
) -> WebSocketConnection:
    """Send the upgrade request over ``stream`` and read the answer; the
    connection it returns is not started yet."""
    over_tls = isinstance(stream, trio.SSLStream)
    try:
        await stream.send_all(request_bytes)
        rejection: RejectConnection | None = None
        body = bytearray()
        answered = False
        while True:
            data = await stream.receive_some(options.receive_buffer_size)
            if not data:
                if rejection is not None:  # a body delimited by the end of the stream
                    raise ConnectionRejected(
                        rejection.status_code, list(rejection.headers), bytes(body)
                    )
                if not answered:
                    raise closed_before_answer(over_tls=over_tls)
                raise HandshakeError(
                    "connection closed during the opening handshake", phase=PHASE_HTTP
                )
            if not answered:
                answered = True
                tls_error = None if over_tls else tls_answer(data)
                if tls_error is not None:
                    raise tls_error
            try:
                handshake.receive_data(data)  # type: ignore[arg-type]
            except ValueError as exc:
                # wsproto decodes some header values as ASCII without a
                # check: a UnicodeDecodeError is the server's fault.
                raise invalid_response(exc) from exc
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
        raise invalid_response(exc) from exc
    except STREAM_ERRORS as exc:
        raise HandshakeError(
            f"connection lost during the opening handshake: {exc}", phase=PHASE_HTTP
        ) from exc


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
    ping_interval: float | None = None,
    ping_timeout: float | None = None,
    max_buffered_bytes: int | None = None,
    compression: str | DeflateConfig | None = None,
) -> WebSocketConnection:
    """Run the client handshake over a stream you already have.

    :param nursery: where the connection's reader task runs.
    :param stream: any ``trio.abc.Stream`` (TCP, TLS, in-memory...).
    :param host: the value of the ``Host`` header.
    :param resource: the request target (path and query).
    :returns: the open connection; closing it is up to you.
    """
    options = ClientOptions.build(
        subprotocols=subprotocols,
        extra_headers=extra_headers,
        message_queue_size=message_queue_size,
        max_message_size=max_message_size,
        receive_buffer_size=receive_buffer_size,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        max_buffered_bytes=max_buffered_bytes,
        compression=compression,
    )
    try:
        handshake, request_bytes = _opening_request(host, resource, options)
        connection = await _handshake(
            stream, handshake, request_bytes, resource=resource, options=options.connection
        )
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    await start_or_close(connection, stream, nursery)
    return connection


async def start_or_close(
    connection: WebSocketConnection, stream: trio.abc.Stream, nursery: trio.Nursery
) -> None:
    """Start the connection's reader in ``nursery``; if that cannot be
    (a nursery already closed raises RuntimeError), close the stream
    before raising, so the server is not left holding the connection."""
    opening: OpeningConnection = connection
    try:
        opening._start(nursery)
    except BaseException:
        opening._opening_failed()
        await trio.aclose_forcefully(stream)
        raise


def _follow_redirect(
    rejection: ConnectionRejected,
    target: WebSocketTarget,
    ssl_context: ssl.SSLContext | None,
    options: ClientOptions,
) -> tuple[WebSocketTarget, ssl.SSLContext | None, ClientOptions]:
    """Where to connect next after the redirect ``rejection``, with which
    TLS context and which options (the extra headers may be dropped)."""
    here = target_url(target)
    try:
        new_target = redirect_target(target, rejection.headers)
    except ValueError as exc:
        raise HandshakeError(
            f"cannot follow the HTTP {rejection.status_code} redirect from {here}: {exc}",
            phase=PHASE_HTTP,
        ) from rejection
    if options.unix_socket_path is not None and not same_origin(
        replace(target, secure=new_target.secure), new_target
    ):
        raise HandshakeError(
            f"cannot follow the HTTP {rejection.status_code} redirect from {here} to "
            f"{target_url(new_target)}: the Unix socket only reaches {target.host_header}",
            phase=PHASE_HTTP,
        ) from rejection
    if not new_target.secure:
        new_context = None
    elif ssl_context is not None:
        new_context = ssl_context
    else:  # ws:// redirected to wss://: verify as a wss:// URL would
        new_context = ssl.create_default_context()
    headers = headers_for_redirect(options.extra_headers, target, new_target)
    return new_target, new_context, replace(options, extra_headers=headers)


async def _connect_http2(
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    target: WebSocketTarget,
    options: ClientOptions,
) -> WebSocketConnection | trio.abc.Stream | None:
    """Try the WebSocket over HTTP/2 on a fresh ``stream``: the connection
    (started in ``nursery``), or ``stream`` itself to go on with the HTTP/1.1 upgrade
    (TLS agreed on HTTP/1.1), or None when the stream is spent and the
    caller must reconnect for HTTP/1.1 (the server speaks HTTP/2 without
    RFC 8441, or does not speak h2c). With ``http2="require"``, the last
    two raise :exc:`HandshakeError` instead."""
    tls = isinstance(stream, trio.SSLStream)
    if tls and not negotiated_http2(stream):
        if options.http2 == "require":
            raise HandshakeError(
                f"{target.host_header} does not speak HTTP/2 (it chose HTTP/1.1 by ALPN), "
                'and http2="require" was asked',
                phase=PHASE_HTTP,
            )
        return stream
    connection = await start_http2_client(nursery, stream, options.http2_limits)
    if connection is None:
        if options.http2 == "require":
            raise HandshakeError(
                f"{target.host_header} does not take WebSockets over HTTP/2 "
                "(no SETTINGS_ENABLE_CONNECT_PROTOCOL, RFC 8441), "
                'and http2="require" was asked',
                phase=PHASE_HTTP,
            )
        return None
    try:
        # A connection of its own: it ends with its one WebSocket.
        websocket, websocket_stream = await open_http2_websocket(
            connection, target, options, single_use=True
        )
    except BaseException:
        connection.abort()
        raise
    await start_or_close(websocket, websocket_stream, nursery)
    return websocket


async def connect_target(
    nursery: trio.Nursery,
    target: WebSocketTarget,
    ssl_context: ssl.SSLContext | None,
    *,
    options: ClientOptions,
    progress: Progress,
) -> WebSocketConnection:
    """Open the stream, run the handshake (following redirects as allowed)
    and start the connection's reader in ``nursery``."""
    redirects = 0
    max_redirects = options.max_redirects
    # Set once this server showed it does not take WebSockets over HTTP/2.
    http1_only = options.http2 is None
    while True:
        if ssl_context is not None:
            if options.http2 is None:
                alpn.without_http2(ssl_context)
            else:
                alpn.offer(ssl_context, alpn.HTTP1_ALPN if http1_only else alpn.HTTP2_ALPN)
        stream = await open_stream(
            target.host, target.port, ssl_context, options=options, progress=progress
        )
        try:
            if not http1_only:
                progress.enter(PHASE_HTTP, "the HTTP/2 connection")
                outcome = await _connect_http2(nursery, stream, target, options)
                if outcome is None:  # the server said no: reconnect
                    http1_only = True
                    continue
                if isinstance(outcome, WebSocketConnection):
                    return outcome
            progress.enter(PHASE_HTTP, "the HTTP upgrade")
            # Built once connected, so that a target the proxy refuses is
            # the proxy's error, as before.
            handshake, request_bytes = _opening_request(
                target.host_header, target.resource, options
            )
            connection = await _handshake(
                stream,
                handshake,
                request_bytes,
                resource=target.resource,
                options=options.connection,
            )
        except ConnectionRejected as rejection:
            await trio.aclose_forcefully(stream)
            if max_redirects == 0 or rejection.status_code not in REDIRECT_STATUSES:
                raise
            if redirects == max_redirects:
                raise HandshakeError(
                    f"too many redirects: {target_url(target)} answered HTTP "
                    f"{rejection.status_code} after {redirects} redirect(s) "
                    f"(max_redirects={max_redirects})",
                    phase=PHASE_HTTP,
                ) from rejection
            redirects += 1
            target, ssl_context, options = _follow_redirect(
                rejection, target, ssl_context, options
            )
            continue
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        await start_or_close(connection, stream, nursery)
        return connection


async def _connect_websocket(
    nursery: trio.Nursery,
    host: str,
    port: int,
    resource: str,
    use_ssl: bool | ssl.SSLContext,
    *,
    options: ClientOptions,
    progress: Progress,
) -> WebSocketConnection:
    ssl_context = _ssl_context_for(use_ssl)
    secure = ssl_context is not None
    target = WebSocketTarget(
        host=host,
        port=port,
        resource=resource,
        secure=secure,
        host_header=host_with_port(host, port, secure),
    )
    return await connect_target(nursery, target, ssl_context, options=options, progress=progress)


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
    ping_interval: float | None = None,
    ping_timeout: float | None = None,
    proxy: str | Proxy | bool | None = None,
    max_redirects: int = 0,
    unix_socket_path: SocketPath | None = None,
    max_buffered_bytes: int | None = None,
    compression: str | DeflateConfig | None = None,
    http2: bool | str = False,
    http2_limits: HTTP2Limits | None = None,
) -> WebSocketConnection:
    """Connect to ``host:port`` and open a WebSocket to ``resource``.

    The reader task runs in ``nursery``; closing the connection is up to
    you. There is no timeout: wrap the call in ``trio.fail_after`` if you
    need one. See :func:`open_websocket` for the parameters.
    """
    options = ClientOptions.build(
        subprotocols=subprotocols,
        extra_headers=extra_headers,
        message_queue_size=message_queue_size,
        max_message_size=max_message_size,
        receive_buffer_size=receive_buffer_size,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        proxy=proxy,
        max_redirects=max_redirects,
        unix_socket_path=unix_socket_path,
        max_buffered_bytes=max_buffered_bytes,
        compression=compression,
        http2=http2,
        http2_limits=http2_limits,
    )
    return await _connect_websocket(
        nursery, host, port, resource, use_ssl, options=options, progress=Progress()
    )


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
        headers = [*check_headers(extra_headers), (b"Authorization", target.authorization)]
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
    ping_interval: float | None = None,
    ping_timeout: float | None = None,
    proxy: str | Proxy | bool | None = None,
    max_redirects: int = 0,
    unix_socket_path: SocketPath | None = None,
    max_buffered_bytes: int | None = None,
    compression: str | DeflateConfig | None = None,
    http2: bool | str = False,
    http2_limits: HTTP2Limits | None = None,
) -> WebSocketConnection:
    """:func:`connect_websocket` from a ``ws://`` or ``wss://`` URL (see
    :func:`open_websocket_url`)."""
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
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        proxy=proxy,
        max_redirects=max_redirects,
        unix_socket_path=unix_socket_path,
        max_buffered_bytes=max_buffered_bytes,
        compression=compression,
        http2=http2,
        http2_limits=http2_limits,
    )


def timeout_message(asked: str, connect_timeout: float, progress: Progress) -> str:
    # Name where the time ran out when it is not the host asked for (a
    # redirect led elsewhere, or a Unix socket was used).
    where = "" if progress.where in ("", asked) else f" with {progress.where}"
    hint = TLS_TIMEOUT_HINT if progress.phase == PHASE_TLS else ""
    return (
        f"no WebSocket connection to {asked} within {connect_timeout} s"
        f" (timed out during {progress.doing}{where}{hint})"
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
    ping_interval: float | None = None,
    ping_timeout: float | None = None,
    proxy: str | Proxy | bool | None = None,
    max_redirects: int = 0,
    unix_socket_path: SocketPath | None = None,
    max_buffered_bytes: int | None = None,
    compression: str | DeflateConfig | None = None,
    http2: bool | str = False,
    http2_limits: HTTP2Limits | None = None,
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
    :param ping_interval: seconds between keepalive pings, or ``None`` (the
        default) for no keepalive. The first ping goes one interval after
        the connection opens; the round trip is kept in
        :attr:`WebSocketConnection.latency`. See :doc:`keepalive`.
    :param ping_timeout: seconds a keepalive ping may wait for its pong
        before the connection closes with 1011 (``INTERNAL_ERROR``,
        "keepalive ping timeout"); defaults to ``ping_interval``;
        ``math.inf`` never closes. Giving it without ``ping_interval`` is a
        ``ValueError``.
    :param proxy: the proxy to connect through: ``None`` (the default)
        connects directly and ignores the environment; a proxy URL
        (``http://``, ``https://``, ``socks5://``, ``socks5h://``) or a
        :class:`Proxy`; ``True`` reads ``wss_proxy``/``https_proxy`` (for
        TLS) or ``ws_proxy``/``http_proxy``, then ``all_proxy``, and
        ``no_proxy`` from the environment. See :doc:`proxies`. It cannot be
        combined with ``unix_socket_path``.
    :param max_redirects: how many HTTP redirects (301, 302, 303, 307, 308)
        to follow; 0, the default, follows none (the redirect raises
        :exc:`ConnectionRejected`). ``Location`` may be relative or
        ``http(s)://`` (read as ``ws(s)://``); a redirect from ``wss://`` to
        ``ws://`` is refused. ``extra_headers`` (cookies, tokens, any other)
        and credentials from the URL are sent again only to the same origin
        (scheme, host and port): a hop to another origin, ``ws://`` to
        ``wss://`` on the same host included, drops them all, for good.
        ``connect_timeout`` covers the whole chain.
    :param unix_socket_path: connect to this Unix domain socket instead of
        ``host:port``; ``host`` and ``port`` still make the ``Host`` header
        and, with TLS, the name the certificate is checked against.
    :param max_buffered_bytes: a cap, in bytes (UTF-8 bytes for text), on
        received data waiting for your code (whole messages and pieces of a
        streamed message); once reached, the connection stops reading from
        the network until you take some (pings that arrived before that are
        still answered, and :meth:`~WebSocketConnection.aclose` still
        completes). It is checked between reads, so up to
        ``receive_buffer_size`` more may arrive. None (the default): no cap
        beyond ``message_queue_size`` and the 256 KiB read-ahead. See
        :doc:`backpressure`.
    :param compression: ``"deflate"`` or a :class:`DeflateConfig` to offer
        permessage-deflate (RFC 7692); None (the default) offers nothing.
        Whether the server took it is :attr:`WebSocketConnection.compression`.
    :param http2: open the WebSocket over HTTP/2 (RFC 8441; needs the
        ``http2`` extra: the h2 package, ``pip install "h2>=4.1"``). ``True``
        tries it and falls back to the HTTP/1.1 upgrade when the server
        does not take it: over TLS, ``h2`` is offered by ALPN (set on the
        SSL context); on ``ws://``, the client speaks h2c with prior
        knowledge and reconnects for HTTP/1.1 if that fails.
        ``"require"`` raises :exc:`HandshakeError` instead of falling
        back. False (the default): HTTP/1.1 only. The connection carries
        this one WebSocket; :func:`open_websocket_session` shares one
        connection between many. See :doc:`http2`.
    :param http2_limits: the bounds of that HTTP/2 connection (an
        :class:`HTTP2Limits`; its defaults when None).
    :raises HandshakeError: the connection could not be opened (the cause is
        chained, and :attr:`HandshakeError.phase` says which step failed:
        ``"dns"``, ``"connect"``, ``"tls"`` or ``"http"``);
        :exc:`ConnectionRejected` when the server answered with an HTTP
        error; :exc:`ProxyError` when the proxy failed;
        :exc:`ConnectionTimeout` after ``connect_timeout``.
    """
    connect_timeout = check_timeout("connect_timeout", connect_timeout)
    disconnect_timeout = check_timeout("disconnect_timeout", disconnect_timeout)
    options = ClientOptions.build(
        subprotocols=subprotocols,
        extra_headers=extra_headers,
        message_queue_size=message_queue_size,
        max_message_size=max_message_size,
        receive_buffer_size=receive_buffer_size,
        disconnect_timeout=disconnect_timeout,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        proxy=proxy,
        max_redirects=max_redirects,
        unix_socket_path=unix_socket_path,
        max_buffered_bytes=max_buffered_bytes,
        compression=compression,
        http2=http2,
        http2_limits=http2_limits,
        close_on_cancel=True,
    )
    user_error: BaseException | None = None
    internal_error: BaseException | None = None
    try:
        with collapse_exception_groups():
            async with trio.open_nursery() as nursery:
                progress = Progress(where=f"{host}:{port}")
                try:
                    with trio.fail_after(connect_timeout):
                        connection = await _connect_websocket(
                            nursery,
                            host,
                            port,
                            resource,
                            use_ssl,
                            options=options,
                            progress=progress,
                        )
                except trio.TooSlowError:
                    raise ConnectionTimeout(
                        timeout_message(f"{host}:{port}", connect_timeout, progress),
                        phase=progress.phase,
                    ) from None
                try:
                    yield connection
                except BaseException as exc:
                    # Held here and raised below, outside the nursery, so it
                    # is not wrapped in an ExceptionGroup.
                    user_error = exc
                await close_on_exit(connection, user_error, disconnect_timeout)
    except BaseException as exc:
        internal_error = exc
    error = combine(user_error, internal_error)
    if error is not None:
        try:
            raise error
        finally:
            del error, user_error, internal_error


async def close_on_exit(
    connection: WebSocketConnection, user_error: BaseException | None, timeout: float
) -> None:
    """Close the connection as the ``open_websocket`` block exits, within
    ``timeout``. After a cancellation the close is shielded (it is a
    bounded best effort: the reader's own close on cancellation is bounded
    by ``CLOSE_GRACE``) and says 1001, going away. A close that times out
    raises :exc:`DisconnectionTimeout`, unless the block raised: then the
    block's exception is what the caller sees, as itself."""
    cancelled = isinstance(user_error, trio.Cancelled)
    with trio.CancelScope(shield=cancelled):
        try:
            with trio.fail_after(timeout):
                await connection.aclose(GOING_AWAY if cancelled else NORMAL_CLOSURE)
        except trio.TooSlowError:
            if user_error is None:
                raise DisconnectionTimeout(
                    f"closing handshake took longer than {timeout} s"
                ) from None


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
    ping_interval: float | None = None,
    ping_timeout: float | None = None,
    proxy: str | Proxy | bool | None = None,
    max_redirects: int = 0,
    unix_socket_path: SocketPath | None = None,
    max_buffered_bytes: int | None = None,
    compression: str | DeflateConfig | None = None,
    http2: bool | str = False,
    http2_limits: HTTP2Limits | None = None,
) -> AsyncIterator[WebSocketConnection]:
    """:func:`open_websocket` from a ``ws://`` or ``wss://`` URL.

    ``wss://`` uses ``ssl_context``, or a default context when it is None;
    ``ssl_context`` with a ``ws://`` URL, another scheme, or a URL without a
    host raise ``ValueError``. ``user:password@`` in the URL is sent as HTTP
    Basic credentials. With ``unix_socket_path`` the URL still gives the
    ``Host`` header, the resource and (``wss://``) the name the server's
    certificate must carry::

        async with open_websocket_url(
            "ws://localhost/events", unix_socket_path="/run/app.sock"
        ) as ws:
            ...
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
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        proxy=proxy,
        max_redirects=max_redirects,
        unix_socket_path=unix_socket_path,
        max_buffered_bytes=max_buffered_bytes,
        compression=compression,
        http2=http2,
        http2_limits=http2_limits,
    ) as connection:
        yield connection
