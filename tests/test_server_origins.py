"""Origin checking: ``origins=[...]`` answers requests from other origins
with 403 before the handler runs."""

from __future__ import annotations

import re

import pytest
import trio
from conftest import echo_handler
from server_fixtures import MemoryListener, exchange, start_memory_server, upgrade_request

from trio_websocket import WebSocketServer, wrap_client_stream
from trio_websocket._server.origins import OriginPolicy


def allows(origins: list[object], *values: bytes) -> bool:
    policy = OriginPolicy(origins)  # type: ignore[arg-type]
    return policy.allows([(b"host", b"x"), *[(b"origin", value) for value in values]])


def test_exact_origin_is_compared_case_insensitively() -> None:
    assert allows(["https://example.com"], b"https://example.com")
    assert allows(["https://Example.COM"], b"HTTPS://example.com")
    assert not allows(["https://example.com"], b"https://example.com.evil.net")
    assert not allows(["https://example.com"], b"http://example.com")


def test_pattern_must_match_the_whole_origin() -> None:
    pattern = re.compile(r"https://[a-z0-9-]+\.example\.com")
    assert allows([pattern], b"https://app.example.com")
    assert not allows([pattern], b"https://app.example.com.evil.net")
    assert not allows([pattern], b"https://example.com")


def test_missing_origin_is_allowed_only_with_none_in_the_list() -> None:
    assert not allows(["https://example.com"])
    assert allows(["https://example.com", None])
    assert allows([None])
    assert not allows([None], b"https://example.com")


def test_several_origin_headers_are_refused() -> None:
    assert not allows(["https://a.example"], b"https://a.example", b"https://a.example")


def test_empty_list_refuses_everything() -> None:
    assert not allows([])
    assert not allows([], b"https://example.com")


@pytest.mark.parametrize(
    "origins",
    ["https://example.com", b"https://example.com", re.compile("x"), [b"https://x"], [42]],
)
def test_bad_origins_raise_type_error(origins: object) -> None:
    with pytest.raises(TypeError):
        OriginPolicy(origins)  # type: ignore[arg-type]


def test_bytes_pattern_is_refused() -> None:
    with pytest.raises(TypeError):
        OriginPolicy([re.compile(b"x")])  # type: ignore[list-item]


def test_server_validates_origins_when_built() -> None:
    with pytest.raises(TypeError):
        WebSocketServer(echo_handler, [MemoryListener()], origins="https://x")


async def test_server_answers_other_origins_with_403(nursery: trio.Nursery) -> None:
    _, listener = await start_memory_server(
        nursery, echo_handler, origins=["https://good.example", None]
    )
    answer = await exchange(
        await listener.connect(), upgrade_request(extra=b"Origin: https://evil.example\r\n")
    )
    assert answer.status == 403
    # The allowed origin and a client without Origin are served.
    for headers in ([(b"Origin", b"https://good.example")], []):
        ws = await wrap_client_stream(
            nursery, await listener.connect(), "example.com", "/", extra_headers=headers
        )
        await ws.send_message("ok")
        assert await ws.get_message() == "ok"
        await ws.aclose()


async def test_without_origins_every_origin_is_allowed(nursery: trio.Nursery) -> None:
    _, listener = await start_memory_server(nursery, echo_handler)
    ws = await wrap_client_stream(
        nursery,
        await listener.connect(),
        "example.com",
        "/",
        extra_headers=[(b"Origin", b"https://anywhere.example")],
    )
    await ws.aclose()
