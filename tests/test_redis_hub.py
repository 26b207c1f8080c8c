"""The Redis-backed hub, against a real ``redis-server`` on 127.0.0.1.

Debian's ``redis-server`` is installed with apt-get when it is missing; when
that cannot be done (or coredis, the redis extra, is not installed) the tests
are skipped, or fail under ``CI=true`` (tests/peers.py). Each
server is started on a free port without persistence and stopped by PID.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path

import pytest
import trio
from conftest import open_pair
from peers import require_module, require_program

# Before the imports below: trio_websocket.redis_hub imports coredis.
coredis = require_module("coredis")

from trio_websocket import (  # noqa: E402
    ConnectionClosed,
    WorkerPool,
    open_websocket_url,
    serve_websocket_workers,
)
from trio_websocket.redis_hub import RedisHub, RedisUnavailable, decode, encode  # noqa: E402

REDIS_SERVER = "redis-server"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process of ours."""

    def __init__(self, binary: str, port: int | None = None) -> None:
        self.binary = binary
        self.port = port or _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None:
                    pytest.fail(f"redis-server exited with status {self.process.returncode}")
                time.sleep(0.02)
        pytest.fail("redis-server did not start listening within 10 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@pytest.fixture(scope="session")
def redis_binary() -> str:
    return require_program(
        REDIS_SERVER,
        peer="redis-server",
        apt_package="redis-server",
        how_to_get="install Redis so that redis-server is on PATH "
        "(Debian: apt-get install redis-server; macOS: brew install redis)",
    )


@pytest.fixture(scope="module")
def redis_server(redis_binary: str) -> Iterator[RedisServer]:
    server = RedisServer(redis_binary)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(redis_binary: str) -> Iterator[RedisServer]:
    """A server this test may stop and restart."""
    server = RedisServer(redis_binary)
    server.start()
    yield server
    server.stop()


def fast_hub(url: str, **kwargs: object) -> RedisHub:
    return RedisHub(url, reconnect_delay=0.05, max_reconnect_delay=0.2, redis_timeout=2, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def two_hubs(redis_server: RedisServer) -> AsyncIterator[tuple[RedisHub, RedisHub]]:
    """Two hubs with their own Redis links, as two processes would have."""
    async with fast_hub(redis_server.url) as first, fast_hub(redis_server.url) as second:
        yield first, second


async def channel_subscribers(url: str, channel: str) -> int:
    async with coredis.Redis.from_url(url) as client:
        counts = await client.pubsub_numsub(channel)
    return int(next(iter(counts.values())))


async def test_a_message_published_on_one_hub_reaches_subscribers_of_another(
    nursery: trio.Nursery, two_hubs: tuple[RedisHub, RedisHub]
) -> None:
    publisher, receiver = two_hubs
    assert publisher.connected and receiver.connected
    client, server = await open_pair(nursery)
    other_client, other_server = await open_pair(nursery)
    await receiver.subscribe(server, "chat")
    await publisher.subscribe(other_server, "chat")
    with trio.fail_after(5):
        assert await publisher.publish("chat", "hello é") == 2
        assert await publisher.publish("chat", b"\x00\xffbinary") == 2
        assert await client.get_message() == "hello é"
        assert await client.get_message() == b"\x00\xffbinary"
        # The publisher's own subscribers get it through Redis too.
        assert await other_client.get_message() == "hello é"
        assert await other_client.get_message() == b"\x00\xffbinary"
    assert publisher.statistics().published == 2
    assert receiver.statistics().delivered >= 2


async def test_redis_subscription_follows_the_local_subscribers(
    nursery: trio.Nursery, redis_server: RedisServer
) -> None:
    channel = "trio_websocket:followed"
    async with fast_hub(redis_server.url) as hub:
        (_, first), (_, second) = await open_pair(nursery), await open_pair(nursery)
        assert await channel_subscribers(redis_server.url, channel) == 0
        await hub.subscribe(first, "followed")
        await hub.subscribe(second, "followed")
        assert await channel_subscribers(redis_server.url, channel) == 1
        await hub.unsubscribe(first)
        assert await channel_subscribers(redis_server.url, channel) == 1
        await hub.unsubscribe(second)
        with trio.fail_after(5):
            for _ in range(100):
                if await channel_subscribers(redis_server.url, channel) == 0:
                    break
                await trio.sleep(0.02)
        assert await channel_subscribers(redis_server.url, channel) == 0


async def test_other_redis_clients_can_publish_and_bad_payloads_are_dropped(
    nursery: trio.Nursery, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with fast_hub(redis_server.url, channel_prefix="app1:") as hub:
        client, server = await open_pair(nursery)
        await hub.subscribe(server, "feed")
        async with coredis.Redis.from_url(redis_server.url) as raw:
            await raw.publish("app1:feed", b"no type byte")
            await raw.publish("app1:feed", "t" + "from a backend job")
            await raw.publish("other:feed", "t" + "another application's")
        with trio.fail_after(5):
            assert await client.get_message() == "from a backend job"
        dropped = [r for r in caplog.records if r.getMessage().startswith("dropped a message")]
        assert len(dropped) == 1, dropped


def test_wire_format_round_trips() -> None:
    for message in ("", "text é", b"", b"t", b"\x00bin"):
        assert decode(encode(message)) == message
        assert type(decode(encode(message))) is type(message)
    with pytest.raises(ValueError):
        decode(b"xpayload")


async def test_reconnects_with_backoff_and_resubscribes(
    nursery: trio.Nursery, own_redis: RedisServer
) -> None:
    async with fast_hub(own_redis.url) as receiver:
        client, server = await open_pair(nursery)
        await receiver.subscribe(server, "news")
        own_redis.stop()
        with trio.fail_after(5):
            for _ in range(250):
                if not receiver.connected:
                    break
                await trio.sleep(0.02)
        assert not receiver.connected
        # Publishing while Redis is down fails loudly: nobody got it.
        with pytest.raises(RedisUnavailable, match="unavailable"):
            await receiver.publish("news", "lost")
        assert receiver.failed_publishes == 1
        own_redis.start()
        with trio.fail_after(10):
            for _ in range(500):
                if receiver.connected:
                    break
                await trio.sleep(0.02)
        assert receiver.connected
        assert receiver.reconnects == 1
        async with fast_hub(own_redis.url) as publisher:
            with trio.fail_after(5):
                assert await publisher.publish("news", "back") == 1
                assert await client.get_message() == "back"
                # The hub that lived through the outage publishes again too.
                assert await receiver.publish("news", "me too") == 1
                assert await client.get_message() == "me too"


async def test_starts_while_redis_is_unreachable_and_leaves_promptly(
    nursery: trio.Nursery,
) -> None:
    url = f"redis://127.0.0.1:{_free_port()}/0"
    with trio.fail_after(10):
        async with fast_hub(url) as hub:
            assert not hub.connected
            _, server = await open_pair(nursery)
            await hub.subscribe(server, "t")  # takes effect once Redis is back
            with pytest.raises(RedisUnavailable):
                await hub.publish("t", "nowhere")


def test_the_package_imports_without_coredis() -> None:
    program = textwrap.dedent(
        """
        import sys
        sys.modules["coredis"] = None  # as if it were not installed
        import trio_websocket
        assert "coredis" not in sys.modules or sys.modules["coredis"] is None
        try:
            import trio_websocket.redis_hub
        except ImportError:
            print("ok")
        """
    )
    package_root = str(Path(__file__).resolve().parent.parent)
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=15,
        env={**os.environ, "PYTHONPATH": package_root},
    )
    assert result.stdout.strip() == "ok", result.stderr


# ----------------------------------------------------------------------
# Across processes: a publish in this process reaches clients of two others

CHAT_APP = textwrap.dedent(
    """
    import os
    from contextlib import asynccontextmanager
    from trio_websocket import ConnectionClosed
    from trio_websocket.redis_hub import RedisHub

    @asynccontextmanager
    async def app():
        async with RedisHub(os.environ["CHAT_REDIS_URL"]) as hub:

            async def handler(request):
                ws = await request.accept()
                async with hub.subscribed(ws, "room"):
                    await ws.send_message(f"joined {os.getpid()}")
                    try:
                        while True:
                            await hub.publish("room", await ws.get_message())
                    except ConnectionClosed:
                        pass

            yield handler
    """
)


async def test_publish_in_one_process_reaches_clients_of_two_server_processes(
    nursery: trio.Nursery,
    redis_server: RedisServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "redis_chat_test_app.py").write_text(CHAT_APP, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CHAT_REDIS_URL", redis_server.url)
    with trio.fail_after(20):
        pools: list[WorkerPool] = [
            await nursery.start(
                partial(
                    serve_websocket_workers, "redis_chat_test_app:app", "127.0.0.1", 0, workers=1
                )
            )
            for _ in range(2)
        ]
        async with (
            open_websocket_url(f"ws://127.0.0.1:{pools[0].port}/") as alice,
            open_websocket_url(f"ws://127.0.0.1:{pools[1].port}/") as bob,
            fast_hub(redis_server.url) as here,
        ):
            joined = {await alice.get_message(), await bob.get_message()}
            assert joined == {f"joined {pool.pids[0]}" for pool in pools}
            assert await here.publish("room", "from a third process") == 2
            assert await alice.get_message() == "from a third process"
            assert await bob.get_message() == "from a third process"
            # And a message sent by a client of one server reaches the other.
            await alice.send_message("hi bob")
            assert await bob.get_message() == "hi bob"
            assert await alice.get_message() == "hi bob"
        for pool in pools:
            await pool.stop()
            assert pool.returncodes == (0,)


# ----------------------------------------------------------------------
# examples/redis_chat/chat.py


CHAT_SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "redis_chat" / "chat.py"


def start_chat(redis_url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHAT_SCRIPT), "--port", "0", "--workers", "2", "--redis", redis_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(CHAT_SCRIPT.parent.parent.parent)},
    )


async def test_the_chat_example_shares_a_room_across_its_workers(
    redis_server: RedisServer,
) -> None:
    process = start_chat(redis_server.url)
    try:
        assert process.stdout is not None
        with trio.fail_after(15):
            line = await trio.to_thread.run_sync(process.stdout.readline)
        assert line.startswith("chat on ws://127.0.0.1:"), line
        url = line.split()[2]
        with trio.fail_after(15):
            async with open_websocket_url(f"{url}room1?name=alice") as alice:
                assert await alice.get_message() == "* alice joined room1"
                async with open_websocket_url(f"{url}room1?name=bob") as bob:
                    assert await bob.get_message() == "* bob joined room1"
                    assert await alice.get_message() == "* bob joined room1"
                    await alice.send_message("hello")
                    assert await bob.get_message() == "alice: hello"
                    assert await alice.get_message() == "alice: hello"
                    process.send_signal(signal.SIGTERM)
                    with pytest.raises(ConnectionClosed) as caught:
                        await bob.get_message()
                    assert caught.value.reason.code == 1001
            status = await trio.to_thread.run_sync(process.wait)
        assert status == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
