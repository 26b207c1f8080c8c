"""``_wire.tls_stream`` over a lean socket: the direct reads and writes.

A TLS stream over a ``LeanSocketStream`` encrypts and sends, and reads and
decrypts, with one schedule point per call and no lock taken unless it
waits; everything a user sees is ``trio.SSLStream``'s. Each scenario runs
over real TCP connections on 127.0.0.1, once on the stream under test and
once on a plain ``trio.SSLStream`` over the same kind of socket, and
compares them. The TLS peer is a plain ``trio.SSLStream`` over a trio
socket, whose encrypted bytes a test can hold back, cut or corrupt.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from test_tls_stream import RECORD, Tap, client_context, records_of, server_context

from trio_websocket._wire import fast_paths
from trio_websocket._wire.socket_stream import LeanSocketStream
from trio_websocket._wire.tls_stream import tls_stream

Maker = Callable[..., trio.SSLStream[Any]]
MAKERS: dict[str, Maker] = {"direct": tls_stream, "trio": trio.SSLStream}


class Connection:
    """The stream under test (the server's end), its stdlib socket, the
    peer's transport tap, and the peer."""

    def __init__(
        self, ours: trio.SSLStream[Any], sock: socket.socket, tap: Tap, peer: trio.SSLStream[Any]
    ) -> None:
        self.ours = ours
        self.sock = sock
        self.tap = tap
        self.peer = peer

    async def arrived(self, size: int) -> None:
        """Wait until ``size`` bytes wait unread in our socket."""
        for _ in range(5_000):
            try:
                if len(self.sock.recv(size, socket.MSG_PEEK)) >= size:
                    return
            except BlockingIOError:
                pass
            await trio.sleep(0.001)
        raise AssertionError(f"{size} bytes never arrived")

    async def peer_sends(self, data: bytes) -> None:
        """The peer sends ``data``, and all of it has arrived."""
        self.tap.holding = True
        await self.peer.send_all(data)
        size = len(self.tap.held)
        await self.tap.release()
        await self.arrived(size)


async def connected(make: Maker, *, small_buffers: bool = False, **kwargs: Any) -> Connection:
    """A TLS connection over TCP on 127.0.0.1, past the handshake and past
    the server's first write (which sends the session tickets that TLS 1.3
    servers hold back): the steady state, where the direct paths run."""
    with socket.socket() as listener:
        peer_sock = trio.socket.socket()
        if small_buffers:
            # (Before the connection exists: a TCP window that shrinks
            # afterwards stalls the connection on retransmission timers.)
            for each in (listener, peer_sock):
                each.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
                each.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        await peer_sock.connect(listener.getsockname())
        sock, _ = listener.accept()
    sock.setblocking(False)
    tap = Tap(trio.SocketStream(peer_sock))
    ours = make(LeanSocketStream(sock), server_context(), server_side=True, **kwargs)
    peer = trio.SSLStream(tap, client_context(), server_hostname="example.org")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ours.do_handshake)
        nursery.start_soon(peer.do_handshake)
    await ours.send_all(b"!")
    assert await peer.receive_some(10) == b"!"
    return Connection(ours, sock, tap, peer)


async def schedule_points(operation: Callable[[], Awaitable[object]]) -> int:
    """How many times the calling task yields to trio's scheduler while it
    runs ``operation``."""
    task = trio.lowlevel.current_task()

    class Steps(trio.abc.Instrument):
        count = 0

        def before_task_step(self, stepping: trio.lowlevel.Task) -> None:
            if stepping is task:
                self.count += 1

    steps = Steps()
    trio.lowlevel.add_instrument(steps)
    try:
        await operation()
    finally:
        trio.lowlevel.remove_instrument(steps)
    return steps.count


async def read_exactly(
    stream: trio.SSLStream[Any], size: int, max_bytes: int | None = 1 << 20
) -> bytes:
    received = bytearray()
    for _ in range(100_000):
        if len(received) >= size:
            break
        data = await stream.receive_some(max_bytes)
        assert data, "the data ended early"
        received += data
    return bytes(received)


