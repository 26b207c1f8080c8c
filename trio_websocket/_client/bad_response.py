"""Explaining why a server's answer to the client's opening handshake (or
to its TLS handshake) cannot be used.

Rules:
- Pure: no I/O, no trio. Each function turns what went wrong into a
  :exc:`HandshakeError` (phase ``"http"``) or into words for one; the
  client raises it with the low-level error chained.
- A hostile or broken answer never escapes as a raw ``UnicodeDecodeError``,
  ``ValueError`` or protocol error: whatever wsproto (with h11 inside)
  raises while reading the answer becomes a :exc:`HandshakeError` here.
- Bytes from the peer are quoted with ``repr`` and cut to
  :data:`QUOTE_LIMIT` characters, so a huge header cannot make a huge
  message.
- Speaking the wrong protocol is named as such: a TLS record where HTTP was
  expected says "use wss://"; a TLS handshake answered in plain text, or
  cut off, says "use ws://".
"""

from __future__ import annotations

import ssl

from .._core.errors import PHASE_HTTP, HandshakeError

#: How many characters of the peer's bytes an error message quotes.
QUOTE_LIMIT = 80

#: What a server's first TLS record starts with: an alert (21) or a
#: handshake message (22). No HTTP response starts with either byte.
_TLS_RECORD_TYPES = frozenset({0x15, 0x16})

#: OpenSSL's reasons for "the bytes that came back are not a TLS record"
#: (the names differ between OpenSSL and LibreSSL versions).
_NOT_TLS_REASONS = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "UNKNOWN_PROTOCOL",
        "PACKET_LENGTH_TOO_LONG",
        "WRONG_SSL_VERSION",
        "RECORD_LAYER_FAILURE",
    }
)

#: h11's hint for a response head longer than it buffers (16 KiB).
_HEAD_TOO_LARGE = 431

_USE_WSS = "use a wss:// URL (use_ssl=True)"
_USE_WS = "if it is a plain WebSocket server, use a ws:// URL (use_ssl=False)"


def quote(data: bytes | bytearray) -> str:
    """``repr`` of ``data``, cut to :data:`QUOTE_LIMIT` characters."""
    text = repr(bytes(data))
    if len(text) > QUOTE_LIMIT:
        return text[: QUOTE_LIMIT - 3] + "..."
    return text


def _cut(text: str) -> str:
    return text if len(text) <= QUOTE_LIMIT * 2 else text[: QUOTE_LIMIT * 2 - 3] + "..."


def invalid_response(error: Exception) -> HandshakeError:
    """The error for an answer wsproto could not read: ``error`` is the
    ``ProtocolError``, ``UnicodeDecodeError`` or other ``ValueError`` it
    raised (the caller chains it)."""
    if isinstance(error, UnicodeDecodeError):
        detail = (
            f"a header value that must be ASCII (Connection, Sec-WebSocket-Protocol "
            f"or Sec-WebSocket-Extensions) is not: {quote(error.object)}"
        )
    else:
        detail = str(error) or type(error).__name__
        # wsproto says only "Bad HTTP message"; h11's error behind it
        # (the exception being handled when wsproto raised) says what.
        http_error = error.__context__
        if type(http_error).__module__.partition(".")[0] == "h11":
            if getattr(http_error, "error_status_hint", None) == _HEAD_TOO_LARGE:
                detail = "not valid HTTP: the response head is too long (over 16 KiB)"
            else:
                detail = f"not valid HTTP: {_cut(str(http_error))}"
    return HandshakeError(f"invalid handshake response: {detail}", phase=PHASE_HTTP)


def tls_answer(first_bytes: bytes | bytearray) -> HandshakeError | None:
    """The error for a plain (``ws://``) handshake answered with a TLS
    record, or None when ``first_bytes`` does not start one."""
    if not first_bytes or first_bytes[0] not in _TLS_RECORD_TYPES:
        return None
    return HandshakeError(
        f"invalid handshake response: the server answered with a TLS record "
        f"({quote(first_bytes[:7])}), not HTTP: it seems to speak TLS, so {_USE_WSS}",
        phase=PHASE_HTTP,
    )


def closed_before_answer(*, over_tls: bool) -> HandshakeError:
    """The error for a server that closed the connection without a byte of
    answer to the upgrade request."""
    hint = ""
    if not over_tls:
        hint = f" (a TLS server does this to a plain request; if it speaks TLS, {_USE_WSS})"
    return HandshakeError(
        f"connection closed during the opening handshake, before any answer{hint}",
        phase=PHASE_HTTP,
    )


def not_tls_hint(cause: BaseException) -> str:
    """Words to add to a failed TLS handshake's message when its ``cause``
    says the server does not speak TLS ("" otherwise)."""
    if isinstance(cause, ssl.SSLEOFError):
        return (
            "; the server closed the connection instead of answering the TLS "
            f"handshake: it does not seem to speak TLS; {_USE_WS}"
        )
    if isinstance(cause, ssl.SSLError) and cause.reason in _NOT_TLS_REASONS:
        return (
            "; the server's answer is not TLS (a plain HTTP server answers like "
            f"this): it does not seem to speak TLS; {_USE_WS}"
        )
    if isinstance(cause, ConnectionResetError) or isinstance(cause.__cause__, ConnectionResetError):
        return f"; the server reset the connection: it may not speak TLS; {_USE_WS}"
    return ""


#: Added to a timeout during the TLS handshake.
TLS_TIMEOUT_HINT = (
    "; a server that does not speak TLS may wait like this for a request "
    "that never comes: " + _USE_WS
)
