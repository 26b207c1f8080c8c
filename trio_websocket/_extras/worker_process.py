"""What runs inside one worker process of ``serve_websocket_workers``
(``_extras.workers`` is the parent's side).

Rules:
- Started by the parent as ``python -c`` calling ``worker_main``, with
  its configuration as JSON in the environment: the application spec, the
  addresses to bind, the server options, two inherited pipe ends (one to
  report to the parent, one whose end of file means the parent is gone).
- Binds its own ``SO_REUSEPORT`` sockets on the shared port, enters the
  application (a handler, or a factory's async context manager yielding
  one), serves, and only then reports "listening".
- The first SIGTERM/SIGINT, or the parent's disappearance, stops it: during
  setup at once; once serving, with the server's own graceful shutdown
  (:meth:`WebSocketServer.aclose`: it stops accepting, answers handshakes
  in progress with 503, closes open connections with 1001, and cancels
  handlers still running after ``shutdown_timeout`` seconds). Another
  signal meanwhile cancels every handler at once. It then exits 0.
- After a graceful stop the worker writes its :class:`ShutdownReport` on
  the report pipe, one JSON line after "listening"; the parent collects it
  once the worker exited, and logs it.
- Options that are not plain data cross the process boundary in a form
  JSON carries: ``process_request`` as a ``"module:attribute"`` spec that
  the worker imports, origin patterns as their source and flags, request
  limits and HTTP/2 limits as their fields.
- With ``http2`` on, the worker's TLS context offers ``h2`` and
  ``http/1.1`` by ALPN (as ``serve_websocket`` does to the context it is
  given); on plain TCP its server tells h2c from HTTP/1.1 by the preface.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import os
import re
import signal
import socket as stdlib_socket
import ssl
import sys
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib import import_module
from typing import Any, cast

import trio

from .._core.close import GOING_AWAY
from .._core.compression import DeflateConfig
from .._h2 import alpn
from .._h2.limits import HTTP2Limits
from .._server.limits import RequestLimits
from .._server.origins import AllowedOrigin
from .._server.server import Handler, WebSocketServer
from .._server.shutdown import ShutdownReport

logger = logging.getLogger("trio_websocket.workers")

#: The environment variable that carries a worker's configuration.
CONFIG_ENV = "TRIO_WEBSOCKET_WORKER_CONFIG"
#: What a worker writes on its ready pipe once it listens.
READY = b"listening\n"
#: What starts the line a worker writes on the same pipe once it stopped,
#: followed by its :class:`ShutdownReport` as JSON.
REPORT_PREFIX = b"stopped "
#: The close reason open connections get when a worker stops.
SHUTDOWN_REASON = "server shutting down"
_REPORT_FIELDS = tuple(field.name for field in dataclasses.fields(ShutdownReport))
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


def load_app(spec: str, *, check_only: bool = False, what: str = "app") -> Any:
    """Import ``"module:attribute.path"``; with ``check_only`` just check
    the spelling (the parent does not import the application). ``what``
    names the option in error messages."""
    if not isinstance(spec, str):
        raise TypeError(f"{what} must be a 'module:attribute' string")
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise ValueError(f"{what} must look like 'package.module:attribute', got {spec!r}")
    if module_name == "__main__":
        raise ValueError(
            f"{what} cannot live in __main__: each worker is a new process that imports "
            f"the {what} by module name; move it to an importable module"
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


def importable_spec(target: object) -> str:
    """``"module:attribute"`` for ``target``: a spec string (its spelling
    checked), or a function a worker can import by its module and
    qualified name (checked: the name must lead back to ``target``)."""
    if isinstance(target, str):
        load_app(target, check_only=True, what="process_request")
        return target
    if not callable(target):
        raise TypeError(f"expected a 'module:attribute' string or a function, not {target!r}")
    module_name = getattr(target, "__module__", None)
    qualified_name = getattr(target, "__qualname__", None)
    if not isinstance(module_name, str) or not isinstance(qualified_name, str):
        raise TypeError(f"{target!r} has no importable name: pass a 'module:attribute' string")
    spec = f"{module_name}:{qualified_name}"
    try:
        found = load_app(spec, what="process_request")
    except (ImportError, AttributeError, ValueError) as exc:
        raise TypeError(
            f"{target!r} cannot be imported by a worker as {spec!r} ({exc}): define it at "
            "the top level of an importable module, or pass a 'module:attribute' string"
        ) from None
    if found is not target:
        raise TypeError(f"{spec!r} does not name {target!r}: pass a 'module:attribute' string")
    return spec


def encode_origins(origins: Iterable[AllowedOrigin]) -> list[Any]:
    """Allowed origins as JSON data: ``None``, ``["exact", text]`` or
    ``["pattern", source, flags]``."""
    encoded: list[Any] = []
    for origin in origins:
        if origin is None:
            encoded.append(None)
        elif isinstance(origin, str):
            encoded.append(["exact", origin])
        else:
            encoded.append(["pattern", origin.pattern, origin.flags])
    return encoded


def decode_origins(encoded: list[Any]) -> list[AllowedOrigin]:
    """The inverse of :func:`encode_origins`."""
    origins: list[AllowedOrigin] = []
    for item in encoded:
        if item is None:
            origins.append(None)
        elif item[0] == "exact":
            origins.append(str(item[1]))
        else:
            origins.append(re.compile(item[1], item[2]))
    return origins


def _server_options(config: dict[str, Any]) -> dict[str, Any]:
    """The keyword options of the worker's :class:`WebSocketServer`."""
    options = dict(config["options"])
    if config.get("process_request") is not None:
        options["process_request"] = load_app(config["process_request"], what="process_request")
    if config.get("origins") is not None:
        options["origins"] = decode_origins(config["origins"])
    if config.get("request_limits") is not None:
        options["request_limits"] = RequestLimits(**config["request_limits"])
    if config.get("compression") is not None:
        options["compression"] = DeflateConfig(**config["compression"])
    if config.get("http2_limits") is not None:
        options["http2_limits"] = HTTP2Limits(**config["http2_limits"])
    return options


