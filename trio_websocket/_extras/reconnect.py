"""Keeping a client connection to one URL alive across drops.

Rules:
- :meth:`ReconnectingWebSocket.run` is a plain coroutine that runs in the
  caller's task: it connects with :func:`open_websocket_url`, runs the
  user's handler on each connection, and between connections sleeps a
  jittered exponential backoff. It starts no task of its own, so nothing it
  does outlives it and every error reaches its caller.
- It is deliberately not an async generator (``async for ws in
  reconnect()``): a generator that yields from inside a nursery or a cancel
  scope (the connection's) hands control to code outside that scope, so a
  cancellation or an error meant for the loop body lands in the wrong
  place (trio's documentation on async generators; PEP 789). A handler that
  the loop calls keeps every scope properly nested.
- Stopping is explicit: :meth:`~ReconnectingWebSocket.stop` (the open
  connection closes cleanly with 1000), the handler returning, or
  cancelling the caller of ``run``.
- Which errors are retried is one small policy function
  (:func:`default_retry_policy`); the random source and every delay are
  injectable, so backoff is testable with trio's autojump clock.
- Sits above ``_client.client`` and uses only its public entry point.
"""

from __future__ import annotations

import inspect
import logging
import math
import random
import ssl
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .._client.client import open_websocket_url
from .._core.connection import WebSocketConnection
from .._core.errors import (
    PHASE_HTTP,
    PHASE_TLS,
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
)
from .._core.url import parse_ws_url

if sys.version_info < (3, 11):  # pragma: no cover - trio installs the backport
    from exceptiongroup import BaseExceptionGroup

logger = logging.getLogger("trio_websocket")

Handler = Callable[[WebSocketConnection], Awaitable[object]]
RetryPolicy = Callable[[BaseException], bool]

#: HTTP statuses that say "try again later" although they are 4xx.
_RETRYABLE_CLIENT_STATUSES = frozenset({408, 425, 429})
#: Keywords of ``open_websocket_url`` that the reconnecting client sets
#: itself (it is given them as its own parameters).
_OWN_ARGUMENTS = frozenset({"url", "ssl_context"})


def default_retry_policy(error: BaseException) -> bool:
    """Whether :class:`ReconnectingWebSocket` retries after ``error``, by
    default.

    Retried: a dropped connection (:exc:`ConnectionClosed`, also inside an
    ``ExceptionGroup`` that holds nothing else), a failed DNS lookup, a
    refused or failed TCP connection, a TLS handshake cut short, a timeout,
    an answer that is not HTTP, and HTTP 5xx, 408, 425 and 429.

    Not retried (trying again would fail the same way): other HTTP 4xx
    answers, a certificate that does not verify, and redirects that cannot
    be followed. Neither is any other exception (``ValueError`` for a bad
    argument, an error in your handler): those propagate from
    :meth:`ReconnectingWebSocket.run`.
    """
    if isinstance(error, BaseExceptionGroup):
        # From a nursery in the handler whose reading task saw the drop.
        return all(isinstance(leaf, ConnectionClosed) for leaf in _leaves(error))
    if isinstance(error, ConnectionClosed):
        return True
    if isinstance(error, ConnectionRejected):
        status = error.status_code
        return status >= 500 or status in _RETRYABLE_CLIENT_STATUSES
    if isinstance(error, HandshakeError):
        if error.phase == PHASE_TLS and isinstance(error.__cause__, ssl.SSLCertVerificationError):
            return False
        # Refused redirects (a downgrade, too many, a bad Location) carry
        # the redirect answer as their cause.
        refused_redirect = error.phase == PHASE_HTTP and isinstance(
            error.__cause__, ConnectionRejected
        )
        return not refused_redirect
    return False


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found.extend(_leaves(exc))
        else:
            found.append(exc)
    return found


