"""Network endpoints: the :class:`Endpoint` value and how to find the
endpoints of a trio stream.

Rules:
- Pure apart from reading socket names; never raises for an odd stream or
  listener: one that is not TCP (or TLS over TCP) is described by its
  ``repr()``.
"""

from __future__ import annotations

from typing import Any

import trio

from .._wire.socket_stream import LeanSocketStream
from .url import bracket_host, host_with_port


class Endpoint:
    """One end of a network connection.

    :param address: the IP address (or host name) as a string.
    :param port: the TCP port.
    :param is_ssl: whether the connection runs over TLS.
    """

    __slots__ = ("address", "is_ssl", "port")

    def __init__(self, address: str, port: int, is_ssl: bool) -> None:
        self.address: str = address
        self.port: int = port
        self.is_ssl: bool = is_ssl

    @property
    def url(self) -> str:
        """A ``ws://`` or ``wss://`` URL for this endpoint (IPv6 addresses in
        brackets; the scheme's default port left out)."""
        scheme = "wss" if self.is_ssl else "ws"
        return f"{scheme}://{host_with_port(self.address, self.port, self.is_ssl)}"

    @property
    def host_port(self) -> str:
        """``"address:port"``, with an IPv6 address in brackets
        (``"[::1]:8000"``): the endpoint as logs and messages show it."""
        return f"{bracket_host(self.address)}:{self.port}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Endpoint):
            return NotImplemented
        return (self.address, self.port, self.is_ssl) == (
            other.address,
            other.port,
            other.is_ssl,
        )

    def __hash__(self) -> int:
        return hash((self.address, self.port, self.is_ssl))

    def __reduce__(self) -> tuple[type[Endpoint], tuple[str, int, bool]]:
        return (Endpoint, (self.address, self.port, self.is_ssl))

    def __repr__(self) -> str:
        return (
            f'Endpoint(address="{self.address}", port={self.port}, '
            f"is_ssl={self.is_ssl})"
        )


def describe_endpoint(endpoint: Endpoint | str) -> str:
    """``endpoint.host_port``, or the text that stands for an endpoint of a
    stream that is not TCP."""
    return endpoint.host_port if isinstance(endpoint, Endpoint) else endpoint


def _from_socket_name(name: object, is_ssl: bool) -> Endpoint | None:
    """An :class:`Endpoint` from an IP socket name (``(address, port, ...)``),
    else None (a Unix socket path, say)."""
    if isinstance(name, tuple) and len(name) >= 2:
        return Endpoint(str(name[0]), int(name[1]), is_ssl)
    return None


def stream_endpoint(stream: trio.abc.Stream, *, local: bool) -> Endpoint | str:
    """The local or remote :class:`Endpoint` of ``stream``, or
    ``repr(stream)`` (as in 0.12.2) when it is not a TCP stream (possibly
    wrapped in TLS, or in TLS inside TLS); ``is_ssl`` when any layer is TLS."""
    if type(stream) is LeanSocketStream:
        # Every plain connection the library makes: no layers to look
        # through (this runs twice per connection, on the handshake path,
        # so _socket_endpoint's steps are inline here).
        try:
            name = stream.getsockname() if local else stream.getpeername()
        except OSError:
            return repr(stream)
        if type(name) is tuple and len(name) >= 2:
            return Endpoint(str(name[0]), int(name[1]), False)
        return repr(name)
    if type(stream) is trio.SSLStream and type(stream.transport_stream) is LeanSocketStream:
        # Every TLS connection the library makes: the same, one layer
        # down (and without asking the TLS stream for a name it does not
        # have: its __getattr__ is Python code that looks in its TLS
        # object first).
        lean: LeanSocketStream = stream.transport_stream
        try:
            name = lean.getsockname() if local else lean.getpeername()
        except OSError:
            return repr(stream)
        if type(name) is tuple and len(name) >= 2:
            return Endpoint(str(name[0]), int(name[1]), True)
        return repr(name)
    shared = getattr(stream, "shared_endpoints", None)
    if shared is not None:
        # One of many streams of a connection (an HTTP/2 stream): the
        # connection's endpoints, made once for all of its streams.
        return shared[0] if local else shared[1]  # type: ignore[no-any-return]
    is_ssl = False
    inner: object = stream
    # Look through the layers to the socket: TLS (TLS inside TLS through an
    # https:// proxy) and any wrapper that names the stream it runs over.
    for _ in range(8):
        if isinstance(inner, trio.SSLStream):
            is_ssl = True
        transport = getattr(inner, "transport_stream", None)
        if not isinstance(transport, trio.abc.Stream):
            break
        inner = transport
    if isinstance(inner, LeanSocketStream):
        # (It reads its names itself: no trio socket is made for this.)
        return _socket_endpoint(inner, stream, local, is_ssl)
    if isinstance(inner, trio.SocketStream):
        return _socket_endpoint(inner.socket, stream, local, is_ssl)
    return repr(stream)


def _socket_endpoint(
    named: LeanSocketStream | trio.socket.SocketType,
    stream: trio.abc.Stream,
    local: bool,
    is_ssl: bool,
) -> Endpoint | str:
    """The endpoint from ``named``'s socket name (``stream`` is the whole
    stream, whose ``repr()`` stands for a socket that has no name now)."""
    try:
        name = named.getsockname() if local else named.getpeername()
    except OSError:
        return repr(stream)
    endpoint = _from_socket_name(name, is_ssl)
    return endpoint if endpoint is not None else repr(name)


def listener_endpoint(listener: trio.abc.Listener[Any]) -> Endpoint | str:
    """The :class:`Endpoint` a TCP (or TLS over TCP) listener listens on,
    else ``repr(listener)`` (as in 0.12.2)."""
    is_ssl = False
    inner: object = listener
    if isinstance(inner, trio.SSLListener):
        is_ssl = True
        inner = inner.transport_listener
    if isinstance(inner, trio.SocketListener):
        endpoint = _from_socket_name(inner.socket.getsockname(), is_ssl)
        if endpoint is not None:
            return endpoint
    return repr(listener)