async def _serve_in_worker(config: dict[str, Any]) -> int:
    report_fd: int = config["ready_fd"]
    handler_target = load_app(config["app"])
    # (Imports the process_request hook: fails before anything is bound.)
    server_options = _server_options(config)
    listeners: list[trio.abc.Listener[Any]] = [
        trio.SocketListener(await _listen(family, tuple(address)))
        for family, address in config["addresses"]
    ]
    if config["tls"] is not None:
        context = tls_context(*config["tls"])
        if server_options.get("http2"):
            alpn.offer(context, alpn.HTTP2_ALPN)
        listeners = [
            trio.SSLListener(listener, context, https_compatible=True) for listener in listeners
        ]
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
                server = WebSocketServer(handler, listeners, **server_options)
                report: ShutdownReport | None = None
                async with trio.open_nursery() as nursery:
                    await nursery.start(server.run)
                    ready = True
                    os.write(report_fd, READY)
                    await stop.wait()
                    report = await _stop_server(
                        server, config["shutdown_timeout"], signals, nursery.cancel_scope
                    )
                    # (server.run has returned: the shutdown ended it.)
                if report is not None:
                    # (The server logged it too, at INFO.) A parent that is
                    # gone cannot read it: that is no error of the worker.
                    with contextlib.suppress(BrokenPipeError):
                        os.write(report_fd, report_line(report))
            main.cancel_scope.cancel()
    os.close(report_fd)
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


async def _stop_server(
    server: WebSocketServer,
    timeout: float,
    signals: AsyncIterator[int],
    serving: trio.CancelScope,
) -> ShutdownReport | None:
    """Stop one worker's server gracefully with
    :meth:`WebSocketServer.aclose` (503 for handshakes in progress, 1001
    for open connections, handlers cancelled after ``timeout`` seconds) and
    return its report.

    Another signal meanwhile cancels ``serving`` (the scope around the
    server), which cancels every handler at once; then there is no report
    and None is returned.
    """
    report: ShutdownReport | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_abort_on_next, signals, serving)
        report = await server.aclose(code=GOING_AWAY, reason=SHUTDOWN_REASON, timeout=timeout)
        nursery.cancel_scope.cancel()
    return report


async def _abort_on_next(signals: AsyncIterator[int], serving: trio.CancelScope) -> None:
    async for signum in signals:
        logger.warning("%s again: stopping now", signal.Signals(signum).name)
        serving.cancel()
        return


def report_line(report: ShutdownReport) -> bytes:
    """What a worker writes on its report pipe once its server stopped."""
    return REPORT_PREFIX + json.dumps(dataclasses.asdict(report)).encode() + b"\n"


def parse_report(data: bytes) -> ShutdownReport | None:
    """The report in what a worker wrote after ``READY``; None if it wrote
    none (it was killed, or aborted by a second signal)."""
    for line in data.splitlines():
        if line.startswith(REPORT_PREFIX):
            try:
                fields = json.loads(line[len(REPORT_PREFIX) :])
                return ShutdownReport(**{name: int(fields[name]) for name in _REPORT_FIELDS})
            except (ValueError, KeyError, TypeError):
                return None
    return None
