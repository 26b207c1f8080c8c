"""A guard on the public API: the names, where they say they live, and the
signatures of trio-websocket 0.12.2 that code written for it relies on
(parameter names, order, positional or keyword-only, defaults)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import trio

import trio_websocket
from trio_websocket import (
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    open_websocket,
    open_websocket_url,
)

EXPECTED_NAMES = {
    "CloseReason",
    "ConnectionClosed",
    "ConnectionRejected",
    "ConnectionStatistics",
    "ConnectionTimeout",
    "DeflateConfig",
    "DeflateParameters",
    "DisconnectionTimeout",
    "Endpoint",
    "HandshakeError",
    "Proxy",
    "ProxyAuthenticationError",
    "ProxyError",
    "ProxyRejected",
    "ReconnectingWebSocket",
    "Hub",
    "HubStatistics",
    "WebSocketConnection",
    "WebSocketRequest",
    "WebSocketServer",
    "WorkerError",
    "WorkerPool",
    "__version__",
    "connect_websocket",
    "connect_websocket_url",
    "default_retry_policy",
    "open_websocket",
    "open_websocket_url",
    "run_websocket_workers",
    "serve_websocket",
    "serve_websocket_workers",
    "wrap_client_stream",
    "wrap_server_stream",
    "BasicAuth",
    "HTTPRequest",
    "HTTPResponse",
    "RequestLimits",
    "ShutdownReport",
    "basic_auth_credentials",
    # WebSockets over HTTP/2 (issue 15)
    "HTTP2Limits",
    "WebSocketSession",
    "open_websocket_session",
}

# Parameter kinds and default markers used in the signature table.
P = inspect.Parameter.POSITIONAL_OR_KEYWORD
K = inspect.Parameter.KEYWORD_ONLY
REQUIRED = inspect.Parameter.empty
ANY = object()  # any default is fine (the library picks its own read size)
MB = 1048576

Param = tuple[str, Any, Any]  # (name, kind, default)

SIGNATURES: dict[str, list[Param]] = {
    "open_websocket": [
        ("host", P, REQUIRED),
        ("port", P, REQUIRED),
        ("resource", P, REQUIRED),
        ("use_ssl", K, REQUIRED),
        ("subprotocols", K, None),
        ("extra_headers", K, None),
        ("message_queue_size", K, 1),
        ("max_message_size", K, MB),
        ("receive_buffer_size", K, ANY),
        ("connect_timeout", K, 60),
        ("disconnect_timeout", K, 60),
        ("ping_interval", K, None),
        ("ping_timeout", K, None),
        ("proxy", K, None),
        ("max_redirects", K, 0),
        ("unix_socket_path", K, None),
        ("max_buffered_bytes", K, None),
        ("compression", K, None),
        ("http2", K, False),  # issue 15
        ("http2_limits", K, None),
    ],
    "open_websocket_url": [
        ("url", P, REQUIRED),
        ("ssl_context", P, None),
        ("subprotocols", K, None),
        ("extra_headers", K, None),
        ("message_queue_size", K, 1),
        ("max_message_size", K, MB),
        ("connect_timeout", K, 60),
        ("disconnect_timeout", K, 60),
        ("receive_buffer_size", K, ANY),
        ("ping_interval", K, None),
        ("ping_timeout", K, None),
        ("proxy", K, None),
        ("max_redirects", K, 0),
        ("unix_socket_path", K, None),
        ("max_buffered_bytes", K, None),
        ("compression", K, None),
        ("http2", K, False),  # issue 15
        ("http2_limits", K, None),
    ],
    "connect_websocket": [
        ("nursery", P, REQUIRED),
        ("host", P, REQUIRED),
        ("port", P, REQUIRED),
        ("resource", P, REQUIRED),
        ("use_ssl", K, REQUIRED),
        ("subprotocols", K, None),
        ("extra_headers", K, None),
        ("message_queue_size", K, 1),
        ("max_message_size", K, MB),
        ("receive_buffer_size", K, ANY),
        ("ping_interval", K, None),
        ("ping_timeout", K, None),
        ("proxy", K, None),
        ("max_redirects", K, 0),
        ("unix_socket_path", K, None),
        ("max_buffered_bytes", K, None),
        ("compression", K, None),
        ("http2", K, False),  # issue 15
        ("http2_limits", K, None),
    ],
    "connect_websocket_url": [
        ("nursery", P, REQUIRED),
        ("url", P, REQUIRED),
        ("ssl_context", P, None),
        ("subprotocols", K, None),
        ("extra_headers", K, None),
        ("message_queue_size", K, 1),
        ("max_message_size", K, MB),
        ("receive_buffer_size", K, ANY),
        ("ping_interval", K, None),
        ("ping_timeout", K, None),
        ("proxy", K, None),
        ("max_redirects", K, 0),
        ("unix_socket_path", K, None),
        ("max_buffered_bytes", K, None),
        ("compression", K, None),
        ("http2", K, False),  # issue 15
        ("http2_limits", K, None),
    ],
    "wrap_client_stream": [
        ("nursery", P, REQUIRED),
        ("stream", P, REQUIRED),
        ("host", P, REQUIRED),
        ("resource", P, REQUIRED),
        ("subprotocols", K, None),
        ("extra_headers", K, None),
        ("message_queue_size", K, 1),
        ("max_message_size", K, MB),
        ("receive_buffer_size", K, ANY),
        ("ping_interval", K, None),
        ("ping_timeout", K, None),
        ("max_buffered_bytes", K, None),
        ("compression", K, None),
    ],
    "serve_websocket": [
        ("handler", P, REQUIRED),
        ("host", P, REQUIRED),
        ("port", P, REQUIRED),
        ("ssl_context", P, REQUIRED),
        ("handler_nursery", K, None),
        ("message_queue_size", K, 1),
        ("max_message_size", K, MB),
        ("receive_buffer_size", K, ANY),
        ("connect_timeout", K, 60),
        ("disconnect_timeout", K, 60),
        ("task_status", K, trio.TASK_STATUS_IGNORED),
        ("process_request", K, None),
        ("origins", K, None),
        ("max_connections", K, None),
        ("request_limits", K, None),
        ("unix_socket_path", K, None),
        ("ping_interval", K, None),
        ("ping_timeout", K, None),
        ("max_buffered_bytes", K, None),
        ("compression", K, None),
        ("max_handshakes", K, 1024),  # issue 13
        ("http2", K, False),  # issue 15
        ("http2_limits", K, None),
    ],
    "wrap_server_stream": [
        ("nursery", P, REQUIRED),
        ("stream", P, REQUIRED),
        ("message_queue_size", P, 1),
        ("max_message_size", P, MB),
        ("receive_buffer_size", P, ANY),
        ("ping_interval", K, None),
        ("ping_timeout", K, None),
        ("max_buffered_bytes", K, None),
        ("compression", K, None),
    ],
    # Not in 0.12.2: the worker processes of issue 8.
    "serve_websocket_workers": [
        ("app", P, REQUIRED),
        ("host", P, REQUIRED),
        ("port", P, REQUIRED),
        ("workers", K, REQUIRED),
        ("message_queue_size", K, 1),
        ("max_message_size", K, MB),
        ("receive_buffer_size", K, ANY),
        ("connect_timeout", K, 60),
        ("disconnect_timeout", K, 60),
        ("shutdown_timeout", K, 10),
        ("startup_timeout", K, 30),
        ("ssl_certfile", K, None),
        ("ssl_keyfile", K, None),
        ("task_status", K, ANY),
        ("ping_interval", K, None),
        ("ping_timeout", K, None),
        ("max_buffered_bytes", K, None),
        ("process_request", K, None),
        ("origins", K, None),
        ("max_connections", K, None),
        ("request_limits", K, None),
        ("compression", K, None),
        ("max_handshakes", K, 1024),  # issue 13
        ("http2", K, False),  # issue 15
        ("http2_limits", K, None),
    ],
    "run_websocket_workers": [
        ("app", P, REQUIRED),
        ("host", P, REQUIRED),
        ("port", P, REQUIRED),
        ("workers", K, REQUIRED),
        ("on_ready", K, None),
        ("options", inspect.Parameter.VAR_KEYWORD, REQUIRED),
    ],
    "WebSocketServer.__init__": [
        ("self", P, REQUIRED),
        ("handler", P, REQUIRED),
        ("listeners", P, REQUIRED),
        ("handler_nursery", K, None),
        ("message_queue_size", K, 1),
        ("max_message_size", K, MB),
        ("receive_buffer_size", K, ANY),
        ("connect_timeout", K, 60),
        ("disconnect_timeout", K, 60),
        ("process_request", K, None),
        ("origins", K, None),
        ("max_connections", K, None),
        ("request_limits", K, None),
        ("ping_interval", K, None),
        ("ping_timeout", K, None),
        ("max_buffered_bytes", K, None),
        ("compression", K, None),
        ("max_handshakes", K, 1024),  # issue 13
        ("http2", K, False),  # issue 15
        ("http2_limits", K, None),
    ],
    "basic_auth_credentials": [("headers", P, REQUIRED)],
    # Not in 0.12.2: WebSockets over HTTP/2 (issue 15).
    "open_websocket_session": [
        ("url", P, REQUIRED),
        ("ssl_context", P, None),
        ("http2", K, True),
        ("connect_timeout", K, 60),
        ("proxy", K, None),
        ("unix_socket_path", K, None),
        ("http2_limits", K, None),
    ],
    "WebSocketRequest.accept": [
        ("self", P, REQUIRED),
        ("subprotocol", K, None),
        ("extra_headers", K, None),
    ],
    "WebSocketRequest.reject": [
        ("self", P, REQUIRED),
        ("status_code", P, REQUIRED),
        ("extra_headers", K, None),
        ("body", K, None),
    ],
    "default_retry_policy": [("error", P, REQUIRED)],
    "WebSocketConnection.get_message": [("self", P, REQUIRED)],
    "WebSocketConnection.send_message": [
        ("self", P, REQUIRED),
        ("message", P, REQUIRED),
        ("compress", K, None),
    ],
    "WebSocketConnection.ping": [("self", P, REQUIRED), ("payload", P, None)],
    "WebSocketConnection.pong": [("self", P, REQUIRED), ("payload", P, None)],
    "WebSocketConnection.send_fragments": [("self", P, REQUIRED), ("fragments", P, REQUIRED)],
    "WebSocketConnection.receive_fragments": [("self", P, REQUIRED), ("max_size", K, None)],
    "WebSocketConnection.aclose": [
        ("self", P, REQUIRED),
        ("code", P, 1000),
        ("reason", P, None),
        ("keep_receiving", K, False),
    ],
    # Additions since 0.12.2 (trio.abc.Channel and statistics).
    "WebSocketConnection.send": [("self", P, REQUIRED), ("value", P, REQUIRED)],
    "WebSocketConnection.receive": [("self", P, REQUIRED)],
    "WebSocketConnection.statistics": [("self", P, REQUIRED)],
}

FUNCTIONS = [name for name in SIGNATURES if "." not in name]
COROUTINE_FUNCTIONS = [
    "connect_websocket",
    "connect_websocket_url",
    "wrap_client_stream",
    "serve_websocket",
    "wrap_server_stream",
    "serve_websocket_workers",
    "WebSocketRequest.accept",
    "WebSocketRequest.reject",
    "WebSocketConnection.get_message",
    "WebSocketConnection.send_message",
    "WebSocketConnection.ping",
    "WebSocketConnection.pong",
    "WebSocketConnection.aclose",
    "WebSocketConnection.send",
    "WebSocketConnection.receive",
    "WebSocketConnection.send_fragments",
]


def lookup(dotted: str) -> Any:
    value: Any = trio_websocket
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def test_all_is_exactly_the_public_names() -> None:
    assert set(trio_websocket.__all__) == EXPECTED_NAMES
    assert len(trio_websocket.__all__) == len(EXPECTED_NAMES)  # no duplicates


def test_every_public_name_is_importable() -> None:
    for name in EXPECTED_NAMES:
        assert hasattr(trio_websocket, name), name


def test_star_import_gives_the_public_names() -> None:
    namespace: dict[str, Any] = {}
    exec("from trio_websocket import *", namespace)
    assert set(namespace) - {"__builtins__"} == EXPECTED_NAMES


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES - {"__version__"}))
def test_public_object_names_the_package_as_its_module(name: str) -> None:
    assert getattr(trio_websocket, name).__module__ == "trio_websocket"


def test_version_is_a_str() -> None:
    assert isinstance(trio_websocket.__version__, str)
    assert trio_websocket.__version__


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_signature_matches_trio_websocket_0_12_2(name: str) -> None:
    parameters = list(inspect.signature(lookup(name)).parameters.values())
    actual = [(p.name, p.kind) for p in parameters]
    expected = [(param_name, kind) for param_name, kind, _ in SIGNATURES[name]]
    assert actual == expected
    for parameter, (param_name, _, default) in zip(parameters, SIGNATURES[name], strict=True):
        if default is ANY:
            assert parameter.default is not REQUIRED, param_name
        elif (
            default is REQUIRED
            or default is None
            or default is trio.TASK_STATUS_IGNORED
            or isinstance(default, bool)
        ):
            assert parameter.default is default, param_name
        else:
            assert parameter.default == default, param_name
            assert type(parameter.default) in (int, float), param_name


def test_every_public_function_is_covered_by_the_signature_table() -> None:
    functions = {
        name for name in EXPECTED_NAMES if inspect.isfunction(getattr(trio_websocket, name))
    }
    assert functions == set(FUNCTIONS)


@pytest.mark.parametrize("name", COROUTINE_FUNCTIONS)
def test_is_a_coroutine_function(name: str) -> None:
    assert inspect.iscoroutinefunction(lookup(name))


def test_open_websocket_returns_an_async_context_manager() -> None:
    # Building the context manager does no I/O; only entering it connects.
    manager = open_websocket("127.0.0.1", 1, "/", use_ssl=False)
    assert hasattr(manager, "__aenter__")
    assert hasattr(manager, "__aexit__")
    assert not inspect.iscoroutine(manager)


def test_open_websocket_url_returns_an_async_context_manager() -> None:
    manager = open_websocket_url("ws://127.0.0.1:1/")
    assert hasattr(manager, "__aenter__")
    assert hasattr(manager, "__aexit__")
    assert not inspect.iscoroutine(manager)


def test_connection_is_a_trio_async_resource() -> None:
    assert issubclass(WebSocketConnection, trio.abc.AsyncResource)


@pytest.mark.parametrize(
    ("cls", "properties"),
    [
        (
            WebSocketConnection,
            [
                "closed",
                "is_client",
                "is_server",
                "local",
                "remote",
                "path",
                "subprotocol",
                "handshake_headers",
            ],
        ),
        (WebSocketRequest, ["headers", "path", "proposed_subprotocols", "local", "remote"]),
        (WebSocketServer, ["port", "listeners"]),
        (trio_websocket.CloseReason, ["code", "name", "reason"]),
        (trio_websocket.Endpoint, ["url"]),
    ],
)
def test_public_properties_of_0_12_2_exist(cls: type, properties: list[str]) -> None:
    for name in properties:
        assert isinstance(inspect.getattr_static(cls, name), property), name


def test_connection_properties_added_since_0_12_2_exist() -> None:
    for name in ["close_sent", "close_received", "latency"]:
        assert isinstance(inspect.getattr_static(WebSocketConnection, name), property), name


def test_connection_is_a_trio_channel() -> None:
    assert issubclass(WebSocketConnection, trio.abc.Channel)


def test_server_run_takes_task_status() -> None:
    parameters = inspect.signature(WebSocketServer.run).parameters
    assert parameters["task_status"].kind is K
    assert parameters["task_status"].default is trio.TASK_STATUS_IGNORED


def test_package_ships_py_typed() -> None:
    assert (Path(trio_websocket.__file__).parent / "py.typed").is_file()
