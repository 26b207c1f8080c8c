"""A server reader's first read on a lean socket (``_core.receiving``, "The
first read"): what the socket already has is taken at once, without the
quiet deadline's scope and without a schedule point of its own (the
task's step has only just begun); only when nothing is there does the
read wait, with the deadline, as before. A client that closes right
after the 101 is answered within the reader's first step."""

from __future__ import annotations

import socket

import pytest
import trio
from server_fixtures import upgrade_request

from trio_websocket import ConnectionClosed, wrap_server_stream
from trio_websocket._wire.socket_stream import LeanSocketStream

# A client's close frame (code 1000, zero mask key) and the server's echo.
CLOSE_1000 = b"\x88\x82\x00\x00\x00\x00\x03\xe8"
ECHO_1000 = b"\x88\x02\x03\xe8"


class ReaderSteps(trio.abc.Instrument):
    """Steps of the reader task, and its end."""

    def __init__(self) -> None:
        self.steps = 0
        self.ended = trio.Event()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith(" reader"):
            self.steps += 1

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith(" reader"):
            self.ended.set()


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


@pytest.mark.usefixtures("fast_paths_on")
async def test_a_close_already_there_is_answered_in_the_readers_first_step(
    nursery: trio.Nursery,
) -> None:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    with theirs, trio.fail_after(10):
        theirs.sendall(upgrade_request())
        request = await wrap_server_stream(nursery, LeanSocketStream(ours))
        # The client's close is on the socket before the reader starts.
        theirs.sendall(CLOSE_1000)
        steps = ReaderSteps()
        trio.lowlevel.add_instrument(steps)
        try:
            ws = await request.accept()
            await steps.ended.wait()
        finally:
            trio.lowlevel.remove_instrument(steps)
        # Its first step read, echoed and closed (the one schedule point,
        # aclose's); the second ended it. (With a read that made one of
        # its own: three.)
        assert steps.steps == 2
        assert ws.closed is not None and ws.closed.code == 1000
        with pytest.raises(ConnectionClosed):
            await ws.get_message()
        theirs.settimeout(5)
        answer = read_until(theirs, b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 101 ")
        rest = answer.partition(b"\r\n\r\n")[2]
        while len(rest) < len(ECHO_1000):
            rest += theirs.recv(100)
        assert rest == ECHO_1000
        assert theirs.recv(100) == b""


async def test_a_first_read_with_nothing_there_waits_for_the_data(
    nursery: trio.Nursery,
) -> None:
    # (In either mode of the fast paths.) Nothing on the socket when the
    # reader starts: it waits, and a message that comes later is read.
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    with theirs, trio.fail_after(10):
        theirs.sendall(upgrade_request())
        request = await wrap_server_stream(nursery, LeanSocketStream(ours))
        ws = await request.accept()
        await trio.sleep(0.05)
        theirs.sendall(b"\x81\x82\x00\x00\x00\x00hi")  # "hi", zero mask key
        assert await ws.get_message() == "hi"
        theirs.sendall(CLOSE_1000)
        with pytest.raises(ConnectionClosed):
            await ws.get_message()
