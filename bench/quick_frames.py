"""In-process cost of receiving data frames on a server connection's
wsproto (fast receive installed, as a connection has it): what the reader
does per read, before (wsproto parses everything) and with
``_wire.quick_frames.take_whole_messages`` first (issue 17).

    .venv/bin/python bench/quick_frames.py

Each case: one read, parsed to messages; the time is per frame (best of
several repeats).
"""

from __future__ import annotations

import os
import sys
import timeit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from wsproto import ConnectionType
from wsproto.connection import Connection

from trio_websocket._wire.frame_decoder import use_compact_event_queue, use_fast_receive
from trio_websocket._wire.framing import MASKED, frame_header
from trio_websocket._wire.masking import apply_mask_bytes
from trio_websocket._wire.quick_frames import take_whole_messages

KEY = b"\x37\xfa\x21\x3d"
LIMIT = 1 << 20


def masked_frame(payload: bytes, opcode: int = 2) -> bytes:
    return frame_header(0x80 | opcode, len(payload), MASKED) + KEY + apply_mask_bytes(payload, KEY)


def server() -> Connection:
    protocol = Connection(ConnectionType.SERVER)
    assert use_fast_receive(protocol, lambda: LIMIT)
    use_compact_event_queue(protocol)
    list(protocol.events())  # the reader's first dispatch starts the parser
    return protocol


def wsproto_only(protocol: Connection, read: bytes) -> int:
    protocol.receive_data(read)
    count = 0
    for _event in protocol.events():
        count += 1
    return count


def quick(protocol: Connection, read: bytes) -> int:
    messages, rest = take_whole_messages(protocol, read, LIMIT, 1024)
    count = len(messages)
    if rest:
        protocol.receive_data(rest)
        for _event in protocol.events():
            count += 1
    return count


def per_frame(function, read: bytes, frames: int, number: int) -> float:
    protocol = server()
    assert function(protocol, read) == frames
    best = min(timeit.repeat(lambda: function(protocol, read), number=number, repeat=7))
    return best / number / frames * 1e6


def main() -> None:
    cases = [
        ("one 16 B binary frame", masked_frame(b"x" * 16), 1, 20000),
        ("one 16 B text frame", masked_frame(b"x" * 16, 1), 1, 20000),
        ("one 1 KiB binary frame", masked_frame(b"x" * 1024), 1, 20000),
        ("32 pipelined 16 B frames", masked_frame(b"x" * 16) * 32, 32, 1000),
    ]
    print(f"{'case':28} {'wsproto us/frame':>17} {'quick us/frame':>15}")
    for name, read, frames, number in cases:
        before = per_frame(wsproto_only, read, frames, number)
        after = per_frame(quick, read, frames, number)
        print(f"{name:28} {before:17.2f} {after:15.2f}")


if __name__ == "__main__":
    main()
