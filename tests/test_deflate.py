"""permessage-deflate on live connections over memory streams, both sides:
negotiation in the handshake, compressed frames on the wire, the per-message
opt-out and threshold, context takeover, bounded inflating (zip bombs),
protocol errors, and failed handshakes."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import struct
import tracemalloc
import zlib

import pytest
import trio
import trio.testing
from conftest import open_pair

from trio_websocket import (
    ConnectionClosed,
    DeflateConfig,
    DeflateParameters,
    HandshakeError,
    WebSocketConnection,
    connect_websocket_url,
    open_websocket,
    open_websocket_url,
    serve_websocket,
    wrap_client_stream,
    wrap_server_stream,
)

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CONTINUATION, CLOSE, PING = 0x1, 0x2, 0x0, 0x8, 0x9
RSV1 = 0x40


def deflate(data: bytes, *, wbits: int = 15, finish: bool = False) -> bytes:
    """``data`` compressed as one permessage-deflate message."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -wbits)
    if finish:
        return compressor.compress(data) + compressor.flush(zlib.Z_FINISH)
    payload = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert payload.endswith(b"\x00\x00\xff\xff")
    return payload[:-4]


def frame(
    opcode: int, payload: bytes, *, rsv1: bool = False, fin: bool = True, mask: bool
) -> bytes:
    first = (0x80 if fin else 0) | (RSV1 if rsv1 else 0) | opcode
    size = len(payload)
    mask_bit = 0x80 if mask else 0
    if size < 126:
        header = bytes([first, mask_bit | size])
    elif size < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, size)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, size)
    if not mask:
        return header + payload
    key = os.urandom(4)
    masked = (
        bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if size < 4096 else _mask(payload, key)
    )
    return header + key + masked


def _mask(payload: bytes, key: bytes) -> bytes:
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(payload), "big"
    )


class RawPeer:
    """One end of a memory stream driven by hand: raw HTTP, raw frames."""

    def __init__(self, stream: trio.abc.Stream, *, is_client: bool) -> None:
        self.stream = stream
        self.is_client = is_client
        self.buffer = b""

    async def _fill(self) -> None:
        data = await self.stream.receive_some()
        if not data:
            raise EOFError
        self.buffer += data

    async def read_head(self) -> bytes:
        for _ in range(1000):
            if b"\r\n\r\n" in self.buffer:
                head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
                return head
            await self._fill()
        raise AssertionError("no HTTP head")

    async def accept(self, extensions: bytes | None) -> bytes:
        """Read a client's request and answer 101 with ``extensions`` as
        the Sec-WebSocket-Extensions value; return the request head."""
        head = await self.read_head()
        key = header_value(head, b"sec-websocket-key")
        assert key is not None
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        response = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n"
        )
        if extensions is not None:
            response += b"Sec-WebSocket-Extensions: " + extensions + b"\r\n"
        await self.stream.send_all(response + b"\r\n")
        return head

    async def request(self, extensions: bytes | None) -> bytes:
        """Send an opening request offering ``extensions``; return the
        response head."""
        request = (
            b"GET / HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n"
        )
        if extensions is not None:
            request += b"Sec-WebSocket-Extensions: " + extensions + b"\r\n"
        await self.stream.send_all(request + b"\r\n")
        return await self.read_head()

    async def send(
        self, opcode: int, payload: bytes, *, rsv1: bool = False, fin: bool = True
    ) -> None:
        await self.stream.send_all(frame(opcode, payload, rsv1=rsv1, fin=fin, mask=self.is_client))

    async def read_frame(self) -> tuple[int, bool, bool, bytes]:
        """(opcode, rsv1, fin, unmasked payload) of the next frame."""
        while len(self.buffer) < 2:
            await self._fill()
        first, second = self.buffer[0], self.buffer[1]
        size = second & 0x7F
        offset = 2
        if size == 126:
            while len(self.buffer) < 4:
                await self._fill()
            size = struct.unpack("!H", self.buffer[2:4])[0]
            offset = 4
        elif size == 127:
            while len(self.buffer) < 10:
                await self._fill()
            size = struct.unpack("!Q", self.buffer[2:10])[0]
            offset = 10
        masked = bool(second & 0x80)
        assert masked == (not self.is_client), "clients mask, servers do not"
        total = offset + (4 if masked else 0) + size
        while len(self.buffer) < total:
            await self._fill()
        payload = self.buffer[offset + (4 if masked else 0) : total]
        if masked:
            payload = _mask(payload, self.buffer[offset : offset + 4])
        self.buffer = self.buffer[total:]
        return first & 0x0F, bool(first & RSV1), bool(first & 0x80), payload

    async def read_close_code(self) -> int:
        for _ in range(100):
            opcode, _, _, payload = await self.read_frame()
            if opcode == CLOSE:
                return int(struct.unpack("!H", payload[:2])[0])
        raise AssertionError("no close frame")


