"""Pings in flight and the pongs that answer them.

Rules:
- No I/O: the connection sends the frames; this module only keeps the
  waiters. Payloads in flight are unique.
- A pong answers the ping with its payload *and every ping sent before it*
  (RFC 6455 section 5.5.3 lets a peer answer only the latest ping).
- When the connection closes, every waiter is woken and told so; none is
  ever left hanging.
- The keepalive's pings are *shared*: a user ping that happens to name a
  keepalive payload in flight waits on the same pong instead of failing,
  and either side giving up leaves the other waiting. User pings are not
  shared: a second user ping with a payload in flight is a ``ValueError``
  (as in 0.12.2).
- Round-trip time: a pong sets :attr:`PingTracker.latency` from the send
  time of the ping it names (times are given by the caller, so this module
  reads no clock).
"""

from __future__ import annotations

import os

import trio


class PingWaiter:
    """One ping waiting for its pong."""

    __slots__ = ("answered", "event", "holders", "sent_at", "shared")

    def __init__(self, sent_at: float | None, shared: bool) -> None:
        self.event = trio.Event()
        self.answered = False
        self.sent_at = sent_at
        self.shared = shared
        # How many callers wait on this ping (more than one only if shared).
        self.holders = 1


class PingTracker:
    """The pings in flight, oldest first."""

    __slots__ = ("_closed", "_waiters", "latency")

    def __init__(self) -> None:
        self._waiters: dict[bytes, PingWaiter] = {}
        self._closed = False
        #: Seconds between sending a ping and its pong, for the latest pong
        #: that answered a ping with a known send time; None before that.
        self.latency: float | None = None

    def __len__(self) -> int:
        return len(self._waiters)

    def new_payload(self) -> bytes:
        """A random 4-byte payload not already in flight."""
        while True:
            payload = os.urandom(4)
            if payload not in self._waiters:
                return payload

    def add(
        self, payload: bytes, *, sent_at: float | None = None, shared: bool = False
    ) -> PingWaiter:
        """Register a ping sent at ``sent_at``; ``ValueError`` if ``payload``
        is already in flight, unless that ping is shared (then this caller
        waits on it too). ``shared`` marks a keepalive ping."""
        existing = self._waiters.get(payload)
        if existing is not None:
            if not existing.shared or shared:
                raise ValueError(f"a ping with payload {payload!r} is already in flight")
            existing.holders += 1
            existing.shared = False  # one user at most joins a keepalive ping
            return existing
        waiter = PingWaiter(sent_at, shared)
        if self._closed:
            waiter.event.set()
        else:
            self._waiters[payload] = waiter
        return waiter

    def discard(self, payload: bytes, waiter: PingWaiter) -> None:
        """Forget a ping whose caller gave up (cancelled, or failed to send);
        a ping another caller still waits on stays in flight."""
        if self._waiters.get(payload) is waiter:
            waiter.holders -= 1
            if waiter.holders <= 0:
                del self._waiters[payload]

    def pong_received(self, payload: bytes, now: float | None = None) -> None:
        """Wake the ping with ``payload`` and every earlier one, and measure
        the latency at ``now``. A pong that matches no ping in flight
        (unsolicited) changes nothing."""
        answered = self._waiters.get(payload)
        if answered is None:
            return
        if now is not None and answered.sent_at is not None:
            self.latency = now - answered.sent_at
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
