"""The plain WebSocket upgrade, read and answered without h11.

Rules:
- A shortcut, never a second opinion: :func:`read_upgrade` returns the very
  ``wsproto.events.Request`` that wsproto (with h11 inside) would build,
  and only for a request both would accept; anything else (HTTP/1.0, a
  body, duplicate keys, a header our strict parser refuses, a request
  wsproto would reject...) returns None, and the server hands the request
  to wsproto as before. So every refusal, and its status code, is still
  wsproto's.
- :func:`accept_response` writes the same bytes as wsproto's
  ``AcceptConnection`` without extensions or extra headers (the server
  lets wsproto answer when either is wanted).
- Why: h11 parsing and serializing cost about a sixth of the server's CPU
  per handshake (open + close); this path reuses the strict request parser
  that ``_server.http`` already has for the ``process_request`` hook.
- Memory: the request's headers live as long as the connection (they are
  its ``handshake_headers``). The header names, and the whole header lines,
  that nearly every upgrade request carries are shared objects instead of
  copies per connection (bytes and tuples are immutable, so nobody can tell
  but the allocator).
- Values only: no trio, no I/O.
"""

from __future__ import annotations

from base64 import b64encode
from hashlib import sha1

from wsproto.events import Request
from wsproto.utilities import split_comma_header

from .._core.errors import Headers
from .._wire import fast_paths
from .http import parse_request_head

#: RFC 6455 section 1.3: appended to the client's key before hashing.
_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: h11's default limit on a request head; a longer one goes to h11 to judge.
_MAX_HEAD_BYTES = 16 * 1024
#: Header names most requests carry: one shared copy each.
_SHARED_NAMES = {
    name: name
    for name in (
        b"upgrade",
        b"connection",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"origin",
        b"user-agent",
        b"pragma",
        b"cache-control",
        b"accept-encoding",
        b"accept-language",
        b"cookie",
    )
}
#: Whole header lines most requests carry, as shared pairs.
_SHARED_LINES = {
    line: line
    for line in (
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"connection", b"upgrade"),
        (b"connection", b"keep-alive, Upgrade"),
        (b"sec-websocket-version", b"13"),
        (b"pragma", b"no-cache"),
        (b"cache-control", b"no-cache"),
        (b"accept-encoding", b"gzip, deflate, br"),
        (b"accept-encoding", b"gzip, deflate, br, zstd"),
    )
}
#: Headers that would make h11 read a body (or refuse the request).
_BODY_HEADERS = frozenset({b"content-length", b"transfer-encoding"})


def read_upgrade(head: bytes) -> Request | None:
    """wsproto's ``Request`` event for ``head`` (a complete request head),
    or None when the request is not a plain, valid upgrade (see the module
    rules). Always None with the fast paths off (``_wire.fast_paths``)."""
    if len(head) > _MAX_HEAD_BYTES or not fast_paths.ENABLED:
        return None
    line_end = head.find(b"\r\n")
    if not head.startswith(b"GET ") or not head.endswith(b" HTTP/1.1", 0, line_end):
        return None
    parsed = parse_request_head(head)
    if parsed is None:
        return None
    _, target, all_headers = parsed
    # The rest follows wsproto's own reading of the headers, field by field.
    connection_tokens: list[str] | None = None
    extensions: list[str] = []
    subprotocols: list[str] = []
    headers: Headers = []
    host: str | None = None
    keys = 0
    upgrade = b""
    version: bytes | None = None
    try:
        for name, value in all_headers:
            if name == b"host":
                host = value.decode("idna")
                continue
            if name == b"sec-websocket-extensions":
                extensions.extend(split_comma_header(value))
                continue
            if name == b"sec-websocket-protocol":
                subprotocols.extend(split_comma_header(value))
                continue
            if name == b"connection":
                connection_tokens = split_comma_header(value)
            elif name == b"sec-websocket-key":
                keys += 1
            elif name == b"sec-websocket-version":
                version = value
            elif name == b"upgrade":
                upgrade = value
            elif name in _BODY_HEADERS:
                return None
            line = (_SHARED_NAMES.get(name, name), value)
            headers.append(_SHARED_LINES.get(line, line))
    except UnicodeError:  # a Host that is not IDNA, a token that is not ASCII
        return None
    if (
        connection_tokens is None
        or not any(token.lower() == "upgrade" for token in connection_tokens)
        or version != b"13"
        or keys != 1
        or upgrade.lower() != b"websocket"
        or host is None
    ):
        return None
    return Request(
        host=host,
        target=target,
        extensions=extensions,
        extra_headers=headers,
        subprotocols=subprotocols,
    )


def accept_response(request: Request, subprotocol: str | None) -> bytes:
    """The ``101 Switching Protocols`` answer to ``request`` (one that
    :func:`read_upgrade` returned), byte for byte as wsproto writes it."""
    key = next(value for name, value in request.extra_headers if name == b"sec-websocket-key")
    accept = b64encode(sha1(key + _ACCEPT_GUID).digest())
    response = (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n"
    )
    if subprotocol is not None:
        response += b"Sec-WebSocket-Protocol: " + subprotocol.encode("ascii") + b"\r\n"
    return response + b"\r\n"
