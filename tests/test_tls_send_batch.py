"""A batch of echoes and its one-shot flusher (``_core.sending``).

A task that sends while more received messages wait appends its frame to
the outbox and schedules a flusher task; its next send, with the inbox
empty, takes the write turn and writes the whole batch. The flusher then
finds the turn taken: it ends at once, since whoever holds the turn
empties the outbox before letting go, rather than waiting in line for it
(a scheduler pass per batch, a quarter of those of a pipelined 64 KiB echo
over TLS, issue 17).
"""

from __future__ import annotations

import trio
from test_connection import GUARD, OP_BINARY, build_frame, open_raw, settle


async def test_the_flusher_of_a_batch_written_by_its_sender_does_not_wait(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(GUARD):
        server, peer = await open_raw(nursery, "server")
        # Both messages in one read: the first echo is deferred to a batch.
        two = [build_frame(OP_BINARY, payload, masked=True) for payload in (b"one", b"two")]
        await peer.stream.send_all(b"".join(two))
        for expected in (b"one", b"two"):
            message = await server.get_message()
            assert message == expected
            await server.send_message(message)
        await settle()
        assert server._write_waiters is None  # nobody waited for the turn
        echoed = b""
        while len(echoed) < 10:
            echoed += await peer.stream.receive_some()
        assert echoed == build_frame(OP_BINARY, b"one") + build_frame(OP_BINARY, b"two")
