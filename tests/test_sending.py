"""The send side (``_core.sending``): one send path, and serializers that
frame exactly what wsproto would.

- Nothing in the connection writes to its stream but the send path
  (``_write_outbox``): checked on the source, so a new writer cannot slip
  in beside the turn taking.
- Each serializer, for the frames a server sends, produces wsproto's bytes
  exactly (server frames are not masked, so they can be compared byte for
  byte); a client's frames parse to the same events.
- A frame is never serialized once frames may no longer be sent: the send
  raises ``ConnectionClosed`` and the outbox stays empty.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import trio
from test_connection import open_raw
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

import trio_websocket
from trio_websocket import ConnectionClosed
from trio_websocket._core.sending import BINARY, CONTINUATION, FIN, TEXT

CORE = Path(trio_websocket.__file__).parent / "_core"

#: These tests check our own framing (a fast path): they force the fast
#: paths on, also in CI's run of the suite with TRIO_WEBSOCKET_FAST_PATHS=0.
pytestmark = pytest.mark.usefixtures("fast_paths_on")
ROLES = ["client", "server"]


def _stream_writes(path: Path) -> list[tuple[str, int]]:
    """(function, line) of every ``.send_all(`` call in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "send_all"
                ):
                    found.append((function.name, node.lineno))
    return found


def test_only_the_send_path_writes_to_the_stream() -> None:
    # (The connection's four layers; ``log``'s frame-logging stream only
    # passes writes through.)
    layers = ("connection.py", "receiving.py", "lifecycle.py", "sending.py")
    writers = {
        (name, function) for name in layers for function, _ in _stream_writes(CORE / name)
    }
    assert writers == {("sending.py", "_write"), ("sending.py", "_write_pieces")}


def _wsproto_server() -> Connection:
    # A server-side wsproto connection, open, as a reference serializer.
    return Connection(ConnectionType.SERVER)


@pytest.mark.parametrize(
    ("first_byte", "payload", "event"),
    [
        (FIN | TEXT, "héllo".encode(), TextMessage(data="héllo")),
        (FIN | BINARY, b"", BytesMessage(data=b"")),
        (FIN | BINARY, b"x" * 125, BytesMessage(data=b"x" * 125)),
        (FIN | BINARY, b"x" * 126, BytesMessage(data=b"x" * 126)),
        (FIN | BINARY, b"x" * 65535, BytesMessage(data=b"x" * 65535)),
        (FIN | BINARY, b"x" * 65536, BytesMessage(data=b"x" * 65536)),
        (TEXT, b"first", TextMessage(data="first", message_finished=False)),
    ],
)
async def test_a_servers_data_frame_is_wsprotos_byte_for_byte(
    nursery: trio.Nursery, first_byte: int, payload: bytes, event: TextMessage | BytesMessage
) -> None:
    ws, _peer = await open_raw(nursery, "server")
    assert ws._own_framing
    ws._queue_data_frame(first_byte, payload)
    ours = b"".join(ws._outbox)
    ws._outbox.clear()
    ws._outbox_bytes = 0
    assert ours == _wsproto_server().send(event)


async def test_a_continuation_and_control_frames_are_wsprotos_byte_for_byte(
    nursery: trio.Nursery,
) -> None:
    ws, _peer = await open_raw(nursery, "server")
    reference = _wsproto_server()
    reference.send(TextMessage(data="a", message_finished=False))
    ws._queue_data_frame(FIN | CONTINUATION, b"end")
    assert b"".join(ws._outbox) == reference.send(TextMessage(data="end"))
    ws._outbox.clear()
    ws._queue_control_frame(Ping(payload=b"p"))
    ws._queue_control_frame(Pong(payload=b"q"))
    assert b"".join(ws._outbox) == reference.send(Ping(payload=b"p")) + reference.send(
        Pong(payload=b"q")
    )
    ws._outbox.clear()
    ws._outbox_bytes = 0


@pytest.mark.parametrize("role", ROLES)
async def test_a_closed_connection_serializes_nothing(nursery: trio.Nursery, role: str) -> None:
    ws, peer = await open_raw(nursery, role)
    await peer.send(CloseConnection(code=1000))
    with trio.fail_after(5):
        await peer.expect(CloseConnection)  # the echo: frames may no longer go out
    assert not ws._may_send_frames()
    with pytest.raises(ConnectionClosed):
        await ws._send_frame(ws._queue_data_frame, FIN | TEXT, b"late")
    assert ws._outbox == []
