"""The header blocks of RFC 8441: the extended CONNECT that opens a
WebSocket on an HTTP/2 stream, and its answer.

Rules:
- Pure: no I/O, no ``h2`` (the connection validates the HTTP/2 rules of
  every block; this module checks what RFC 8441 adds).
- The request becomes the same wsproto ``Request`` event an HTTP/1.1
  upgrade does (``:authority`` as the host, ``:path`` as the target), so
  that the server's checks and the handler see one kind of request.
- Connection-specific header fields (RFC 9113, section 8.2.2) never go
  out: a response or request header a user adds that HTTP/2 forbids is
  dropped from an answer we write, and refused (``ValueError``) in a
  request the client builds.
"""

from __future__ import annotations

from dataclasses import dataclass

from wsproto.events import Request
from wsproto.utilities import split_comma_header

Headers = list[tuple[bytes, bytes]]

#: Fields that are about one HTTP/1.1 connection, forbidden in HTTP/2.
CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"upgrade", b"keep-alive", b"proxy-connection", b"transfer-encoding"}
)


@dataclass(frozen=True)
class ExtendedConnect:
    """What one request asked for."""

    method: str
    path: str
    authority: str
    scheme: str
    protocol: str | None
    #: The regular (not pseudo-) header fields.
    headers: Headers

    @property
    def is_websocket(self) -> bool:
        """An extended CONNECT for the WebSocket protocol (RFC 8441,
        section 4), with the version RFC 6455 defines."""
        return (
            self.method == "CONNECT"
            and self.protocol is not None
            and self.protocol.lower() == "websocket"
            and (b"sec-websocket-version", b"13") in self.headers
        )

    def problem(self) -> str | None:
        """Why this is not a WebSocket request, or None when it is."""
        if self.method != "CONNECT" or self.protocol is None:
            return f"{self.method} request, not an extended CONNECT"
        if self.protocol.lower() != "websocket":
            return f"extended CONNECT for {self.protocol!r}, not websocket"
        versions = [value for name, value in self.headers if name == b"sec-websocket-version"]
        if versions != [b"13"]:
            return "missing or unsupported Sec-WebSocket-Version"
        return None


def read_request(block: Headers) -> ExtendedConnect:
    """Split a request's header block (already valid HTTP/2)."""
    pseudo: dict[bytes, bytes] = {}
    headers: Headers = []
    for name, value in block:
        if name.startswith(b":"):
            pseudo[name] = value
        else:
            headers.append((name, value))
    protocol = pseudo.get(b":protocol")
    return ExtendedConnect(
        method=pseudo.get(b":method", b"").decode("ascii", "replace"),
        path=pseudo.get(b":path", b"").decode("ascii", "replace"),
        authority=pseudo.get(b":authority", b"").decode("ascii", "replace"),
        scheme=pseudo.get(b":scheme", b"").decode("ascii", "replace"),
        protocol=None if protocol is None else protocol.decode("ascii", "replace"),
        headers=headers,
    )


def _host_text(authority: str) -> str:
    """``:authority`` as the text of its host name (IDNA A-labels decoded,
    as for an HTTP/1.1 ``Host``). Raises ``UnicodeError`` for a non-ASCII
    authority."""
    if not authority.isascii():
        raise UnicodeError("the authority is not ASCII")
    if "xn--" not in authority.lower():
        # Decoding would give back the same text, as a copy the request
        # then keeps for the WebSocket's life.
        return authority
    return authority.encode("ascii").decode("idna")


def websocket_request(connect: ExtendedConnect) -> Request:
    """The wsproto ``Request`` event an HTTP/1.1 upgrade with the same
    fields would have given (see the module rules). Raises ``ValueError``
    for a header wsproto could not have read (a non-ASCII token)."""
    extensions: list[str] = []
    subprotocols: list[str] = []
    extra: Headers = []
    try:
        for name, value in connect.headers:
            if name == b"sec-websocket-extensions":
                extensions.extend(split_comma_header(value))
            elif name == b"sec-websocket-protocol":
                subprotocols.extend(split_comma_header(value))
            else:
                extra.append((name, value))
        host = _host_text(connect.authority)
    except UnicodeError as exc:
        raise ValueError(f"unreadable WebSocket request header: {exc}") from exc
    return Request(
        host=host,
        target=connect.path or "/",
        extensions=extensions,
        extra_headers=extra,
        subprotocols=subprotocols,
    )


def answer_headers(status: int, headers: Headers) -> Headers:
    """An answer's header block: ``:status``, then ``headers`` in lower
    case without the connection-specific ones."""
    block: Headers = [(b":status", str(status).encode("ascii"))]
    for name, value in headers:
        name = name.lower()
        if name in CONNECTION_SPECIFIC or name.startswith(b":"):
            continue
        block.append((name, value))
    return block


def connect_request(
    *,
    scheme: str,
    authority: str,
    path: str,
    subprotocols: list[str],
    extension_offers: list[str],
    extra_headers: Headers,
) -> Headers:
    """A client's extended CONNECT header block. Raises ``ValueError`` for
    a header HTTP/2 cannot carry."""
    block: Headers = [
        (b":method", b"CONNECT"),
        (b":protocol", b"websocket"),
        (b":scheme", scheme.encode("ascii")),
        (b":path", path.encode("ascii")),
        (b":authority", authority.encode("ascii")),
        (b"sec-websocket-version", b"13"),
    ]
    if subprotocols:
        block.append((b"sec-websocket-protocol", ", ".join(subprotocols).encode("ascii")))
    if extension_offers:
        block.append((b"sec-websocket-extensions", ", ".join(extension_offers).encode("ascii")))
    for name, value in extra_headers:
        lowered = name.lower()
        if lowered in CONNECTION_SPECIFIC or lowered == b"host" or lowered.startswith(b":"):
            raise ValueError(f"header {name.decode('latin-1')!r} cannot be sent over HTTP/2")
        block.append((lowered, value))
    return block


def status_of(block: Headers) -> int:
    """An answer's status code (0 when it has none that reads)."""
    for name, value in block:
        if name == b":status":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def regular_headers(block: Headers) -> Headers:
    """A block's header fields without the pseudo-headers."""
    return [(name, value) for name, value in block if not name.startswith(b":")]
