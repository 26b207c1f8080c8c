"""Worker processes sharing one port (SO_REUSEPORT): start, spread,
graceful stop with 1001, no silent restart, the command line's --workers.

These start real processes on 127.0.0.1; each test bounds its waits."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from server_fixtures import Answer, exchange, upgrade_request

import trio_websocket
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    DeflateConfig,
    RequestLimits,
    ShutdownReport,
    WorkerError,
    WorkerPool,
    connect_websocket_url,
    open_websocket_url,
    serve_websocket_workers,
)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="worker processes need Linux SO_REUSEPORT"
)

APP = textwrap.dedent(
    """
    import os
    from contextlib import asynccontextmanager
    from trio_websocket import ConnectionClosed

    async def handler(request):
        ws = await request.accept()
        try:
            while True:
                message = await ws.get_message()
                if message == "pid":
                    await ws.send_message(str(os.getpid()))
                elif message == "worker":
                    await ws.send_message(os.environ["TRIO_WEBSOCKET_WORKER"])
                elif message == "exit":
                    os._exit(3)
                else:
                    await ws.send_message(message)
        except ConnectionClosed:
            pass

    @asynccontextmanager
    async def factory():
        setup = f"set up in {os.getpid()}"

        async def greeting_handler(request):
            ws = await request.accept()
            await ws.send_message(setup)
            await handler_after(ws)

        yield greeting_handler

    @asynccontextmanager
    async def slow_factory():
        import trio
        open(os.environ["SLOW_MARKER"] + str(os.getpid()), "w").close()
        await trio.sleep_forever()
        yield handler

    async def stubborn(request):
        # Goes on after its connection closed, until cancelled.
        import trio
        ws = await request.accept()
        await ws.send_message("ready")
        await trio.sleep_forever()

    def health_check(request):
        from trio_websocket import HTTPResponse
        if request.path == "/health":
            return HTTPResponse(200, body=f"ok from {os.getpid()}")
        return None

    async def handler_after(ws):
        try:
            await ws.get_message()
        except ConnectionClosed:
            pass
    """
)


@pytest.fixture
def app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module the workers import, on the path they inherit."""
    (tmp_path / "workers_test_app.py").write_text(APP, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "workers_test_app"


def running(pid: int) -> bool:
    """Whether ``pid`` is alive (a zombie waiting to be reaped is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


async def ask(port: int, question: str) -> str | bytes:
    async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
        await ws.send_message(question)
        return await ws.get_message()


async def test_workers_share_one_port_and_all_take_connections(
    nursery: trio.Nursery, app_module: str
) -> None:
    with trio.fail_after(15):
        pool: WorkerPool = await nursery.start(
            partial(serve_websocket_workers, f"{app_module}:handler", "127.0.0.1", 0, workers=2)
        )
        assert pool.port > 0
        assert [endpoint.port for endpoint in pool.listeners] == [pool.port]
        assert len(set(pool.pids)) == 2
        assert os.getpid() not in pool.pids
        seen = {await ask(pool.port, "pid") for _ in range(24)}
        # The kernel hashes each connection to one of the two sockets: 24
        # connections all landing on one worker has a chance of 2**-23.
        assert seen == {str(pid) for pid in pool.pids}
        assert await ask(pool.port, "echo") == "echo"
        await pool.stop()
        assert pool.returncodes == (0, 0)


async def test_stop_closes_open_connections_with_1001(
    nursery: trio.Nursery, app_module: str
) -> None:
    with trio.fail_after(15):
        pool: WorkerPool = await nursery.start(
            partial(serve_websocket_workers, f"{app_module}:handler", "127.0.0.1", 0, workers=2)
        )
        url = f"ws://127.0.0.1:{pool.port}/"
        async with open_websocket_url(url) as first, open_websocket_url(url) as second:
            for ws in (first, second):
                await ws.send_message("ping?")
                assert await ws.get_message() == "ping?"
            await pool.stop()
            for ws in (first, second):
                with pytest.raises(ConnectionClosed) as caught:
                    await ws.get_message()
                assert caught.value.reason.code == 1001
        assert pool.returncodes == (0, 0)
        assert not any(running(pid) for pid in pool.pids)


async def test_stop_collects_each_workers_shutdown_report(
    nursery: trio.Nursery, app_module: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_websocket.workers")
    with trio.fail_after(15):
        pool: WorkerPool = await nursery.start(
            partial(serve_websocket_workers, f"{app_module}:handler", "127.0.0.1", 0, workers=2)
        )
        assert pool.shutdown_reports == (None, None)
        url = f"ws://127.0.0.1:{pool.port}/"
        async with open_websocket_url(url) as first, open_websocket_url(url) as second:
            for ws in (first, second):
                await ws.send_message("up?")
                assert await ws.get_message() == "up?"
            await pool.stop()
    reports = pool.shutdown_reports
    assert all(isinstance(report, ShutdownReport) for report in reports)
    assert sum(report.closed_cleanly for report in reports if report) == 2
    assert sum(report.forced + report.refused for report in reports if report) == 0
    logged = [r.getMessage() for r in caplog.records if "shut down:" in r.getMessage()]
    assert len(logged) == 2
    assert all(r.levelno == logging.INFO for r in caplog.records if "shut down:" in r.getMessage())


async def start_stubborn_worker(
    nursery: trio.Nursery, app_module: str, *, shutdown_timeout: float
) -> WorkerPool:
    """One worker whose handler (``stubborn`` in the app module) says
    "ready", then goes on after its connection closed until cancelled;
    ``shutdown_timeout`` is the grace period it gets."""
    pool: WorkerPool = await nursery.start(
        partial(
            serve_websocket_workers,
            f"{app_module}:stubborn",
            "127.0.0.1",
            0,
            workers=1,
            shutdown_timeout=shutdown_timeout,
        )
    )
    return pool


async def test_a_handler_still_running_at_the_deadline_is_cancelled(
    nursery: trio.Nursery, app_module: str
) -> None:
    with trio.fail_after(15):
        pool = await start_stubborn_worker(nursery, app_module, shutdown_timeout=0.5)
        async with open_websocket_url(f"ws://127.0.0.1:{pool.port}/") as ws:
            assert await ws.get_message() == "ready"
            await pool.stop()
            with pytest.raises(ConnectionClosed) as caught:
                await ws.get_message()
            assert caught.value.reason.code == 1001
    assert pool.returncodes == (0,)
    assert pool.shutdown_reports == (ShutdownReport(closed_cleanly=0, forced=1, refused=0),)


async def test_a_second_signal_stops_a_worker_at_once(
    nursery: trio.Nursery, app_module: str
) -> None:
    with trio.fail_after(15):
        pool = await start_stubborn_worker(nursery, app_module, shutdown_timeout=3600)
        async with open_websocket_url(f"ws://127.0.0.1:{pool.port}/") as ws:
            assert await ws.get_message() == "ready"
            pool.signal_workers(signal.SIGTERM)
            with pytest.raises(ConnectionClosed):
                await ws.get_message()  # the worker is in its graceful stop
            start = trio.current_time()
            pool.signal_workers(signal.SIGTERM)
            await pool.stop()
            # Not the hour of shutdown_timeout, nor a kill after it (with
            # room for a busy machine to end a process).
            assert trio.current_time() - start < 10
    assert pool.returncodes == (0,)
    assert pool.shutdown_reports == (None,)


# ----------------------------------------------------------------------
# serve_websocket's options reach every worker


async def start_one_worker(nursery: trio.Nursery, app_module: str, **options: Any) -> WorkerPool:
    pool: WorkerPool = await nursery.start(
        partial(
            serve_websocket_workers,
            f"{app_module}:handler",
            "127.0.0.1",
            0,
            workers=1,
            **options,
        )
    )
    return pool


async def raw_exchange(port: int, request: bytes) -> Answer:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    return await exchange(stream, request)


async def test_max_connections_reaches_the_worker(nursery: trio.Nursery, app_module: str) -> None:
    with trio.fail_after(15):
        pool = await start_one_worker(nursery, app_module, max_connections=1)
        url = f"ws://127.0.0.1:{pool.port}/"
        async with open_websocket_url(url) as ws:
            await ws.send_message("here")
            assert await ws.get_message() == "here"
            with pytest.raises(ConnectionRejected) as caught:
                async with open_websocket_url(url):
                    pass
            assert caught.value.status_code == 503
        # The worker frees the slot once its end of the connection is over,
        # a moment after our close returns (longer on a busy machine: seen
        # in CI with two suites side by side): ask until it has.
        while True:
            try:
                answer = await ask(pool.port, "room again")
            except ConnectionRejected as rejected:
                assert rejected.status_code == 503
                await trio.sleep(0.05)
            else:
                assert answer == "room again"
                break


async def test_origins_reach_the_worker_patterns_included(
    nursery: trio.Nursery, app_module: str
) -> None:
    with trio.fail_after(15):
        pool = await start_one_worker(
            nursery,
            app_module,
            origins=["https://app.example", re.compile(r"https://[a-z]+\.test\.example")],
        )
        url = f"ws://127.0.0.1:{pool.port}/"
        for origin in ("https://app.example", "https://staging.test.example"):
            async with open_websocket_url(url, extra_headers=[(b"Origin", origin.encode())]) as ws:
                await ws.send_message("hi")
                assert await ws.get_message() == "hi"
        for refused in ("https://evil.example", "https://x.test.example.evil"):
            with pytest.raises(ConnectionRejected) as caught:
                async with open_websocket_url(url, extra_headers=[(b"Origin", refused.encode())]):
                    pass
            assert caught.value.status_code == 403
        # No Origin header: not in the list (None is not), so refused too.
        with pytest.raises(ConnectionRejected):
            await ask(pool.port, "no origin")


async def test_compression_reaches_the_worker(nursery: trio.Nursery, app_module: str) -> None:
    with trio.fail_after(15):
        config = DeflateConfig(server_max_window_bits=10)
        pool = await start_one_worker(nursery, app_module, compression=config)
        url = f"ws://127.0.0.1:{pool.port}/"
        async with open_websocket_url(url, compression="deflate") as ws:
            assert ws.compression is not None
            assert ws.compression.server_max_window_bits == 10
            await ws.send_message("squeeze " * 100)
            assert await ws.get_message() == "squeeze " * 100
        async with open_websocket_url(url) as ws:  # not offered: not used
            assert ws.compression is None


async def test_a_bad_compression_fails_before_any_worker_starts(
    nursery: trio.Nursery, app_module: str
) -> None:
    with pytest.raises(ValueError, match="compression"):
        await start_one_worker(nursery, app_module, compression="gzip")


@pytest.mark.parametrize("by_name", [True, False])
async def test_process_request_reaches_the_worker(
    nursery: trio.Nursery, app_module: str, by_name: bool
) -> None:
    module = sys.modules.get(app_module) or __import__(app_module)
    hook = f"{app_module}:health_check" if by_name else module.health_check
    with trio.fail_after(15):
        pool = await start_one_worker(nursery, app_module, process_request=hook)
        answer = await raw_exchange(pool.port, b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert answer.status == 200
        assert answer.body == f"ok from {pool.pids[0]}".encode()
        assert await ask(pool.port, "still a websocket") == "still a websocket"


async def test_a_process_request_that_cannot_be_imported_fails_the_start(
    nursery: trio.Nursery, app_module: str
) -> None:
    with trio.fail_after(15), pytest.raises(WorkerError) as caught:
        await start_one_worker(nursery, app_module, process_request=f"{app_module}:missing")
    assert "before it was listening" in str(caught.value)


async def test_request_limits_reach_the_worker(nursery: trio.Nursery, app_module: str) -> None:
    with trio.fail_after(15):
        pool = await start_one_worker(
            nursery, app_module, request_limits=RequestLimits(max_request_line=64)
        )
        answer = await raw_exchange(pool.port, upgrade_request("/" + "a" * 100))
        assert answer.status == 414


async def test_ping_interval_reaches_the_worker(nursery: trio.Nursery, app_module: str) -> None:
    with trio.fail_after(15):
        pool = await start_one_worker(nursery, app_module, ping_interval=0.1)
        stream = await trio.open_tcp_stream("127.0.0.1", pool.port)
        async with stream:
            await stream.send_all(upgrade_request())
            received = b""
            while b"\r\n\r\n" not in received:
                received += await stream.receive_some()
            head, _, frames = received.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101")
            while len(frames) < 2:
                frames += await stream.receive_some()
            # The server's first frame, unasked: FIN + ping, unmasked.
            assert frames[0] == 0x89
            assert frames[1] & 0x80 == 0


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"process_request": "no_colon"}, ValueError),
        ({"process_request": "__main__:hook"}, ValueError),
        ({"process_request": lambda request: None}, TypeError),
        ({"process_request": 42}, TypeError),
        ({"origins": "https://one.example"}, TypeError),
        ({"origins": [b"https://bytes.example"]}, TypeError),
        ({"max_connections": 0}, ValueError),
        ({"max_connections": 1.5}, TypeError),
        ({"request_limits": {"max_headers": 5}}, TypeError),
        ({"ping_interval": -1}, ValueError),
        ({"max_buffered_bytes": -1}, ValueError),
        ({"http2": "yes"}, TypeError),
        ({"http2": True, "http2_limits": {"max_concurrent_streams": 1}}, TypeError),
    ],
)
async def test_bad_server_options_fail_before_any_process_starts(
    options: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        await serve_websocket_workers("m:f", "127.0.0.1", 0, workers=2, **options)


async def test_cancelling_stops_the_workers_gracefully(app_module: str) -> None:
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            pool: WorkerPool = await nursery.start(
                partial(serve_websocket_workers, f"{app_module}:handler", "127.0.0.1", 0, workers=2)
            )
            async with open_websocket_url(f"ws://127.0.0.1:{pool.port}/") as ws:
                nursery.cancel_scope.cancel()
                with trio.CancelScope(shield=True), pytest.raises(ConnectionClosed) as caught:
                    await ws.get_message()
            assert caught.value.reason.code == 1001
        assert pool.returncodes == (0, 0)


async def test_a_worker_that_dies_is_reported_not_restarted(app_module: str) -> None:
    pools: list[WorkerPool] = []
    with trio.fail_after(15), pytest.RaisesGroup(WorkerError) as caught:
        async with trio.open_nursery() as nursery:
            pool = await nursery.start(
                partial(serve_websocket_workers, f"{app_module}:handler", "127.0.0.1", 0, workers=2)
            )
            pools.append(pool)
            async with open_websocket_url(f"ws://127.0.0.1:{pool.port}/") as ws:
                await ws.send_message("exit")
                with pytest.raises(ConnectionClosed):
                    await ws.get_message()
            await trio.sleep_forever()
    error = caught.value.exceptions[0]
    assert isinstance(error, WorkerError)
    assert error.returncode == 3
    assert error.pid in pools[0].pids
    assert "exited with status 3" in str(error)
    # The other worker was stopped, not left serving alone; none restarted.
    assert all(code is not None for code in pools[0].returncodes)
    assert not any(running(pid) for pid in pools[0].pids)


async def test_an_app_that_cannot_be_imported_fails_the_start(
    nursery: trio.Nursery, app_module: str
) -> None:
    with trio.fail_after(15), pytest.raises(WorkerError) as caught:
        await nursery.start(
            partial(serve_websocket_workers, f"{app_module}:missing", "127.0.0.1", 0, workers=2)
        )
    assert "before it was listening" in str(caught.value)
    assert caught.value.returncode not in (0, None)


async def test_a_factory_sets_up_each_worker(nursery: trio.Nursery, app_module: str) -> None:
    with trio.fail_after(15):
        pool: WorkerPool = await nursery.start(
            partial(serve_websocket_workers, f"{app_module}:factory", "127.0.0.1", 0, workers=2)
        )
        greetings = set()
        for _ in range(16):
            async with open_websocket_url(f"ws://127.0.0.1:{pool.port}/") as ws:
                greetings.add(await ws.get_message())
        assert greetings == {f"set up in {pid}" for pid in pool.pids}
        await pool.stop()


def test_workers_stop_when_the_parent_is_killed(app_module: str) -> None:
    # The parent here is a separate program, killed with SIGKILL: it cannot
    # forward anything, yet its workers must not stay behind.
    program = textwrap.dedent(
        f"""
        import sys
        from trio_websocket import run_websocket_workers
        sys.exit(run_websocket_workers(
            "{app_module}:handler", "127.0.0.1", 0, workers=2,
            on_ready=lambda pool: print(*pool.pids, flush=True),
        ))
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", program],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert parent.stdout is not None
        pids = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(pids) == 2
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(running(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(running(pid) for pid in pids)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_a_signal_during_startup_stops_everything_promptly(app_module: str, tmp_path: Path) -> None:
    # The workers are stuck in their setup; SIGTERM must still end them and
    # the parent at once (not after shutdown_timeout and a kill).
    program = textwrap.dedent(
        f"""
        import sys
        from trio_websocket import run_websocket_workers
        sys.exit(run_websocket_workers(
            "{app_module}:slow_factory", "127.0.0.1", 0, workers=2, shutdown_timeout=3600,
        ))
        """
    )
    marker = str(tmp_path / "started-")
    parent = subprocess.Popen(
        [sys.executable, "-c", program],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "SLOW_MARKER": marker},
    )
    try:
        deadline = time.monotonic() + 10
        while len(list(tmp_path.glob("started-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        pids = [int(path.name.split("-")[1]) for path in tmp_path.glob("started-*")]
        assert len(pids) == 2
        start = time.monotonic()
        parent.send_signal(signal.SIGTERM)
        # Not the hour of shutdown_timeout (with room for a busy machine to
        # end three processes).
        _, stderr = parent.communicate(timeout=10)
        assert time.monotonic() - start < 10
        assert parent.returncode == 0, stderr
        assert not any(running(pid) for pid in pids)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def certificate_files(ca: trustme.CA, directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 as PEM files: its chain, its key."""
    certificate = ca.issue_cert("127.0.0.1")
    chain, key = directory / "chain.pem", directory / "key.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in certificate.cert_chain_pems))
    certificate.private_key_pem.write_to_path(str(key))
    return chain, key


async def test_workers_serve_wss_from_certificate_files(
    nursery: trio.Nursery, app_module: str, tmp_path: Path
) -> None:
    ca = trustme.CA()
    chain, key = certificate_files(ca, tmp_path)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with trio.fail_after(15):
        pool: WorkerPool = await nursery.start(
            partial(
                serve_websocket_workers,
                f"{app_module}:handler",
                "127.0.0.1",
                0,
                workers=2,
                ssl_certfile=str(chain),
                ssl_keyfile=str(key),
            )
        )
        assert pool.listeners[0].url == f"wss://127.0.0.1:{pool.port}"
        async with open_websocket_url(f"wss://127.0.0.1:{pool.port}/", client_context) as ws:
            await ws.send_message("secret")
            assert await ws.get_message() == "secret"
        await pool.stop()
        assert pool.returncodes == (0, 0)


@pytest.mark.parametrize("tls", [True, False], ids=["alpn", "h2c"])
async def test_workers_serve_websockets_over_http2(
    nursery: trio.Nursery, app_module: str, tmp_path: Path, tls: bool
) -> None:
    files: dict[str, Any] = {}
    client_context: ssl.SSLContext | None = None
    if tls:
        ca = trustme.CA()
        chain, key = certificate_files(ca, tmp_path)
        files = {"ssl_certfile": str(chain), "ssl_keyfile": str(key)}
        client_context = ssl.create_default_context()
        ca.configure_trust(client_context)
    with trio.fail_after(15):
        pool: WorkerPool = await nursery.start(
            partial(
                serve_websocket_workers,
                f"{app_module}:handler",
                "127.0.0.1",
                0,
                workers=2,
                http2=True,
                # One WebSocket per HTTP/2 connection: shows the limits
                # reach the workers (a session needs a connection for each).
                http2_limits=trio_websocket.HTTP2Limits(max_concurrent_streams=1),
                **files,
            )
        )
        url = f"{'wss' if tls else 'ws'}://127.0.0.1:{pool.port}/"
        async with (
            trio_websocket.open_websocket_session(url, client_context, http2="require") as session,
            session.open_websocket() as first,
            session.open_websocket() as second,
        ):
            for ws in (first, second):
                assert ws.http_version == "2"
                await ws.send_message("over HTTP/2")
                assert await ws.get_message() == "over HTTP/2"
            assert session.connection_count == 2
        # The same port still serves the HTTP/1.1 upgrade. (A context of its
        # own: the session set the ALPN protocols of the one it was given.)
        if tls:
            client_context = ssl.create_default_context()
            ca.configure_trust(client_context)
        async with open_websocket_url(url, client_context) as ws:
            assert ws.http_version == "1.1"
            await ws.send_message("over HTTP/1.1")
            assert await ws.get_message() == "over HTTP/1.1"
        await pool.stop()
        assert pool.returncodes == (0, 0)


async def test_workers_without_http2_refuse_a_client_that_requires_it(
    nursery: trio.Nursery, app_module: str
) -> None:
    with trio.fail_after(15):
        pool = await start_one_worker(nursery, app_module)
        with pytest.raises(trio_websocket.HandshakeError, match="HTTP/2"):
            async with open_websocket_url(f"ws://127.0.0.1:{pool.port}/", http2="require"):
                pass  # pragma: no cover
        await pool.stop()


async def test_bad_certificate_files_fail_before_any_process_starts(
    app_module: str, tmp_path: Path
) -> None:
    with pytest.raises((OSError, ssl.SSLError)):
        await serve_websocket_workers(
            f"{app_module}:handler",
            "127.0.0.1",
            0,
            workers=2,
            ssl_certfile=str(tmp_path / "missing.pem"),
        )
    with pytest.raises(ValueError, match="ssl_certfile"):
        await serve_websocket_workers(
            f"{app_module}:handler", "127.0.0.1", 0, workers=2, ssl_keyfile="key.pem"
        )


async def test_each_worker_knows_its_index(nursery: trio.Nursery, app_module: str) -> None:
    with trio.fail_after(15):
        pool: WorkerPool = await nursery.start(
            partial(serve_websocket_workers, f"{app_module}:handler", "127.0.0.1", 0, workers=2)
        )
        assert {await ask(pool.port, "worker") for _ in range(24)} == {"0", "1"}
        await pool.stop()


@pytest.mark.parametrize("blocker_reuses_port", [False, True])
async def test_a_port_in_use_raises_oserror(app_module: str, blocker_reuses_port: bool) -> None:
    # A blocker with SO_REUSEPORT is what a second copy of this server
    # looks like: joining its port silently would split its traffic.
    blocker = trio.socket.socket()
    if blocker_reuses_port:
        blocker.setsockopt(trio.socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    with blocker:
        await blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with trio.fail_after(10), pytest.raises(OSError):
            await serve_websocket_workers(f"{app_module}:handler", "127.0.0.1", port, workers=2)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"app": "no_colon", "workers": 2}, ValueError),
        ({"app": "m:f", "workers": 0}, ValueError),
        ({"app": "m:f", "workers": True}, ValueError),
        ({"app": "m:f", "workers": 2, "shutdown_timeout": -1}, ValueError),
        ({"app": 42, "workers": 2}, TypeError),
        ({"app": "__main__:handler", "workers": 2}, ValueError),
    ],
)
async def test_bad_arguments_fail_before_any_process_starts(
    kwargs: dict[str, object], error: type[Exception]
) -> None:
    app = kwargs.pop("app")
    with pytest.raises(error):
        await serve_websocket_workers(app, "127.0.0.1", 0, **kwargs)  # type: ignore[arg-type]


# ----------------------------------------------------------------------
# The command line


def start_cli(*args: str) -> tuple[subprocess.Popen[str], str]:
    """Run ``python -m trio_websocket serve ...`` and return it with its URL."""
    package_root = str(Path(trio_websocket.__file__).parent.parent)
    env = {**os.environ, "PYTHONPATH": package_root}
    process = subprocess.Popen(
        [sys.executable, "-m", "trio_websocket", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("listening on ws://127.0.0.1:"), line
    return process, line.split()[-1]


def stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        _, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, stderr


def worker_pids(parent: int) -> list[int]:
    # Trio starts processes from a worker thread: look at every thread.
    return [
        int(pid)
        for task in Path(f"/proc/{parent}/task").iterdir()
        for pid in (task / "children").read_text().split()
    ]


async def test_cli_workers_serve_and_stop_on_sigterm() -> None:
    process, url = start_cli("--workers", "2")
    try:
        with trio.fail_after(10):
            assert len(worker_pids(process.pid)) == 2
            async with open_websocket_url(url) as ws:
                await ws.send_message("hello")
                assert await ws.get_message() == "hello"
                process.send_signal(signal.SIGTERM)
                with pytest.raises(ConnectionClosed) as caught:
                    await ws.get_message()
                assert caught.value.reason.code == 1001
    finally:
        status, stderr = stop(process)
    assert status == 0, stderr
    # The parent reports each worker's shutdown; the connection was on one.
    reports = re.findall(
        r"INFO: worker \d \(pid \d+\) shut down: (\d) closed cleanly, 0 forced, 0 refused",
        stderr,
    )
    assert sorted(reports) == ["0", "1"], stderr


async def test_cli_workers_take_the_server_options() -> None:
    process, url = start_cli("--workers", "2", "--max-connections", "1", "--ping-interval", "5")
    try:
        with trio.fail_after(10):
            # Keep every connection that gets in open: with one allowed per
            # worker, exactly two get in (one per worker), the others 503.
            accepted = 0
            refused = 0
            async with trio.open_nursery() as nursery:
                for _ in range(24):
                    try:
                        ws = await connect_websocket_url(nursery, url)
                    except ConnectionRejected as exc:
                        assert exc.status_code == 503
                        refused += 1
                        continue
                    await ws.send_message("echo")
                    assert await ws.get_message() == "echo"
                    accepted += 1
                # (24 connections all hashed to one worker: a chance of 2**-23.)
                assert (accepted, refused) == (2, 22)
                nursery.cancel_scope.cancel()
    finally:
        process.send_signal(signal.SIGTERM)
        status, stderr = stop(process)
    assert status == 0, stderr


async def test_cli_exits_non_zero_when_a_worker_dies() -> None:
    process, _ = start_cli("--workers", "2")
    try:
        children = worker_pids(process.pid)
        assert len(children) == 2
        os.kill(children[0], signal.SIGKILL)
    finally:
        status, stderr = stop(process)
    assert status == 1
    assert f"pid {children[0]}) exited on its own with status -9" in stderr
    assert not running(children[1])


def test_cli_rejects_a_bad_worker_count() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trio_websocket", "serve", "--workers", "0"],
        capture_output=True,
        text=True,
        timeout=15,
        env={**os.environ, "PYTHONPATH": str(Path(trio_websocket.__file__).parent.parent)},
    )
    assert result.returncode == 2
    assert "not a number of workers" in result.stderr
