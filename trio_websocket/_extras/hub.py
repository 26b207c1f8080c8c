"""Topics inside one process: connections subscribe, ``publish`` reaches
every subscriber.

Rules:
- ``publish`` never waits for a subscriber. Each subscribed connection has
  its own bounded queue and its own sender task; publishing only appends to
  the queues, so one slow (or stalled) client never holds up the publisher
  or the other subscribers.
- A full queue applies the hub's overflow policy: ``"drop_oldest"`` drops
  the oldest message waiting for that subscriber (it misses messages but
  stays connected), ``"close"`` unsubscribes it and closes its connection
  with 1013 (Try Again Later), within ``close_timeout`` seconds (after that
  the connection is aborted: a client that stopped reading cannot even
  receive the close frame).
- Each message is framed once per publish: an uncompressed server frame is
  the same bytes for every connection, so every server connection without
  an extension writes that one ``bytes`` object (see
  ``_core.contracts.PrebuiltFrameSink``); the others get the message
  through ``send_message``.
- Structured concurrency: the sender tasks live in the hub's nursery, which
  ``async with Hub() as hub:`` opens; leaving the block stops them (a send
  cut short aborts that connection) and forgets every subscription.
- A subscription ends when it is unsubscribed, when its connection closes
  (noticed by its sender, by the next publish to it, or by a sweep every
  ``SWEEP_INTERVAL`` seconds, so a closed connection on a quiet topic is
  not kept), or on overflow with ``"close"``. Messages still queued for it
  are then dropped.
- Subclasses (the Redis hub) hook ``_topic_added``/``_topic_removed``
  (the first subscriber of a topic, the last one gone) and replace
  ``publish``; ``_deliver`` is the local fan-out they call.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

import trio

from .._core.config import check_timeout
from .._core.connection import WebSocketConnection
from .._core.contracts import PrebuiltFrameSink
from .._core.errors import ConnectionClosed
from .._core.groups import collapse_exception_groups
from .._wire.framing import frame_header

logger = logging.getLogger("trio_websocket.hub")

#: What a subscriber's full queue does with one more message.
OverflowPolicy = Literal["drop_oldest", "close"]
_POLICIES = ("drop_oldest", "close")

#: Messages that may wait for one subscriber before the overflow policy applies.
DEFAULT_SUBSCRIBER_QUEUE_SIZE = 64
#: Seconds a subscriber closed for overflow has for its closing handshake.
DEFAULT_OVERFLOW_CLOSE_TIMEOUT = 5.0
#: Seconds between sweeps for subscribed connections that have closed.
SWEEP_INTERVAL = 5.0
#: The close code for a subscriber that could not keep up (RFC 6455 7.4.1,
#: registered as "Try Again Later").
TRY_AGAIN_LATER = 1013

_FIN_TEXT = 0x81
_FIN_BINARY = 0x82


def server_frame(message: str | bytes) -> bytes:
    """The complete unmasked, unfragmented data frame a server sends for
    ``message`` when no extension is in use (RFC 6455 5.2)."""
    if isinstance(message, str):
        payload = message.encode("utf-8")
        first = _FIN_TEXT
    else:
        payload = message
        first = _FIN_BINARY
    return frame_header(first, len(payload)) + payload


@dataclass(frozen=True)
class HubStatistics:
    """Counters of a :class:`Hub`, for monitoring (see :doc:`scaling`)."""

    #: Topics with at least one subscriber in this process.
    topics: int
    #: Connections subscribed to at least one topic.
    subscribers: int
    #: Messages handed to ``publish`` here (for a Redis hub: sent to Redis).
    published: int
    #: Messages queued for a local subscriber.
    queued: int
    #: Messages written to a subscriber's connection.
    delivered: int
    #: Messages dropped by the ``"drop_oldest"`` policy.
    dropped: int
    #: Subscribers closed with 1013 by the ``"close"`` policy.
    overflow_closes: int


class _Outgoing:
    """One published message, framed once for every subscriber."""

    __slots__ = ("frame", "message")

    def __init__(self, message: str | bytes) -> None:
        self.message = message
        self.frame = server_frame(message)


class _Subscriber:
    """One connection's subscriptions, queue and sender state."""

    __slots__ = ("done", "queue", "topics", "wakeup", "ws")

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.topics: set[str] = set()
        self.queue: deque[_Outgoing] = deque()
        self.wakeup = trio.Event()
        # Set once the subscription ended: the sender stops taking messages.
        self.done = False


