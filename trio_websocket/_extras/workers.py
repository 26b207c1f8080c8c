"""Serving one port from several worker processes, one per core (Linux,
``SO_REUSEPORT``).

Rules:
- The parent shares nothing with its workers but the port. It binds one
  *reservation* socket per address (``SO_REUSEPORT``, never listening, so
  the kernel never hands it a connection): port 0 becomes one concrete port
  that every worker then binds too, and no other program can take the port
  while the workers run. Each worker binds and listens on its own socket
  with ``SO_REUSEPORT``; the kernel spreads new connections across them.
- A worker is ``python -c`` running ``_extras.worker_process.worker_main``, with
  the parent's ``sys.path``, its configuration as JSON in the environment, and its own
  session (Ctrl-C on a terminal reaches only the parent, which forwards it
  once). It imports the application named ``"module:attribute"``: an async
  handler, or a factory returning an async context manager that yields the
  handler (to set up per-process state such as a hub around serving).
- Workers serve ``ws://``, or ``wss://`` from certificate files that each
  worker loads itself (an ``ssl.SSLContext`` cannot cross processes); the
  parent loads them once first, so bad files fail before any worker starts.
- With ``http2`` each worker also serves WebSockets over HTTP/2 (RFC 8441):
  by ALPN on its own TLS context, as h2c (prior knowledge) on plain TCP.
  The parent checks that ``h2`` is there before any worker starts, and
  sends ``http2_limits`` to the workers as its fields.
- A worker reports "listening" on an inherited pipe; the parent reports the
  pool ready only once every worker listens. A worker that exits first
  (its traceback is on the shared stderr) makes the start fail.
- Stopping: SIGTERM to a worker (forwarded by the parent on SIGTERM/SIGINT,
  or sent by :meth:`WorkerPool.stop`) runs its server's graceful shutdown
  (``WebSocketServer.aclose``: stop accepting, 503 for handshakes in
  progress, 1001 for open connections, handlers cancelled after
  ``shutdown_timeout``); a second signal stops it at once. The parent
  kills a worker still running ``STOP_GRACE`` seconds after that, then
  reads each worker's :class:`ShutdownReport` from its pipe and logs it.
- No silent restarts: a worker that exits on its own is logged with its
  exit code, the others are stopped, and the parent fails
  (:exc:`WorkerError`, exit status 1). Workers never outlive the parent:
  each holds the read end of a *lifeline* pipe whose only write end the
  parent keeps open; end of file there (the parent is gone, even killed)
  stops the worker as a SIGTERM would. (Not ``PR_SET_PDEATHSIG``: it
  fires when the spawning *thread* exits, and trio spawns from a thread.)
- The worker's side (binding, the application, the graceful stop) is in
  ``_extras.worker_process``.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio

from .._core.compression import DeflateConfig, compression_config
from .._core.config import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DISCONNECT_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MESSAGE_QUEUE_SIZE,
    DEFAULT_RECEIVE_BUFFER_SIZE,
    check_timeout,
)
from .._core.endpoint import Endpoint
from .._core.groups import collapse_exception_groups
from .._h2.limits import HTTP2Limits
from .._server.http import HTTPRequest
from .._server.limits import RequestLimits
from .._server.options import DEFAULT_MAX_HANDSHAKES, ServerOptions
from .._server.shutdown import ShutdownReport
from .worker_process import (
    CONFIG_ENV,
    READY,
    encode_origins,
    importable_spec,
    load_app,
    parse_report,
    server_socket,
    tls_context,
)

logger = logging.getLogger("trio_websocket.workers")

#: Seconds a worker has to listen after it was started.
DEFAULT_STARTUP_TIMEOUT = 30.0
#: Seconds a stopping worker waits for its connections to close.
DEFAULT_SHUTDOWN_TIMEOUT = 10.0
#: Seconds the parent waits past ``shutdown_timeout`` before killing a worker.
STOP_GRACE = 5.0
#: Seconds the parent reads an exited worker's report pipe.
REPORT_READ_TIMEOUT = 1.0
#: The environment variable that tells a worker its index (0, 1, ...).
WORKER_INDEX_ENV = "TRIO_WEBSOCKET_WORKER"
_BOOTSTRAP = (
    "import json, os, sys\n"
    f"sys.path[:] = json.loads(os.environ[{CONFIG_ENV!r}])['sys_path']\n"
    "from trio_websocket._extras.worker_process import worker_main\n"
    "worker_main()\n"
)


class WorkerError(Exception):
    """A worker process could not start, or exited while it should serve.

    :ivar index: the worker's index (0 for the first).
    :ivar pid: its process id.
    :ivar returncode: its exit status (negative: killed by that signal), or
        None if it was still running (it did not start in time).
    """

    def __init__(self, message: str, index: int, pid: int, returncode: int | None) -> None:
        super().__init__(message)
        self.index = index
        self.pid = pid
        self.returncode = returncode


@dataclass
class _Worker:
    index: int
    process: trio.Process
    ready: trio.lowlevel.FdStream
    #: The write end of the worker's lifeline: closed only when the parent
    #: is done with the worker (or dies).
    lifeline: int
    listening: bool = False
    #: What the worker wrote after "listening" (its shutdown report).
    after_ready: bytes = b""
    report: ShutdownReport | None = None


class WorkerPool:
    """The running workers of :func:`serve_websocket_workers`."""

    def __init__(self, listeners: tuple[Endpoint, ...], shutdown_timeout: float) -> None:
        self._listeners = listeners
        self._shutdown_timeout = shutdown_timeout
        self._workers: list[_Worker] = []
        self._stopping = False
        self._report_lock = trio.Lock()

    @property
    def listeners(self) -> tuple[Endpoint, ...]:
        """The addresses every worker listens on (all on the same port)."""
        return self._listeners

    @property
    def port(self) -> int:
        """The port the workers share (the one picked for port 0)."""
        return self._listeners[0].port

    @property
    def pids(self) -> tuple[int, ...]:
        """The workers' process ids, in worker order."""
        return tuple(worker.process.pid for worker in self._workers)

    @property
    def returncodes(self) -> tuple[int | None, ...]:
        """The workers' exit statuses, None for a worker still running."""
        return tuple(worker.process.returncode for worker in self._workers)

    @property
    def shutdown_reports(self) -> tuple[ShutdownReport | None, ...]:
        """Each worker's :class:`ShutdownReport`, in worker order, once it
        stopped gracefully; None for a worker still running, killed, or
        stopped at once by a second signal."""
        return tuple(worker.report for worker in self._workers)

    def signal_workers(self, signum: int = signal.SIGTERM) -> None:
        """Send ``signum`` to every worker still running. A worker stops
        gracefully on its first SIGTERM or SIGINT, at once on its second."""
        self._stopping = True
        for worker in self._workers:
            if worker.process.returncode is None:
                worker.process.send_signal(signum)

    async def stop(self) -> None:
        """Stop every worker gracefully and wait for them: SIGTERM, then
        SIGKILL for one still running ``shutdown_timeout`` + ``STOP_GRACE``
        seconds later. Idempotent."""
        if not self._stopping:
            self.signal_workers(signal.SIGTERM)
        with trio.move_on_after(self._shutdown_timeout + STOP_GRACE):
            await self._wait_all()
        for worker in self._workers:
            if worker.process.returncode is None:
                logger.error(
                    "worker %d (pid %d) did not stop in time: killing it",
                    worker.index,
                    worker.process.pid,
                )
                worker.process.kill()
        await self._wait_all()
        # (Held so that a second stop() waits for the reports too.)
        async with self._report_lock:
            for worker in self._workers:
                if worker.lifeline >= 0:
                    os.close(worker.lifeline)
                    worker.lifeline = -1
                await _collect_report(worker)

    async def _wait_all(self) -> None:
        for worker in self._workers:
            await worker.process.wait()

    # ------------------------------------------------------------------
    # Starting and watching

    async def _start(self, count: int, config: dict[str, Any], startup_timeout: float) -> None:
        for index in range(count):
            self._workers.append(await _spawn(index, config))
        with trio.move_on_after(startup_timeout) as timeout:
            with collapse_exception_groups():
                async with trio.open_nursery() as nursery:
                    for worker in self._workers:
                        nursery.start_soon(self._await_ready, worker)
        if timeout.cancelled_caught:
            late = next(w for w in self._workers if not w.listening)
            raise WorkerError(
                f"worker {late.index} (pid {late.process.pid}) was not listening "
                f"after {startup_timeout} s",
                late.index,
                late.process.pid,
                None,
            )

    async def _await_ready(self, worker: _Worker) -> None:
        received = b""
        try:
            while b"\n" not in received:
                chunk = await worker.ready.receive_some(64)
                if not chunk:
                    break
                received += chunk
        except BaseException:
            await worker.ready.aclose()
            raise
        if received.startswith(READY):
            worker.listening = True
            # The pipe stays open for the shutdown report.
            worker.after_ready = received[len(READY) :]
        else:
            await worker.ready.aclose()
            code = await worker.process.wait()
            raise WorkerError(
                f"worker {worker.index} (pid {worker.process.pid}) exited with status "
                f"{code} before it was listening (see its error output above)",
                worker.index,
                worker.process.pid,
                code,
            )

    async def _watch(self) -> None:
        """Wait until every worker exited after a stop; raise
        :exc:`WorkerError` for the first worker that exits on its own."""
        failure: list[WorkerError] = []
        with collapse_exception_groups():
            async with trio.open_nursery() as nursery:
                for worker in self._workers:
                    nursery.start_soon(self._watch_one, worker, failure, nursery.cancel_scope)
        if failure:
            raise failure[0]

    async def _watch_one(
        self, worker: _Worker, failure: list[WorkerError], scope: trio.CancelScope
    ) -> None:
        code = await worker.process.wait()
        if self._stopping:
            if code != 0:
                logger.warning(
                    "worker %d (pid %d) stopped with status %d",
                    worker.index,
                    worker.process.pid,
                    code,
                )
            return
        logger.error(
            "worker %d (pid %d) exited on its own with status %d: stopping the others",
            worker.index,
            worker.process.pid,
            code,
        )
        failure.append(
            WorkerError(
                f"worker {worker.index} (pid {worker.process.pid}) exited with status {code}",
                worker.index,
                worker.process.pid,
                code,
            )
        )
        scope.cancel()


