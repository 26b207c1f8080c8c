"""The HTTP/2 frame guard (``trio_websocket._h2.frame_guard``): what reaches
h2, what it keeps, and the DATA and windows of the fast path, whatever
the reads cut the byte stream into.

The guard is pure (no I/O, no h2), so each property is checked on the
same frames cut at every position, or at random positions.
"""

from __future__ import annotations

import random

import pytest

from trio_websocket._h2.frame_guard import (
    CLIENT_PREFACE,
    DATA,
    FLOW_CONTROL_ERROR,
    GOAWAY,
    PING,
    PROTOCOL_ERROR,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    FloodLimits,
    FrameGuard,
    GoAway,
    PeerError,
    PeerFlood,
)

END_STREAM = 0x1
PADDED = 0x8


def frame(kind: int, payload: bytes, flags: int = 0, stream_id: int = 0) -> bytes:
    return (
        len(payload).to_bytes(3, "big")
        + bytes((kind, flags))
        + stream_id.to_bytes(4, "big")
        + payload
    )


class Sink:
    def __init__(self, receive_window: int = 1 << 20, send_window: int = 0) -> None:
        self.receive_window = receive_window
        self.send_window = send_window
        self.received: list[bytes] = []
        self.opened = 0

    def data_received(self, data: bytes) -> None:
        self.received.append(data)

    def window_opened(self) -> None:
        self.opened += 1

    @property
    def data(self) -> bytes:
        return b"".join(self.received)


def feed_in_pieces(guard: FrameGuard, stream: bytes, cuts: list[int]) -> bytes:
    out = b""
    previous = 0
    for cut in [*cuts, len(stream)]:
        out += guard.feed(stream[previous:cut])
        previous = cut
    return out


def routed_guard(sink: Sink, *, keep_send_windows: bool = False) -> FrameGuard:
    guard = FrameGuard(
        expect_client_preface=True,
        max_frame_size=16384,
        receive_window=1 << 20,
        send_window=65_535 if keep_send_windows else None,
    )
    guard.routes[1] = sink
    if keep_send_windows:
        assert guard.senders is not None
        guard.senders[1] = sink
    return guard


def test_nothing_kept_means_the_same_bytes_object() -> None:
    guard = FrameGuard(expect_client_preface=False, max_frame_size=16384)
    data = frame(DATA, b"x" * 10, 0, 1) + frame(PING, b"12345678")
    assert guard.feed(data) is data


def test_goaway_is_taken_out_wherever_the_reads_cut() -> None:
    goaway = frame(GOAWAY, (5).to_bytes(4, "big") + (2).to_bytes(4, "big") + b"bye")
    before = CLIENT_PREFACE + frame(SETTINGS, b"") + frame(DATA, b"x" * 100, 0, 1)
    after = frame(PING, b"12345678") + frame(DATA, b"y" * 50, END_STREAM, 1)
    stream = before + goaway + after
    for cut in range(1, len(stream)):
        guard = FrameGuard(expect_client_preface=True, max_frame_size=16384)
        assert feed_in_pieces(guard, stream, [cut]) == before + after
        assert guard.goaways == [GoAway(5, 2, b"bye")]


def test_routed_data_reaches_its_stream_and_h2_sees_only_the_rest() -> None:
    payloads = [b"a" * 3000, b"", b"b" * 16_000, b"tail"]
    other = frame(DATA, b"other stream", 0, 3)
    stream = CLIENT_PREFACE + frame(SETTINGS, b"")
    for index, payload in enumerate(payloads):
        flags = END_STREAM if index == len(payloads) - 1 else 0
        stream += frame(DATA, payload, flags, 1) + other
    expected_h2 = (
        CLIENT_PREFACE
        + frame(SETTINGS, b"")
        + other * 3
        + frame(DATA, b"", END_STREAM, 1)  # the END_STREAM, in its place
        + other
    )
    rng = random.Random(8441)
    for _ in range(300):
        sink = Sink()
        guard = routed_guard(sink)
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(0, 12)))
        assert feed_in_pieces(guard, stream, cuts) == expected_h2, cuts
        assert sink.data == b"".join(payloads)
        assert 1 not in guard.routes  # the peer ended it: h2 takes over
        assert sink.receive_window == (1 << 20) - sum(map(len, payloads))
        assert guard.receive_window == (1 << 20) - sum(map(len, payloads))


