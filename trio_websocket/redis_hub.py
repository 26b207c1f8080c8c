"""Topics across processes and machines: the :class:`~trio_websocket.Hub`
interface backed by Redis pub/sub, through coredis (``pip install
trio_websocket[redis]``).

Rules:
- Only this module imports coredis, and nothing imports this module:
  ``import trio_websocket`` works without coredis installed.
- One path for every message: ``publish`` sends it to Redis only, and each
  process (the publisher's too) delivers it to its own subscribers from its
  Redis subscription. So every process sees one topic's messages in the
  order Redis received them, and a message either reaches Redis (then every
  connected process) or ``publish`` raises :exc:`RedisUnavailable`.
- Each process subscribes in Redis only to the topics its own connections
  subscribe to (the first local subscriber subscribes the channel, the
  last one leaving unsubscribes it).
- The subscription link reconnects by itself, with exponential backoff
  (``reconnect_delay`` doubling up to ``max_reconnect_delay``, with
  jitter), and resubscribes to every topic that still has local
  subscribers. Redis pub/sub keeps nothing: a message published while a
  process is disconnected never reaches that process's subscribers, and
  ``publish`` fails while the publisher's own link to Redis is down. Both
  are logged (warning) and counted.
- On the wire a Redis message is one type byte then the payload: ``t`` and
  UTF-8 text, or ``b`` and binary. Any Redis client (another language, a
  backend job) can publish ``"t" + text`` to ``channel_prefix + topic``. A
  message in another format is logged and dropped.
- The local fan-out, queues and overflow policy are the in-process hub's.
"""

from __future__ import annotations

import logging
import random
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import coredis
import coredis.exceptions
import trio

from ._core.config import check_timeout
from ._extras.hub import (
    DEFAULT_OVERFLOW_CLOSE_TIMEOUT,
    DEFAULT_SUBSCRIBER_QUEUE_SIZE,
    Hub,
    OverflowPolicy,
    check_message,
    check_topics,
)

if sys.version_info < (3, 11):  # pragma: no cover - trio installs the backport
    from exceptiongroup import BaseExceptionGroup

__all__ = ["RedisHub", "RedisUnavailable"]

logger: logging.Logger = logging.getLogger("trio_websocket.hub")

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_CHANNEL_PREFIX = "trio_websocket:"
#: Seconds before the first reconnection attempt; doubles up to the maximum.
DEFAULT_RECONNECT_DELAY = 0.1
DEFAULT_MAX_RECONNECT_DELAY = 10.0
#: Seconds allowed to connect to Redis, and for one command's answer.
DEFAULT_REDIS_TIMEOUT = 5.0

_TEXT = b"t"
_BINARY = b"b"

#: What a lost or unreachable Redis raises through coredis.
_LINK_ERRORS: tuple[type[BaseException], ...] = (
    coredis.exceptions.ConnectionError,
    coredis.exceptions.PubSubError,
    TimeoutError,
    OSError,
)


class RedisUnavailable(Exception):
    """``publish`` could not hand the message to Redis (it is unreachable,
    or did not answer in time); no subscriber anywhere received it."""


def encode(message: str | bytes) -> bytes:
    """A message as this hub publishes it to Redis (see the module rules)."""
    if isinstance(message, str):
        return _TEXT + message.encode("utf-8")
    return _BINARY + message


def decode(data: bytes) -> str | bytes:
    """The message in a Redis payload; ``ValueError`` for another format."""
    kind, payload = data[:1], data[1:]
    if kind == _TEXT:
        return payload.decode("utf-8")
    if kind == _BINARY:
        return payload
    raise ValueError("not a trio_websocket hub message (expected a 't' or 'b' type byte)")


