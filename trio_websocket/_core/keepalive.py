"""The keepalive: ping the peer every interval, give up when a pong is late.

Rules:
- One task per connection, and only when ``ping_interval`` is set: a
  connection without a keepalive has no task and no timer.
- It runs in the connection's nursery inside a cancel scope that the
  connection cancels the moment it closes, so it never outlives the
  connection and never delays the nursery's exit.
- The loop never writes to the stream and raises nothing but
  cancellation: the connection queues the ping (the task writing at the
  time, or a flusher, puts it on the wire). So the timeout can never cut
  a frame in half, and a write stuck on a peer that does not read is
  covered by the same timeout.
- A late pong ends the loop with ``True``; the connection then *fails*
  (RFC 6455 section 7.1.7): close frame 1011 if it can be written, then
  the stream is closed without waiting for the peer, which has just shown
  it is not answering.
- At most one keepalive ping is in flight. Pings are spaced
  ``interval`` apart from one send to the next, or sent as soon as the
  previous pong arrives when it took longer than that.
"""

from __future__ import annotations

from typing import Protocol

import trio

from .pings import PingWaiter


class KeepaliveHost(Protocol):
    """What the keepalive needs from its connection."""

    def _send_keepalive_ping(self) -> PingWaiter | None:
        """Queue a ping for writing and return its waiter; None once the
        connection is closing."""


async def keep_alive(host: KeepaliveHost, interval: float, timeout: float) -> bool:
    """Ping through ``host`` until it closes (return False) or a pong is
    ``timeout`` late (return True)."""
    next_ping = trio.current_time() + interval
    while True:
        await trio.sleep_until(next_ping)
        waiter = host._send_keepalive_ping()
        if waiter is None:
            return False
        sent_at = trio.current_time()
        next_ping = sent_at + interval
        with trio.move_on_at(sent_at + timeout):
            await waiter.event.wait()
        if not waiter.event.is_set():
            return True
        if not waiter.answered:  # woken because the connection closed
            return False
