"""Plain HTTP on the WebSocket port: the request a ``process_request`` hook
sees, and the response it (or the server) answers with.

Rules:
- Values only: no trio, no I/O. The server reads and writes; this module
  describes and serializes.
- Header names are lower-case ``bytes``, values ``bytes``, in the order
  received, as everywhere else in the package.
- :class:`EarlyHeadCheck` judges a head still arriving, by the rules its
  complete form must meet (a token, a target, ``HTTP/1.0`` or ``HTTP/1.1``;
  CRLF line ends only, no bare LF or CR; no control bytes): bytes that can
  never become a request are refused as soon as they arrive, not when a
  blank line that may never come does. Bare LF line ends, which RFC 9112
  lets a server accept, are refused: one rule whether a head arrives whole
  or in pieces.
- A response always ends the connection: the server writes
  ``Connection: close`` and the exact ``Content-Length`` itself, so a hook
  cannot set those (nor ``Transfer-Encoding``), and header injection (CR,
  LF or NUL in a name or value) is refused when the response is built.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus

from .._core.endpoint import Endpoint
from .._core.errors import Headers

#: Headers the server writes itself on every plain HTTP response.
_SERVER_OWNED = frozenset({b"connection", b"content-length", b"transfer-encoding"})
_FORBIDDEN_BYTES = (b"\r", b"\n", b"\0")
#: Statuses that never carry a body (RFC 9110 section 6.4.1).
_NO_BODY_STATUSES = frozenset({204, 304})


def _as_bytes(value: object, what: str) -> bytes:
    if isinstance(value, str):
        try:
            return value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"{what} {value!r} is not latin-1 text") from None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    raise TypeError(f"{what} must be str or bytes, not {type(value).__name__}")


def normalize_headers(headers: Sequence[tuple[str | bytes, str | bytes]]) -> Headers:
    normalized: Headers = []
    for pair in headers:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise TypeError(f"a header must be a (name, value) pair, not {pair!r}")
        name = _as_bytes(pair[0], "header name").lower()
        value = _as_bytes(pair[1], "header value")
        if not name or b":" in name or b" " in name:
            raise ValueError(f"invalid header name {name!r}")
        if any(bad in name or bad in value for bad in _FORBIDDEN_BYTES):
            raise ValueError(f"header {name!r} contains CR, LF or NUL")
        if name in _SERVER_OWNED:
            raise ValueError(f"the server sets the {name.decode()} header itself")
        normalized.append((name, value))
    return normalized


@dataclass(frozen=True, slots=True)
class HTTPRequest:
    """An HTTP request that arrived on the WebSocket port, as a
    ``process_request`` hook sees it (before any upgrade)."""

    #: The request method, e.g. ``"GET"``.
    method: str
    #: The requested resource: path and query string.
    path: str
    #: Every request header as a ``(name, value)`` byte pair, names in lower
    #: case, in the order received.
    headers: Headers
    #: The client's endpoint (``str`` when it is not TCP).
    remote: Endpoint | str
    #: The server's endpoint of the connection.
    local: Endpoint | str
    #: ``"1.1"``, or ``"2"`` for a request on an HTTP/2 stream (the server's
    #: ``http2`` option), whose ``method`` is then ``"CONNECT"`` for a
    #: WebSocket (RFC 8441) and whose headers have no ``Host`` (the
    #: authority is in ``authority``).
    http_version: str = "1.1"
    #: An HTTP/2 extended CONNECT's ``:protocol`` (``"websocket"``), else None.
    protocol: str | None = None
    #: An HTTP/2 request's ``:authority`` (its Host), else None.
    authority: str | None = None

    @property
    def is_websocket(self) -> bool:
        """Whether the request asks for a WebSocket (an HTTP/1.1 upgrade, or
        an HTTP/2 extended CONNECT; it may still be an invalid one)."""
        if self.http_version == "2":
            return (
                self.method == "CONNECT"
                and self.protocol is not None
                and self.protocol.lower() == "websocket"
            )
        upgrade = self.header("upgrade")
        return upgrade is not None and upgrade.strip().lower() == "websocket"

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case) as text, or None."""
        wanted = name.lower().encode("latin-1")
        for key, value in self.headers:
            if key == wanted:
                return value.decode("latin-1")
        return None


