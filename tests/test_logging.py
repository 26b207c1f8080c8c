"""The ``trio_websocket`` logger: lifecycle at INFO, handler errors at ERROR,
frames at DEBUG (only for connections started while DEBUG was on), each
record naming the connection and carrying its endpoints."""

from __future__ import annotations

import logging
import struct
import subprocess
import sys

import pytest
import trio
import trio.testing
from conftest import open_pair

from trio_websocket import (
    ConnectionClosed,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)
from trio_websocket._core.log import FrameLoggingStream, FrameScanner
from trio_websocket.testing import FaultyStream, open_memory_pair

if sys.version_info < (3, 11):  # pragma: no cover - trio installs the backport
    from exceptiongroup import BaseExceptionGroup

LOGGER = "trio_websocket"


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == level]


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in records(caplog, level)]


async def test_open_and_close_are_logged_at_info_with_endpoints(
    caplog: pytest.LogCaptureFixture, nursery: trio.Nursery
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept(subprotocol="chat")
        try:
            await ws.send_message(await ws.get_message())
            while True:
                await ws.get_message()
        except ConnectionClosed:
            pass

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    url = f"ws://127.0.0.1:{server.port}/room?x=1"
    async with open_websocket_url(url, subprotocols=["chat"]) as ws:
        for _ in range(5):
            await ws.send_message("hello")
        await ws.get_message()
        client_port = ws.local.port  # type: ignore[union-attr]
    with trio.fail_after(5):
        while len(records(caplog, logging.INFO)) < 4:  # noqa: ASYNC110 - log records, no event
            await trio.sleep(0.01)

    info = records(caplog, logging.INFO)
    assert len(info) == 4, [r.getMessage() for r in info]  # nothing per message
    server_side = f"127.0.0.1:{server.port}"
    client_side = f"127.0.0.1:{client_port}"
    opened = [r for r in info if " opened " in r.getMessage()]
    assert len(opened) == 2
    for record in opened:
        text = record.getMessage()
        assert "path /room?x=1" in text and "subprotocol chat" in text
        assert {record.local, record.remote} == {server_side, client_side}  # type: ignore[attr-defined]
        assert record.websocket in text  # type: ignore[attr-defined]
        assert f"{record.local}<->{record.remote}" in text  # type: ignore[attr-defined]
    assert any("(client," in r.getMessage() for r in opened)
    assert any("(server," in r.getMessage() for r in opened)
    closed = sorted(r.getMessage() for r in info if " opened " not in r.getMessage())
    assert closed[0].startswith("client-") and "closed by us: code 1000" in closed[0]
    assert closed[1].startswith("server-") and "closed by the peer: code 1000" in closed[1]


async def test_close_reason_and_lost_connections_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with open_memory_pair() as (_client, server):
        await server.aclose(4001, "bye now")
    closed = messages(caplog, logging.INFO)[2:]
    assert any(
        "server-" in m and "closed by us: code 4001" in m and "'bye now'" in m for m in closed
    )
    assert any("client-" in m and "closed by the peer: code 4001" in m for m in closed)

    caplog.clear()
    client_end, server_end = trio.testing.memory_stream_pair()
    faulty = FaultyStream(client_end)
    async with open_memory_pair(faulty, server_end) as (_client, server):
        await faulty.cut()
        with pytest.raises(ConnectionClosed):
            await server.get_message()
    lost = [m for m in messages(caplog, logging.INFO) if "connection lost: code 1006" in m]
    assert len(lost) == 2


async def test_handler_exceptions_are_logged_at_error_with_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)

    async def failing(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.get_message()
        raise RuntimeError("handler bug")

    async def refusing(request: WebSocketRequest) -> None:
        raise KeyError("before accepting")

    for handler, text in ((failing, "RuntimeError"), (refusing, "KeyError")):
        caplog.clear()
        with pytest.raises(BaseExceptionGroup) as raised:
            async with trio.open_nursery() as nursery:
                server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
                try:
                    async with open_websocket_url(f"ws://127.0.0.1:{server.port}/p") as ws:
                        await ws.send_message("boom")
                        with pytest.raises(ConnectionClosed):
                            await ws.get_message()
                except Exception:  # the client may be rejected (500)
                    pass
                await trio.sleep_forever()  # until the handler's error ends the server
        assert raised.value.subgroup(lambda exc, name=text: type(exc).__name__ == name)
        (error,) = records(caplog, logging.ERROR)
        assert f"handler raised {text}" in error.getMessage()
        assert error.exc_info is not None and error.exc_info[0].__name__ == text
        assert error.remote.startswith("127.0.0.1:")  # type: ignore[attr-defined]
        if handler is refusing:
            assert "for /p" in error.getMessage()


async def test_frames_are_logged_at_debug(
    caplog: pytest.LogCaptureFixture, nursery: trio.Nursery
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    client, server = await open_pair(nursery)
    assert isinstance(client._stream, FrameLoggingStream)
    await client.send_message("héllo")
    assert await server.get_message() == "héllo"
    await server.send_message(b"x" * 300)
    await client.get_message()
    await client.ping(b"pp")
    await client.aclose(4000, "done")
    debug = messages(caplog, logging.DEBUG)
    assert f"{client} sent TEXT [FIN masked], 6 bytes" in debug
    assert f"{server} received TEXT [FIN masked], 6 bytes" in debug
    assert f"{server} sent BINARY [FIN], 300 bytes" in debug
    assert f"{client} received BINARY [FIN], 300 bytes" in debug
    assert f"{client} sent PING [FIN masked], 2 bytes" in debug
    assert f"{server} sent PONG [FIN], 2 bytes" in debug
    assert f"{server} received CLOSE [FIN masked], code 4000, reason 'done'" in debug
    assert f"{client} received CLOSE [FIN], code 4000, reason 'done'" in debug
    frame_record = next(r for r in records(caplog, logging.DEBUG) if "sent TEXT" in r.getMessage())
    assert frame_record.websocket == str(client)  # type: ignore[attr-defined]


async def test_debug_turned_on_later_does_not_touch_open_connections(
    caplog: pytest.LogCaptureFixture, nursery: trio.Nursery
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    client, server = await open_pair(nursery)
    # No wrapper: the hot path is exactly as without logging.
    assert not isinstance(client._stream, FrameLoggingStream)
    assert not isinstance(server._stream, FrameLoggingStream)
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    await client.send_message("quiet")
    assert await server.get_message() == "quiet"
    assert not [m for m in messages(caplog, logging.DEBUG) if " TEXT " in m]
    later_client, later_server = await open_pair(nursery)
    await later_client.send_message("loud")
    await later_server.get_message()
    assert any(" sent TEXT " in m for m in messages(caplog, logging.DEBUG))


async def test_nothing_is_logged_when_the_logger_is_quiet(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with open_memory_pair() as (client, server):
        await client.send_message("x")
        await server.get_message()
    assert not [r for r in caplog.records if r.name == LOGGER]


def frame(opcode: int, payload: bytes, *, mask: bytes = b"", fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    mask_bit = 0x80 if mask else 0
    if size < 126:
        header = bytes((first, mask_bit | size))
    elif size < 65536:
        header = bytes((first, mask_bit | 126)) + struct.pack("!H", size)
    else:
        header = bytes((first, mask_bit | 127)) + struct.pack("!Q", size)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + payload


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000, 10**6])
def test_frame_scanner_finds_every_frame_in_any_chunking(chunk: int) -> None:
    close_payload = struct.pack("!H", 1001) + "gône".encode()
    wire = b"".join(
        [
            frame(0x1, b"a" * 125, fin=False),
            frame(0x0, b"b" * 126),
            frame(0x2, b"c" * 70000, mask=b"\x01\x02\x03\x04"),
            frame(0x9, b""),
            frame(0x8, close_payload, mask=b"\xff\x00\xaa\x55"),
            frame(0x8, b""),
        ]
    )
    scanner = FrameScanner()
    found: list[str] = []
    for start in range(0, len(wire), chunk):
        found += scanner.feed(wire[start : start + chunk])
    assert found == [
        "TEXT, 125 bytes",
        "CONTINUATION [FIN], 126 bytes",
        "BINARY [FIN masked], 70000 bytes",
        "PING [FIN], 0 bytes",
        "CLOSE [FIN masked], code 1001, reason 'gône'",
        "CLOSE [FIN], 0 bytes, no code",
    ]


def test_frame_scanner_shows_reserved_bits() -> None:
    scanner = FrameScanner()
    assert scanner.feed(bytes((0xC1, 0x00))) == ["TEXT [FIN RSV1], 0 bytes"]
    assert scanner.feed(bytes((0xB3, 0x00))) == ["opcode 0x3 [FIN RSV2/3=3], 0 bytes"]


def test_nothing_reaches_stderr_without_logging_configured() -> None:
    code = (
        "import logging, trio_websocket._core.log as log\n"
        "log.logger.error('an error nobody configured logging for')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stderr == ""


def test_a_bogus_huge_close_frame_is_not_buffered() -> None:
    scanner = FrameScanner()
    header = bytes((0x88, 127)) + struct.pack("!Q", 10**6)
    assert scanner.feed(header + struct.pack("!H", 1000) + b"x" * 500_000) == []
    assert len(scanner._close_payload) == 125
    assert scanner.feed(b"x" * (500_000 - 2)) == [
        "CLOSE [FIN], code 1000, reason '" + "x" * 123 + "'"
    ]
