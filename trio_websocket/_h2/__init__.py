"""WebSockets over HTTP/2 (RFC 8441): the HTTP/2 connection that carries
many WebSockets, and the per-stream transport each WebSocket runs over.

Rules:
- Sits between the core and the entry points: imports ``_wire`` and
  ``_core`` (never ``_client`` or ``_server``, which import it).
- ``h2`` is an optional dependency: only ``_h2.dependency`` imports it at
  module level, and nothing outside this package imports a module of
  this package that needs it until HTTP/2 was asked for (so the package
  works without the ``http2`` extra).
- A WebSocket never sees HTTP/2: it gets a ``trio.abc.Stream`` (an
  ``_h2.stream.HTTP2Stream``) and runs the ordinary connection core over it.
"""
