"""The one options record a server is built with.

Rules:
- The server's public entry points (:func:`serve_websocket`,
  :class:`WebSocketServer`, and ``serve_websocket_workers`` for its early
  checks) take the options as keyword arguments, each documented there,
  and build one :class:`ServerOptions` from them; everything below gets
  the record, never the arguments one by one. A new option touches this
  record, its documentation and the public signatures only.
- Building it validates every argument (``TypeError``/``ValueError``), so
  bad options fail before a listener is opened.
- Pure: no trio, no I/O.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

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
from .._h2.dependency import require_h2
from .._h2.limits import HTTP2Limits
from .http import HTTPRequest, HTTPResponse
from .limits import DEFAULT_REQUEST_LIMITS, RequestLimits
from .origins import AllowedOrigin, OriginPolicy

ProcessRequest = Callable[[HTTPRequest], "Awaitable[HTTPResponse | None] | HTTPResponse | None"]

#: The most connections reading their opening request at once, by default.
#: Each may hold up to a request head (16 KiB at most, see RequestLimits)
#: and, over TLS, a TLS session: 1024 bound that to ~16 MiB of heads. A
#: legitimate client needs its place for about one round trip, so 1024 at
#: once is more than a process completes in a second (~3,000 handshakes/s)
#: unless clients are very slow; it is also the usual soft limit on open
#: files, which a flood would otherwise exhaust first.
DEFAULT_MAX_HANDSHAKES = 1024


def _check_count_limit(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or None")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerOptions:
    """A server's options, validated (see :func:`serve_websocket` for each).

    connection: what each accepted connection is built with; its
        ``close_timeout`` is the server's ``disconnect_timeout``.
    connect_timeout: seconds for the whole handshake phase.
    process_request: the hook, or None.
    origins: the compiled ``origins`` option, or None (every origin).
    max_connections: the most connections in their handlers, or None.
    max_handshakes: the most connections reading their request, or None.
    request_limits: limits on the request head.
    http2: the limits of each HTTP/2 connection when WebSockets over
        HTTP/2 (RFC 8441) are served too, else None.
    """

    connection: ConnectionOptions
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    process_request: ProcessRequest | None = None
    origins: OriginPolicy | None = None
    max_connections: int | None = None
    max_handshakes: int | None = DEFAULT_MAX_HANDSHAKES
    request_limits: RequestLimits = DEFAULT_REQUEST_LIMITS
    http2: HTTP2Limits | None = None

    @property
    def disconnect_timeout(self) -> float:
        """Seconds for the closing after a handler returns."""
        return self.connection.close_timeout

    @classmethod
    def build(
        cls,
        *,
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
    ) -> ServerOptions:
        """Validate the public arguments and return the record."""
        disconnect_timeout = check_timeout("disconnect_timeout", disconnect_timeout)
        connection = ConnectionOptions.build(
            message_queue_size=message_queue_size,
            max_message_size=max_message_size,
            receive_buffer_size=receive_buffer_size,
            max_buffered_bytes=max_buffered_bytes,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            compression=compression,
            close_timeout=disconnect_timeout,
        )
        connect_timeout = check_timeout("connect_timeout", connect_timeout)
        if process_request is not None and not callable(process_request):
            raise TypeError("process_request must be a function")
        policy = None if origins is None else OriginPolicy(origins)
        max_connections = _check_count_limit("max_connections", max_connections)
        max_handshakes = _check_count_limit("max_handshakes", max_handshakes)
        if request_limits is None:
            request_limits = DEFAULT_REQUEST_LIMITS
        elif not isinstance(request_limits, RequestLimits):
            raise TypeError("request_limits must be a RequestLimits")
        if not isinstance(http2, bool):
            raise TypeError("http2 must be True or False")
        if http2_limits is not None and not isinstance(http2_limits, HTTP2Limits):
            raise TypeError("http2_limits must be an HTTP2Limits")
        if http2:
            require_h2()
        return cls(
            http2=(http2_limits or HTTP2Limits()) if http2 else None,
            connection=connection,
            connect_timeout=connect_timeout,
            process_request=process_request,
            origins=policy,
            max_connections=max_connections,
            max_handshakes=max_handshakes,
            request_limits=request_limits,
        )
