"""``_wire.tls_stream``: a TLS stream that hands over every record already
received in one ``receive_some`` behaves as ``trio.SSLStream`` does in
everything else: the same bytes in the same order, the same end of data,
the same errors at the same record. Each scenario runs on both streams
and compares them; the TLS peer is a plain ``trio.SSLStream`` whose
encrypted bytes a test can hold back, split or corrupt before they reach
the stream under test.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
import trustme

from trio_websocket._wire import fast_paths
from trio_websocket._wire.tls_stream import tls_stream

CA = trustme.CA()
CERT = CA.issue_cert("example.org")
RECORD = 16384  # the most plaintext one TLS record carries


def server_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    CERT.configure_cert(context)
    return context


def client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    CA.configure_trust(context)
    return context


class Tap(trio.abc.Stream):
    """The peer's transport: while ``holding``, what it sends is kept, to
    be delivered in one piece (changed by ``change`` first) or in pieces
    of ``split`` bytes."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.holding = False
        self.held = bytearray()
        self.close_after_release = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.holding:
            self.held += data
        else:
            await self.inner.send_all(data)

    async def release(
        self, change: Callable[[bytearray], None] | None = None, split: int | None = None
    ) -> None:
        held, self.held, self.holding = self.held, bytearray(), False
        if change is not None:
            change(held)
        if split is None:
            await self.inner.send_all(bytes(held))
        else:
            for start in range(0, len(held), split):
                await self.inner.send_all(bytes(held[start : start + split]))
                await trio.lowlevel.checkpoint()
        if self.close_after_release:
            await self.inner.aclose()

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        if self.holding:
            self.close_after_release = True  # (after what is held)
            await trio.lowlevel.checkpoint()
            return
        await self.inner.aclose()


Maker = Callable[..., trio.SSLStream[Any]]
MAKERS: dict[str, Maker] = {"read-ahead": tls_stream, "trio": trio.SSLStream}


async def connected(
    make: Maker, **kwargs: Any
) -> tuple[trio.SSLStream[Any], Tap, trio.SSLStream[Any]]:
    """The stream under test (the server's end, made by ``make``), the
    peer's transport tap, and the peer, past the handshake."""
    peer_raw, ours_raw = trio.testing.memory_stream_pair()
    tap = Tap(peer_raw)
    ours = make(ours_raw, server_context(), server_side=True, **kwargs)
    peer = trio.SSLStream(tap, client_context(), server_hostname="example.org")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ours.do_handshake)
        nursery.start_soon(peer.do_handshake)
    return ours, tap, peer


async def read_all(stream: trio.SSLStream[Any], max_bytes: int, total: int) -> list[int]:
    """Read until ``total`` bytes came; the size of each read."""
    sizes: list[int] = []
    got = 0
    for _ in range(10_000):
        if got >= total:
            break
        data = await stream.receive_some(max_bytes)
        assert data, "the data ended early"
        sizes.append(len(data))
        got += len(data)
    return sizes


def records_of(raw: bytes | bytearray) -> list[tuple[int, int]]:
    """(start, length) of each TLS record in ``raw``."""
    found = []
    position = 0
    while position + 5 <= len(raw):
        length = int.from_bytes(raw[position + 3 : position + 5], "big")
        found.append((position, 5 + length))
        position += 5 + length
    return found


def test_the_read_ahead_is_active_with_the_pinned_trio() -> None:
    # If a trio upgrade moves SSLStream's private attributes, the streams
    # stay correct (plain SSLStream) but lose the read-ahead: this says so.
    raw, _ = trio.testing.memory_stream_pair()
    stream = tls_stream(raw, server_context(), server_side=True)
    assert type(stream) is trio.SSLStream
    assert ("receive_some" in vars(stream)) is fast_paths.ENABLED


@pytest.mark.skipif(not fast_paths.ENABLED, reason="the read-ahead is a fast path")
async def test_records_already_received_come_in_one_read() -> None:
    with trio.fail_after(10):
        ours, tap, peer = await connected(tls_stream)
        message = bytes(range(256)) * 1024  # 256 KiB: sixteen records
        tap.holding = True
        await peer.send_all(message)
        await tap.release()
        data = await ours.receive_some(1 << 20)
        assert data == message
        # Bounded by max_bytes, the rest in the next read.
        await peer.send_all(message)
        first = await ours.receive_some(3 * RECORD + 100)
        assert len(first) == 3 * RECORD + 100
        rest = await ours.receive_some(1 << 20)
        assert first + rest == message  # (all of it was received already)