# ---------------------------------------------------------------------------
# The mechanism (forced on: tests/conftest.py, fast_paths_on)


@pytest.mark.usefixtures("fast_paths_on")
async def test_the_direct_paths_are_active_with_the_pinned_trio() -> None:
    # If a trio upgrade moves SSLStream's private attributes, the streams
    # stay correct (plain SSLStream) but lose these paths: this says so.
    with trio.fail_after(10):
        connection = await connected(tls_stream)
    assert {"receive_some", "send_all"} <= set(vars(connection.ours))
    # Over any other transport: the read-ahead only.
    memory, _ = trio.testing.memory_stream_pair()
    stream = tls_stream(memory, server_context(), server_side=True)
    assert "receive_some" in vars(stream)
    assert "send_all" not in vars(stream)


async def test_with_the_fast_paths_off_it_is_a_plain_sslstream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fast_paths, "ENABLED", False)
    with trio.fail_after(10):
        connection = await connected(tls_stream)
    assert "send_all" not in vars(connection.ours)
    assert "receive_some" not in vars(connection.ours)


@pytest.mark.usefixtures("fast_paths_on")
async def test_a_write_the_socket_takes_is_one_schedule_point() -> None:
    message = bytes(range(256)) * 256  # 64 KiB: four records
    with trio.fail_after(10):
        connection = await connected(tls_stream)
        points = await schedule_points(lambda: connection.ours.send_all(message))
        assert points == 1  # (SSLStream: its lock's, then the socket's)
        assert await read_exactly(connection.peer, len(message)) == message


@pytest.mark.usefixtures("fast_paths_on")
async def test_a_read_of_what_arrived_is_one_schedule_point() -> None:
    message = bytes(range(256)) * 256
    with trio.fail_after(10):
        connection = await connected(tls_stream)
        await connection.peer_sends(message)
        received: list[bytes | bytearray] = []

        async def receive() -> None:
            received.append(await connection.ours.receive_some(1 << 20))

        assert await schedule_points(receive) == 1  # (SSLStream: two, per record)
        assert received == [message]


@pytest.mark.usefixtures("fast_paths_on")
async def test_the_rest_of_a_record_cut_short_comes_with_the_next_records() -> None:
    # A read that max_bytes cut short in mid-record leaves the rest of the
    # record decrypted in the TLS object; the next read returns it with what
    # the socket has by then, not alone (a whole call for a few bytes).
    with trio.fail_after(10):
        connection = await connected(tls_stream)
        ours = connection.ours
        await connection.peer_sends(b"a" * RECORD)
        assert await ours.receive_some(10_000) == b"a" * 10_000
        await connection.peer_sends(b"b" * RECORD)
        left = RECORD - 10_000
        assert await ours.receive_some(20_000) == b"a" * left + b"b" * (20_000 - left)
        assert await ours.receive_some(1 << 20) == b"b" * (RECORD - (20_000 - left))


@pytest.mark.usefixtures("fast_paths_on")
async def test_a_big_write_is_encrypted_a_slice_at_a_time() -> None:
    # Encrypted whole, a 1 MiB write made a ciphertext buffer of its size
    # each time, which glibc gave back and faulted in again per message.
    message = bytes(index % 251 for index in range(1 << 20)) + b"tail"
    with trio.fail_after(10):
        connection = await connected(tls_stream)
        ours = connection.ours
        encrypted: list[int] = []
        real_write = ours._ssl_object.write

        def write(data: Any) -> int:
            encrypted.append(len(data))
            return real_write(data)

        ours._ssl_object.write = write  # type: ignore[method-assign]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ours.send_all, message)
            assert await read_exactly(connection.peer, len(message)) == message
        assert encrypted == [256 * 1024] * 4 + [4]
        # A small write is one call, as before.
        encrypted.clear()
        assert await schedule_points(lambda: ours.send_all(b"small")) == 1
        assert encrypted == [5]
        assert await read_exactly(connection.peer, 5) == b"small"


# ---------------------------------------------------------------------------
# The same as trio.SSLStream (in either mode of the fast paths)


