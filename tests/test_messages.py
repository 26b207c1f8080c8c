"""Unit tests of ``trio_websocket._core.messages``: fragment assembly with a size
limit, and the bounded inbox between the reader task and ``get_message()``."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_websocket._core.messages import (
    ITEM_COST,
    Inbox,
    InboxClosed,
    MessageAssembler,
    MessageTooBig,
    utf8_size,
)

# ---------------------------------------------------------------------------
# utf8_size


@pytest.mark.parametrize(
    ("text", "size"),
    [("", 0), ("abc", 3), ("é", 2), ("☃", 3), ("😀", 4), ("aé☃😀", 10)],
)
def test_utf8_size_counts_encoded_bytes(text: str, size: int) -> None:
    assert utf8_size(text) == size


# ---------------------------------------------------------------------------
# MessageAssembler


@pytest.mark.parametrize("message", ["hello", b"hello", "", b""])
def test_single_frame_message_is_returned_whole(message: str | bytes) -> None:
    assembler = MessageAssembler(100)
    result = assembler.feed(message, True)
    assert result == message
    assert type(result) is type(message)
    assert not assembler.in_progress


def test_fragmented_text_is_joined() -> None:
    assembler = MessageAssembler(100)
    assert assembler.feed("hé", False) is None
    assert assembler.in_progress
    assert assembler.feed("ll", False) is None
    result = assembler.feed("o☃", True)
    assert result == "héllo☃"
    assert isinstance(result, str)
    assert not assembler.in_progress


def test_fragmented_binary_is_joined() -> None:
    assembler = MessageAssembler(100)
    assert assembler.feed(b"\x00\x01", False) is None
    assert assembler.in_progress
    result = assembler.feed(b"\xff", True)
    assert result == b"\x00\x01\xff"
    assert isinstance(result, bytes)
    assert not assembler.in_progress


@pytest.mark.parametrize(("empty", "first"), [("", "abc"), (b"", b"abc")])
def test_empty_final_fragment_keeps_earlier_pieces_and_type(
    empty: str | bytes, first: str | bytes
) -> None:
    assembler = MessageAssembler(100)
    assert assembler.feed(first, False) is None
    result = assembler.feed(empty, True)
    assert result == first
    assert type(result) is type(first)


@pytest.mark.parametrize("empty", ["", b""])
def test_message_of_only_empty_fragments_is_empty(empty: str | bytes) -> None:
    assembler = MessageAssembler(100)
    assert assembler.feed(empty, False) is None
    assert assembler.feed(empty, False) is None
    result = assembler.feed(empty, True)
    assert result == empty
    assert type(result) is type(empty)


def test_consecutive_messages_are_kept_apart() -> None:
    assembler = MessageAssembler(100)
    assembler.feed(b"ab", False)
    assert assembler.feed(b"cd", True) == b"abcd"
    assembler.feed(b"ef", False)
    assert assembler.feed(b"gh", True) == b"efgh"


@pytest.mark.parametrize("kind", [str, bytes])
def test_message_of_exactly_the_limit_passes(kind: type) -> None:
    message = kind("x" * 10) if kind is str else b"x" * 10
    assert MessageAssembler(10).feed(message, True) == message


@pytest.mark.parametrize("kind", [str, bytes])
def test_message_one_byte_over_the_limit_is_too_big(kind: type) -> None:
    message = "x" * 11 if kind is str else b"x" * 11
    with pytest.raises(MessageTooBig):
        MessageAssembler(10).feed(message, True)


def test_fragments_adding_up_to_exactly_the_limit_pass() -> None:
    assembler = MessageAssembler(10)
    assembler.feed(b"x" * 4, False)
    assembler.feed(b"x" * 4, False)
    assert assembler.feed(b"x" * 2, True) == b"x" * 10


def test_fragments_one_byte_over_the_limit_are_too_big() -> None:
    assembler = MessageAssembler(10)
    assembler.feed(b"x" * 4, False)
    assembler.feed(b"x" * 4, False)
    with pytest.raises(MessageTooBig):
        assembler.feed(b"x" * 3, True)


def test_text_limit_counts_utf8_bytes_not_characters() -> None:
    # "é" is one character but two UTF-8 bytes.
    assert MessageAssembler(10).feed("é" * 5, True) == "é" * 5  # 10 bytes
    with pytest.raises(MessageTooBig):
        MessageAssembler(10).feed("é" * 5 + "a", True)  # 6 chars, 11 bytes
    with pytest.raises(MessageTooBig):
        MessageAssembler(7).feed("😀😀", True)  # 2 chars, 8 bytes


def test_fragmented_text_limit_counts_utf8_bytes() -> None:
    assembler = MessageAssembler(6)
    assembler.feed("☃", False)  # 3 bytes
    with pytest.raises(MessageTooBig):
        assembler.feed("☃a", False)  # 3 + 4 = 7 bytes in 3 characters


def test_endless_fragments_stop_at_the_limit() -> None:
    assembler = MessageAssembler(100)
    fed = 0
    with pytest.raises(MessageTooBig):
        for _ in range(10_000):
            assembler.feed(b"x" * 10, False)
            fed += 1
    # Ten pieces reach the limit exactly; the eleventh passes it.
    assert fed == 10


def test_assembler_is_reusable_after_too_big() -> None:
    assembler = MessageAssembler(10)
    assembler.feed(b"x" * 8, False)
    with pytest.raises(MessageTooBig):
        assembler.feed(b"x" * 8, False)
    assert not assembler.in_progress
    # The size already counted is forgotten: a full-size message fits again.
    assembler.feed(b"y" * 5, False)
    assert assembler.feed(b"y" * 5, True) == b"y" * 10


def test_reset_forgets_a_partial_message() -> None:
    assembler = MessageAssembler(10)
    assembler.feed(b"x" * 8, False)
    assembler.reset()
    assert not assembler.in_progress
    assert assembler.feed(b"abcdefghij", True) == b"abcdefghij"


# ---------------------------------------------------------------------------
# Inbox


async def test_inbox_is_first_in_first_out() -> None:
    inbox = Inbox(max_messages=10, read_ahead_bytes=1000)
    for message in ("a", b"b", "c"):
        inbox.put(message)
    inbox.wake_receivers()
    assert len(inbox) == 3
    assert [await inbox.get() for _ in range(3)] == ["a", b"b", "c"]
    assert len(inbox) == 0


async def test_inbox_counts_buffered_bytes() -> None:
    inbox = Inbox(max_messages=10, read_ahead_bytes=1000)
    assert inbox.buffered_bytes == 0
    inbox.put(b"12345")
    inbox.put("abc")
    assert inbox.buffered_bytes == 8
    await inbox.get()
    assert inbox.buffered_bytes == 3
    await inbox.get()
    assert inbox.buffered_bytes == 0


def test_reader_reads_on_while_below_the_message_mark() -> None:
    inbox = Inbox(max_messages=3, read_ahead_bytes=10)
    inbox.put(b"x" * 100)  # far above the byte mark, but only one message
    assert not inbox.reader_must_wait()
    inbox.put(b"x")
    assert not inbox.reader_must_wait()
    inbox.put(b"x")  # both marks reached
    assert inbox.reader_must_wait()


def test_reader_reads_on_while_below_the_byte_mark() -> None:
    # (Each waiting message costs its size plus ITEM_COST.)
    inbox = Inbox(max_messages=1, read_ahead_bytes=10 * (1 + ITEM_COST))
    for _ in range(9):
        inbox.put(b"x")  # many messages, 9 bytes
        assert not inbox.reader_must_wait()
    inbox.put(b"x")  # 10 bytes: both marks reached
    assert inbox.reader_must_wait()


async def test_taking_a_message_lets_the_reader_read_again() -> None:
    inbox = Inbox(max_messages=2, read_ahead_bytes=4)
    inbox.put(b"abc")
    inbox.put(b"def")
    assert inbox.reader_must_wait()
    assert await inbox.get() == b"abc"
    assert not inbox.reader_must_wait()


def test_zero_max_messages_bounds_by_bytes_only() -> None:
    inbox = Inbox(max_messages=0, read_ahead_bytes=5 + 2 * ITEM_COST)
    assert not inbox.reader_must_wait()
    inbox.put(b"1234")
    assert not inbox.reader_must_wait()
    inbox.put(b"5")
    assert inbox.reader_must_wait()


async def test_waiting_receiver_gets_a_message_after_wake() -> None:
    inbox = Inbox(max_messages=10, read_ahead_bytes=1000)
    received: list[str | bytes] = []

    async def receive() -> None:
        received.append(await inbox.get())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        assert received == []
        inbox.put("hello")
        inbox.wake_receivers()
    assert received == ["hello"]


async def test_several_waiting_receivers_each_get_one_message() -> None:
    inbox = Inbox(max_messages=10, read_ahead_bytes=1000)
    received: list[str | bytes] = []

    async def receive() -> None:
        received.append(await inbox.get())

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        inbox.put("a")
        inbox.put("b")
        inbox.wake_receivers()
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(received) == ["a", "b"]  # type: ignore[type-var]
        inbox.put("c")
        inbox.wake_receivers()
    assert sorted(received) == ["a", "b", "c"]  # type: ignore[type-var]


async def test_close_keeping_messages_lets_them_be_read_then_raises() -> None:
    inbox = Inbox(max_messages=10, read_ahead_bytes=1000)
    inbox.put("a")
    inbox.put(b"b")
    inbox.close(discard=False)
    assert await inbox.get() == "a"
    assert await inbox.get() == b"b"
    with pytest.raises(InboxClosed):
        await inbox.get()
    with pytest.raises(InboxClosed):
        await inbox.get()


async def test_close_discarding_drops_waiting_messages() -> None:
    inbox = Inbox(max_messages=10, read_ahead_bytes=1000)
    inbox.put("a")
    inbox.put(b"b")
    inbox.close(discard=True)
    assert len(inbox) == 0
    assert inbox.buffered_bytes == 0
    with pytest.raises(InboxClosed):
        await inbox.get()


async def test_discard_after_a_keeping_close_still_drops_messages() -> None:
    # The peer closed first (messages kept), then the application closed.
    inbox = Inbox(max_messages=10, read_ahead_bytes=1000)
    inbox.put("a")
    inbox.close(discard=False)
    inbox.close(discard=True)
    with pytest.raises(InboxClosed):
        await inbox.get()


async def test_put_after_close_is_ignored() -> None:
    inbox = Inbox(max_messages=10, read_ahead_bytes=1000)
    inbox.close(discard=False)
    inbox.put("late")
    assert len(inbox) == 0
    with pytest.raises(InboxClosed):
        await inbox.get()


async def test_close_wakes_waiting_receivers_with_inbox_closed() -> None:
    inbox = Inbox(max_messages=10, read_ahead_bytes=1000)
    outcomes: list[str] = []

    async def receive() -> None:
        try:
            await inbox.get()
        except InboxClosed:
            outcomes.append("closed")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        inbox.close(discard=False)
    assert outcomes == ["closed", "closed"]


async def test_cancelled_waiting_get_leaves_the_inbox_usable() -> None:
    inbox = Inbox(max_messages=10, read_ahead_bytes=1000)
    async with trio.open_nursery() as nursery:

        async def receive_until_cancelled() -> None:
            await inbox.get()
            raise AssertionError("got a message that was never put")

        nursery.start_soon(receive_until_cancelled)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    inbox.put("after")
    inbox.wake_receivers()
    assert await inbox.get() == "after"


async def test_get_cancelled_with_a_message_waiting_does_not_take_it() -> None:
    inbox = Inbox(max_messages=10, read_ahead_bytes=1000)
    inbox.put("kept")
    with trio.CancelScope() as scope:
        scope.cancel()
        await inbox.get()
        raise AssertionError("get() ignored a pending cancellation")
    assert len(inbox) == 1
    assert inbox.buffered_bytes == 4
    assert await inbox.get() == "kept"


async def test_reader_waits_for_room_and_is_woken_by_get() -> None:
    inbox = Inbox(max_messages=1, read_ahead_bytes=3)
    inbox.put(b"abc")
    assert inbox.reader_must_wait()
    resumed = False

    async def reader() -> None:
        nonlocal resumed
        await inbox.wait_for_room()
        resumed = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert not resumed
        assert await inbox.get() == b"abc"
    assert resumed


async def test_reader_stays_parked_while_the_marks_are_still_reached() -> None:
    inbox = Inbox(max_messages=1, read_ahead_bytes=3)
    inbox.put(b"abc")
    inbox.put(b"def")
    resumed = False

    async def reader() -> None:
        nonlocal resumed
        await inbox.wait_for_room()
        resumed = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        await inbox.get()  # one message of 3 bytes still waits: still full
        await trio.testing.wait_all_tasks_blocked()
        assert not resumed
        await inbox.get()
    assert resumed


async def test_reader_does_not_wait_when_there_is_room(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inbox = Inbox(max_messages=1, read_ahead_bytes=3 + ITEM_COST)
    inbox.put(b"ab")  # one message, below the byte mark
    # wait_for_room must return without parking (a park would never end).
    with trio.fail_after(1):
        await inbox.wait_for_room()


async def test_close_wakes_a_waiting_reader() -> None:
    inbox = Inbox(max_messages=1, read_ahead_bytes=1)
    inbox.put(b"x")
    resumed = False

    async def reader() -> None:
        nonlocal resumed
        await inbox.wait_for_room()
        resumed = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert not resumed
        inbox.close(discard=False)
    assert resumed
    assert not inbox.reader_must_wait()


async def test_inbox_that_never_drains_does_not_keep_taken_messages() -> None:
    # A steady stream: the reader always stays a few messages ahead, so the
    # inbox is never empty; what was taken must not pile up inside it.
    inbox = Inbox(max_messages=1000, read_ahead_bytes=1 << 30)
    for i in range(4):
        inbox.put(f"m{i}")
    for i in range(4, 10_000):
        inbox.put(f"m{i}")
        assert await inbox.get() == f"m{i - 4}"
    assert len(inbox) == 4
    assert len(inbox._items) < 200