@dataclass(frozen=True, slots=True)
class HTTPResponse:
    """A plain HTTP response: what a ``process_request`` hook returns to
    answer a request itself instead of letting the upgrade go on.

    :param status_code: an HTTP status from 200 to 999.
    :param headers: ``(name, value)`` pairs of ``str`` (latin-1) or
        ``bytes``, kept as a tuple of ``bytes`` pairs with lower-case names;
        ``Connection``, ``Content-Length`` and ``Transfer-Encoding`` are set
        by the server.
    :param body: the body as ``bytes``, or ``str`` (sent as UTF-8; a
        ``text/plain`` content type is added unless one is given).
    :raises ValueError: for a status outside 200..999, a body on a 204 or
        304, or a header that is invalid or set by the server.
    """

    status_code: int
    headers: Sequence[tuple[str | bytes, str | bytes]] = ()
    body: bytes | str = b""
    # The headers as byte pairs, as ``headers`` holds them after building
    # (typed for serialization).
    _wire_headers: Headers = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        status = self.status_code
        if isinstance(status, bool) or not isinstance(status, int):
            raise TypeError("status_code must be an int")
        if not 200 <= status <= 999:
            raise ValueError(f"a response status must be in 200..999, got {status}")
        headers = normalize_headers(self.headers)
        body = self.body
        if isinstance(body, str):
            if not any(name == b"content-type" for name, _ in headers):
                headers.append((b"content-type", b"text/plain; charset=utf-8"))
            body = body.encode("utf-8")
            object.__setattr__(self, "body", body)
        elif isinstance(body, (bytes, bytearray)):
            object.__setattr__(self, "body", bytes(body))
        else:
            raise TypeError(f"body must be bytes or str, not {type(body).__name__}")
        if body and status in _NO_BODY_STATUSES:
            raise ValueError(f"a {status} response cannot have a body")
        object.__setattr__(self, "headers", tuple(headers))
        object.__setattr__(self, "_wire_headers", headers)

    def serialize(self, *, head_only: bool = False) -> bytes:
        """The response as bytes on the wire; ``head_only`` leaves out the
        body (the answer to a HEAD request) but keeps its length."""
        assert isinstance(self.body, bytes)
        try:
            phrase = HTTPStatus(self.status_code).phrase
        except ValueError:
            phrase = ""
        lines = [f"HTTP/1.1 {self.status_code} {phrase}".rstrip().encode("ascii")]
        lines.extend(name + b": " + value for name, value in self._wire_headers)
        if self.status_code not in _NO_BODY_STATUSES:
            lines.append(b"content-length: %d" % len(self.body))
        lines.append(b"connection: close")
        head = b"\r\n".join(lines) + b"\r\n\r\n"
        return head if head_only else head + self.body