def backoff_delay(
    failures: int,
    *,
    initial_delay: float,
    backoff_factor: float,
    max_delay: float,
    jitter: float,
    rng: random.Random,
) -> float:
    """The pause before the next attempt after ``failures`` (>= 1) failures
    in a row: ``initial_delay * backoff_factor ** (failures - 1)``, capped
    at ``max_delay``, then reduced by a random fraction of up to
    ``jitter`` (0: no randomness; 1: anywhere between 0 and the capped
    delay), so that many clients dropped at once do not return at once."""
    # Cap the exponent first: a long outage must not overflow the float.
    exponent = min(failures - 1, 64)
    if backoff_factor > 1 and initial_delay > 0 and math.isfinite(max_delay):
        needed = math.ceil(math.log(max(max_delay / initial_delay, 1), backoff_factor))
        exponent = min(exponent, needed + 1)
    capped = min(max_delay, initial_delay * backoff_factor**exponent)
    return capped * (1 - jitter * rng.random())


def _check_number(name: str, value: object, minimum: float, maximum: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return float(value)


class ReconnectingWebSocket:
    """A client that keeps a WebSocket to ``url`` open, reconnecting with
    jittered exponential backoff when the connection drops or cannot be
    opened::

        async def handler(ws):
            while True:
                print(await ws.get_message())

        client = ReconnectingWebSocket("wss://example.com/feed", handler)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run)
            ...
            client.stop()

    For each connection, :meth:`run` awaits ``on_connect`` (if given) and
    then ``handler``, both with the open :class:`WebSocketConnection`. What
    happens next depends on how the handler ends:

    * it raises :exc:`ConnectionClosed` (the connection dropped or the
      server closed it): wait, then reconnect;
    * it returns: close the connection with 1000 and return from
      :meth:`run` (the handler is done);
    * it raises anything else: close the connection and raise it from
      :meth:`run`.

    A failed open is retried or raised according to ``retry_policy``. The
    handler learns of a drop when it next touches the connection, so keep
    a ``get_message`` loop running in it (see ``examples/reconnect.py``).

    :param url: the ``ws://`` or ``wss://`` URL, checked now
        (``ValueError`` if unusable).
    :param handler: ``async def handler(ws)``, run once per connection.
    :param ssl_context: as for :func:`open_websocket_url`.
    :param on_connect: ``async def on_connect(ws)``, awaited on each new
        connection before ``handler``: the place to authenticate or
        resubscribe. A :exc:`ConnectionClosed` from it counts as a drop.
    :param initial_delay: seconds to wait after the first failure.
    :param backoff_factor: each further failure in a row multiplies the
        delay by this (at least 1).
    :param max_delay: the delay never grows beyond this many seconds.
    :param jitter: the fraction of each delay that is random, from 0 (none)
        to 1 (anywhere between 0 and the delay).
    :param healthy_after: a connection that stayed open this many seconds
        resets the backoff; one that dropped sooner counts as a failure,
        so a server that accepts and drops at once is not hammered.
    :param max_attempts: give up after this many failures in a row and
        raise the last error from :meth:`run`; ``None`` retries forever.
    :param retry_policy: ``retry_policy(error) -> bool``: whether to retry
        after ``error`` (default: :func:`default_retry_policy`).
    :param rng: the ``random.Random`` the jitter is drawn from (seed one
        for reproducible delays).
    :param connect_options: any other keyword argument of
        :func:`open_websocket_url` (``subprotocols``, ``extra_headers``,
        ``connect_timeout``...), used for every connection.
    """

    def __init__(
        self,
        url: str,
        handler: Handler,
        ssl_context: ssl.SSLContext | None = None,
        *,
        on_connect: Handler | None = None,
        initial_delay: float = 1.0,
        backoff_factor: float = 2.0,
        max_delay: float = 60.0,
        jitter: float = 0.5,
        healthy_after: float = 10.0,
        max_attempts: int | None = None,
        retry_policy: RetryPolicy | None = None,
        rng: random.Random | None = None,
        **connect_options: Any,
    ) -> None:
        target = parse_ws_url(url)
        if ssl_context is not None and not target.secure:
            raise ValueError("ssl_context given for a ws:// URL; use wss:// for TLS")
        if not callable(handler):
            raise TypeError("handler must be an async function taking the connection")
        if on_connect is not None and not callable(on_connect):
            raise TypeError("on_connect must be an async function taking the connection")
        known = set(inspect.signature(open_websocket_url).parameters) - _OWN_ARGUMENTS
        unknown = sorted(set(connect_options) - known)
        if unknown:
            raise TypeError(f"unexpected keyword argument(s) for the connection: {unknown}")
        if max_attempts is not None and (
            isinstance(max_attempts, bool) or not isinstance(max_attempts, int)
        ):
            raise TypeError("max_attempts must be an int or None")
        if max_attempts is not None and max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self._url = url
        self._handler = handler
        self._ssl_context = ssl_context
        self._on_connect = on_connect
        self._initial_delay = _check_number("initial_delay", initial_delay, 0)
        self._backoff_factor = _check_number("backoff_factor", backoff_factor, 1)
        self._max_delay = _check_number("max_delay", max_delay, self._initial_delay)
        self._jitter = _check_number("jitter", jitter, 0, 1)
        self._healthy_after = _check_number("healthy_after", healthy_after, 0)
        self._max_attempts = max_attempts
        self._retry_policy = retry_policy if retry_policy is not None else default_retry_policy
        self._rng = rng if rng is not None else random.Random()
        self._connect_options = connect_options

        self._running = False
        self._finished = False
        self._stop_requested = False
        self._scope: trio.CancelScope | None = None
        self._changed = trio.Event()
        self._connection: WebSocketConnection | None = None
        self._opened_at = 0.0
        self._attempts = 0
        self._failures = 0
        self._connections = 0
        self._last_error: BaseException | None = None
        self._task_status: trio.TaskStatus[None] | None = None
        #: Set once the handler has returned or been stopped: what fails
        #: after that (closing) ends ``run`` instead of being retried.
        self._closing_for_good = False

    # ------------------------------------------------------------------
    # What can be observed

    @property
    def url(self) -> str:
        """The URL this client connects to."""
        return self._url

    @property
    def connection(self) -> WebSocketConnection | None:
        """The open connection, or ``None`` between connections."""
        connection = self._connection
        if connection is None or connection.closed is not None:
            return None
        return connection

    @property
    def attempts(self) -> int:
        """How many times :meth:`run` has tried to connect, in all."""
        return self._attempts

    @property
    def connections(self) -> int:
        """How many of those attempts opened a connection."""
        return self._connections

    @property
    def failures(self) -> int:
        """Failures in a row so far (failed opens, and connections that
        dropped within ``healthy_after``); 0 once a connection has stayed
        open that long. It drives the backoff and ``max_attempts``."""
        if self.connection is not None and self._has_been_healthy():
            return 0
        return self._failures

    @property
    def last_error(self) -> BaseException | None:
        """The exception that ended the last connection or failed the last
        attempt (kept after a successful reconnect), else ``None``."""
        return self._last_error

    @property
    def running(self) -> bool:
        """Whether :meth:`run` is running and has not been asked to stop."""
        return self._running and not self._stop_requested

    def __repr__(self) -> str:
        if self._finished:
            state = "stopped"
        elif self._connection is not None and self._connection.closed is None:
            state = "connected"
        elif self._running:
            state = "stopping" if self._stop_requested else "reconnecting"
        else:
            state = "not started"
        return (
            f"<{type(self).__name__} {self._url} {state}, attempts={self._attempts}, "
            f"connections={self._connections}, last_error={self._last_error!r}>"
        )

    def _has_been_healthy(self) -> bool:
        return trio.current_time() - self._opened_at >= self._healthy_after

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # ------------------------------------------------------------------
    # Control

    def stop(self) -> None:
        """Stop :meth:`run`: close the open connection cleanly (1000), or
        stop waiting or connecting, and let ``run`` return. Safe to call at
        any time, more than once, and from the handler itself; if ``run``
        has not started yet, it will return at once."""
        self._stop_requested = True
        if self._scope is not None:
            self._scope.cancel()
        self._notify()

    async def wait_connected(self) -> WebSocketConnection:
        """The open connection, waiting for one if there is none right now
        (useful to send from other tasks).

        Raises ``trio.ClosedResourceError`` when the client has stopped (or
        stops while waiting).
        """
        while True:
            connection = self.connection
            if connection is not None:
                return connection
            if self._finished or self._stop_requested:
                raise trio.ClosedResourceError("the reconnecting WebSocket has stopped")
            await self._changed.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect and keep reconnecting until stopped (see the class).

        With ``await nursery.start(client.run)``, ``start`` returns once the
        first connection is open and ``on_connect`` has run.

        :raises RuntimeError: ``run`` was called before on this object.
        :raises Exception: the handler's own error; the last error once
            ``max_attempts`` failures happened in a row; any error the retry
            policy refuses (for example :exc:`ConnectionRejected` with 403);
            :exc:`DisconnectionTimeout` when the clean close after the
            handler returned (or after :meth:`stop`) took longer than
            ``disconnect_timeout``.
        """
        if self._running or self._finished:
            raise RuntimeError("ReconnectingWebSocket.run() can only be called once")
        self._running = True
        self._task_status = task_status
        try:
            while not self._stop_requested:
                if self._failures:
                    await self._pause()
                    if self._stop_requested:
                        break
                self._attempts += 1
                try:
                    done = await self._connect_and_serve()
                except Exception as error:
                    if self._closing_for_good:
                        # The handler returned (or stop() ended it) and the
                        # clean close failed (DisconnectionTimeout): there
                        # is nothing left to retry.
                        self._last_error = error
                        raise
                    self._handle_failure(error)
                    continue
                if done:
                    break
            if self._task_status is not None:
                # Stopped before any connection: let ``nursery.start`` return.
                self._task_status.started()
                self._task_status = None
        finally:
            self._running = False
            self._finished = True
            self._connection = None
            self._scope = None
            self._notify()

    # ------------------------------------------------------------------
    # The loop's steps

    async def _pause(self) -> None:
        delay = backoff_delay(
            self._failures,
            initial_delay=self._initial_delay,
            backoff_factor=self._backoff_factor,
            max_delay=self._max_delay,
            jitter=self._jitter,
            rng=self._rng,
        )
        logger.info(
            "reconnecting to %s in %.3g s (failure %d in a row: %r)",
            self._url,
            delay,
            self._failures,
            self._last_error,
        )
        with self._stoppable():
            await trio.sleep(delay)

    def _stoppable(self) -> trio.CancelScope:
        """A cancel scope that :meth:`stop` cancels (already cancelled when
        a stop was asked for)."""
        scope = trio.CancelScope()
        self._scope = scope
        if self._stop_requested:
            scope.cancel()
        return scope

    def _handle_failure(self, error: Exception) -> None:
        """Count a failed attempt or a dropped connection; re-raise ``error``
        when it is not to be retried."""
        if self._connection is not None:
            healthy = self._has_been_healthy()
            self._connection = None
            self._notify()
            if healthy:
                self._failures = 0
        if isinstance(error, BaseExceptionGroup):
            # A drop seen by a task in the handler's nursery stands for
            # itself: never hand an ExceptionGroup of ours to the caller.
            leaves = _leaves(error)
            drops = [leaf for leaf in leaves if isinstance(leaf, ConnectionClosed)]
            if drops and len(drops) == len(leaves):
                error = drops[0]
        if self._stop_requested and isinstance(error, ConnectionClosed):
            return  # a drop while stopping is just the end
        self._last_error = error
        if not self._retry_policy(error):
            raise error
        self._failures += 1
        if self._max_attempts is not None and self._failures >= self._max_attempts:
            raise error

    async def _connect_and_serve(self) -> bool:
        """One connection: open, run the hook and the handler, close.
        Returns whether :meth:`run` is done.

        Two scopes, properly nested around ``open_websocket_url``'s own
        nursery: :meth:`stop` cancels the outer one while connecting, the
        inner one (the handler's) once connected, so that the connection
        still closes cleanly after a stop.
        """
        with self._stoppable() as connecting:
            async with open_websocket_url(
                self._url, self._ssl_context, **self._connect_options
            ) as connection:
                self._connection = connection
                self._opened_at = trio.current_time()
                self._connections += 1
                self._notify()
                logger.info("connected to %s (%s)", self._url, connection)
                with self._stoppable():
                    if self._on_connect is not None:
                        await self._on_connect(connection)
                    if self._task_status is not None:
                        self._task_status.started()
                        self._task_status = None
                    await self._handler(connection)
                self._closing_for_good = True
        if connecting.cancelled_caught:
            return True  # stopped while connecting
        # Left by the handler returning, or by stop(): closed cleanly.
        if self._connection is not None and self._has_been_healthy():
            self._failures = 0
        self._connection = None
        self._notify()
        return True
