"""HTTP Basic auth: the server hook, reading the credentials back, and the
client's ``ws://user:password@host`` URLs end to end."""

from __future__ import annotations

import base64
from functools import partial

import pytest
import trio
from conftest import echo_handler
from server_fixtures import exchange, start_memory_server, upgrade_request

from trio_websocket import (
    BasicAuth,
    ConnectionRejected,
    HTTPRequest,
    WebSocketRequest,
    basic_auth_credentials,
    open_websocket_url,
    serve_websocket,
)


def authorization(value: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", value.encode("latin-1"))]


def basic(user_and_password: str) -> str:
    return "Basic " + base64.b64encode(user_and_password.encode()).decode()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (basic("alice:secret"), ("alice", "secret")),
        (basic("alice:se:cr:et"), ("alice", "se:cr:et")),
        (basic("alice:"), ("alice", "")),
        (basic("j\u00fcrgen:p\u00e4ss"), ("j\u00fcrgen", "p\u00e4ss")),
        ("basic " + base64.b64encode(b"a:b").decode(), ("a", "b")),
        (basic("no-colon"), None),
        ("Bearer abc", None),
        ("Basic not*base64", None),
        ("Basic " + base64.b64encode(b"\xff:\xfe").decode(), None),
        ("Basic", None),
    ],
)
def test_basic_auth_credentials(value: str, expected: tuple[str, str] | None) -> None:
    assert basic_auth_credentials(authorization(value)) == expected


def test_basic_auth_credentials_without_or_with_two_headers() -> None:
    assert basic_auth_credentials([]) is None
    two = authorization(basic("a:b")) + authorization(basic("c:d"))
    assert basic_auth_credentials(two) is None


def request_with(headers: list[tuple[bytes, bytes]]) -> HTTPRequest:
    return HTTPRequest("GET", "/", headers, "remote", "local")


async def test_hook_with_mapping_lets_valid_credentials_go_on() -> None:
    auth = BasicAuth({"alice": "secret"}, realm="chat")
    assert await auth(request_with(authorization(basic("alice:secret")))) is None
    for headers in (
        [],
        authorization(basic("alice:wrong")),
        authorization(basic("bob:secret")),
        authorization("Bearer x"),
    ):
        response = await auth(request_with(headers))
        assert response is not None
        assert response.status_code == 401
        assert (b"www-authenticate", b'Basic realm="chat", charset="UTF-8"') in response.headers


@pytest.mark.parametrize("is_async", [False, True])
async def test_hook_with_a_checker_function(is_async: bool) -> None:
    calls: list[tuple[str, str]] = []

    def check(username: str, password: str) -> bool:
        calls.append((username, password))
        return password == "pw"

    async def check_async(username: str, password: str) -> bool:
        await trio.lowlevel.checkpoint()
        return check(username, password)

    auth = BasicAuth(check_async if is_async else check)
    assert await auth(request_with(authorization(basic("u:pw")))) is None
    response = await auth(request_with(authorization(basic("u:no"))))
    assert response is not None and response.status_code == 401
    assert calls == [("u", "pw"), ("u", "no")]


@pytest.mark.parametrize("realm", ['a"b', "a\\b"])
def test_bad_realm_raises_value_error(realm: str) -> None:
    with pytest.raises(ValueError):
        BasicAuth({}, realm=realm)
    with pytest.raises(TypeError):
        BasicAuth({}, realm=42)  # type: ignore[arg-type]


def test_bad_credentials_raise_type_error() -> None:
    with pytest.raises(TypeError):
        BasicAuth(42)  # type: ignore[arg-type]


async def test_server_answers_401_to_requests_without_credentials(nursery: trio.Nursery) -> None:
    _, listener = await start_memory_server(
        nursery, echo_handler, process_request=BasicAuth({"alice": "secret"})
    )
    answer = await exchange(await listener.connect(), upgrade_request())
    assert answer.status == 401
    assert answer.headers[b"www-authenticate"].startswith(b"Basic realm=")


async def test_url_credentials_end_to_end_over_tcp(nursery: trio.Nursery) -> None:
    users: list[str] = []

    async def handler(request: WebSocketRequest) -> None:
        credentials = basic_auth_credentials(request.headers)
        assert credentials is not None
        users.append(credentials[0])
        await echo_handler(request)

    server = await nursery.start(
        partial(
            serve_websocket,
            handler,
            "127.0.0.1",
            0,
            None,
            process_request=BasicAuth({"alice": "s:cr\u00e9t"}),
        )
    )
    base = f"127.0.0.1:{server.port}"
    with trio.fail_after(10):
        # The password is percent-encoded in the URL (":" and "é").
        async with open_websocket_url(f"ws://alice:s%3Acr%C3%A9t@{base}/") as ws:
            await ws.send_message("in")
            assert await ws.get_message() == "in"
        for url in (f"ws://alice:wrong@{base}/", f"ws://{base}/"):
            with pytest.raises(ConnectionRejected) as info:
                async with open_websocket_url(url):
                    pytest.fail("connected without valid credentials")
            assert info.value.status_code == 401
    assert users == ["alice"]
