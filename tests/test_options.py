"""The options records (``_client.options``, ``_server.options``): each
public entry point validates every option it is given once, up front, so a
bad one raises its ``TypeError``/``ValueError`` before anything is opened
(no listener bound and left open, no connection attempted).
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from trio_websocket import (
    WebSocketRequest,
    connect_websocket,
    open_websocket,
    serve_websocket,
)
from trio_websocket._client.options import ClientOptions
from trio_websocket._core.config import DEFAULT_DISCONNECT_TIMEOUT
from trio_websocket._server.options import DEFAULT_MAX_HANDSHAKES, ServerOptions

GUARD = 5

#: One bad value for each server option, and what it raises.
BAD_SERVER_OPTIONS = [
    ({"message_queue_size": -1}, ValueError),
    ({"max_message_size": 0}, ValueError),
    ({"receive_buffer_size": "big"}, TypeError),
    ({"connect_timeout": -1}, ValueError),
    ({"disconnect_timeout": "soon"}, TypeError),
    ({"process_request": "not a function"}, TypeError),
    ({"origins": "https://example.com"}, TypeError),  # one origin, not a list
    ({"max_connections": 0}, ValueError),
    ({"request_limits": {"max_headers": 5}}, TypeError),
    ({"ping_timeout": 3.0}, ValueError),  # without ping_interval
    ({"max_buffered_bytes": 0}, ValueError),
    ({"compression": "zstd"}, ValueError),
    ({"max_handshakes": True}, TypeError),
]

#: One bad value for each client option (beyond the connection's).
BAD_CLIENT_OPTIONS = [
    ({"subprotocols": "chat"}, TypeError),  # one protocol, not a list
    ({"extra_headers": [("name", "value")]}, TypeError),  # str, not bytes
    ({"max_redirects": -1}, ValueError),
    ({"unix_socket_path": 5}, TypeError),
    ({"unix_socket_path": "/tmp/x.sock", "proxy": "http://127.0.0.1:1"}, ValueError),
    ({"ping_interval": 0}, ValueError),
    ({"message_queue_size": 1.5}, TypeError),
]


async def _never(request: WebSocketRequest) -> None:  # pragma: no cover
    raise AssertionError("no request should arrive")


def _forbid(monkeypatch: pytest.MonkeyPatch, *names: str) -> list[str]:
    """Make each trio function in ``names`` fail the test if called."""
    called: list[str] = []
    for name in names:

        async def spy(*args: Any, _name: str = name, **kwargs: Any) -> Any:  # pragma: no cover
            called.append(_name)
            raise AssertionError(f"trio.{_name} was called")

        monkeypatch.setattr(trio, name, spy)
    return called


@pytest.mark.parametrize(("bad", "error"), BAD_SERVER_OPTIONS)
async def test_serve_websocket_refuses_a_bad_option_before_listening(
    monkeypatch: pytest.MonkeyPatch, bad: dict[str, object], error: type[Exception]
) -> None:
    # (Before the one record, six of these raised only once the listeners
    # were open, and left them open.)
    called = _forbid(monkeypatch, "open_tcp_listeners", "open_ssl_over_tcp_listeners")
    with trio.fail_after(GUARD), pytest.raises(error):
        await serve_websocket(_never, "127.0.0.1", 0, None, **bad)  # type: ignore[arg-type]
    assert called == []


@pytest.mark.parametrize(("bad", "error"), BAD_SERVER_OPTIONS)
def test_server_options_record_refuses_the_same(
    bad: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        ServerOptions.build(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("bad", "error"), BAD_CLIENT_OPTIONS)
async def test_client_entry_points_refuse_a_bad_option_before_connecting(
    monkeypatch: pytest.MonkeyPatch, bad: dict[str, object], error: type[Exception]
) -> None:
    called = _forbid(monkeypatch, "open_tcp_stream", "open_unix_socket")
    with trio.fail_after(GUARD):
        with pytest.raises(error):
            async with open_websocket("127.0.0.1", 1, "/", use_ssl=False, **bad):  # type: ignore[arg-type]
                pass  # pragma: no cover
        async with trio.open_nursery() as nursery:
            with pytest.raises(error):
                await connect_websocket(nursery, "127.0.0.1", 1, "/", use_ssl=False, **bad)  # type: ignore[arg-type]
    assert called == []


def test_records_take_keywords_only_and_default_as_the_public_signatures() -> None:
    with pytest.raises(TypeError):
        ServerOptions.build(1)  # type: ignore[misc]
    with pytest.raises(TypeError):
        ClientOptions.build(["chat"])  # type: ignore[misc]
    server = ServerOptions.build()
    assert server.max_handshakes == DEFAULT_MAX_HANDSHAKES
    assert server.disconnect_timeout == DEFAULT_DISCONNECT_TIMEOUT
    assert server.origins is None and server.process_request is None
    client = ClientOptions.build()
    assert (client.subprotocols, client.extra_headers, client.max_redirects) == ([], [], 0)
    assert client.connection.close_on_cancel is False
