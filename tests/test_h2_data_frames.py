"""Runs of HTTP/2 DATA frames (``scan_data_run`` of
``trio_websocket._h2.frame_guard``): the compiled scan and its pure-Python
twin take the same frames out of the same bytes, and the frame guard
delivers the same with either, and with none (frame by frame).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from speedup_expected import speedup_should_be_in_use

from trio_websocket._h2 import frame_guard
from trio_websocket._h2.frame_guard import FrameGuard, PeerError, scan_data_run_python

DATA, HEADERS, WINDOW_UPDATE = 0x0, 0x1, 0x8
END_STREAM, PADDED = 0x1, 0x8

Scan = Callable[[bytes, int, int, int, int], tuple[bytes, int, bool]]

SCANS: list[Scan] = [scan_data_run_python]
if frame_guard.SCAN_COMPILED:
    SCANS.append(frame_guard.scan_data_run)


def _scan_id(scan: Scan) -> str:
    return "python" if scan is scan_data_run_python else "compiled"


@pytest.fixture(params=SCANS, ids=_scan_id)
def scan(request: pytest.FixtureRequest) -> Scan:
    return request.param  # type: ignore[no-any-return]


def frame(kind: int, payload: bytes, flags: int = 0, stream_id: int = 1) -> bytes:
    return (
        len(payload).to_bytes(3, "big")
        + bytes((kind, flags))
        + stream_id.to_bytes(4, "big")
        + payload
    )


def test_the_compiled_scan_is_used_when_built() -> None:
    # (tests/speedup_expected.py says when its absence is correct.)
    if speedup_should_be_in_use(frame_guard.SCAN_COMPILED):
        assert frame_guard.SCAN_COMPILED
        assert frame_guard.scan_data_run is not scan_data_run_python
    else:
        assert not frame_guard.SCAN_COMPILED
        assert frame_guard.scan_data_run is scan_data_run_python


def test_a_run_takes_the_whole_frames_of_its_stream(scan: Scan) -> None:
    frames = frame(DATA, b"ab") + frame(DATA, b"cde") + frame(DATA, b"f", stream_id=3)
    assert scan(frames, 0, 1, 16384, 100) == (b"abcde", 9 + 2 + 9 + 3, False)
    # From a later header, and for the other stream.
    assert scan(frames, 11, 1, 16384, 100) == (b"cde", 11 + 12, False)
    assert scan(frames, 23, 3, 16384, 100) == (b"f", len(frames), False)
    # The reserved bit of the stream id is not part of it.
    reserved = frame(DATA, b"xy", stream_id=1 | 1 << 31)
    assert scan(reserved, 0, 1, 16384, 100) == (b"xy", len(reserved), False)


@pytest.mark.parametrize(
    ("stop", "why"),
    [
        (frame(HEADERS, b"hh"), "another type"),
        (frame(DATA, b"zz", stream_id=5), "another stream"),
        (frame(DATA, b"\x00zz", PADDED), "padded"),
        (frame(DATA, b""), "empty, not ending the stream"),
        (frame(DATA, b"z" * 101), "larger than the largest frame"),
        (frame(DATA, b"zzzz")[:-1], "cut by the read"),
        (frame(DATA, b"zzzz")[:5], "a header cut by the read"),
    ],
)
def test_a_run_stops_before_a_frame_it_does_not_take(scan: Scan, stop: bytes, why: str) -> None:
    first = frame(DATA, b"abc")
    assert scan(first + stop, 0, 1, 100, 1000) == (b"abc", len(first), False), why
    assert scan(stop, 0, 1, 100, 1000) == (b"", 0, False), why


def test_a_run_ends_after_end_stream_and_within_the_limit(scan: Scan) -> None:
    frames = frame(DATA, b"ab") + frame(DATA, b"", END_STREAM) + frame(DATA, b"cd")
    assert scan(frames, 0, 1, 100, 1000) == (b"ab", 20, True)
    frames = frame(DATA, b"ab") + frame(DATA, b"cde") + frame(DATA, b"f")
    assert scan(frames, 0, 1, 100, 5) == (b"abcde", 23, False)  # exactly the limit
    assert scan(frames, 0, 1, 100, 4) == (b"ab", 11, False)
    assert scan(frames, 0, 1, 100, 0) == (b"", 0, False)
    assert scan(frames, len(frames), 1, 100, 9) == (b"", len(frames), False)


def test_bad_arguments_are_refused_alike(scan: Scan) -> None:
    data = frame(DATA, b"ab")
    with pytest.raises(ValueError):
        scan(data, len(data) + 1, 1, 100, 100)
    with pytest.raises(ValueError):
        scan(data, 0, 1, 100, -1)
    with pytest.raises(TypeError):
        scan(data, 0.0, 1, 100, 100)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        scan("text", 0, 1, 100, 100)  # type: ignore[arg-type]


def random_frames(rng: random.Random, count: int) -> bytes:
    out = []
    for _ in range(count):
        kind = rng.choice([DATA] * 6 + [HEADERS, WINDOW_UPDATE])
        size = rng.choice([0, 1, 7, 100, 120, 500])
        flags = rng.choice([0, 0, 0, END_STREAM, PADDED, END_STREAM | PADDED])
        stream_id = rng.choice([1, 1, 1, 3]) | (rng.random() < 0.1) << 31
        out.append(frame(kind, rng.randbytes(size), flags, stream_id))
    return b"".join(out)


@pytest.mark.skipif(not frame_guard.SCAN_COMPILED, reason="needs the compiled extension")
def test_the_compiled_scan_and_the_python_one_agree() -> None:
    rng = random.Random(29)
    for _ in range(3000):
        data = random_frames(rng, rng.randint(0, 8))
        data = data[: rng.randint(0, len(data))]  # (cut anywhere)
        position = rng.randint(0, len(data))
        stream_id, largest, limit = rng.choice([1, 3]), rng.choice([100, 500]), rng.randint(0, 900)
        arguments = (data, position, stream_id, largest, limit)
        assert frame_guard.scan_data_run(*arguments) == scan_data_run_python(*arguments)


def take_nothing(data: bytes, position: int, *_: int) -> tuple[bytes, int, bool]:
    """A scan that leaves every frame to the guard's frame-by-frame path
    (what the guard did before it had runs)."""
    return b"", position, False


def test_the_guard_delivers_the_same_with_either_scan_or_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Random reads of random frames (runs, padding, END_STREAM, other
    # frames, frames past a window): the same data to the same streams in
    # the same pieces, the same bytes to h2 and the same error, with each
    # scan and with none.
    class Sink:
        def __init__(self) -> None:
            self.receive_window = 3000
            self.received: list[bytes] = []

        def data_received(self, data: bytes) -> None:
            assert data, "empty data would read as the end of the stream"
            self.received.append(data)

    def run(scan: Scan, seed: int) -> object:
        monkeypatch.setattr(frame_guard, "scan_data_run", scan)
        rng = random.Random(seed)
        stream = random_frames(rng, 30)
        guard = FrameGuard(expect_client_preface=False, max_frame_size=500, receive_window=5000)
        sinks = {1: Sink(), 3: Sink()}
        guard.routes.update(sinks)
        to_h2 = []
        error = None
        position = 0
        try:
            while position < len(stream):
                cut = position + rng.randint(1, 700)
                to_h2.append(guard.feed(stream[position:cut]))
                position = cut
        except PeerError as exc:
            error = (exc.error_code, str(exc))
        return (
            b"".join(to_h2),
            error,
            {key: sink.received for key, sink in sinks.items()},
            {key: sink.receive_window for key, sink in sinks.items()},
            guard.receive_window,
            sorted(guard.routes),
            guard.padding,
        )

    failed = 0
    for seed in range(300):
        results = [run(scan, seed) for scan in [take_nothing, *SCANS]]
        assert all(result == results[0] for result in results)
        failed += results[0][1] is not None  # type: ignore[index]
    assert 0 < failed < 300  # (both kinds of run were checked)
