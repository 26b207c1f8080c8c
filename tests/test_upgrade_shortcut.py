"""The server's short way through a plain upgrade (``_server.upgrade``) agrees with
wsproto byte for byte, and hands wsproto everything it is not sure of."""

from __future__ import annotations

import random

import pytest
from wsproto import ConnectionType
from wsproto.events import AcceptConnection, Request
from wsproto.handshake import H11Handshake
from wsproto.utilities import ProtocolError

from trio_websocket._server.upgrade import accept_response, read_upgrade

#: These tests check a fast path's own workings: they force the fast paths
#: on, also in CI's run of the suite with TRIO_WEBSOCKET_FAST_PATHS=0.
pytestmark = pytest.mark.usefixtures("fast_paths_on")

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def head(*lines: bytes, request_line: bytes = b"GET /chat?room=1 HTTP/1.1") -> bytes:
    return b"\r\n".join((request_line, *lines)) + b"\r\n\r\n"


BASIC = (
    b"Host: example.com:8000",
    b"Upgrade: websocket",
    b"Connection: Upgrade",
    b"Sec-WebSocket-Key: " + KEY,
    b"Sec-WebSocket-Version: 13",
)


def wsproto_request(data: bytes) -> tuple[H11Handshake, Request] | None:
    """What wsproto makes of ``data``: its handshake and Request, or None if
    it refuses the request (or wants more bytes)."""
    handshake = H11Handshake(ConnectionType.SERVER)
    try:
        handshake.receive_data(data)
        events = list(handshake.events())
    except (ProtocolError, UnicodeError):
        return None
    requests = [event for event in events if isinstance(event, Request)]
    return (handshake, requests[0]) if requests else None


VALID = [
    head(*BASIC),
    head(*reversed(BASIC)),
    head(
        b"host: EXAMPLE.com",
        b"UPGRADE: WebSocket",
        b"connection: keep-alive, Upgrade",
        b"sec-websocket-key:   " + KEY + b"  ",
        b"Sec-WebSocket-Version:13",
        b"Sec-WebSocket-Protocol: chat, superchat",
        b"Sec-WebSocket-Protocol: v2",
        b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
        b"Origin: https://example.com",
        b"User-Agent: test \xe9",
        b"Cookie: a=b; c=d",
        b"X-Empty:",
    ),
    head(*BASIC, request_line=b"GET http://example.com/x?y=%20 HTTP/1.1"),
    head(b"Host: xn--bcher-kva.example", *BASIC[1:]),
]


@pytest.mark.parametrize("data", VALID)
def test_a_plain_upgrade_reads_exactly_as_wsproto_reads_it(data: bytes) -> None:
    expected = wsproto_request(data)
    assert expected is not None
    assert read_upgrade(data) == expected[1]


@pytest.mark.parametrize("data", VALID)
def test_the_101_answer_is_wsprotos_byte_for_byte(data: bytes) -> None:
    mine = read_upgrade(data)
    assert mine is not None
    for subprotocol in [None, *mine.subprotocols]:
        expected = wsproto_request(data)
        assert expected is not None
        wire = expected[0].send(AcceptConnection(subprotocol=subprotocol))
        assert accept_response(mine, subprotocol) == wire


@pytest.mark.parametrize(
    "data",
    [
        head(*BASIC, request_line=b"GET / HTTP/1.0"),  # h11 judges 1.0
        head(*BASIC, request_line=b"POST / HTTP/1.1"),
        head(*BASIC[:4], b"Sec-WebSocket-Version: 8"),  # 426 with the version
        head(*BASIC[:3], BASIC[4]),  # no key
        head(*BASIC, b"Sec-WebSocket-Key: " + KEY),  # two keys
        head(*BASIC, b"Content-Length: 0"),
        head(*BASIC, b"Transfer-Encoding: chunked"),
        head(*BASIC[1:]),  # no Host
        head(*BASIC, b"Host: other"),  # two Hosts
        head(b"Host: xn--zz.example", *BASIC[1:]),  # not IDNA
        head(b"Host: \xff", *BASIC[1:]),  # not IDNA either
        head(*BASIC[:2], b"Connection: keep-alive", *BASIC[3:]),
        head(BASIC[0], b"Upgrade: h2c", *BASIC[2:]),
        head(*BASIC, b"X-Bin: \x01"),  # a byte our strict parser refuses
        head(*BASIC, b"Sec-WebSocket-Protocol: caf\xe9"),  # not ASCII
        b"GET / HTTP/1.1\n" + b"\n".join(BASIC) + b"\n\n",  # bare LF
        head(*BASIC) + b"x" * 20000,  # not a complete head
    ],
)
def test_anything_unusual_is_left_to_wsproto(data: bytes) -> None:
    assert read_upgrade(data) is None


def test_a_head_longer_than_h11_allows_is_left_to_wsproto() -> None:
    data = head(*BASIC, b"X-Big: " + b"a" * 17000)
    assert read_upgrade(data) is None


def mutate(data: bytes, rng: random.Random) -> bytes:
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        where = rng.randrange(len(buffer))
        action = rng.random()
        if action < 0.4:
            buffer[where] = rng.choice(b" \t\r\n:,;\x00\x7f\xffGgAa1-=")
        elif action < 0.7:
            del buffer[where]
        else:
            buffer.insert(where, rng.choice(b" \t\r\n:,\x80Hh"))
    return bytes(buffer)


def test_never_a_second_opinion_on_mutated_requests() -> None:
    # Whatever the short way accepts, wsproto accepts the same way; what it
    # is unsure of, it leaves (wsproto may accept more, never less).
    rng = random.Random(6455)
    accepted = 0
    for _ in range(4000):
        data = mutate(rng.choice(VALID), rng)
        mine = read_upgrade(data)
        if mine is None:
            continue
        accepted += 1
        expected = wsproto_request(data)
        assert expected is not None, data
        assert mine == expected[1], data
        assert accept_response(mine, None) == expected[0].send(AcceptConnection()), data
    assert accepted > 200  # the mutations do exercise the short way


def test_common_header_lines_are_shared_between_connections() -> None:
    # They live as long as each connection (its handshake_headers): one
    # copy for all connections, not one each.
    first, second = read_upgrade(VALID[0]), read_upgrade(VALID[1])
    assert first is not None and second is not None
    first_lines = {line[0]: line for line in first.extra_headers}
    second_lines = {line[0]: line for line in second.extra_headers}
    for name in (b"upgrade", b"connection", b"sec-websocket-version"):
        assert first_lines[name] is second_lines[name]
    # A value of this connection's own stays its own, under a shared name.
    first_key, second_key = first_lines[b"sec-websocket-key"], second_lines[b"sec-websocket-key"]
    assert first_key[0] is second_key[0]
    assert first_key == second_key and first_key is not second_key
