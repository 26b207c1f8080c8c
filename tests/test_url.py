"""``parse_ws_url``: what a client connects to and what it asks for, from a
``ws://`` or ``wss://`` URL."""

from __future__ import annotations

import base64

import pytest

from trio_websocket._core.url import WebSocketTarget, parse_ws_url


def basic(credentials: str) -> bytes:
    return b"Basic " + base64.b64encode(credentials.encode("utf-8"))


@pytest.mark.parametrize(
    ("url", "host", "port", "secure", "host_header"),
    [
        ("ws://example.com/", "example.com", 80, False, "example.com"),
        ("wss://example.com/", "example.com", 443, True, "example.com"),
        ("ws://example.com:8000/", "example.com", 8000, False, "example.com:8000"),
        ("wss://example.com:8443/", "example.com", 8443, True, "example.com:8443"),
        # The default port is left out of Host only when it is *this*
        # scheme's default.
        ("ws://example.com:80/", "example.com", 80, False, "example.com"),
        ("wss://example.com:443/", "example.com", 443, True, "example.com"),
        ("ws://example.com:443/", "example.com", 443, False, "example.com:443"),
        ("wss://example.com:80/", "example.com", 80, True, "example.com:80"),
        ("ws://127.0.0.1:9000/", "127.0.0.1", 9000, False, "127.0.0.1:9000"),
    ],
)
def test_scheme_gives_default_port_and_host_header(
    url: str, host: str, port: int, secure: bool, host_header: str
) -> None:
    target = parse_ws_url(url)
    assert target.host == host
    assert target.port == port
    assert target.secure is secure
    assert target.host_header == host_header


def test_ipv6_literal_is_unbracketed_for_connecting_and_bracketed_in_host_header() -> None:
    target = parse_ws_url("ws://[::1]:8000/x")
    assert target.host == "::1"
    assert target.port == 8000
    assert target.host_header == "[::1]:8000"
    assert target.resource == "/x"


def test_ipv6_literal_on_default_port_keeps_brackets() -> None:
    target = parse_ws_url("wss://[2001:db8::1]/")
    assert target.host == "2001:db8::1"
    assert target.port == 443
    assert target.host_header == "[2001:db8::1]"


@pytest.mark.parametrize(
    ("url", "resource"),
    [
        ("ws://example.com", "/"),
        ("ws://example.com/", "/"),
        ("ws://example.com:8000", "/"),
        ("ws://example.com/chat/room1", "/chat/room1"),
        ("ws://example.com/p?a=1&b=2", "/p?a=1&b=2"),
        ("ws://example.com?x=1", "/?x=1"),
        # Percent-escapes in the path are sent as they are, not decoded.
        ("ws://example.com/a%20b/%3F", "/a%20b/%3F"),
    ],
)
def test_resource_is_path_and_query_with_slash_for_empty_path(url: str, resource: str) -> None:
    assert parse_ws_url(url).resource == resource


@pytest.mark.parametrize(
    ("url", "resource"),
    [
        ("ws://example.com/p#frag", "/p"),
        ("ws://example.com/p?q=1#frag", "/p?q=1"),
        ("ws://example.com#frag", "/"),
        # A "?" after the "#" belongs to the fragment; it starts no query.
        ("ws://example.com/p#frag?x", "/p"),
        ("ws://example.com/p#frag?x=1&y=2", "/p"),
    ],
)
def test_fragment_is_never_part_of_the_resource(url: str, resource: str) -> None:
    assert parse_ws_url(url).resource == resource


@pytest.mark.parametrize(
    ("url", "secure", "port"),
    [("WS://example.com/", False, 80), ("WSS://example.com/", True, 443), ("Wss://h/", True, 443)],
)
def test_scheme_is_case_insensitive(url: str, secure: bool, port: int) -> None:
    target = parse_ws_url(url)
    assert target.secure is secure
    assert target.port == port


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/",
        "https://example.com/",
        "ftp://example.com/",
        "wsx://example.com/",
        "example.com/path",
        "//example.com/path",
        "",
    ],
)
def test_other_schemes_are_rejected(url: str) -> None:
    with pytest.raises(ValueError, match="scheme"):
        parse_ws_url(url)


@pytest.mark.parametrize("url", ["ws:///path", "ws://", "wss://:443/", "ws://user:pw@/"])
def test_url_without_host_is_rejected(url: str) -> None:
    with pytest.raises(ValueError, match="host"):
        parse_ws_url(url)


@pytest.mark.parametrize(
    "url",
    ["ws://example.com:notaport/", "ws://example.com:99999/", "ws://example.com:-1/"],
)
def test_bad_port_is_rejected(url: str) -> None:
    with pytest.raises(ValueError, match="port"):
        parse_ws_url(url)


@pytest.mark.parametrize("url", [b"ws://example.com/", None, 8000, ["ws://example.com/"]])
def test_non_str_url_is_a_type_error(url: object) -> None:
    with pytest.raises(TypeError):
        parse_ws_url(url)  # type: ignore[arg-type]


def test_url_without_userinfo_sends_no_authorization() -> None:
    assert parse_ws_url("ws://example.com/").authorization is None


@pytest.mark.parametrize(
    ("url", "credentials"),
    [
        ("ws://alice:secret@example.com/", "alice:secret"),
        ("ws://alice@example.com/", "alice:"),
        ("ws://alice:@example.com/", "alice:"),
        # Percent-escapes in the userinfo are decoded before encoding.
        ("ws://us%40er:p%3Ass%20w@example.com/", "us@er:p:ss w"),
        ("ws://%C3%A9l%C3%A8ve:mot@example.com/", "\u00e9l\u00e8ve:mot"),
    ],
)
def test_userinfo_becomes_basic_authorization(url: str, credentials: str) -> None:
    target = parse_ws_url(url)
    assert target.authorization == basic(credentials)


def test_userinfo_is_not_part_of_host_or_host_header() -> None:
    target = parse_ws_url("wss://alice:secret@example.com:8443/p")
    assert target.host == "example.com"
    assert target.host_header == "example.com:8443"
    assert target.resource == "/p"


def test_complete_target() -> None:
    assert parse_ws_url("wss://bob:pw@[::1]:9443/a/b?c=d#e?f") == WebSocketTarget(
        host="::1",
        port=9443,
        resource="/a/b?c=d",
        secure=True,
        host_header="[::1]:9443",
        authorization=basic("bob:pw"),
    )
