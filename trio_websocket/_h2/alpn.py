"""The ALPN protocols this package sets on an ``ssl.SSLContext``.

Rules:
- Pure: no ``h2``, no I/O.
- ALPN lives on the context, which the caller owns and may reuse: a
  context this package made offer ``h2`` is remembered (weakly), so that a
  later use of it without HTTP/2 offers ``http/1.1`` only again, instead
  of letting the peer pick an HTTP/2 that side will not speak. A context
  whose ALPN the caller set is left alone.
"""

from __future__ import annotations

import ssl
import weakref

#: Offered when HTTP/2 is asked for, in the order of preference.
HTTP2_ALPN = ["h2", "http/1.1"]
#: Offered to fall back to the HTTP/1.1 upgrade.
HTTP1_ALPN = ["http/1.1"]

_offering_h2: weakref.WeakSet[ssl.SSLContext] = weakref.WeakSet()


def offer(context: ssl.SSLContext, protocols: list[str]) -> None:
    """Make ``context`` offer ``protocols`` (and remember that it does)."""
    context.set_alpn_protocols(protocols)
    if "h2" in protocols:
        _offering_h2.add(context)
    else:
        _offering_h2.discard(context)


def without_http2(context: ssl.SSLContext) -> None:
    """Before a use of ``context`` without HTTP/2: stop offering ``h2`` if
    this package made it offer it."""
    if context in _offering_h2:
        offer(context, HTTP1_ALPN)
