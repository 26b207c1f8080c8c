"""The outcome of a server's graceful shutdown.

Rules:
- Pure: a frozen value, no trio.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ShutdownReport:
    """What :meth:`WebSocketServer.aclose` did."""

    #: WebSocket connections whose handlers finished before the deadline.
    closed_cleanly: int = 0
    #: Connections still running at the deadline, whose handlers were
    #: cancelled and connections aborted.
    forced: int = 0
    #: Clients still in their opening handshake, answered ``503``.
    refused: int = 0