async def serve_websocket_workers(
    app: str,
    host: str | None,
    port: int,
    *,
    workers: int,
    message_queue_size: int = DEFAULT_MESSAGE_QUEUE_SIZE,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    receive_buffer_size: int | None = DEFAULT_RECEIVE_BUFFER_SIZE,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    disconnect_timeout: float = DEFAULT_DISCONNECT_TIMEOUT,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    task_status: trio.TaskStatus[WorkerPool] = trio.TASK_STATUS_IGNORED,
    ping_interval: float | None = None,
    ping_timeout: float | None = None,
    max_buffered_bytes: int | None = None,
    # (The aliases spelled out, for the documentation.)
    process_request: str | Callable[[HTTPRequest], Any] | None = None,
    origins: Iterable[str | re.Pattern[str] | None] | None = None,
    max_connections: int | None = None,
    request_limits: RequestLimits | None = None,
    compression: str | DeflateConfig | None = None,
    max_handshakes: int | None = DEFAULT_MAX_HANDSHAKES,
    http2: bool = False,
    http2_limits: HTTP2Limits | None = None,
) -> None:
    """Serve ``host:port`` from ``workers`` processes (Linux only)::

        pool = await nursery.start(
            partial(serve_websocket_workers, "chat.app:handler", "0.0.0.0", 8000, workers=4)
        )

    Each worker imports ``app`` and runs a :class:`WebSocketServer` on its
    own ``SO_REUSEPORT`` socket; the kernel spreads connections across
    them. Runs until :meth:`WorkerPool.stop` has stopped every worker
    (then returns) or until cancelled (the workers are stopped gracefully
    first, within ``shutdown_timeout`` + a few seconds).

    :param app: ``"module:attribute"`` naming an async handler (as for
        :func:`serve_websocket`), or a callable that returns an async
        context manager yielding the handler; each worker enters it before
        it listens and leaves it after it stopped (per-process setup, such
        as a :class:`Hub`).
    :param host: the address to listen on; None for every interface.
    :param port: the TCP port; 0 for a free one, the same for every worker.
    :param workers: how many processes (usually one per core).
    :param shutdown_timeout: seconds a stopping worker waits for its
        connections to close after sending them 1001.
    :param startup_timeout: seconds the workers have to start listening.
    :param ssl_certfile: serve ``wss://``: the PEM file of the certificate
        chain (an ``ssl.SSLContext`` cannot be handed to another process,
        so each worker loads the files itself).
    :param ssl_keyfile: the PEM file of the private key, when it is not in
        ``ssl_certfile``.
    :param message_queue_size: see :func:`serve_websocket` (likewise
        ``max_message_size``, ``receive_buffer_size``, ``connect_timeout``,
        ``disconnect_timeout``, ``ping_interval``, ``ping_timeout``,
        ``max_buffered_bytes``, ``request_limits`` and ``compression``,
        which every worker applies as a single server would).
    :param process_request: the hook of :func:`serve_websocket`, named
        like ``app`` (``"module:attribute"``), or a function the workers
        can import by the same name (one defined at the top level of an
        importable module, not in ``__main__``): each worker imports it.
    :param origins: see :func:`serve_websocket`: exact strings, compiled
        regular expressions (sent to each worker as their pattern and
        flags) and None.
    :param max_connections: the most connections in their handlers at once
        *in each worker*: the pool as a whole takes up to ``workers`` times
        as many. The kernel spreads new connections without looking at
        this, so a full worker answers ``503`` while another may have room.
    :param max_handshakes: see :func:`serve_websocket`; also per worker.
    :param http2: also serve WebSockets over HTTP/2 (RFC 8441; needs the
        ``http2`` extra), as :func:`serve_websocket` does: by ALPN when
        ``ssl_certfile`` is given (each worker offers ``h2`` and
        ``http/1.1`` on its own context), as h2c with prior knowledge on
        plain TCP. See :doc:`http2`.
    :param http2_limits: the bounds of each HTTP/2 connection (an
        :class:`HTTP2Limits`), applied by every worker.
    :raises WorkerError: a worker did not start, or exited on its own (the
        others are stopped first).
    :raises OSError: the address cannot be bound.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int of at least 1, got {workers!r}")
    if not sys.platform.startswith("linux"):
        raise RuntimeError("worker processes sharing a port need Linux (SO_REUSEPORT)")
    load_app(app, check_only=True)
    if origins is not None and not isinstance(origins, (str, bytes, re.Pattern)):
        origins = list(origins)  # (an iterator is read once, here)
    # Bad options fail here, not in every worker (the hook as an importable
    # name, just below).
    ServerOptions.build(
        message_queue_size=message_queue_size,
        max_message_size=max_message_size,
        receive_buffer_size=receive_buffer_size,
        connect_timeout=connect_timeout,
        disconnect_timeout=disconnect_timeout,
        origins=origins,
        max_connections=max_connections,
        request_limits=request_limits,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        max_buffered_bytes=max_buffered_bytes,
        compression=compression,
        max_handshakes=max_handshakes,
        http2=http2,
        http2_limits=http2_limits,
    )
    deflate = compression_config(compression)
    hook_spec = None if process_request is None else importable_spec(process_request)
    shutdown_timeout = check_timeout("shutdown_timeout", shutdown_timeout)
    startup_timeout = check_timeout("startup_timeout", startup_timeout)
    if ssl_certfile is not None:
        tls_context(ssl_certfile, ssl_keyfile)  # fail here, not in every worker
    elif ssl_keyfile is not None:
        raise ValueError("ssl_keyfile needs ssl_certfile")
    reservations = await _reserve(host, port)
    try:
        addresses = [(sock.family, sock.getsockname()[:2]) for sock in reservations]
        secure = ssl_certfile is not None
        listeners = tuple(Endpoint(address[0], address[1], secure) for _, address in addresses)
        config = {
            "app": app,
            "addresses": addresses,
            "options": {
                "message_queue_size": message_queue_size,
                "max_message_size": max_message_size,
                "receive_buffer_size": receive_buffer_size,
                "connect_timeout": connect_timeout,
                "disconnect_timeout": disconnect_timeout,
                "ping_interval": ping_interval,
                "ping_timeout": ping_timeout,
                "max_buffered_bytes": max_buffered_bytes,
                "max_connections": max_connections,
                "max_handshakes": max_handshakes,
                "http2": http2,
            },
            "process_request": hook_spec,
            "origins": None if origins is None else encode_origins(origins),
            "request_limits": (
                None if request_limits is None else dataclasses.asdict(request_limits)
            ),
            "compression": None if deflate is None else dataclasses.asdict(deflate),
            "http2_limits": None if http2_limits is None else dataclasses.asdict(http2_limits),
            "shutdown_timeout": shutdown_timeout,
            "tls": [ssl_certfile, ssl_keyfile] if secure else None,
            "sys_path": _worker_sys_path(),
        }
        pool = WorkerPool(listeners, shutdown_timeout)
        try:
            await pool._start(workers, config, startup_timeout)
            logger.info(
                "%d workers listening on %s",
                workers,
                ", ".join(endpoint.url for endpoint in listeners),
            )
            task_status.started(pool)
            await pool._watch()
        finally:
            with trio.CancelScope(shield=True):
                await pool.stop()
    finally:
        for sock in reservations:
            sock.close()


def run_websocket_workers(
    app: str,
    host: str | None,
    port: int,
    *,
    workers: int,
    on_ready: Callable[[WorkerPool], object] | None = None,
    **options: Any,
) -> int:
    """Run :func:`serve_websocket_workers` as a program's main loop, until
    SIGINT or SIGTERM, which are forwarded to the workers (the first stops
    them gracefully, a second at once); returns the exit status::

        if __name__ == "__main__":
            sys.exit(run_websocket_workers("chat.app:handler", "0.0.0.0", 8000, workers=2))

    :param on_ready: called with the :class:`WorkerPool` once every worker
        listens (to print the port, say).
    :param options: the keyword options of :func:`serve_websocket_workers`.
    :returns: 0 when stopped by a signal and every worker exited with 0;
        1 when the workers could not start, one exited on its own, or one
        failed to stop cleanly (the reason is logged).
    """
    return trio.run(partial(_run_until_signal, app, host, port, workers, on_ready, options))


async def _run_until_signal(
    app: str,
    host: str | None,
    port: int,
    workers: int,
    on_ready: Callable[[WorkerPool], object] | None,
    options: dict[str, Any],
) -> int:
    pools: list[WorkerPool] = []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        try:
            with collapse_exception_groups():
                async with trio.open_nursery() as nursery:

                    async def serve(*, task_status: trio.TaskStatus[WorkerPool]) -> None:
                        try:
                            await serve_websocket_workers(
                                app, host, port, workers=workers, task_status=task_status, **options
                            )
                        finally:
                            nursery.cancel_scope.cancel()

                    nursery.start_soon(_forward_signals, signals, pools, nursery.cancel_scope)
                    pool = await nursery.start(serve)
                    pools.append(pool)
                    if on_ready is not None:
                        on_ready(pool)
        except (WorkerError, OSError) as exc:
            logger.error("%s", exc)
            return 1
    if not pools:  # a signal came before the workers were ready: they were stopped
        return 0
    return 0 if all(code == 0 for code in pools[0].returncodes) else 1


async def _forward_signals(
    signals: AsyncIterator[int], pools: list[WorkerPool], scope: trio.CancelScope
) -> None:
    """The first signal stops the workers gracefully (before they are all
    ready: cancels the start, which stops them too); later ones again."""
    async for signum in signals:
        logger.info("%s: stopping the workers", signal.Signals(signum).name)
        if not pools:
            scope.cancel()
            return
        pool = pools[0]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.stop)
            async for _ in signals:
                logger.info("stopping the workers now")
                pool.signal_workers(signal.SIGTERM)
        return


# ----------------------------------------------------------------------
# The parent: addresses, processes


async def _reserve(host: str | None, port: int) -> list[trio.socket.SocketType]:
    """Bind (without listening) one SO_REUSEPORT socket per address of
    ``host``, all on one port; returns them.

    Each address is first bound *without* SO_REUSEPORT, and that probe
    closed: it fails if anything already uses the port, even another
    SO_REUSEPORT group of the same user (a second copy of this server),
    which the reservation itself would silently join. An address family the
    system does not support is skipped, as ``trio.open_tcp_listeners``
    does, as long as one address remains.
    """
    infos = await trio.socket.getaddrinfo(
        host, port, type=trio.socket.SOCK_STREAM, flags=trio.socket.AI_PASSIVE
    )
    seen: set[tuple[int, str]] = set()
    sockets: list[trio.socket.SocketType] = []
    unsupported: OSError | None = None
    try:
        for family, _, _, _, sockaddr in infos:
            address = str(sockaddr[0])
            if (family, address) in seen:
                continue
            seen.add((family, address))
            try:
                probe = server_socket(family, reuse_port=False)
            except OSError as exc:
                if exc.errno != errno.EAFNOSUPPORT:
                    raise
                unsupported = exc
                continue
            with probe:
                await probe.bind((address, port))
                port = probe.getsockname()[1]
            sock = server_socket(family, reuse_port=True)
            sockets.append(sock)
            await sock.bind((address, port))
        if not sockets:
            raise unsupported or OSError(f"no address to listen on for {host!r}")
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _worker_sys_path() -> list[str]:
    """The parent's import path, with this package's own location first so
    the workers run the very same code."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return [package_root, *(os.path.abspath(p) if p else os.getcwd() for p in sys.path)]


