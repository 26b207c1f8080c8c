"""The one options record a client connection is opened with.

Rules:
- The client's public entry points (``open_websocket``,
  ``connect_websocket``, ``wrap_client_stream``; the ``*_url`` variants
  pass theirs on) take the options as keyword arguments, each documented
  there, and build one :class:`ClientOptions` from them; everything below
  gets the record, never the arguments one by one. A new option touches
  this record (or ``_core.config.ConnectionOptions``), its documentation
  and the public signatures only.
- Building it validates every argument (``TypeError``/``ValueError``)
  before anything is opened.
- Pure: no trio, no I/O. Where to connect (host, port, resource, TLS) is
  not an option: it is the target (``_core.url.WebSocketTarget``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .._core.compression import DeflateConfig
from .._core.config import (
    DEFAULT_DISCONNECT_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MESSAGE_QUEUE_SIZE,
    DEFAULT_RECEIVE_BUFFER_SIZE,
    ConnectionOptions,
)
from .._core.errors import Headers
from .._h2.dependency import require_h2
from .._h2.limits import HTTP2Limits
from .proxy_config import Proxy

DEFAULT_HTTP2_LIMITS = HTTP2Limits()

#: What ``unix_socket_path`` accepts.
SocketPath = str | bytes | os.PathLike[str] | os.PathLike[bytes]


def _check_subprotocols(subprotocols: object) -> list[str]:
    if subprotocols is None:
        return []
    if isinstance(subprotocols, str):
        raise TypeError("subprotocols must be an iterable of str, not a str")
    result: list[str] = list(subprotocols)  # type: ignore[call-overload]
    if not all(isinstance(item, str) for item in result):
        raise TypeError("each subprotocol must be a str")
    return result


def check_http2_mode(http2: object) -> str | None:
    """The client's ``http2`` argument as a mode: False -> None (HTTP/1.1),
    True -> ``"prefer"``, ``"require"`` as it is."""
    if http2 is False:
        return None
    if http2 is True:
        return "prefer"
    if http2 == "require":
        return "require"
    raise ValueError(f'http2 must be False, True or "require", not {http2!r}')


def check_headers(extra_headers: object) -> Headers:
    """``extra_headers`` as a list of ``(bytes, bytes)`` pairs (None: no
    header); TypeError otherwise. Also for the URL entry points, which add
    the URL's credentials."""
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


def _check_redirects(max_redirects: object) -> int:
    if isinstance(max_redirects, bool) or not isinstance(max_redirects, int):
        raise TypeError("max_redirects must be an int")
    if max_redirects < 0:
        raise ValueError(f"max_redirects must be >= 0, got {max_redirects}")
    return max_redirects


def _check_socket_path(unix_socket_path: object) -> SocketPath | None:
    if unix_socket_path is None or isinstance(unix_socket_path, (str, bytes, os.PathLike)):
        return unix_socket_path
    raise TypeError("unix_socket_path must be a str, bytes or os.PathLike path")


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientOptions:
    """A client's options, validated (see ``open_websocket`` for each).

    connection: what the connection is built with.
    subprotocols: offered, in order of preference.
    extra_headers: more request headers (a redirect to another origin
        drops them: see ``_client.redirects``).
    proxy: as given (None, a URL, a :class:`Proxy`, or True for the
        environment's).
    max_redirects: how many redirects to follow.
    unix_socket_path: connect there instead of host and port, or None.
    http2: None (HTTP/1.1 only), ``"prefer"`` (RFC 8441 when the server
        takes it, else the HTTP/1.1 upgrade) or ``"require"``.
    http2_limits: the bounds of an HTTP/2 connection this client opens.
    """

    connection: ConnectionOptions
    subprotocols: list[str]
    extra_headers: Headers
    proxy: str | Proxy | bool | None = None
    max_redirects: int = 0
    unix_socket_path: SocketPath | None = None
    http2: str | None = None
    http2_limits: HTTP2Limits = DEFAULT_HTTP2_LIMITS

    @classmethod
    def build(
        cls,
        *,
        subprotocols: list[str] | None = None,
        extra_headers: Headers | None = None,
        message_queue_size: int = DEFAULT_MESSAGE_QUEUE_SIZE,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        receive_buffer_size: int | None = DEFAULT_RECEIVE_BUFFER_SIZE,
        disconnect_timeout: float = DEFAULT_DISCONNECT_TIMEOUT,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        proxy: str | Proxy | bool | None = None,
        max_redirects: int = 0,
        unix_socket_path: SocketPath | None = None,
        max_buffered_bytes: int | None = None,
        compression: str | DeflateConfig | None = None,
        close_on_cancel: bool = False,
        http2: bool | str = False,
        http2_limits: HTTP2Limits | None = None,
    ) -> ClientOptions:
        """Validate the public arguments and return the record.
        ``close_on_cancel`` is ``open_websocket``'s (see
        ``ConnectionOptions``)."""
        connection = ConnectionOptions.build(
            message_queue_size=message_queue_size,
            max_message_size=max_message_size,
            receive_buffer_size=receive_buffer_size,
            max_buffered_bytes=max_buffered_bytes,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            compression=compression,
            close_timeout=disconnect_timeout,
            close_on_cancel=close_on_cancel,
        )
        protocols = _check_subprotocols(subprotocols)
        if unix_socket_path is not None and isinstance(proxy, (str, Proxy)):
            raise ValueError("unix_socket_path and proxy cannot be used together")
        if http2_limits is not None and not isinstance(http2_limits, HTTP2Limits):
            raise TypeError("http2_limits must be an HTTP2Limits")
        mode = check_http2_mode(http2)
        if mode is not None:
            require_h2()
        return cls(
            http2=mode,
            http2_limits=http2_limits or HTTP2Limits(),
            connection=connection,
            subprotocols=protocols,
            extra_headers=check_headers(extra_headers),
            proxy=proxy,
            max_redirects=_check_redirects(max_redirects),
            unix_socket_path=_check_socket_path(unix_socket_path),
        )
