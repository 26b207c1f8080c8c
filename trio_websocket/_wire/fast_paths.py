"""The switch that turns every fast path off, to show they change nothing.

Rules:
- Read once, when the package is imported, from the environment variable
  ``TRIO_WEBSOCKET_FAST_PATHS``: ``0`` turns every fast path off, anything
  else (or nothing) leaves them on. Off, wsproto parses and serializes
  every frame and runs the opening handshake, trio's own ``SocketStream``
  and ``SocketListener`` carry the bytes, the hub frames each message
  per connection, and ``h2`` parses and writes every DATA frame and keeps
  the flow-control windows of HTTP/2 connections.
- Each fast path reads ``ENABLED`` where it decides, once per connection or
  per stream, never per frame: the switch costs nothing when on.
- CI runs the whole test suite both ways; the tests that check a fast
  path's own workings (that it is installed, how much it copies) force it
  on in either run (``fast_paths_on`` in tests/conftest.py).
"""

from __future__ import annotations

import os

#: The environment variable read at import.
ENVIRONMENT_VARIABLE = "TRIO_WEBSOCKET_FAST_PATHS"

#: Whether the fast paths are used (see the module rules).
ENABLED: bool = os.environ.get(ENVIRONMENT_VARIABLE, "1").strip() != "0"
