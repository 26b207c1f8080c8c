"""Which ``Origin`` headers a server accepts.

Browsers send the page's origin (``https://example.com``) with every
WebSocket handshake and, unlike for ``fetch``, do not stop a page from
connecting to another site: the server has to check. Non-browser clients
usually send no ``Origin`` at all.

Rules:
- Pure: no trio, no I/O.
- An allowed origin is an exact ``str`` (compared case-insensitively, as
  scheme and host are), a compiled regular expression (which must match
  the whole header), or ``None``, which allows requests without the header.
- A request with several ``Origin`` headers is refused: it is malformed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .._core.errors import Headers

AllowedOrigin = str | re.Pattern[str] | None


class OriginPolicy:
    """The compiled form of a server's ``origins=[...]`` option."""

    __slots__ = ("_allow_missing", "_exact", "_patterns")

    def __init__(self, origins: Iterable[AllowedOrigin]) -> None:
        if isinstance(origins, (str, bytes, re.Pattern)):
            raise TypeError("origins must be a list of origins, not a single one")
        self._exact: set[str] = set()
        self._patterns: list[re.Pattern[str]] = []
        self._allow_missing = False
        for origin in origins:
            if origin is None:
                self._allow_missing = True
            elif isinstance(origin, str):
                self._exact.add(origin.lower())
            elif isinstance(origin, re.Pattern) and isinstance(origin.pattern, str):
                self._patterns.append(origin)
            else:
                raise TypeError(
                    f"an allowed origin must be a str, a compiled str pattern or None,"
                    f" not {origin!r}"
                )

    def allows(self, headers: Headers) -> bool:
        """Whether a request with these headers comes from an allowed origin."""
        values = [value for name, value in headers if name == b"origin"]
        if not values:
            return self._allow_missing
        if len(values) > 1:
            return False
        origin = values[0].decode("latin-1").strip()
        if origin.lower() in self._exact:
            return True
        return any(pattern.fullmatch(origin) for pattern in self._patterns)
