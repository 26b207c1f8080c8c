"""examples/proxy.py works as its header says: through tinyproxy and Dante
(real proxies on loopback, see proxy_servers), through a proxy named in the
environment, through an ``https://`` proxy trusted with ``--proxy-cafile``,
and with a clear ``error:`` line when the proxy refuses.

The script runs as a subprocess of this interpreter with this checkout
first on PYTHONPATH; each run is awaited with a deadline.
"""

from __future__ import annotations

import os
import ssl
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio
import trustme
from conftest import echo_handler
from proxy_servers import (
    HTTP_PASSWORD,
    HTTP_USER,
    RunningProxy,
    run_dante,
    run_tinyproxy,
)

from trio_websocket import WebSocketServer, serve_websocket

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "proxy.py"
SUBPROCESS_TIMEOUT = 30

pytestmark = pytest.mark.time_limit(SUBPROCESS_TIMEOUT + 10)

#: Variables that would steer the script's proxy=True away from the test's.
PROXY_VARIABLES = [
    spelling
    for name in ("ws_proxy", "wss_proxy", "http_proxy", "https_proxy", "all_proxy", "no_proxy")
    for spelling in (name, name.upper())
]


def script_env(**extra: str) -> dict[str, str]:
    environ = {key: value for key, value in os.environ.items() if key not in PROXY_VARIABLES}
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1", **extra}


async def run_example(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    with trio.fail_after(SUBPROCESS_TIMEOUT):
        result = await trio.run_process(
            [sys.executable, str(SCRIPT), *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env or script_env(),
        )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


@pytest.fixture(scope="module")
def tinyproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    with run_tinyproxy(tmp_path_factory.mktemp("tinyproxy"), basic_auth=True) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def dante(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    with run_dante(tmp_path_factory.mktemp("dante")) as proxy:
        yield proxy


@pytest.fixture
async def server(nursery: trio.Nursery) -> WebSocketServer:
    return await nursery.start(serve_websocket, echo_handler, "127.0.0.1", 0, None)


async def test_through_an_http_proxy_with_credentials(
    tinyproxy: RunningProxy, server: WebSocketServer
) -> None:
    proxy = tinyproxy.url("http", f"{HTTP_USER}:{HTTP_PASSWORD}@")
    url = f"ws://127.0.0.1:{server.port}/"
    status, stdout, stderr = await run_example(url, "--proxy", proxy, "hello", "again")
    assert status == 0, stderr
    assert stdout.splitlines() == [
        f"connected to {url} via Proxy('http://{HTTP_USER}:***@127.0.0.1:{tinyproxy.port}')",
        "> hello",
        "< hello",
        "> again",
        "< again",
    ]
    assert HTTP_PASSWORD not in stdout


async def test_refused_credentials_give_an_error_line(
    tinyproxy: RunningProxy, server: WebSocketServer
) -> None:
    url = f"ws://127.0.0.1:{server.port}/"
    status, stdout, stderr = await run_example(url, "--proxy", tinyproxy.url("http"), "hello")
    assert status == 1
    assert stderr.startswith("error: the proxy wants (other) credentials:")
    assert "407" in stderr
    assert "Traceback" not in stderr
    assert "connected" not in stdout


async def test_proxy_from_the_environment(dante: RunningProxy, server: WebSocketServer) -> None:
    url = f"ws://localhost:{server.port}/"
    env = script_env(ALL_PROXY=dante.url("socks5h"))
    status, stdout, stderr = await run_example(url, "--proxy", "env", "hi", env=env)
    assert status == 0, stderr
    assert stdout.splitlines()[1:] == ["> hi", "< hi"]
    # The proxy was used: the script reached the server through Dante only
    # when the variable is set (no_proxy sends it direct, which also works).
    env_direct = script_env(ALL_PROXY="socks5h://127.0.0.1:9", NO_PROXY="localhost")
    status, _, stderr = await run_example(url, "--proxy", "env", "hi", env=env_direct)
    assert status == 0, stderr
    env_broken = script_env(ALL_PROXY="socks5h://127.0.0.1:9")
    status, _, stderr = await run_example(url, "--proxy", "env", "hi", env=env_broken)
    assert status == 1
    assert stderr.startswith("error: the proxy failed: could not connect to the SOCKS5 proxy")


async def test_https_proxy_trusted_with_a_ca_file(
    tinyproxy: RunningProxy, server: WebSocketServer, nursery: trio.Nursery, tmp_path: Path
) -> None:
    ca = trustme.CA()
    front = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(front)
    ca_file = tmp_path / "proxy-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    async def forward(source: trio.abc.Stream, sink: trio.abc.Stream) -> None:
        try:
            for _ in range(100_000):
                data = await source.receive_some(65536)
                if not data:
                    break
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(sink)

    accepted: list[trio.SocketStream] = []

    async def tls_front(stream: trio.SocketStream) -> None:
        accepted.append(stream)
        tls = trio.SSLStream(stream, front, server_side=True)
        backend = await trio.open_tcp_stream("127.0.0.1", tinyproxy.port)
        async with trio.open_nursery() as pumps:
            pumps.start_soon(forward, tls, backend)
            pumps.start_soon(forward, backend, tls)

    listeners = await nursery.start(partial(trio.serve_tcp, tls_front, 0, host="127.0.0.1"))
    front_port = listeners[0].socket.getsockname()[1]
    proxy = f"https://{HTTP_USER}:{HTTP_PASSWORD}@127.0.0.1:{front_port}"
    url = f"ws://127.0.0.1:{server.port}/"
    args = [url, "--proxy", proxy, "--proxy-cafile", str(ca_file), "secure"]
    status, stdout, stderr = await run_example(*args)
    assert status == 0, stderr
    assert stdout.splitlines()[1:] == ["> secure", "< secure"]
    assert len(accepted) == 1
    # From the environment, trusted through OpenSSL's SSL_CERT_FILE.
    env = script_env(http_proxy=proxy, SSL_CERT_FILE=str(ca_file))
    status, stdout, stderr = await run_example(url, "--proxy", "env", "from env", env=env)
    assert status == 0, stderr
    assert stdout.splitlines()[1:] == ["> from env", "< from env"]
    assert len(accepted) == 2  # through the proxy, not around it
    # Without the CA file the proxy's certificate is not trusted.
    status, _, stderr = await run_example(url, "--proxy", proxy, "secure")
    assert status == 1
    assert "error: the proxy failed: TLS with the HTTPS proxy" in stderr


async def test_bad_proxy_url_is_a_usage_error() -> None:
    status, _, stderr = await run_example("ws://127.0.0.1:9/", "--proxy", "socks4://p", "x")
    assert status == 2
    assert "scheme must be http, https, socks5 or socks5h" in stderr
    assert "Traceback" not in stderr