def test_padding_is_dropped_counted_and_listed_for_the_windows() -> None:
    padded = frame(DATA, bytes([5]) + b"hello" + b"\0" * 5, PADDED, 1)
    stream = CLIENT_PREFACE + padded + frame(DATA, b"!", 0, 1)
    for cut in range(1, len(stream)):
        sink = Sink()
        guard = routed_guard(sink)
        assert feed_in_pieces(guard, stream, [cut]) == CLIENT_PREFACE
        assert sink.data == b"hello!"
        assert guard.padding == [(1, 6)]  # the pad length byte and 5 bytes
        assert sink.receive_window == (1 << 20) - 12


def test_padding_longer_than_the_frame_is_a_protocol_error() -> None:
    guard = routed_guard(Sink())
    with pytest.raises(PeerError) as error:
        guard.feed(CLIENT_PREFACE + frame(DATA, bytes([9]) + b"abc", PADDED, 1))
    assert error.value.error_code == PROTOCOL_ERROR


@pytest.mark.parametrize("window", ["stream", "connection"])
def test_data_beyond_a_receive_window_is_a_flow_control_error(window: str) -> None:
    sink = Sink(receive_window=100 if window == "stream" else 1 << 20)
    guard = routed_guard(sink)
    if window == "connection":
        guard.receive_window = 100
    guard.feed(CLIENT_PREFACE + frame(DATA, b"x" * 100, 0, 1))
    with pytest.raises(PeerError) as error:
        guard.feed(frame(DATA, b"y", 0, 1))
    assert error.value.error_code == FLOW_CONTROL_ERROR


def test_window_updates_open_the_send_windows_we_keep() -> None:
    sink = Sink(send_window=10)
    guard = routed_guard(sink, keep_send_windows=True)
    updates = (
        frame(WINDOW_UPDATE, (4096).to_bytes(4, "big"), 0, 1)
        + frame(WINDOW_UPDATE, (70_000).to_bytes(4, "big"), 0, 0)
        + frame(WINDOW_UPDATE, (5000).to_bytes(4, "big"), 0, 7)  # a stream that is over
    )
    stream = CLIENT_PREFACE + updates
    for cut in range(1, len(stream)):
        sink.send_window = 10
        sink.opened = 0
        guard = routed_guard(sink, keep_send_windows=True)
        assert feed_in_pieces(guard, stream, [cut]) == CLIENT_PREFACE
        assert sink.send_window == 10 + 4096 and sink.opened == 1
        assert guard.send_window == 65_535 + 70_000 and guard.send_window_opened


def test_bad_window_updates_are_the_errors_rfc_9113_says() -> None:
    sink = Sink(send_window=2**31 - 10)
    guard = routed_guard(sink, keep_send_windows=True)
    guard.feed(CLIENT_PREFACE + frame(WINDOW_UPDATE, (0).to_bytes(4, "big"), 0, 1))
    guard.feed(frame(WINDOW_UPDATE, (4096).to_bytes(4, "big"), 0, 1))
    assert guard.stream_errors == [(1, PROTOCOL_ERROR), (1, FLOW_CONTROL_ERROR)]
    with pytest.raises(PeerError) as error:
        guard.feed(frame(WINDOW_UPDATE, (0).to_bytes(4, "big"), 0, 0))
    assert error.value.error_code == PROTOCOL_ERROR
    guard = routed_guard(Sink(), keep_send_windows=True)
    guard.feed(CLIENT_PREFACE)
    with pytest.raises(PeerError) as error:
        guard.feed(frame(WINDOW_UPDATE, (2**31 - 1).to_bytes(4, "big"), 0, 0))
    assert error.value.error_code == FLOW_CONTROL_ERROR


def test_without_the_fast_path_window_updates_and_data_go_to_h2() -> None:
    guard = FrameGuard(expect_client_preface=False, max_frame_size=16384)
    data = frame(WINDOW_UPDATE, (4096).to_bytes(4, "big"), 0, 1) + frame(DATA, b"x", 0, 1)
    assert guard.feed(data) is data