class Hub:
    """Topics for the connections of one process.

    ::

        async with Hub() as hub:
            async def handler(request):
                ws = await request.accept()
                async with hub.subscribed(ws, "chat"):
                    while True:
                        await hub.publish("chat", await ws.get_message())

            await serve_websocket(handler, "127.0.0.1", 8000, None)

    :param queue_size: messages that may wait for one subscriber; one more
        applies ``overflow``.
    :param overflow: ``"drop_oldest"`` (the subscriber misses the oldest
        waiting message) or ``"close"`` (the subscriber is unsubscribed and
        its connection closed with 1013 Try Again Later).
    :param close_timeout: seconds allowed for the closing handshake of a
        subscriber closed for overflow, before its connection is aborted.
    """

    def __init__(
        self,
        *,
        queue_size: int = DEFAULT_SUBSCRIBER_QUEUE_SIZE,
        overflow: OverflowPolicy = "drop_oldest",
        close_timeout: float = DEFAULT_OVERFLOW_CLOSE_TIMEOUT,
    ) -> None:
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise ValueError(f"queue_size must be an int of at least 1, got {queue_size!r}")
        if overflow not in _POLICIES:
            raise ValueError(f"overflow must be one of {_POLICIES}, got {overflow!r}")
        self._queue_size = queue_size
        self._overflow: OverflowPolicy = overflow
        self._close_timeout = check_timeout("close_timeout", close_timeout)
        self._topics: dict[str, set[_Subscriber]] = {}
        self._subscribers: dict[WebSocketConnection, _Subscriber] = {}
        self._nursery: trio.Nursery | None = None
        self._lifetime: AbstractAsyncContextManager[None] | None = None
        self._published = 0
        self._queued = 0
        self._delivered = 0
        self._dropped = 0
        self._overflow_closes = 0

    # ------------------------------------------------------------------
    # Lifetime

    async def __aenter__(self) -> Hub:
        if self._lifetime is not None:
            raise RuntimeError("this hub is already running (or has run)")
        self._lifetime = self._run()
        await self._lifetime.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        assert self._lifetime is not None
        return await self._lifetime.__aexit__(exc_type, exc, traceback)

    @asynccontextmanager
    async def _run(self) -> AsyncIterator[None]:
        with collapse_exception_groups():
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._sweep, name="hub sweep")
                try:
                    async with self._background(nursery):
                        yield
                finally:
                    self._nursery = None
                    self._forget_all()
                    nursery.cancel_scope.cancel()

    @asynccontextmanager
    async def _background(self, nursery: trio.Nursery) -> AsyncIterator[None]:
        """What a subclass runs for the hub's lifetime (the Redis link)."""
        yield

    def _require_running(self) -> trio.Nursery:
        if self._nursery is None:
            raise RuntimeError("the hub is not running: use it inside 'async with hub:'")
        return self._nursery

    # ------------------------------------------------------------------
    # Subscriptions

    async def subscribe(self, ws: WebSocketConnection, *topics: str) -> None:
        """Subscribe ``ws`` to each of ``topics``: from now on every message
        published to one of them is sent to it.

        :raises ConnectionClosed: if ``ws`` is already closed.
        :raises RuntimeError: outside the hub's ``async with`` block.
        """
        nursery = self._require_running()
        check_topics(topics)
        if ws.closed is not None:
            raise ConnectionClosed(ws.closed)
        if not topics:
            await trio.lowlevel.checkpoint()
            return
        subscriber = self._subscribers.get(ws)
        if subscriber is None:
            subscriber = _Subscriber(ws)
            self._subscribers[ws] = subscriber
            nursery.start_soon(self._sender, subscriber, name=f"hub sender for {ws}")
        added = []
        for topic in topics:
            if topic in subscriber.topics:
                continue
            subscriber.topics.add(topic)
            members = self._topics.setdefault(topic, set())
            if not members:
                added.append(topic)
            members.add(subscriber)
        for topic in added:
            await self._topic_added(topic)
        await trio.lowlevel.checkpoint()

    async def unsubscribe(self, ws: WebSocketConnection, *topics: str) -> None:
        """Unsubscribe ``ws`` from ``topics``, or from every topic when none
        is given. Unknown topics and connections are ignored."""
        check_topics(topics)
        subscriber = self._subscribers.get(ws)
        if subscriber is not None:
            for topic in self._forget_topics(subscriber, topics or tuple(subscriber.topics)):
                await self._topic_removed(topic)
        await trio.lowlevel.checkpoint()

    def subscribed(
        self, ws: WebSocketConnection, *topics: str
    ) -> AbstractAsyncContextManager[None]:
        """``async with hub.subscribed(ws, topic, ...):`` subscribes for the
        duration of the block, and unsubscribes from those topics when it
        ends, however it ends."""
        return self._subscribed(ws, topics)

    @asynccontextmanager
    async def _subscribed(
        self, ws: WebSocketConnection, topics: tuple[str, ...]
    ) -> AsyncIterator[None]:
        await self.subscribe(ws, *topics)
        try:
            yield
        finally:
            with trio.CancelScope(shield=True):
                await self.unsubscribe(ws, *topics)

    def subscriber_count(self, topic: str) -> int:
        """How many connections of this process are subscribed to ``topic``."""
        return len(self._topics.get(topic, ()))

    def statistics(self) -> HubStatistics:
        """The hub's counters since it was created."""
        return HubStatistics(
            topics=len(self._topics),
            subscribers=len(self._subscribers),
            published=self._published,
            queued=self._queued,
            delivered=self._delivered,
            dropped=self._dropped,
            overflow_closes=self._overflow_closes,
        )

    def _forget_topics(self, subscriber: _Subscriber, topics: tuple[str, ...]) -> list[str]:
        """Drop some of a subscriber's topics (all of them ends it); return
        the topics that have no subscriber left."""
        emptied = []
        for topic in topics:
            if topic not in subscriber.topics:
                continue
            subscriber.topics.discard(topic)
            members = self._topics.get(topic)
            if members is not None:
                members.discard(subscriber)
                if not members:
                    del self._topics[topic]
                    emptied.append(topic)
        if not subscriber.topics:
            self._end(subscriber)
        return emptied

    def _end(self, subscriber: _Subscriber) -> None:
        """The subscription is over: its sender stops after the write it may
        be doing; queued messages are dropped."""
        subscriber.done = True
        subscriber.queue.clear()
        subscriber.wakeup.set()
        if self._subscribers.get(subscriber.ws) is subscriber:
            del self._subscribers[subscriber.ws]

    def _forget_all(self) -> None:
        for subscriber in list(self._subscribers.values()):
            self._end(subscriber)
        self._topics.clear()

    async def _drop_subscriber(self, subscriber: _Subscriber) -> None:
        """Forget a subscriber whose connection is gone."""
        for topic in self._forget_topics(subscriber, tuple(subscriber.topics)):
            if self._nursery is not None:
                await self._topic_removed(topic)

    async def _sweep(self) -> None:
        while True:
            await trio.sleep(SWEEP_INTERVAL)
            for subscriber in list(self._subscribers.values()):
                if not subscriber.done and subscriber.ws.closed is not None:
                    self._forget_closed(subscriber)

    async def _topic_added(self, topic: str) -> None:
        """``topic`` has its first subscriber in this process."""

    async def _topic_removed(self, topic: str) -> None:
        """``topic`` has no subscriber left in this process."""

    # ------------------------------------------------------------------
    # Publishing and delivery

    async def publish(self, topic: str, message: str | bytes) -> int:
        """Send ``message`` (``str`` for text, ``bytes`` for binary) to every
        connection subscribed to ``topic``. Never waits for a subscriber.

        :returns: how many subscribers it was queued for.
        :raises TypeError: for a message that is neither str nor bytes.
        :raises RuntimeError: outside the hub's ``async with`` block.
        """
        self._require_running()
        check_topics((topic,))
        check_message(message)
        self._published += 1
        count = self._deliver(topic, message)
        await trio.lowlevel.checkpoint()
        return count

    def _deliver(self, topic: str, message: str | bytes) -> int:
        """Queue ``message`` for each local subscriber of ``topic``;
        synchronous, so it can never wait on a subscriber."""
        members = self._topics.get(topic)
        if not members:
            return 0
        outgoing = _Outgoing(message)
        count = 0
        for subscriber in list(members):
            if subscriber.done:
                continue
            if subscriber.ws.closed is not None:
                self._forget_closed(subscriber)
                continue
            if len(subscriber.queue) >= self._queue_size:
                if self._overflow == "close":
                    self._close_for_overflow(subscriber)
                    continue
                subscriber.queue.popleft()
                self._dropped += 1
            subscriber.queue.append(outgoing)
            subscriber.wakeup.set()
            self._queued += 1
            count += 1
        return count

    def _forget_closed(self, subscriber: _Subscriber) -> None:
        nursery = self._nursery
        if nursery is not None:
            nursery.start_soon(self._drop_subscriber, subscriber)
        subscriber.done = True

    def _close_for_overflow(self, subscriber: _Subscriber) -> None:
        self._overflow_closes += 1
        logger.warning(
            "%s could not keep up with its topics (%d messages waiting): closing it with 1013",
            subscriber.ws,
            len(subscriber.queue),
        )
        self._forget_closed(subscriber)
        subscriber.queue.clear()
        subscriber.wakeup.set()
        assert self._nursery is not None
        self._nursery.start_soon(self._close_slow, subscriber.ws)

    async def _close_slow(self, ws: WebSocketConnection) -> None:
        # aclose marks the connection closed (1013) at once, so its handler
        # sees why; a cancelled aclose aborts the connection.
        with trio.move_on_after(self._close_timeout):
            await ws.aclose(TRY_AGAIN_LATER, "subscriber too slow")

    async def _sender(self, subscriber: _Subscriber) -> None:
        ws: PrebuiltFrameSink = subscriber.ws
        queue = subscriber.queue
        try:
            while True:
                while not queue:
                    if subscriber.done:
                        return
                    subscriber.wakeup = trio.Event()
                    await subscriber.wakeup.wait()
                if subscriber.done:
                    return
                outgoing = queue.popleft()
                await ws._send_prebuilt_frame(outgoing.frame, outgoing.message)
                self._delivered += 1
        except ConnectionClosed:
            pass
        finally:
            if not subscriber.done:
                self._forget_closed(subscriber)


def check_topics(topics: tuple[str, ...]) -> None:
    """TypeError unless every topic is a str (also for ``redis_hub``)."""
    for topic in topics:
        if not isinstance(topic, str):
            raise TypeError(f"a topic must be a str, not {type(topic).__name__}")


def check_message(message: object) -> None:
    """TypeError unless ``message`` is str or bytes (also for ``redis_hub``)."""
    if not isinstance(message, (str, bytes)):
        raise TypeError(f"message must be str or bytes, not {type(message).__name__}")
