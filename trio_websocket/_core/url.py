"""Parsing ``ws://`` and ``wss://`` URLs into what a client needs to connect.

Rules:
- Pure: no I/O, no trio. Raises ``ValueError`` for anything that is not a
  usable WebSocket URL.
- The fragment is never part of the request target; the query is.
- The Host header carries IPv6 literals in brackets, and the port only when
  it is not the scheme's default.
- Credentials in a URL (``user:password@``) never appear in a message:
  errors quote the URL through :func:`without_userinfo`.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

DEFAULT_PORTS = {False: 80, True: 443}

#: The userinfo of a URL: everything between ``//`` and the authority's
#: last ``@`` (a password may hold ``@`` and ``:``, but not ``/?#``).
_USERINFO = re.compile(r"//[^/?#]*@")


def without_userinfo(url: str) -> str:
    """``url`` with its ``user:password@`` replaced by ``***@``, for
    messages; any text is accepted, parseable or not."""
    return _USERINFO.sub("//***@", url, count=1)


def bracket_host(host: str) -> str:
    """``host`` as it appears in a URL or Host header: IPv6 literals get
    square brackets."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def host_with_port(host: str, port: int, is_ssl: bool) -> str:
    """``host[:port]``, leaving out the port only when it is the scheme's
    default (80 for ws, 443 for wss)."""
    if port == DEFAULT_PORTS[is_ssl]:
        return bracket_host(host)
    return f"{bracket_host(host)}:{port}"


@dataclass(frozen=True)
class WebSocketTarget:
    """Where a client connects and what it asks for."""

    host: str
    port: int
    resource: str
    secure: bool
    host_header: str
    #: ``Authorization`` header value built from ``user:password@`` in the URL.
    authorization: bytes | None = None


def parse_ws_url(url: str) -> WebSocketTarget:
    """Split a ``ws://`` or ``wss://`` URL into a :class:`WebSocketTarget`."""
    if not isinstance(url, str):
        raise TypeError(f"URL must be a str, not {type(url).__name__}")
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss"):
        raise ValueError(f"WebSocket URL scheme must be ws or wss: {without_userinfo(url)!r}")
    secure = scheme == "wss"
    host = parts.hostname
    if not host:
        raise ValueError(f"WebSocket URL has no host: {without_userinfo(url)!r}")
    try:
        port = parts.port
    except ValueError as exc:
        shown = without_userinfo(url)
        raise ValueError(f"WebSocket URL has an invalid port: {shown!r}") from exc
    if port is None:
        port = DEFAULT_PORTS[secure]
    resource = parts.path or "/"
    if parts.query:
        resource = f"{resource}?{parts.query}"
    authorization = None
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = b"Basic " + base64.b64encode(credentials.encode("utf-8"))
    return WebSocketTarget(
        host=host,
        port=port,
        resource=resource,
        secure=secure,
        host_header=host_with_port(host, port, secure),
        authorization=authorization,
    )
