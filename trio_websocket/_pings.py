"""Pings in flight and the pongs that answer them.

Rules:
- No I/O: the connection sends the frames; this module only keeps the
  waiters. Payloads in flight are unique.
- A pong answers the ping with its payload *and every ping sent before it*
  (RFC 6455 section 5.5.3 lets a peer answer only the latest ping).
- When the connection closes, every waiter is woken and told so; none is
  ever left hanging.
"""

from __future__ import annotations

import os

import trio


class PingWaiter:
    """One ping waiting for its pong."""

    __slots__ = ("answered", "event")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.answered = False


class PingTracker:
    """The pings in flight, oldest first."""

    __slots__ = ("_closed", "_waiters")

    def __init__(self) -> None:
        self._waiters: dict[bytes, PingWaiter] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self._waiters)

    def new_payload(self) -> bytes:
        """A random 4-byte payload not already in flight."""
        while True:
            payload = os.urandom(4)
            if payload not in self._waiters:
                return payload

    def add(self, payload: bytes) -> PingWaiter:
        """Register a ping; ``ValueError`` if ``payload`` is already in flight."""
        if payload in self._waiters:
            raise ValueError(f"a ping with payload {payload!r} is already in flight")
        waiter = PingWaiter()
        if self._closed:
            waiter.event.set()
        else:
            self._waiters[payload] = waiter
        return waiter

    def discard(self, payload: bytes, waiter: PingWaiter) -> None:
        """Forget a ping whose caller gave up (cancelled, or failed to send)."""
        if self._waiters.get(payload) is waiter:
            del self._waiters[payload]

    def pong_received(self, payload: bytes) -> None:
        """Wake the ping with ``payload`` and every earlier one. A pong that
        matches no ping in flight (unsolicited) changes nothing."""
        if payload not in self._waiters:
            return
        while self._waiters:
            key, waiter = next(iter(self._waiters.items()))
            del self._waiters[key]
            waiter.answered = True
            waiter.event.set()
            if key == payload:
                return

    def close(self) -> None:
        """Wake every waiter unanswered; later pings are woken at once."""
        self._closed = True
        waiters = list(self._waiters.values())
        self._waiters.clear()
        for waiter in waiters:
            waiter.event.set()
