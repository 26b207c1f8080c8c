"""The client's side of RFC 8441: opening a WebSocket as an extended CONNECT
on an HTTP/2 connection.

Rules:
- Builds on ``_core.connection`` and the ``_h2`` package; ``h2`` itself is
  imported only by :func:`start_http2_client`, which runs only when the
  caller asked for HTTP/2 (the ``http2`` option).
- The same answers mean the same errors as over HTTP/1.1: an answer other
  than 200 is :exc:`ConnectionRejected` (with its headers and body, the
  body bounded by ``max_message_size``); a 200 that picks a subprotocol we
  did not offer, or an extension we did not offer, is a
  :exc:`HandshakeError`; a stream reset or a connection lost before the
  answer is a :exc:`HandshakeError` too.
- Whether the server takes WebSockets over HTTP/2 is its SETTINGS
  (SETTINGS_ENABLE_CONNECT_PROTOCOL): :func:`start_http2_client` says so,
  and the caller decides between the HTTP/1.1 upgrade and an error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.extensions import Extension
from wsproto.handshake import client_extensions_handshake
from wsproto.utilities import split_comma_header

from .._core.connection import WebSocketConnection
from .._core.deflate import DeflateExtension
from .._core.errors import PHASE_HTTP, ConnectionRejected, HandshakeError
from .._core.url import WebSocketTarget
from .._h2.headers import connect_request, regular_headers, status_of
from .._h2.limits import HTTP2Limits
from .._h2.stream import HTTP2Stream
from .options import ClientOptions

if TYPE_CHECKING:
    from .._h2.connection import HTTP2Connection


def negotiated_http2(stream: trio.abc.Stream) -> bool:
    """Whether a TLS stream agreed on ``h2`` by ALPN."""
    return isinstance(stream, trio.SSLStream) and stream.selected_alpn_protocol() == "h2"


async def start_http2_client(
    nursery: trio.Nursery, transport: trio.abc.Stream, limits: HTTP2Limits
) -> HTTP2Connection | None:
    """Start an HTTP/2 connection over ``transport`` in ``nursery``; it
    when the server takes WebSockets over it (RFC 8441), else None (the
    connection is then closed)."""
    from .._h2.connection import HTTP2Connection

    connection = HTTP2Connection(transport, is_client=True, limits=limits)
    await nursery.start(connection.run)
    if await connection.wait_for_settings():
        return connection
    connection.abort()
    await connection.wait_ended()
    return None


def _offered_extensions(options: ClientOptions) -> list[Extension]:
    compression = options.connection.compression
    if compression is None:
        return []
    return [
        DeflateExtension(
            compression, is_client=True, max_message_size=options.connection.max_message_size
        )
    ]


async def open_http2_websocket(
    connection: HTTP2Connection,
    target: WebSocketTarget,
    options: ClientOptions,
    *,
    single_use: bool = False,
) -> tuple[WebSocketConnection, HTTP2Stream]:
    """Open a WebSocket on a new stream of ``connection``: the WebSocket,
    not started yet (the caller starts it), and its stream. A
    ``single_use`` connection ends with this WebSocket."""
    extensions = _offered_extensions(options)
    offers: list[str] = []
    for extension in extensions:
        offer = extension.offer()
        if offer:
            offers.append(extension.name if offer is True else f"{extension.name}; {offer}")
    try:
        block = connect_request(
            scheme="https" if target.secure else "http",
            authority=target.host_header,
            path=target.resource,
            subprotocols=options.subprotocols,
            extension_offers=offers,
            extra_headers=options.extra_headers,
        )
    except (ValueError, UnicodeError) as exc:
        raise ValueError(f"cannot build the opening handshake request: {exc}") from exc
    try:
        stream = connection.open_stream(block)
    except trio.BrokenResourceError as exc:
        raise HandshakeError(f"the HTTP/2 connection is gone: {exc}", phase=PHASE_HTTP) from exc
    if single_use:
        connection.close_when_done()
    try:
        return await _read_answer(stream, target, options, extensions), stream
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


async def _read_answer(
    stream: HTTP2Stream,
    target: WebSocketTarget,
    options: ClientOptions,
    extensions: list[Extension],
) -> WebSocketConnection:
    try:
        answer = await stream.wait_response()
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise HandshakeError(
            f"the HTTP/2 stream closed before the server answered: {exc}", phase=PHASE_HTTP
        ) from exc
    status = status_of(answer)
    headers = regular_headers(answer)
    if status != 200:
        body = await _read_body(stream, options.connection.max_message_size)
        raise ConnectionRejected(status, headers, body)
    subprotocol: str | None = None
    accepted_extensions: list[str] = []
    try:
        for name, value in headers:
            if name == b"sec-websocket-protocol":
                subprotocol = value.decode("ascii")
            elif name == b"sec-websocket-extensions":
                accepted_extensions.extend(split_comma_header(value))
    except UnicodeError as exc:
        raise HandshakeError(f"unreadable answer header: {exc}", phase=PHASE_HTTP) from exc
    if subprotocol is not None and subprotocol not in options.subprotocols:
        raise HandshakeError(
            f"the server chose subprotocol {subprotocol!r}, which was not offered",
            phase=PHASE_HTTP,
        )
    try:
        agreed = client_extensions_handshake(accepted_extensions, extensions)
    except Exception as exc:  # wsproto raises its own errors for a bad answer
        raise HandshakeError(
            f"the server's permessage-deflate answer is invalid: {exc}", phase=PHASE_HTTP
        ) from exc
    return WebSocketConnection(
        stream,
        Connection(ConnectionType.CLIENT, extensions=agreed),
        is_client=True,
        path=target.resource,
        subprotocol=subprotocol,
        handshake_headers=headers,
        options=options.connection,
        extensions=agreed,
        http_version="2",
    )


async def _read_body(stream: HTTP2Stream, limit: int) -> bytes | None:
    """A rejection's body, up to ``limit`` bytes (None when there is none)."""
    body = bytearray()
    try:
        while len(body) <= limit:
            data = await stream.receive_some()
            if not data:
                break
            body += data
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    return bytes(body[:limit]) if body else None
