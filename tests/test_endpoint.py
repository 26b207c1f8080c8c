"""``Endpoint`` values, and how the endpoints of a trio stream are found."""

from __future__ import annotations

import copy
import pickle
import ssl

import pytest
import trio
import trio.testing
import trustme
from conftest import open_pair

from trio_websocket import Endpoint
from trio_websocket._core.endpoint import stream_endpoint


@pytest.mark.parametrize(
    ("address", "port", "is_ssl", "url"),
    [
        ("127.0.0.1", 8000, False, "ws://127.0.0.1:8000"),
        ("127.0.0.1", 80, False, "ws://127.0.0.1"),
        ("example.com", 443, True, "wss://example.com"),
        ("example.com", 8443, True, "wss://example.com:8443"),
        # Only the scheme's own default port is left out.
        ("example.com", 443, False, "ws://example.com:443"),
        ("example.com", 80, True, "wss://example.com:80"),
        ("::1", 8000, False, "ws://[::1]:8000"),
        ("::1", 443, True, "wss://[::1]"),
        ("2001:db8::7", 80, False, "ws://[2001:db8::7]"),
    ],
)
def test_url(address: str, port: int, is_ssl: bool, url: str) -> None:
    assert Endpoint(address, port, is_ssl).url == url


def test_repr_is_exact() -> None:
    assert repr(Endpoint("::1", 8000, False)) == 'Endpoint(address="::1", port=8000, is_ssl=False)'
    assert (
        repr(Endpoint("127.0.0.1", 443, True))
        == 'Endpoint(address="127.0.0.1", port=443, is_ssl=True)'
    )


def test_attributes() -> None:
    endpoint = Endpoint("10.0.0.1", 1234, True)
    assert (endpoint.address, endpoint.port, endpoint.is_ssl) == ("10.0.0.1", 1234, True)


def test_equal_endpoints_are_equal_and_hash_alike() -> None:
    a = Endpoint("127.0.0.1", 8000, False)
    b = Endpoint("127.0.0.1", 8000, False)
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1


@pytest.mark.parametrize(
    "other",
    [
        Endpoint("127.0.0.2", 8000, False),
        Endpoint("127.0.0.1", 8001, False),
        Endpoint("127.0.0.1", 8000, True),
    ],
)
def test_endpoints_differing_in_any_field_are_unequal(other: Endpoint) -> None:
    assert Endpoint("127.0.0.1", 8000, False) != other


def test_endpoint_is_not_equal_to_other_types() -> None:
    endpoint = Endpoint("127.0.0.1", 8000, False)
    assert endpoint != ("127.0.0.1", 8000, False)
    assert endpoint != "ws://127.0.0.1:8000"


async def tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream, trio.SocketListener]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = listeners[0]
    assert isinstance(listener, trio.SocketListener)
    port = listener.socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listener.accept()
    return client, server, listener


async def test_tcp_stream_endpoints_are_the_socket_addresses() -> None:
    client, server, listener = await tcp_pair()
    try:
        server_port = listener.socket.getsockname()[1]
        client_port = client.socket.getsockname()[1]
        client_end = Endpoint("127.0.0.1", client_port, False)
        server_end = Endpoint("127.0.0.1", server_port, False)
        assert stream_endpoint(client, local=True) == client_end
        assert stream_endpoint(client, local=False) == server_end
        assert stream_endpoint(server, local=True) == server_end
        assert stream_endpoint(server, local=False) == client_end
        assert stream_endpoint(client, local=False).url == f"ws://127.0.0.1:{server_port}"  # type: ignore[union-attr]
    finally:
        await client.aclose()
        await server.aclose()
        await listener.aclose()


async def test_ssl_stream_over_tcp_is_marked_ssl() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    client_tcp, server_tcp, listener = await tcp_pair()
    client = trio.SSLStream(client_tcp, client_context, server_hostname="127.0.0.1")
    server = trio.SSLStream(server_tcp, server_context, server_side=True)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.do_handshake)
            nursery.start_soon(server.do_handshake)
        server_port = listener.socket.getsockname()[1]
        client_port = client_tcp.socket.getsockname()[1]
        assert stream_endpoint(client, local=True) == Endpoint("127.0.0.1", client_port, True)
        assert stream_endpoint(client, local=False) == Endpoint("127.0.0.1", server_port, True)
        assert stream_endpoint(server, local=True) == Endpoint("127.0.0.1", server_port, True)
        assert stream_endpoint(server, local=False) == Endpoint("127.0.0.1", client_port, True)
        assert stream_endpoint(client, local=False).url == f"wss://127.0.0.1:{server_port}"  # type: ignore[union-attr]
    finally:
        await trio.aclose_forcefully(client)
        await trio.aclose_forcefully(server)
        await listener.aclose()


async def test_closed_tcp_stream_is_described_by_its_str() -> None:
    client, server, listener = await tcp_pair()
    await client.aclose()
    await server.aclose()
    await listener.aclose()
    # The socket is gone: no address can be read, and that is no error.
    assert stream_endpoint(client, local=True) == str(client)
    assert stream_endpoint(client, local=False) == str(client)


def test_memory_stream_is_described_by_its_str() -> None:
    client, server = trio.testing.memory_stream_pair()
    assert stream_endpoint(client, local=True) == str(client)
    assert stream_endpoint(client, local=False) == str(client)
    assert stream_endpoint(server, local=True) == str(server)


async def test_connection_over_memory_streams_reports_str_endpoints() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        client, server = await open_pair(nursery, client_stream, server_stream)
        assert client.local == str(client_stream)
        assert client.remote == str(client_stream)
        assert server.local == str(server_stream)
        await client.aclose()
        await server.aclose()


def test_copy_and_pickle_keep_the_endpoint() -> None:
    endpoint = Endpoint("::1", 8000, True)
    assert copy.copy(endpoint) == endpoint
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        clone = pickle.loads(pickle.dumps(endpoint, protocol=protocol))
        assert clone == endpoint
        assert repr(clone) == repr(endpoint)


@pytest.mark.parametrize("protocol", [0, 1])
def test_endpoint_pickles_with_legacy_protocols(protocol: int) -> None:
    endpoint = Endpoint("::1", 8000, True)
    assert pickle.loads(pickle.dumps(endpoint, protocol=protocol)) == endpoint


def test_host_port_is_the_text_logs_and_the_cli_show() -> None:
    assert Endpoint("127.0.0.1", 8000, False).host_port == "127.0.0.1:8000"
    assert Endpoint("::1", 443, True).host_port == "[::1]:443"  # the port is always shown
