"""One timer for the deadlines of all the handshake phases of a server.

Why: a deadline set on a cancel scope goes into trio's heap of deadlines,
and when it is changed (the handshake phase is over: no deadline while the
handler runs) the old entry stays there until its time passes or trio
prunes the heap (only beyond 1000 stale entries): a tuple, a float and an
int, ~120 bytes kept by every idle connection for ``connect_timeout``,
and two updates of the heap per handshake. A server whose phases all last
``connect_timeout`` from their start has their deadlines come in the order
the phases start, so one task can keep them: it sleeps until the oldest
one, and cancels the scope of each phase still under way at its deadline.

Rules:
- :meth:`HandshakeDeadlines.bound` puts a scope under a deadline: kept
  here while the timer runs, else (before it starts, after it ends, or for
  a deadline earlier than one already kept) set on the scope as usual.
  Either way the scope is cancelled at its deadline, never before: the
  timer sleeps until the oldest deadline it keeps, and cancels every scope
  whose deadline has come; deadlines that come later than one kept never
  need it woken (it wakes only from having none to keep).
- :meth:`HandshakeDeadlines.release` takes the deadline off a scope
  (however it was kept); a scope never released is dropped at its
  deadline (cancelling a scope that has exited does nothing).
- When the timer stops (the server stops accepting), every deadline it
  kept is set on its scope, so that no phase goes on unbounded.
- What a scope kept here sees of its deadline: ``cancel_called`` once it
  has come, as with a deadline of its own; but ``deadline`` (and
  ``trio.current_effective_deadline()`` inside) say there is none. The
  server uses the timer only without a ``process_request`` hook, the one
  code of the user's that runs inside a handshake phase.
"""

from __future__ import annotations

import math

import trio


class HandshakeDeadlines:
    """The timer of the handshake phases (see the module rules)."""

    __slots__ = ("_kept", "_latest", "_running", "_waiting")

    def __init__(self) -> None:
        # Scope -> deadline, oldest first (a dict keeps insertion order,
        # which is the order of the deadlines).
        self._kept: dict[trio.CancelScope, float] = {}
        self._latest = -math.inf
        self._running = False
        # Set when the timer waits for a deadline to keep.
        self._waiting: trio.Event | None = None

    def bound(self, scope: trio.CancelScope, deadline: float) -> None:
        """Cancel ``scope`` at ``deadline`` (unless released before)."""
        if not self._running or deadline < self._latest:
            scope.deadline = deadline
            return
        self._kept[scope] = deadline
        self._latest = deadline
        waiting = self._waiting
        if waiting is not None:
            self._waiting = None
            waiting.set()

    def release(self, scope: trio.CancelScope) -> None:
        """No deadline on ``scope`` from now on."""
        if self._kept.pop(scope, None) is None:
            scope.deadline = math.inf

    async def run(self) -> None:
        """Keep deadlines until cancelled (see the module rules)."""
        kept = self._kept
        self._running = True
        try:
            while True:
                if not kept:
                    self._waiting = trio.Event()
                    await self._waiting.wait()
                    continue
                scope, deadline = next(iter(kept.items()))
                if deadline > trio.current_time():
                    await trio.sleep_until(deadline)
                    continue
                del kept[scope]
                scope.cancel()
        finally:
            self._running = False
            self._waiting = None
            self._latest = -math.inf
            for scope, deadline in kept.items():
                scope.deadline = deadline
            kept.clear()
