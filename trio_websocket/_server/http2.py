"""The server's side of RFC 8441: a WebSocket opened as an extended CONNECT
on an HTTP/2 stream becomes the same kind of request a handler gets for an
HTTP/1.1 upgrade.

Rules:
- Builds on ``_server.request`` (the request it specializes), ``_server.http``
  and the pure ``_h2`` modules; ``h2`` itself is imported only by
  :func:`start_http2_connection`, which runs only when the server's
  ``http2`` option is on.
- :class:`HTTP2WebSocketRequest` differs from its base in how it answers,
  never in what it checks: ``accept()`` writes ``:status 200`` (with the
  subprotocol and the permessage-deflate answer negotiated as wsproto
  does for HTTP/1.1) and the WebSocket runs on the stream; ``reject()``
  and the server's own refusals are whole HTTP/2 answers that end the
  stream.
- A request whose headers cannot be read as a WebSocket request gets 400
  on its stream, never an exception in the server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, cast

import trio
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import Request
from wsproto.extensions import Extension
from wsproto.handshake import H11Handshake, server_extensions_handshake

from .._core.config import ConnectionOptions
from .._core.endpoint import stream_endpoint
from .._core.errors import Headers
from .._h2.headers import ExtendedConnect, read_request, websocket_request
from .._h2.limits import HTTP2Limits
from .._h2.stream import HTTP2Stream
from .http import HTTPRequest, normalize_headers
from .request import WebSocketRequest

if TYPE_CHECKING:
    from .._h2.connection import HTTP2Connection


class HTTP2WebSocketRequest(WebSocketRequest):
    """A WebSocket request that arrived as an extended CONNECT on an HTTP/2
    stream (see the module rules); :attr:`http_version` is ``"2"``."""

    __slots__ = ()

    @property
    def http_version(self) -> str:
        return "2"

    def _accepting(
        self,
        handshake: H11Handshake | bytes,
        subprotocol: str | None,
        extra_headers: Headers | None,
        extensions: list[Extension],
    ) -> tuple[Connection, Callable[[], Awaitable[None]]]:
        headers: Headers = []
        if subprotocol is not None:
            headers.append((b"sec-websocket-protocol", subprotocol.encode("ascii")))
        if extensions:
            # (A server's Request event holds the offers as text.)
            offers = cast("list[str]", list(self._event.extensions))
            answer = server_extensions_handshake(offers, extensions)
            if answer:
                headers.append((b"sec-websocket-extensions", answer))
        if extra_headers:
            headers.extend(normalize_headers(list(extra_headers)))
        protocol = Connection(
            ConnectionType.SERVER,
            extensions=[extension for extension in extensions if extension.enabled()],
        )
        stream = self._stream
        assert isinstance(stream, HTTP2Stream)
        return protocol, partial(stream.send_response_headers, 200, headers)

    async def _reject_with(
        self, handshake: H11Handshake | bytes, status_code: int, headers: Headers, body: bytes
    ) -> None:
        stream = self._stream
        assert isinstance(stream, HTTP2Stream)
        await stream.respond(status_code, headers, body)


def http2_request_view(
    stream: HTTP2Stream, connect: ExtendedConnect, endpoints: tuple[object, object]
) -> HTTPRequest:
    """The request as a ``process_request`` hook sees it."""
    local, remote = endpoints
    return HTTPRequest(
        method=connect.method,
        path=connect.path,
        headers=list(connect.headers),
        remote=remote,  # type: ignore[arg-type]
        local=local,  # type: ignore[arg-type]
        http_version="2",
        protocol=connect.protocol,
        authority=connect.authority,
    )


def read_http2_request(
    stream: HTTP2Stream,
    block: Headers,
    nursery: trio.Nursery,
    *,
    options: ConnectionOptions,
) -> tuple[HTTP2WebSocketRequest | None, HTTPRequest, str | None]:
    """The handler's request for one stream (None when it is not a valid
    WebSocket request), the hook's view of it, and what is wrong with it."""
    connect = read_request(block)
    endpoints = (stream_endpoint(stream, local=True), stream_endpoint(stream, local=False))
    view = http2_request_view(stream, connect, endpoints)
    problem = connect.problem()
    if problem is not None:
        return None, view, problem
    try:
        event: Request = websocket_request(connect)
    except ValueError as exc:
        return None, view, str(exc)
    request = HTTP2WebSocketRequest(stream, b"", event, nursery, options=options)
    return request, view, None


def start_http2_connection(
    transport: trio.abc.Stream,
    received: bytes,
    *,
    limits: HTTP2Limits,
    idle_timeout: float,
    on_request: Callable[[HTTP2Stream, Headers], None],
) -> HTTP2Connection:
    """The HTTP/2 connection of a client that chose HTTP/2 (ALPN or the
    preface), with what it sent so far; its ``run()`` serves it."""
    from .._h2.connection import HTTP2Connection

    return HTTP2Connection(
        transport,
        is_client=False,
        limits=limits,
        on_request=on_request,
        idle_timeout=idle_timeout,
        already_received=received,
    )