async def test_the_same_bytes_both_ways_through_full_sockets() -> None:
    # Small socket buffers: writes wait for room (holding the stream's send
    # lock) while reads wait for data, in both directions at once.
    out = bytes(index % 253 for index in range(1 << 20))
    back = bytes(index % 241 for index in range(1 << 20))

    async def ours_sends(ours: trio.SSLStream[Any]) -> None:
        for start in range(0, len(out), 100_000):
            await ours.send_all(out[start : start + 100_000])

    async def receives(stream: trio.SSLStream[Any], size: int, got: list[bytes]) -> None:
        got.append(await read_exactly(stream, size, 50_000 if size == len(back) else 3_000))

    for name, make in MAKERS.items():
        with trio.fail_after(30):
            connection = await connected(make, small_buffers=True)
            ours_got: list[bytes] = []
            peer_got: list[bytes] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ours_sends, connection.ours)
                nursery.start_soon(receives, connection.ours, len(back), ours_got)
                nursery.start_soon(receives, connection.peer, len(out), peer_got)
                await connection.peer.send_all(back)
            assert ours_got == [back], name
            assert peer_got == [out], name


async def test_one_big_write_through_a_full_socket_arrives_whole() -> None:
    # Several slices, each of which may wait for room while the peer reads
    # slowly: the bytes arrive whole and in order, as with SSLStream.
    message = bytes(index % 239 for index in range(3 << 19)) + b"end"
    for name, make in MAKERS.items():
        with trio.fail_after(30):
            connection = await connected(make, small_buffers=True)
            got: list[bytes] = []

            async def receive(peer: trio.SSLStream[Any], got: list[bytes]) -> None:
                got.append(await read_exactly(peer, len(message), 5_000))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive, connection.peer, got)
                await connection.ours.send_all(message)
            assert got == [message], name
            await connection.ours.send_all(b"after")
            assert await read_exactly(connection.peer, 5) == b"after", name


async def test_a_second_sender_while_one_waits_for_room_is_busy() -> None:
    big = b"w" * (4 << 20)
    for name, make in MAKERS.items():
        with trio.fail_after(30):
            connection = await connected(make, small_buffers=True)
            ours = connection.ours
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ours.send_all, big)
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(trio.BusyResourceError):
                    await ours.send_all(b"x")
                with pytest.raises(trio.BusyResourceError):
                    await ours.wait_send_all_might_not_block()
                assert await read_exactly(connection.peer, len(big)) == big, name
            # Neither refused call sent anything.
            await ours.send_all(b"end")
            assert await connection.peer.receive_some(10) == b"end", name


async def test_a_send_cancelled_while_waiting_for_room_breaks_the_stream() -> None:
    outcomes = {}
    for name, make in MAKERS.items():
        with trio.fail_after(30):
            connection = await connected(make, small_buffers=True)
            ours = connection.ours
            with trio.move_on_after(0.2) as scope:
                await ours.send_all(b"c" * (4 << 20))
            assert scope.cancelled_caught, name
            with pytest.raises(trio.BrokenResourceError):
                await ours.send_all(b"more")
            with pytest.raises(trio.BrokenResourceError):
                await ours.receive_some(10)
            await ours.aclose()
            outcomes[name] = scope.cancelled_caught
    assert outcomes == dict.fromkeys(MAKERS, True)


async def test_a_closed_stream_refuses_everything() -> None:
    for name, make in MAKERS.items():
        with trio.fail_after(10):
            connection = await connected(make)
            ours = connection.ours
            await ours.aclose()
            with pytest.raises(trio.ClosedResourceError):
                await ours.send_all(b"late")
            with pytest.raises(trio.ClosedResourceError):
                await ours.receive_some(10)
            # The peer got our close_notify: the end of the data.
            assert await connection.peer.receive_some(10) == b"", name


