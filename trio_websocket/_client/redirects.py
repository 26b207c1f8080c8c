"""Following HTTP redirects in the client's opening handshake.

Rules:
- Pure: no I/O, no trio. Decides where a redirect leads, or why it cannot
  be followed (``ValueError`` with a message that names the URLs).
- Only 301, 302, 303, 307 and 308 redirect. The method of a WebSocket
  handshake is always GET, so the five are treated alike.
- ``Location`` may be relative; it is resolved against the URL that was
  asked for. ``http://`` and ``https://`` locations stand for ``ws://`` and
  ``wss://`` (a web framework's "redirect to HTTPS" says ``https``).
- A redirect never lowers security: ``wss://`` to ``ws://`` is refused.
- The user's headers never travel to another origin (scheme, host, port;
  RFC 6454): on a hop to another origin every extra header is dropped
  (``Authorization``, ``Cookie``, ``Proxy-Authorization`` and any other, as
  the library cannot tell which carry secrets), and they are not restored
  by a later hop back. ``ws://`` to ``wss://`` on the same host is another
  origin too (the scheme and the port differ). A same-origin hop keeps
  them all.
- Credentials written in the ``Location`` URL (``user:password@``) are
  sent, as ``Authorization``, only to that URL's origin, replacing any
  others; no message quotes them (see ``_core.url.without_userinfo``).
"""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

from .._core.errors import Headers
from .._core.url import WebSocketTarget, parse_ws_url, without_userinfo

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

_SCHEME_FOR_HTTP = {"http": "ws", "https": "wss"}


def target_url(target: WebSocketTarget) -> str:
    """The URL that ``target`` asks for (without credentials)."""
    scheme = "wss" if target.secure else "ws"
    return f"{scheme}://{target.host_header}{target.resource}"


def _location(headers: Headers) -> str:
    values = [value for name, value in headers if name.lower() == b"location"]
    if not values:
        raise ValueError("redirect without a Location header")
    if len(values) > 1:
        raise ValueError("redirect with more than one Location header")
    try:
        return values[0].decode("ascii").strip()
    except UnicodeDecodeError:
        shown = without_userinfo(values[0].decode("latin-1"))
        raise ValueError(f"redirect Location is not ASCII: {shown!r}") from None


def redirect_target(current: WebSocketTarget, headers: Headers) -> WebSocketTarget:
    """Where a redirect answered to ``current`` with ``headers`` leads.

    :raises ValueError: no usable ``Location``, a scheme other than
        ws/wss/http/https, or a ``wss://`` to ``ws://`` downgrade.
    """
    location = _location(headers)
    absolute = urljoin(target_url(current), location)
    parts = urlsplit(absolute)
    scheme = parts.scheme.lower()
    if scheme in _SCHEME_FOR_HTTP:
        absolute = _SCHEME_FOR_HTTP[scheme] + absolute[len(parts.scheme) :]
    try:
        target = parse_ws_url(absolute)
    except ValueError as exc:
        shown = without_userinfo(location)
        raise ValueError(f"redirect to an unusable URL {shown!r}: {exc}") from exc
    if current.secure and not target.secure:
        raise ValueError(
            f"refusing to follow a redirect from {target_url(current)} to "
            f"{target_url(target)}: it would drop TLS"
        )
    return target


def same_origin(first: WebSocketTarget, second: WebSocketTarget) -> bool:
    """Whether both targets have the same scheme, host and port."""
    return (first.secure, first.host.lower(), first.port) == (
        second.secure,
        second.host.lower(),
        second.port,
    )


def headers_for_redirect(
    headers: Headers, current: WebSocketTarget, target: WebSocketTarget
) -> Headers:
    """The extra request headers to send to ``target`` after a redirect from
    ``current``: all of them on the same origin, none on another (see the
    rules above); credentials from the ``Location`` URL replace any
    ``Authorization``."""
    if not same_origin(current, target):
        result: Headers = []
    elif target.authorization is None:
        result = list(headers)
    else:
        result = [(name, value) for name, value in headers if name.lower() != b"authorization"]
    if target.authorization is not None:
        result.append((b"Authorization", target.authorization))
    return result
