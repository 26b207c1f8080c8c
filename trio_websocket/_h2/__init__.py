"""WebSockets over HTTP/2 (RFC 8441): the HTTP/2 connection that carries
many WebSockets, and the per-stream transport each WebSocket runs over.

Rules:
- Sits between the core and the entry points: imports ``_wire`` and
  ``_core`` (never ``_client`` or ``_server``, which import it).
- ``h2`` is an optional dependency: ``_h2.connection`` is the module that
  imports it (at its top), and nothing imports ``_h2.connection`` at
  module level, only inside the functions that run once HTTP/2 was asked
  for (or for the type checker), so the package works without the
  ``http2`` extra; ``_h2.dependency`` checks that it is there.
- A WebSocket never sees HTTP/2: it gets a ``trio.abc.Stream`` (an
  ``_h2.stream.HTTP2Stream``) and runs the ordinary connection core over it.
"""