async def test_closing_wakes_a_waiting_read_as_trio_does() -> None:
    async def receive(stream: trio.SSLStream[Any], caught: list[type[BaseException]]) -> None:
        try:
            await stream.receive_some(10)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            caught.append(type(exc))

    outcomes = {}
    for make in MAKERS.values():
        with trio.fail_after(10):
            connection = await connected(make)
            caught: list[type[BaseException]] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive, connection.ours, caught)
                await trio.testing.wait_all_tasks_blocked()
                await connection.ours.aclose()
            outcomes[make] = caught
    assert list(outcomes.values()) == [[trio.ClosedResourceError]] * len(MAKERS)


async def test_reads_check_max_bytes_and_take_none() -> None:
    for name, make in MAKERS.items():
        with trio.fail_after(10):
            connection = await connected(make)
            with pytest.raises(ValueError):
                await connection.ours.receive_some(0)
            await connection.peer_sends(b"n" * 40_000)
            assert await read_exactly(connection.ours, 40_000, None) == b"n" * 40_000, name


async def test_the_session_tickets_reach_the_client() -> None:
    # TLS 1.3 servers send them with their first write (trio holds them
    # back until then), in front of its data (tests/test_tls_handshake.py).
    for name, make in MAKERS.items():
        with trio.fail_after(10):
            connection = await connected(make)
            await connection.ours.send_all(b"more")
            assert await connection.peer.receive_some(10) == b"more"
            assert connection.peer.session is not None, name
            assert connection.peer.session.has_ticket, name


@pytest.mark.parametrize("https_compatible", [False, True])
async def test_the_end_of_the_data_after_records_in_the_same_read(
    https_compatible: bool,
) -> None:
    for name, make in MAKERS.items():
        with trio.fail_after(10):
            connection = await connected(make, https_compatible=https_compatible)
            connection.tap.holding = True
            await connection.peer.send_all(b"x" * 40_000)
            await connection.peer.aclose()  # close_notify, then the TCP end
            await connection.tap.release()
            ours = connection.ours
            assert await read_exactly(ours, 40_000) == b"x" * 40_000, name
            assert await ours.receive_some(1 << 20) == b"", name
            assert await ours.receive_some(1 << 20) == b"", name


@pytest.mark.parametrize("https_compatible", [False, True])
async def test_a_connection_cut_mid_record_ends_as_trio_ends_it(https_compatible: bool) -> None:
    outcomes = {}
    for name, make in MAKERS.items():
        with trio.fail_after(10):
            connection = await connected(make, https_compatible=https_compatible)
            connection.tap.holding = True
            await connection.peer.send_all(b"y" * (2 * RECORD))

            def cut_last_record(raw: bytearray) -> None:
                start, length = records_of(raw)[-1]
                del raw[start + length // 2 :]

            await connection.tap.release(cut_last_record)
            await connection.tap.inner.aclose()
            assert await read_exactly(connection.ours, RECORD) == b"y" * RECORD, name
            try:
                outcomes[name] = await connection.ours.receive_some(1 << 20)
            except trio.BrokenResourceError as exc:
                outcomes[name] = type(exc.__cause__)
    assert outcomes == dict.fromkeys(MAKERS, b"" if https_compatible else ssl.SSLEOFError)


async def test_a_corrupt_record_fails_after_the_records_before_it() -> None:
    outcomes = {}
    for name, make in MAKERS.items():
        with trio.fail_after(10):
            connection = await connected(make)
            connection.tap.holding = True
            for index in range(3):
                await connection.peer.send_all(bytes([index]) * RECORD)

            def corrupt_second_record(raw: bytearray) -> None:
                start, length = records_of(raw)[1]
                raw[start + length // 2] ^= 0xFF

            await connection.tap.release(corrupt_second_record)
            ours = connection.ours
            assert await read_exactly(ours, RECORD) == b"\x00" * RECORD, name
            with pytest.raises(trio.BrokenResourceError) as broken:
                await ours.receive_some(1 << 20)
            outcomes[name] = type(broken.value.__cause__)
            with pytest.raises(trio.BrokenResourceError):
                await ours.send_all(b"no")
    assert outcomes["direct"] is outcomes["trio"]
    assert issubclass(outcomes["trio"], ssl.SSLError)