@pytest.mark.parametrize(
    ("split", "max_bytes"),
    [
        (split, max_bytes)
        for split in (None, 3, 1000, 16_389, 40_000)
        for max_bytes in (1000, 65536, 1 << 20)
    ]
    + [(None, 1), (7, 1)],
)
async def test_the_same_bytes_arrive_in_order_however_they_are_cut(
    split: int | None, max_bytes: int
) -> None:
    size = 100_000 if max_bytes > 1 and (split or 100) > 10 else 20_000
    message = bytes(index % 251 for index in range(size))
    for name, make in MAKERS.items():
        with trio.fail_after(20):
            ours, tap, peer = await connected(make)
            tap.holding = True
            await peer.send_all(message[: size // 3])
            await peer.send_all(message[size // 3 :])
            async with trio.open_nursery() as nursery:
                nursery.start_soon(tap.release, None, split)
                received = bytearray()
                for _ in range(200_000):
                    if len(received) >= len(message):
                        break
                    data = await ours.receive_some(max_bytes)
                    assert data and len(data) <= max_bytes, name
                    received += data
            assert received == message, name


@pytest.mark.parametrize("https_compatible", [False, True])
async def test_the_end_of_the_data_after_records_in_the_same_read(
    https_compatible: bool,
) -> None:
    for name, make in MAKERS.items():
        with trio.fail_after(10):
            ours, tap, peer = await connected(make, https_compatible=https_compatible)
            tap.holding = True
            await peer.send_all(b"x" * 40_000)
            await peer.aclose()  # close_notify, then the transport ends
            await tap.release()
            assert sum(await read_all(ours, 1 << 20, 40_000)) == 40_000, name
            assert await ours.receive_some(1 << 20) == b"", name
            assert await ours.receive_some(1 << 20) == b"", name


@pytest.mark.parametrize("https_compatible", [False, True])
async def test_a_transport_cut_mid_record_ends_as_trio_ends_it(https_compatible: bool) -> None:
    outcomes = {}
    for name, make in MAKERS.items():
        with trio.fail_after(10):
            ours, tap, peer = await connected(make, https_compatible=https_compatible)
            tap.holding = True
            await peer.send_all(b"y" * (2 * RECORD))

            def cut_last_record(raw: bytearray) -> None:
                start, length = records_of(raw)[-1]
                del raw[start + length // 2 :]

            await tap.release(cut_last_record)
            await tap.inner.aclose()
            assert sum(await read_all(ours, 1 << 20, RECORD)) == RECORD, name
            try:
                outcomes[name] = await ours.receive_some(1 << 20)
            except trio.BrokenResourceError as exc:
                outcomes[name] = type(exc.__cause__)
    # The end of the transport inside a record: the end of the data for an
    # https_compatible stream, else an error (SSLEOFError).
    assert outcomes == dict.fromkeys(MAKERS, b"" if https_compatible else ssl.SSLEOFError)


async def test_a_corrupt_record_fails_after_the_records_before_it() -> None:
    outcomes = {}
    for name, make in MAKERS.items():
        with trio.fail_after(10):
            ours, tap, peer = await connected(make)
            tap.holding = True
            for index in range(3):
                await peer.send_all(bytes([index]) * RECORD)

            def corrupt_second_record(raw: bytearray) -> None:
                start, length = records_of(raw)[1]
                raw[start + length // 2] ^= 0xFF

            await tap.release(corrupt_second_record)
            received = await ours.receive_some(1 << 20)
            assert received == b"\x00" * RECORD, name
            with pytest.raises(trio.BrokenResourceError) as broken:
                await ours.receive_some(1 << 20)
            outcomes[name] = type(broken.value.__cause__)
            # Broken for good, as trio leaves it.
            with pytest.raises(trio.BrokenResourceError):
                await ours.receive_some(1 << 20)
            with pytest.raises(trio.BrokenResourceError):
                await ours.send_all(b"no")
    assert outcomes["read-ahead"] is outcomes["trio"]
    assert issubclass(outcomes["trio"], ssl.SSLError)


async def test_sending_and_closing_are_trios() -> None:
    with trio.fail_after(10):
        ours, _, peer = await connected(tls_stream)
        await ours.send_all(b"hello")
        assert await peer.receive_some(100) == b"hello"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ours.aclose)
            assert await peer.receive_some(100) == b""
            await peer.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await ours.receive_some(100)