async def _collect_report(worker: _Worker) -> None:
    """Read what an exited worker wrote after "listening" and log its
    shutdown report. The read is bounded: a process the worker started
    could still hold the pipe open."""
    if worker.ready.fileno() < 0:  # read already (stop() is idempotent)
        return
    received = worker.after_ready
    try:
        if worker.listening:
            with trio.move_on_after(REPORT_READ_TIMEOUT):
                while chunk := await worker.ready.receive_some(4096):
                    received += chunk
    finally:
        await worker.ready.aclose()
    worker.report = parse_report(received)
    if worker.report is not None:
        logger.info(
            "worker %d (pid %d) shut down: %d closed cleanly, %d forced, %d refused",
            worker.index,
            worker.process.pid,
            worker.report.closed_cleanly,
            worker.report.forced,
            worker.report.refused,
        )


async def _spawn(index: int, config: dict[str, Any]) -> _Worker:
    ready_read, ready_write = os.pipe()
    lifeline_read, lifeline_write = os.pipe()
    try:
        env = dict(os.environ)
        env[CONFIG_ENV] = json.dumps(
            {**config, "ready_fd": ready_write, "lifeline_fd": lifeline_read, "index": index}
        )
        env[WORKER_INDEX_ENV] = str(index)
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", _BOOTSTRAP],
            env=env,
            pass_fds=(ready_write, lifeline_read),
            start_new_session=True,
        )
    except BaseException:
        os.close(ready_read)
        os.close(lifeline_write)
        raise
    finally:
        os.close(ready_write)
        os.close(lifeline_read)
    return _Worker(index, process, trio.lowlevel.FdStream(ready_read), lifeline_write)