def test_floods_and_rapid_resets_run_out_of_tokens() -> None:
    now = [0.0]
    guard = FrameGuard(
        expect_client_preface=False,
        max_frame_size=16384,
        limits=FloodLimits(
            control_burst=10, control_per_second=1, reset_burst=5, reset_per_second=0.01
        ),
        clock=lambda: now[0],
    )
    for _ in range(10):
        guard.feed(frame(PING, b"12345678"))
    with pytest.raises(PeerFlood):
        guard.feed(frame(PING, b"12345678"))
    # (After an error the connection ends: a new guard for the rest.)
    guard = FrameGuard(
        expect_client_preface=False,
        max_frame_size=16384,
        limits=FloodLimits(
            control_burst=10, control_per_second=1, reset_burst=5, reset_per_second=0.01
        ),
        clock=lambda: now[0],
    )
    for _ in range(10):
        guard.feed(frame(PING, b"12345678"))
    now[0] += 5.0  # the bucket refills with time: 5 more
    for _ in range(5):
        guard.feed(frame(PING, b"12345678"))
    for index in range(5):
        guard.feed(frame(RST_STREAM, b"\0\0\0\x08", 0, 2 * index + 1))
    with pytest.raises(PeerFlood):
        guard.feed(frame(RST_STREAM, b"\0\0\0\x08", 0, 11))


class CountingSink(Sink):
    """A sink that also counts how often DATA reached it."""

    def __init__(self, receive_window: int = 1 << 20) -> None:
        super().__init__(receive_window)
        self.deliveries = 0

    def data_received(self, data: bytes) -> None:
        self.deliveries += 1
        super().data_received(data)


def test_a_read_of_many_frames_reaches_each_stream_once_in_order() -> None:
    # Two streams' frames interleaved in one read (and another stream's,
    # not routed, between them): each routed stream gets its data in one
    # piece, in order, and h2 only what is not routed.
    first, second = CountingSink(), CountingSink()
    guard = routed_guard(first)
    guard.routes[3] = second
    guard.feed(CLIENT_PREFACE)
    other = frame(DATA, b"not routed", 0, 5)
    read = b"".join(
        frame(DATA, bytes([index]) * (100 + index), 0, 1 if index % 2 else 3)
        + (other if index == 4 else b"")
        for index in range(10)
    )
    assert guard.feed(read) == other
    assert first.data == b"".join(bytes([i]) * (100 + i) for i in range(1, 10, 2))
    assert second.data == b"".join(bytes([i]) * (100 + i) for i in range(0, 10, 2))
    assert (first.deliveries, second.deliveries) == (1, 1)
    assert guard.receive_window == (1 << 20) - sum(100 + i for i in range(10))
    # A frame cut across reads: its two parts arrive with their reads.
    head = frame(DATA, b"x" * 1000, 0, 1)
    assert guard.feed(head[:500]) == b""
    assert guard.feed(head[500:] + frame(DATA, b"y" * 10, 0, 1)) == b""
    assert first.deliveries == 3
    assert first.data.endswith(b"x" * 1000 + b"y" * 10)


def test_end_stream_ends_a_run_of_frames_and_what_follows_goes_to_h2() -> None:
    sink = CountingSink()
    guard = routed_guard(sink)
    guard.feed(CLIENT_PREFACE)
    late = frame(DATA, b"after the end", 0, 1)
    read = frame(DATA, b"a" * 300, 0, 1) + frame(DATA, b"b" * 200, END_STREAM, 1) + late
    # h2 reads the end in its place, then the frame the peer should not
    # have sent (and refuses it: the stream is closed for it).
    assert guard.feed(read) == frame(DATA, b"", END_STREAM, 1) + late
    assert sink.data == b"a" * 300 + b"b" * 200 and sink.deliveries == 1
    assert 1 not in guard.routes


def test_a_run_of_frames_past_the_window_delivers_what_fit_and_fails() -> None:
    sink = CountingSink(receive_window=3000)
    guard = routed_guard(sink)
    guard.feed(CLIENT_PREFACE)
    read = b"".join(frame(DATA, bytes([index]) * 1000, 0, 1) for index in range(4))
    with pytest.raises(PeerError) as error:
        guard.feed(read)
    assert error.value.error_code == FLOW_CONTROL_ERROR
    # What came within the window was taken (the stream may read it before
    # it learns that the connection broke); nothing beyond.
    assert sink.data == b"\0" * 1000 + b"\1" * 1000 + b"\2" * 1000


def test_empty_routed_frames_in_a_run_count_as_control_frames() -> None:
    guard = FrameGuard(
        expect_client_preface=False,
        max_frame_size=16384,
        limits=FloodLimits(control_burst=5, control_per_second=0.01),
        receive_window=1 << 20,
    )
    sink = CountingSink()
    guard.routes[1] = sink
    guard.feed(frame(DATA, b"data", 0, 1) + frame(DATA, b"", 0, 1) * 5)
    with pytest.raises(PeerFlood):
        guard.feed(frame(DATA, b"more", 0, 1) + frame(DATA, b"", 0, 1))