def _link_failure(exc: BaseException) -> BaseException | None:
    """The Redis link error that ``exc`` is (or, for a group, the first of
    its members when all are link errors or cancellations), else None."""
    if isinstance(exc, BaseExceptionGroup):
        found: BaseException | None = None
        for member in exc.exceptions:
            if isinstance(member, trio.Cancelled):
                continue
            inner = _link_failure(member)
            if inner is None:
                return None
            found = found or inner
        return found
    return exc if isinstance(exc, _LINK_ERRORS) else None


class RedisHub(Hub):
    """A :class:`~trio_websocket.Hub` whose topics span every process
    connected to the same Redis::

        from trio_websocket.redis_hub import RedisHub

        async with RedisHub("redis://redis.internal:6379/0") as hub:
            ...  # exactly as with Hub

    Entering the block connects to Redis, or starts retrying in the
    background if it is unreachable (see :attr:`connected`).

    :param url: the Redis server, ``redis://[:password@]host:port/db``
        (``rediss://`` for TLS, ``unix://`` for a socket).
    :param channel_prefix: the Redis channel of topic ``T`` is
        ``channel_prefix + T``; lets several applications share a Redis.
    :param reconnect_delay: seconds before the first reconnection attempt;
        each failure doubles it, up to ``max_reconnect_delay``.
    :param max_reconnect_delay: the longest wait between attempts.
    :param redis_timeout: seconds to connect, and to wait for Redis to
        answer one command (``publish``, ``subscribe``).
    :param queue_size: see :class:`~trio_websocket.Hub`.
    :param overflow: see :class:`~trio_websocket.Hub`.
    :param close_timeout: see :class:`~trio_websocket.Hub`.
    """

    def __init__(
        self,
        url: str = DEFAULT_REDIS_URL,
        *,
        channel_prefix: str = DEFAULT_CHANNEL_PREFIX,
        reconnect_delay: float = DEFAULT_RECONNECT_DELAY,
        max_reconnect_delay: float = DEFAULT_MAX_RECONNECT_DELAY,
        redis_timeout: float = DEFAULT_REDIS_TIMEOUT,
        queue_size: int = DEFAULT_SUBSCRIBER_QUEUE_SIZE,
        overflow: OverflowPolicy = "drop_oldest",
        close_timeout: float = DEFAULT_OVERFLOW_CLOSE_TIMEOUT,
    ) -> None:
        super().__init__(queue_size=queue_size, overflow=overflow, close_timeout=close_timeout)
        if not isinstance(url, str):
            raise TypeError("url must be a str")
        if not isinstance(channel_prefix, str):
            raise TypeError("channel_prefix must be a str")
        self._url = url
        self._prefix = channel_prefix
        self._reconnect_delay = check_timeout("reconnect_delay", reconnect_delay)
        self._max_reconnect_delay = max(
            self._reconnect_delay, check_timeout("max_reconnect_delay", max_reconnect_delay)
        )
        self._redis_timeout = check_timeout("redis_timeout", redis_timeout)
        self._client: coredis.Redis[bytes] | None = None
        self._pubsub: Any = None
        self._connected = False
        self._reconnects = 0
        self._lost_publishes = 0

    @property
    def connected(self) -> bool:
        """Whether the subscription link to Redis is up right now. While it
        is down, messages published by others do not reach this process."""
        return self._connected

    @property
    def reconnects(self) -> int:
        """How many times the subscription link was re-established."""
        return self._reconnects

    @property
    def failed_publishes(self) -> int:
        """How many ``publish`` calls raised :exc:`RedisUnavailable`."""
        return self._lost_publishes

    # ------------------------------------------------------------------
    # Lifetime: the client and the subscription link

    @asynccontextmanager
    async def _background(self, nursery: trio.Nursery) -> AsyncIterator[None]:
        client: coredis.Redis[bytes] = coredis.Redis.from_url(
            self._url,
            connect_timeout=self._redis_timeout,
            stream_timeout=self._redis_timeout,
        )
        async with client:
            self._client = client
            try:
                async with trio.open_nursery() as link_nursery:
                    await link_nursery.start(self._run_link)
                    try:
                        yield
                    finally:
                        link_nursery.cancel_scope.cancel()
            finally:
                self._client = None

    async def _run_link(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Keep one subscription connection to Redis, forever. Reports
        started after the first attempt, whether it connected or not."""
        assert self._client is not None
        delay = self._reconnect_delay
        started = False
        attempts = 0
        while True:
            attempts += 1
            try:
                async with self._client.pubsub(
                    retry_policy=None,
                    ignore_subscribe_messages=True,
                    subscription_timeout=self._redis_timeout,
                ) as pubsub:
                    self._pubsub = pubsub
                    channels = [self._prefix + topic for topic in self._topics]
                    if channels:
                        await pubsub.subscribe(*channels)
                    self._connected = True
                    if attempts > 1:
                        self._reconnects += 1
                        logger.warning(
                            "reconnected to Redis at %s; resubscribed to %d topics",
                            self._url,
                            len(channels),
                        )
                    delay = self._reconnect_delay
                    if not started:
                        started = True
                        task_status.started()
                    await self._receive(pubsub)
            except BaseException as exc:
                failure = _link_failure(exc)
                if failure is None:
                    raise
                logger.warning(
                    "Redis at %s is unreachable (%s): messages published meanwhile "
                    "will not reach this process's subscribers; retrying in %.1f s",
                    self._url,
                    str(failure) or type(failure).__name__,
                    delay,
                )
            finally:
                self._pubsub = None
                self._connected = False
            if not started:
                started = True
                task_status.started()
            await trio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._max_reconnect_delay)

    async def _receive(self, pubsub: Any) -> None:
        while True:
            message = await pubsub.get_message()
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"]
            if isinstance(channel, bytes):
                channel = channel.decode("utf-8", "replace")
            topic = channel[len(self._prefix) :]
            try:
                payload = decode(message["data"])
            except (ValueError, TypeError) as exc:
                logger.warning("dropped a message on Redis channel %r: %s", channel, exc)
                continue
            self._deliver(topic, payload)

    # ------------------------------------------------------------------
    # Subscriptions follow the local topics

    async def _topic_added(self, topic: str) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            return  # subscribed when the link comes back
        try:
            await pubsub.subscribe(self._prefix + topic)
        except BaseException as exc:
            if _link_failure(exc) is None:
                raise
            # The link is failing: its reconnection resubscribes every topic.
            logger.warning("could not subscribe to %r in Redis now: %s", topic, exc)

    async def _topic_removed(self, topic: str) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            return
        try:
            await pubsub.unsubscribe(self._prefix + topic)
        except BaseException as exc:
            if _link_failure(exc) is None:
                raise

    # ------------------------------------------------------------------
    # Publishing

    async def publish(self, topic: str, message: str | bytes) -> int:
        """Publish ``message`` to ``topic`` in every process: it goes to
        Redis, and each process connected to Redis (this one included)
        delivers it to its own subscribers.

        :returns: how many processes' links Redis handed it to.
        :raises RedisUnavailable: Redis could not be reached in time; the
            message went nowhere.
        :raises TypeError: for a message that is neither str nor bytes.
        :raises RuntimeError: outside the hub's ``async with`` block.
        """
        self._require_running()
        check_topics((topic,))
        check_message(message)
        client = self._client
        assert client is not None
        try:
            with trio.fail_after(self._redis_timeout * 2):
                receivers = await client.publish(self._prefix + topic, encode(message))
        except BaseException as exc:
            failure = exc if isinstance(exc, trio.TooSlowError) else _link_failure(exc)
            if failure is None:
                raise
            self._lost_publishes += 1
            logger.warning("publish to %r failed: Redis is unavailable (%s)", topic, failure)
            raise RedisUnavailable(
                f"could not publish to {topic!r}: Redis at {self._url} is unavailable "
                f"({str(failure) or type(failure).__name__})"
            ) from failure
        self._published += 1
        return int(receivers)