def text_response(
    status_code: int, text: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> HTTPResponse:
    """A short plain-text answer, as the server sends for its own refusals."""
    return HTTPResponse(status_code, headers, text)


#: The server's answers when it refuses a request itself.
UPGRADE_REQUIRED = text_response(
    426, "426 Upgrade Required: this port speaks WebSocket only.\n", [(b"upgrade", b"websocket")]
)
FORBIDDEN_ORIGIN = text_response(403, "403 Forbidden: origin not allowed.\n")
#: The answer to a request on an HTTP/2 stream that is not a WebSocket's
#: extended CONNECT (HTTP/2 has no upgrade to require).
NOT_WEBSOCKET_HTTP2 = text_response(
    400, "400 Bad Request: this server speaks WebSocket (RFC 8441 extended CONNECT) only.\n"
)
SERVICE_UNAVAILABLE = text_response(503, "503 Service Unavailable: try again later.\n")
SHUTTING_DOWN = text_response(503, "503 Service Unavailable: the server is shutting down.\n")
URI_TOO_LONG = text_response(414, "414 URI Too Long\n")
HEADERS_TOO_LARGE = text_response(431, "431 Request Header Fields Too Large\n")


_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/1\.([01])")
#: The bytes of a token (a header name), and of a header value: visible
#: ASCII, obs-text (0x80-0xff), and space or tab between them (RFC 9110
#: section 5.5). A header line is checked with ``bytes.translate``, which
#: deletes the allowed bytes in C: what is left is what is not allowed.
#: (The equivalent regular expression, with its nested repetition, took
#: most of the time of reading an opening request.)
_TOKEN_BYTES = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_VALUE_BYTES = bytes(range(0x21, 0x7F)) + bytes(range(0x80, 0x100)) + b" \t"


#: What a request line may look like before its CRLF has arrived: each part
#: so far a prefix of what it must become (a token, a space, a target, a
#: space, ``HTTP/1.0`` or ``HTTP/1.1``, maybe the CR of the CRLF).
_REQUEST_LINE_START = re.compile(
    rb"(?:" + _TOKEN + rb"(?: (?:[\x21-\x7e]+"
    rb"(?: (?:HTTP/1\.[01]\r?|H(?:T(?:T(?:P(?:/(?:1\.?)?)?)?)?)?)?)?)?)?)?"
)
#: Bytes that may appear anywhere in a head after its request line.
_HEAD_BYTES = _VALUE_BYTES + b"\r\n"


class EarlyHeadCheck:
    """Judges a request head while it is still arriving, so that bytes that
    can never become a valid request (a TLS ClientHello, binary garbage, a
    line ending in a bare LF) are refused at once instead of waiting for a
    blank line that may never come.

    Feed it the whole buffer received so far, each time: it looks at the
    bytes it has not judged yet (and re-reads only the request line while
    that is incomplete, which the request-line limit bounds).
    """

    __slots__ = ("_checked", "_line_done")

    def __init__(self) -> None:
        self._line_done = False
        self._checked = 0  # bytes after the request line judged so far

    def problem(self, received: bytes | bytearray) -> str | None:
        """Why ``received`` cannot be the start of a valid request head, or
        None while it still can."""
        if not self._line_done:
            line_end = received.find(b"\n")
            if line_end < 0:
                if _REQUEST_LINE_START.fullmatch(received) is None:
                    return "not an HTTP request line"
                return None
            if line_end == 0 or received[line_end - 1] != 0x0D:
                return "a line ends with a bare LF"
            if _REQUEST_LINE.fullmatch(received, 0, line_end - 1) is None:
                return "not an HTTP request line"
            self._line_done = True
            self._checked = line_end + 1
        start = self._checked
        if received[start:].translate(None, _HEAD_BYTES):
            return "a control byte in the headers"
        size = len(received)
        line_feed = received.find(b"\n", start)
        while line_feed >= 0:  # (at most one pass per header line)
            if received[line_feed - 1] != 0x0D:
                return "a line ends with a bare LF"
            line_feed = received.find(b"\n", line_feed + 1)
        carriage_return = received.find(b"\r", start)
        while 0 <= carriage_return < size - 1:
            if received[carriage_return + 1] != 0x0A:
                return "a CR that does not end a line"
            carriage_return = received.find(b"\r", carriage_return + 1)
        # A CR at the very end may be the start of a CRLF: judged next time.
        self._checked = size - 1 if carriage_return == size - 1 else size
        return None


def parse_request_head(head: bytes) -> tuple[str, str, Headers] | None:
    """Method, target and headers (names lower-cased) of a complete request
    head (request line, header lines, blank line), or None when it is not
    valid HTTP/1.x: bad syntax, folded header lines, or an HTTP/1.1 request
    without exactly one Host header (RFC 9112)."""
    lines = head.split(b"\r\n")
    if len(lines) < 3 or lines[-2:] != [b"", b""]:
        return None
    request_line = _REQUEST_LINE.fullmatch(lines[0])
    if request_line is None:
        return None
    headers: Headers = []
    hosts = 0
    for line in lines[1:-2]:
        name, colon, value = line.partition(b":")
        # name ":" OWS value OWS, where the value's first and last bytes
        # are not space or tab (stripped here) and the name is a token.
        if not colon or not name or name.translate(None, _TOKEN_BYTES):
            return None
        value = value.strip(b" \t")
        if value.translate(None, _VALUE_BYTES):
            return None
        name = name.lower()
        if name == b"host":
            hosts += 1
        headers.append((name, value))
    if request_line.group(3) == b"1" and hosts != 1:
        return None
    method = request_line.group(1).decode("ascii")
    target = request_line.group(2).decode("ascii")
    return method, target, headers