def header_value(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


async def client_with_raw_server(
    nursery: trio.Nursery, extensions: bytes | None, config: object = "deflate", **options: object
) -> tuple[WebSocketConnection, RawPeer, bytes]:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(server_stream, is_client=False)
    heads: list[bytes] = []

    async def serve() -> None:
        heads.append(await peer.accept(extensions))

    nursery.start_soon(serve)
    ws = await wrap_client_stream(
        nursery,
        client_stream,
        "example.com",
        "/",
        compression=config,
        **options,  # type: ignore[arg-type]
    )
    return ws, peer, heads[0]


async def server_with_raw_client(
    nursery: trio.Nursery, offer: bytes | None, config: object = "deflate", **options: object
) -> tuple[WebSocketConnection, RawPeer, bytes]:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(client_stream, is_client=True)
    results: list[WebSocketConnection] = []
    accepted = trio.Event()

    async def serve() -> None:
        request = await wrap_server_stream(nursery, server_stream, compression=config, **options)  # type: ignore[arg-type]
        results.append(await request.accept())
        accepted.set()

    nursery.start_soon(serve)
    head = await peer.request(offer)
    await accepted.wait()
    return results[0], peer, head


async def deflate_pair(
    nursery: trio.Nursery,
    client: object = "deflate",
    server: object = "deflate",
    **options: object,
) -> tuple[WebSocketConnection, WebSocketConnection]:
    return await open_pair(
        nursery,
        client_options={"compression": client, **options},
        server_options={"compression": server, **options},
    )


# -- negotiation over a real handshake -------------------------------------


async def test_both_sides_agree_and_report_the_same_parameters(nursery: trio.Nursery) -> None:
    client, server = await deflate_pair(nursery)
    expected = DeflateParameters(client_max_window_bits=12, server_max_window_bits=12)
    assert client.compression == expected
    assert server.compression == expected


@pytest.mark.parametrize(("client", "server"), [(None, "deflate"), ("deflate", None), (None, None)])
async def test_no_compression_unless_both_sides_want_it(
    nursery: trio.Nursery, client: object, server: object
) -> None:
    ws_client, ws_server = await deflate_pair(nursery, client, server)
    assert ws_client.compression is None and ws_server.compression is None
    await ws_client.send_message("x" * 1000)
    assert await ws_server.get_message() == "x" * 1000


async def test_default_client_offer_and_server_response_on_the_wire(nursery: trio.Nursery) -> None:
    ws, _peer, head = await client_with_raw_server(nursery, b"permessage-deflate")
    assert (
        header_value(head, b"sec-websocket-extensions")
        == b"permessage-deflate; client_max_window_bits"
    )
    assert ws.compression == DeflateParameters()
    _, _peer2, response = await server_with_raw_client(
        nursery, b"permessage-deflate; client_max_window_bits"
    )
    assert (
        header_value(response, b"sec-websocket-extensions")
        == b"permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
    )


async def test_without_compression_the_request_offers_nothing(nursery: trio.Nursery) -> None:
    ws, _peer, head = await client_with_raw_server(nursery, None, None)
    assert header_value(head, b"sec-websocket-extensions") is None
    assert ws.compression is None


async def test_server_falls_back_to_the_next_acceptable_offer(nursery: trio.Nursery) -> None:
    ws, _peer, response = await server_with_raw_client(
        nursery,
        b"permessage-deflate; foo=1, permessage-deflate; server_max_window_bits=10,"
        b" permessage-deflate",
    )
    assert (
        header_value(response, b"sec-websocket-extensions")
        == b"permessage-deflate; server_max_window_bits=10"
    )
    assert ws.compression is not None and ws.compression.server_max_window_bits == 10


async def test_server_that_declines_every_offer_answers_without_extensions(
    nursery: trio.Nursery,
) -> None:
    ws, peer, response = await server_with_raw_client(
        nursery, b"permessage-deflate; server_max_window_bits=20, x-unknown-extension"
    )
    assert header_value(response, b"sec-websocket-extensions") is None
    assert ws.compression is None
    # And it still works, uncompressed.
    await ws.send_message("hello " * 100)
    opcode, rsv1, _, payload = await peer.read_frame()
    assert (opcode, rsv1, payload) == (TEXT, False, b"hello " * 100)


@pytest.mark.parametrize(
    "response",
    [
        b"permessage-deflate; foo",
        b"permessage-deflate; client_max_window_bits",
        b"permessage-deflate; server_max_window_bits=7",
        b"permessage-deflate, permessage-deflate",
        b"x-webkit-deflate-frame",
    ],
)
async def test_client_fails_the_handshake_on_a_bad_response(
    nursery: trio.Nursery, response: bytes
) -> None:
    with pytest.raises(HandshakeError):
        await client_with_raw_server(nursery, response)


async def test_client_fails_when_the_server_ignores_its_requirements(nursery: trio.Nursery) -> None:
    config = DeflateConfig(server_no_context_takeover=True, server_max_window_bits=10)
    with pytest.raises(HandshakeError, match="server_no_context_takeover"):
        await client_with_raw_server(
            nursery, b"permessage-deflate; server_max_window_bits=10", config
        )
    with pytest.raises(HandshakeError, match="server_max_window_bits"):
        await client_with_raw_server(
            nursery, b"permessage-deflate; server_no_context_takeover", config
        )


async def test_bad_compression_argument_fails_before_connecting(nursery: trio.Nursery) -> None:
    client_stream, _ = trio.testing.memory_stream_pair()
    with pytest.raises(ValueError):
        await wrap_client_stream(nursery, client_stream, "h", "/", compression="gzip")
    with pytest.raises(TypeError):
        await wrap_server_stream(nursery, client_stream, compression=1)  # type: ignore[arg-type]


# -- messages ---------------------------------------------------------------


async def test_messages_round_trip_both_ways(nursery: trio.Nursery) -> None:
    client, server = await deflate_pair(nursery, max_message_size=4 * 2**20)
    messages: list[str | bytes] = [
        "héllo wörld " * 50,
        b"\x00\x01binary" * 300,
        "",
        b"",
        "short",
        os.urandom(3000),  # incompressible
        "x" * (2 * 2**20),  # bigger than one read
    ]
    for sender, receiver in ((client, server), (server, client)):
        for message in messages:
            await sender.send_message(message, compress=True)
            assert await receiver.get_message() == message


async def test_compressed_frames_have_rsv1_and_inflate_to_the_message(
    nursery: trio.Nursery,
) -> None:
    ws, peer, _ = await client_with_raw_server(nursery, b"permessage-deflate")
    message = '{"event": "tick", "value": 1}' * 20
    await ws.send_message(message)
    opcode, rsv1, fin, payload = await peer.read_frame()
    assert (opcode, rsv1, fin) == (TEXT, True, True)
    assert len(payload) < len(message) // 5
    inflater = zlib.decompressobj(-15)
    assert inflater.decompress(payload + b"\x00\x00\xff\xff") == message.encode()


async def test_context_takeover_makes_a_repeated_message_tiny(nursery: trio.Nursery) -> None:
    ws, peer, _ = await server_with_raw_client(nursery, b"permessage-deflate")
    message = os.urandom(1000)  # incompressible alone, but repeated
    inflater = zlib.decompressobj(-15)
    sizes = []
    for _ in range(2):
        await ws.send_message(message, compress=True)
        _, rsv1, _, payload = await peer.read_frame()
        assert rsv1
        sizes.append(len(payload))
        assert inflater.decompress(payload + b"\x00\x00\xff\xff") == message
    assert sizes[0] > 1000 and sizes[1] < 50


async def test_no_context_takeover_makes_every_message_stand_alone(nursery: trio.Nursery) -> None:
    ws, peer, _response = await server_with_raw_client(
        nursery, b"permessage-deflate; server_no_context_takeover"
    )
    assert ws.compression is not None and ws.compression.server_no_context_takeover
    message = b"abcdefgh" * 100
    for _ in range(3):
        await ws.send_message(message)
        _, rsv1, _, payload = await peer.read_frame()
        # A fresh inflater each time: no message refers to an earlier one.
        assert rsv1 and zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff") == message
    assert ws._deflate is not None and ws._deflate._compressor is None  # nothing kept between


async def test_client_no_context_takeover_is_kept_by_our_client(nursery: trio.Nursery) -> None:
    ws, peer, _head = await client_with_raw_server(
        nursery, b"permessage-deflate; client_no_context_takeover"
    )
    assert ws.compression is not None and ws.compression.client_no_context_takeover
    for _ in range(2):
        await ws.send_message("same text " * 30)
        _, _rsv1, _, payload = await peer.read_frame()
        assert (
            zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff") == b"same text " * 30
        )


async def test_per_message_opt_out_and_threshold(nursery: trio.Nursery) -> None:
    ws, peer, _ = await client_with_raw_server(
        nursery, b"permessage-deflate", DeflateConfig(threshold=64)
    )
    await ws.send_message(b"z" * 1000, compress=False)
    assert await peer.read_frame() == (BINARY, False, True, b"z" * 1000)
    await ws.send_message("short")  # under the threshold
    assert await peer.read_frame() == (TEXT, False, True, b"short")
    await ws.send_message("short", compress=True)
    opcode, rsv1, _, _payload = await peer.read_frame()
    assert (opcode, rsv1) == (TEXT, True)
    await ws.send_message("y" * 64)  # at the threshold
    assert (await peer.read_frame())[1] is True
    with pytest.raises(TypeError):
        await ws.send_message("x", compress="no")  # type: ignore[arg-type]


async def test_our_side_sends_uncompressed_when_held_to_an_8_bit_window(
    nursery: trio.Nursery,
) -> None:
    # zlib cannot compress with a 256-byte window; the RFC lets us send
    # uncompressed messages instead, and we still inflate the client's.
    ws, peer, response = await server_with_raw_client(
        nursery, b"permessage-deflate; server_max_window_bits=8"
    )
    assert (
        header_value(response, b"sec-websocket-extensions")
        == b"permessage-deflate; server_max_window_bits=8"
    )
    assert ws.compression is not None and ws.compression.server_max_window_bits == 8
    await peer.send(TEXT, deflate(b"hi there " * 40), rsv1=True)
    assert await ws.get_message() == "hi there " * 40
    await ws.send_message("hi there " * 40, compress=True)
    assert await peer.read_frame() == (TEXT, False, True, b"hi there " * 40)


async def test_fragmented_compressed_message_with_a_ping_between(nursery: trio.Nursery) -> None:
    ws, peer, _ = await server_with_raw_client(nursery, b"permessage-deflate")
    message = ("fragmented message " * 200).encode()
    payload = deflate(message)
    thirds = [
        payload[: len(payload) // 3],
        payload[len(payload) // 3 : 2 * len(payload) // 3],
        payload[2 * len(payload) // 3 :],
    ]
    await peer.send(TEXT, thirds[0], rsv1=True, fin=False)
    await peer.send(PING, b"p")
    await peer.send(CONTINUATION, thirds[1], fin=False)
    await peer.send(CONTINUATION, thirds[2])
    assert await ws.get_message() == message.decode()
    assert await peer.read_frame() == (0xA, False, True, b"p")


async def test_uncompressed_and_finished_streams_from_the_peer_are_accepted(
    nursery: trio.Nursery,
) -> None:
    ws, peer, _ = await client_with_raw_server(nursery, b"permessage-deflate")
    await peer.send(BINARY, b"plain")
    await peer.send(BINARY, deflate(b"final block " * 10, finish=True), rsv1=True)
    await peer.send(BINARY, deflate(b"after a fresh start " * 10), rsv1=True)
    assert await ws.get_message() == b"plain"
    assert await ws.get_message() == b"final block " * 10
    assert await ws.get_message() == b"after a fresh start " * 10


async def test_concurrent_senders_keep_the_shared_window_consistent(nursery: trio.Nursery) -> None:
    client, server = await deflate_pair(nursery, message_queue_size=1000)

    async def send_many(tag: str) -> None:
        for index in range(50):
            await client.send_message(f"{tag}-{index} " * 20)

    async with trio.open_nursery() as senders:
        for tag in "abcd":
            senders.start_soon(send_many, tag)
    received = [await server.get_message() for _ in range(200)]
    assert sorted(received) == sorted(f"{t}-{i} " * 20 for t in "abcd" for i in range(50))


async def test_counters_report_bytes_before_and_after(nursery: trio.Nursery) -> None:
    client, server = await deflate_pair(nursery)
    await client.send_message("counted " * 100)
    await server.get_message()
    await client.send_message("tiny")  # under the threshold: not counted
    await server.get_message()
    sent, received = client._deflate, server._deflate
    assert sent is not None and received is not None
    assert sent.bytes_sent_uncompressed == 800 == received.bytes_received_uncompressed
    assert sent.bytes_sent_compressed == received.bytes_received_compressed < 100


async def test_a_message_that_fails_to_inflate_is_not_counted(nursery: trio.Nursery) -> None:
    """The received-bytes counters, and so ``compression_ratio``, count the
    compressed messages received whole, before and after inflating alike.
    A message that failed to inflate used to add its compressed bytes read
    so far (how many depends on the reads: found by test_fuzz_fast_paths,
    the fast paths hand wsproto larger pieces) but none of its inflated
    ones, skewing the ratio."""
    ws, peer, _ = await server_with_raw_client(nursery, b"permessage-deflate")
    good = deflate(b"counted " * 100)
    await peer.send(BINARY, good, rsv1=True)
    assert await ws.get_message() == b"counted " * 100
    await peer.send(BINARY, b"\xff\xff\xff\xff garbage", rsv1=True)
    assert await peer.read_close_code() == 1007
    assert ws.statistics().compression_ratio == pytest.approx(800 / len(good))


# -- bad input from the peer ------------------------------------------------


def zip_bomb(inflated_size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = b"\x00" * 2**20
    parts = [compressor.compress(chunk) for _ in range(inflated_size // len(chunk))]
    parts.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    return b"".join(parts)[:-4]


@pytest.mark.parametrize("server_side", [True, False])
async def test_zip_bomb_closes_with_1009_without_inflating_it(
    nursery: trio.Nursery, server_side: bool
) -> None:
    bomb = zip_bomb(256 * 2**20)  # 256 MiB of zeros in about 250 KiB
    assert len(bomb) < 2**20
    if server_side:
        ws, peer, _ = await server_with_raw_client(nursery, b"permessage-deflate")
    else:
        ws, peer, _ = await client_with_raw_server(nursery, b"permessage-deflate")
    tracemalloc.start()
    try:
        await peer.send(BINARY, bomb, rsv1=True)
        assert await peer.read_close_code() == 1009
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20  # max_message_size is 1 MiB; the bomb is 256
    with pytest.raises(ConnectionClosed) as caught:
        await ws.get_message()
    assert caught.value.reason.code == 1009
    assert "1048576" in (caught.value.reason.reason or "")


async def test_fragmented_bomb_is_bounded_across_frames(nursery: trio.Nursery) -> None:
    _ws, peer, _ = await server_with_raw_client(
        nursery, b"permessage-deflate", max_message_size=1000
    )
    payload = deflate(b"a" * 3000)
    await peer.send(TEXT, payload[:5], rsv1=True, fin=False)
    await peer.send(CONTINUATION, payload[5:])
    assert await peer.read_close_code() == 1009


async def test_a_compressed_frame_that_inflates_too_big_is_refused_before_it_ends(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A compressed frame is inflated as its bytes arrive (as text is
    validated), so one whose first bytes inflate past max_message_size is
    refused with 1009 at once, not once the whole frame has come. The fast
    decoder used to hold a compressed binary frame until whole when its
    compressed size fitted what the message could still take (as it does
    an uncompressed one): a peer that sent the start of a bomb and stalled
    was never answered (found by test_fuzz_fast_paths: with the fast paths
    off, wsproto refused it at once)."""
    _ws, peer, _ = await server_with_raw_client(
        nursery, b"permessage-deflate", max_message_size=1000
    )
    payload = deflate(b"\x00" * 100_000 + random.Random(1).randbytes(700))
    assert len(payload) < 1000
    whole = frame(BINARY, payload, rsv1=True, mask=True)
    await peer.stream.send_all(whole[:-300])  # the rest never comes
    with trio.fail_after(5):
        assert await peer.read_close_code() == 1009


async def test_message_of_exactly_the_limit_is_accepted(nursery: trio.Nursery) -> None:
    ws, peer, _ = await server_with_raw_client(
        nursery, b"permessage-deflate", max_message_size=1000
    )
    await peer.send(BINARY, deflate(b"b" * 1000), rsv1=True)
    assert await ws.get_message() == b"b" * 1000


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([(BINARY, b"\xff\xff\xff\xff garbage", True, True)], 1007),
        ([(PING, b"x", True, True)], 1002),
        (
            [(BINARY, deflate(b"abc" * 50)[:10], True, False), (CONTINUATION, b"\x00", True, True)],
            1002,
        ),
        ([(TEXT, deflate(b"\xff\xfe not utf-8"), True, True)], 1007),
        ([(BINARY, deflate(b"x", finish=True) + b"trailing", True, True)], 1007),
    ],
    ids=["corrupt", "rsv1-on-ping", "rsv1-on-continuation", "bad-utf8", "data-after-final-block"],
)
async def test_bad_compressed_frames_close_with_the_right_code(
    nursery: trio.Nursery, frames: list[tuple[int, bytes, bool, bool]], code: int
) -> None:
    ws, peer, _ = await server_with_raw_client(nursery, b"permessage-deflate")
    for opcode, payload, rsv1, fin in frames:
        await peer.send(opcode, payload, rsv1=rsv1, fin=fin)
    assert await peer.read_close_code() == code
    with pytest.raises(ConnectionClosed):
        await ws.get_message()


async def test_rsv1_without_negotiation_is_a_protocol_error(nursery: trio.Nursery) -> None:
    ws, peer, _ = await server_with_raw_client(nursery, b"permessage-deflate", None)
    assert ws.compression is None
    await peer.send(TEXT, deflate(b"hello"), rsv1=True)
    assert await peer.read_close_code() == 1002


# -- over TCP, through the entry points ------------------------------------


async def test_serve_and_open_websocket_negotiate_deflate_over_tcp(nursery: trio.Nursery) -> None:
    async def handler(request: object) -> None:
        ws = await request.accept()  # type: ignore[attr-defined]
        assert ws.compression is not None
        try:
            await ws.send_message(await ws.get_message())
        except ConnectionClosed:
            pass  # the last client closes without sending

    server = await nursery.start(
        lambda task_status: serve_websocket(
            handler, "127.0.0.1", 0, None, compression="deflate", task_status=task_status
        )
    )
    config = DeflateConfig(client_no_context_takeover=True, server_max_window_bits=10)
    async with open_websocket(
        "127.0.0.1", server.port, "/", use_ssl=False, compression=config
    ) as ws:
        assert ws.compression == DeflateParameters(
            client_max_window_bits=12,
            server_max_window_bits=10,
            client_no_context_takeover=True,
        )
        await ws.send_message("echo " * 100)
        assert await ws.get_message() == "echo " * 100
    url = f"ws://127.0.0.1:{server.port}/"
    async with open_websocket_url(url, compression="deflate") as ws:
        assert ws.compression is not None
        await ws.send_message(b"url " * 100)
        assert await ws.get_message() == b"url " * 100
    ws = await connect_websocket_url(nursery, url, compression="deflate")
    assert ws.compression is not None
    await ws.aclose()


# -- frames serialized by wsproto (messages sent in fragments) --------------


def test_frames_serialized_by_wsproto_are_compressed_when_the_connection_says() -> None:
    """With the fast paths off, wsproto serializes data frames: our
    extension compresses a frame only when the connection decided so for
    it (``compress_next``), as our own framing would; a message sent in
    pieces stays uncompressed, as it does on the fast path."""
    from wsproto import ConnectionType
    from wsproto.connection import Connection
    from wsproto.events import BytesMessage, TextMessage

    from trio_websocket._core.deflate import DeflateExtension

    server_side = DeflateExtension(DeflateConfig(), is_client=False, max_message_size=2**20)
    response = server_side.accept("permessage-deflate; client_max_window_bits")
    client_side = DeflateExtension(DeflateConfig(), is_client=True, max_message_size=2**20)
    client_side.finalize(f"permessage-deflate; {response}")
    server = Connection(ConnectionType.SERVER, [server_side])
    client = Connection(ConnectionType.CLIENT, [client_side])
    plain = server.send(BytesMessage(data=b"s" * 500))
    assert plain[0] == 0x80 | BINARY  # not told: uncompressed, whatever its size
    server_side.compress_next = True
    packed = server.send(TextMessage(data="part one " * 50))
    assert packed[0] == 0x80 | RSV1 | TEXT and len(packed) < 100
    assert not server_side.compress_next  # for one frame only
    first = server.send(TextMessage(data="part two " * 50, message_finished=False))
    second = server.send(TextMessage(data="!", message_finished=True))
    assert first[0] == TEXT and second[0] == 0x80 | CONTINUATION  # pieces: plain
    client.receive_data(plain + packed + first + second)
    received = [event.data for event in client.events()]  # type: ignore[attr-defined]
    assert received == [b"s" * 500, "part one " * 50, "part two " * 50, "!"]
    assert server_side.bytes_sent_uncompressed == len("part one " * 50)


# -- window limits are kept ----------------------------------------------------


async def send_twice_and_inflate(ws: WebSocketConnection, peer: RawPeer, bits: int) -> None:
    """Send the same random block twice: the second message can only refer
    back into the first, more than ``2**bits`` bytes back. An inflater
    with exactly the agreed window must read both (separate calls, so the
    first message is only in its window)."""
    block = os.urandom(2**bits + 500)
    inflater = zlib.decompressobj(-bits)
    for _ in range(2):
        await ws.send_message(block)
        _, rsv1, _, payload = await peer.read_frame()
        assert rsv1
        assert inflater.decompress(payload + b"\x00\x00\xff\xff") == block


@pytest.mark.parametrize("bits", [9, 10, 12])
async def test_our_client_compresses_within_the_window_the_server_sets(
    nursery: trio.Nursery, bits: int
) -> None:
    ws, peer, _ = await client_with_raw_server(
        nursery, f"permessage-deflate; client_max_window_bits={bits}".encode()
    )
    assert ws.compression is not None and ws.compression.client_max_window_bits == bits
    await send_twice_and_inflate(ws, peer, bits)


async def test_our_server_compresses_within_its_default_12_bit_window(
    nursery: trio.Nursery,
) -> None:
    ws, peer, _ = await server_with_raw_client(nursery, b"permessage-deflate")
    await send_twice_and_inflate(ws, peer, 12)


async def test_our_client_sends_uncompressed_when_held_to_8_bits(nursery: trio.Nursery) -> None:
    ws, peer, _ = await client_with_raw_server(
        nursery, b"permessage-deflate; client_max_window_bits=8; server_max_window_bits=9"
    )
    assert ws.compression == DeflateParameters(client_max_window_bits=8, server_max_window_bits=9)
    await ws.send_message("eight " * 50, compress=True)
    assert await peer.read_frame() == (TEXT, False, True, b"eight " * 50)
    await peer.send(TEXT, deflate(b"nine " * 50, wbits=9), rsv1=True)
    assert await ws.get_message() == "nine " * 50
