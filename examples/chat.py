"""A chat room: every client picks a name, and every line one of them sends
is broadcast to all of them, with a notice when someone joins or leaves.

Shows a server that keeps a registry of its connections, and a broadcast
that never lets one slow client hold up the others: each member has a
bounded queue of lines and its own task writing them; a member whose
queue is full is disconnected (close code 1008) instead of being waited
for.

Run it, then join from two terminals with the library's command line::

    python examples/chat.py --host 127.0.0.1 --port 8000
    python -m trio_websocket "ws://127.0.0.1:8000/?name=alice"
    python -m trio_websocket "ws://127.0.0.1:8000/?name=bob"

The name comes from the query string (1 to 32 letters, digits, ``-`` or
``_``); a missing or bad name is refused with HTTP 400 and a name already in
the room with 409. The server prints the URL it listens on, logs joins and
leaves on stderr, and serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import trio

from trio_websocket import (
    ConnectionClosed,
    Endpoint,
    WebSocketConnection,
    WebSocketRequest,
    serve_websocket,
)

if sys.version_info < (3, 11):  # trio installs this backport on Python 3.10
    from exceptiongroup import BaseExceptionGroup

#: Lines that may wait for one member before it counts as too slow.
QUEUE_SIZE = 64
#: The close code for a member that could not keep up (policy violation).
TOO_SLOW = 1008
#: Seconds a kicked member gets to answer its close.
CLOSE_TIMEOUT = 5.0
VALID_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")


@dataclass
class Member:
    """One client in the room: its name and the lines waiting for it."""

    name: str
    outbox: trio.MemorySendChannel[str]
    kicked: bool = False
    #: Wraps the member's writes; cancelled when it is kicked, so a write
    #: stuck on a client that stopped reading does not hold its task.
    sending: trio.CancelScope = field(default_factory=trio.CancelScope)


@dataclass
class ChatRoom:
    """The registry of members and the broadcast between them."""

    queue_size: int = QUEUE_SIZE
    members: dict[str, Member] = field(default_factory=dict)

    def broadcast(self, line: str) -> None:
        """Queue ``line`` for every member, without waiting for anyone; a
        member whose queue is full is kicked out."""
        for member in list(self.members.values()):
            try:
                member.outbox.send_nowait(line)
            except trio.WouldBlock:
                self.kick(member)

    def kick(self, member: Member) -> None:
        """Drop a member that cannot keep up: its writer stops sending
        lines and closes the connection with TOO_SLOW."""
        member.kicked = True
        member.sending.cancel()
        self.leave(member)

    async def handler(self, request: WebSocketRequest) -> None:
        """Admit a client under the name in its URL, relay its lines, and
        announce its arrival and departure."""
        query = parse_qs(urlsplit(request.path).query)
        name = (query.get("name") or [""])[0]
        if not VALID_NAME.fullmatch(name):
            await request.reject(400, body=b"pick a name: ?name=... (letters, digits, - and _)\n")
            return
        if name in self.members:
            await request.reject(409, body=f"{name} is already in the room\n".encode())
            return
        ws = await request.accept()
        outbox, inbox = trio.open_memory_channel[str](self.queue_size)
        member = Member(name, outbox)
        self.members[name] = member
        log(f"{name} joined from {describe(ws.remote)}")
        self.broadcast(f"* {name} joined ({len(self.members)} here)")
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_lines, ws, member, inbox)
                await self._read_lines(ws, member)
                # The client left, or was kicked: no more lines for it. The
                # writer ends by itself, after the close if it was kicked.
                self.leave(member)
        finally:
            self.leave(member)
            self.broadcast(f"* {name} left")
            log(f"{name} left" + (" (too slow)" if member.kicked else ""))

    def leave(self, member: Member) -> None:
        if self.members.get(member.name) is member:
            del self.members[member.name]
        member.outbox.close()

    async def _read_lines(self, ws: WebSocketConnection, member: Member) -> None:
        try:
            while not member.kicked:
                message = await ws.get_message()
                if isinstance(message, str):
                    self.broadcast(f"{member.name}: {message}")
                    # Let the writers take the line before the next one: a
                    # burst of lines read at once (get_message hands over
                    # waiting messages without a scheduler pass) would
                    # otherwise fill every queue before any writer ran.
                    await trio.lowlevel.checkpoint()
        except ConnectionClosed:
            pass

    async def _write_lines(
        self,
        ws: WebSocketConnection,
        member: Member,
        inbox: trio.MemoryReceiveChannel[str],
    ) -> None:
        try:
            with member.sending:
                async for line in inbox:
                    await ws.send_message(line)
            if member.kicked:
                # (If a write was cut short, the connection is already
                # dropped, and this returns at once.)
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await ws.aclose(TOO_SLOW, "too slow to keep up")
        except ConnectionClosed:
            pass


def describe(endpoint: Endpoint | str) -> str:
    return endpoint.host_port if isinstance(endpoint, Endpoint) else endpoint


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def is_ctrl_c(exc: BaseException) -> bool:
    """Whether ``exc`` is Ctrl-C, alone or as it leaves a trio nursery."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_ctrl_c(inner) for inner in exc.exceptions)
    return isinstance(exc, KeyboardInterrupt)


async def main(host: str, port: int) -> None:
    room = ChatRoom()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, room.handler, host, port, None)
        url = Endpoint(host, server.port, is_ssl=False).url
        print(f"listening on {url}/?name=YOUR_NAME", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="WebSocket chat room.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one")
    args = parser.parse_args()
    try:
        trio.run(main, args.host, args.port)
    except BaseException as exc:
        if not is_ctrl_c(exc):
            raise
        print("stopped", file=sys.stderr)
