"""What runs inside one worker process of ``serve_websocket_workers``
(``_workers`` is the parent's side).

Rules:
- Started by the parent as ``python -c`` calling ``worker_main``, with
  its configuration as JSON in the environment: the application spec, the
  addresses to bind, the server options, two inherited pipe ends (one to
  report "listening", one whose end of file means the parent is gone).
- Binds its own ``SO_REUSEPORT`` sockets on the shared port, enters the
  application (a handler, or a factory's async context manager yielding
  one), serves, and only then reports "listening".
- The first SIGTERM/SIGINT, or the parent's disappearance, stops it: during
  setup at once; once serving, gracefully (:func:`_stop_server`: 503 for
  new connections, 1001 for open ones, at most ``shutdown_timeout``
  seconds, cut short by another signal). It then exits 0.
- The graceful stop lives in :func:`_stop_server` alone, so that a
  ``WebSocketServer.aclose()`` can replace it.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import signal
import socket as stdlib_socket
import ssl
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from importlib import import_module
from typing import Any, cast

import trio

from ._server import Handler, WebSocketRequest, WebSocketServer

logger = logging.getLogger("trio_websocket.workers")

#: The environment variable that carries a worker's configuration.
CONFIG_ENV = "TRIO_WEBSOCKET_WORKER_CONFIG"
#: What a worker writes on its ready pipe once it listens.
READY = b"listening\n"
_BACKLOG = 1024


def server_socket(family: int, *, reuse_port: bool = True) -> trio.socket.SocketType:
    """A TCP server socket, with ``SO_REUSEPORT`` unless told otherwise (the
    parent's probe of a port goes without it)."""
    sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
    try:
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(trio.socket.SOL_SOCKET, stdlib_socket.SO_REUSEPORT, 1)
        if family == trio.socket.AF_INET6:
            sock.setsockopt(trio.socket.IPPROTO_IPV6, trio.socket.IPV6_V6ONLY, 1)
    except BaseException:
        sock.close()
        raise
    return sock


AppFactory = Callable[[], AbstractAsyncContextManager[Handler]]


def load_app(spec: str, *, check_only: bool = False) -> Any:
    """Import ``"module:attribute.path"``; with ``check_only`` just check
    the spelling (the parent does not import the application)."""
    if not isinstance(spec, str):
        raise TypeError("app must be a 'module:attribute' string")
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise ValueError(f"app must look like 'package.module:attribute', got {spec!r}")
    if module_name == "__main__":
        raise ValueError(
            "app cannot live in __main__: each worker is a new process that imports "
            "the app by module name; move it to an importable module"
        )
    if check_only:
        return None
    target: Any = import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


@asynccontextmanager
async def _application(target: Any) -> AsyncIterator[Handler]:
    """The handler: ``target`` itself if it is an async function, else what
    the async context manager it returns yields."""
    if _is_async_function(target):
        yield cast(Handler, target)
        return
    if not callable(target):
        raise TypeError(f"{target!r} is neither an async handler nor a factory")
    manager = target()
    if not hasattr(manager, "__aenter__"):
        raise TypeError(
            f"{target!r} returned {manager!r}, not an async context manager yielding a handler"
        )
    async with cast(AbstractAsyncContextManager[Handler], manager) as handler:
        if not callable(handler):
            raise TypeError(f"the app factory yielded {handler!r}, not a handler")
        yield handler


def _is_async_function(target: Any) -> bool:
    if inspect.iscoroutinefunction(target):
        return True
    if inspect.isfunction(target) or inspect.isclass(target) or not callable(target):
        return False
    return inspect.iscoroutinefunction(type(target).__call__)


def worker_main() -> None:
    """The body of a worker process (started by the parent, not by you)."""
    config = json.loads(os.environ[CONFIG_ENV])
    sys.exit(trio.run(_serve_in_worker, config))


async def _serve_in_worker(config: dict[str, Any]) -> int:
    handler_target = load_app(config["app"])
    listeners: list[trio.abc.Listener[Any]] = [
        trio.SocketListener(await _listen(family, tuple(address)))
        for family, address in config["addresses"]
    ]
    if config["tls"] is not None:
        context = tls_context(*config["tls"])
        listeners = [
            trio.SSLListener(listener, context, https_compatible=True) for listener in listeners
        ]
    tracker = _ConnectionTracker()
    ready = False
    stop = trio.Event()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as main:

            async def watch() -> None:
                await _wait_for_stop(signals, config["lifeline_fd"])
                if ready:
                    stop.set()
                else:  # still setting up: give up on starting
                    main.cancel_scope.cancel()

            main.start_soon(watch)
            async with _application(handler_target) as handler:
                server = WebSocketServer(
                    partial(tracker.handle, handler), listeners, **config["options"]
                )
                async with trio.open_nursery() as nursery:
                    await nursery.start(server.run)
                    ready = True
                    os.write(config["ready_fd"], READY)
                    os.close(config["ready_fd"])
                    await stop.wait()
                    await _stop_server(server, tracker, config["shutdown_timeout"], signals)
                    nursery.cancel_scope.cancel()
            main.cancel_scope.cancel()
    return 0


async def _wait_for_stop(signals: AsyncIterator[int], lifeline_fd: int) -> None:
    """Return at the first SIGTERM/SIGINT, or when the parent is gone."""
    stop = trio.Event()

    async def on_signal() -> None:
        async for _ in signals:
            stop.set()
            return

    async def on_parent_gone() -> None:
        async with trio.lowlevel.FdStream(lifeline_fd) as lifeline:
            while await lifeline.receive_some(64):
                pass
        logger.warning("the parent process is gone: stopping")
        stop.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(on_signal)
        nursery.start_soon(on_parent_gone)
        await stop.wait()
        nursery.cancel_scope.cancel()


def tls_context(certfile: str, keyfile: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context


async def _listen(family: int, address: tuple[str, int]) -> trio.socket.SocketType:
    sock = server_socket(family)
    try:
        await sock.bind(address)
        sock.listen(_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


class _ConnectionTracker:
    """Knows the requests being handled, so a stop can close them."""

    def __init__(self) -> None:
        self.requests: set[WebSocketRequest] = set()
        self.stopping = False
        self.idle = trio.Event()

    async def handle(self, handler: Handler, request: WebSocketRequest) -> None:
        if self.stopping:
            await request.reject(503, body=b"server shutting down\n")
            return
        self.requests.add(request)
        try:
            await handler(request)
        finally:
            self.requests.discard(request)
            if self.stopping and not self.requests:
                self.idle.set()

    async def close_all(self, code: int, reason: str) -> None:
        async with trio.open_nursery() as nursery:
            for request in list(self.requests):
                connection = request._connection
                if connection is not None:
                    nursery.start_soon(connection.aclose, code, reason)


async def _stop_server(
    server: WebSocketServer,
    tracker: _ConnectionTracker,
    timeout: float,
    signals: AsyncIterator[int],
) -> None:
    """Stop one worker's server gracefully: refuse new connections (503),
    close the open ones with 1001 and wait for them, for at most
    ``timeout`` seconds or until another signal.

    ``server`` is not used yet: once ``WebSocketServer`` has a graceful
    ``aclose()`` of its own (stop accepting, 1001, deadline), this body
    becomes a call to it, bounded the same way, and ``_ConnectionTracker``
    can go.
    """
    tracker.stopping = True
    if not tracker.requests:
        tracker.idle.set()
    with trio.move_on_after(timeout) as deadline:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_next, signals, deadline)
            await tracker.close_all(1001, "server shutting down")
            # Handlers finish soon after their connection closed.
            await tracker.idle.wait()
            nursery.cancel_scope.cancel()


async def _cancel_on_next(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for _ in signals:
        scope.cancel()
        return
