"""Property-based fuzzing of the server's request-head reading: the limits
scanner (``_server.limits.HeadScanner``) on its own, and whole opening requests,
valid, random and mutated, sent in random pieces to a running server.

Properties:
- the scanner's verdict (head length, 414 or 431) is the one a plain
  reading of the documented limits gives for the whole bytes, however the
  bytes are split across reads;
- a valid upgrade request always gets ``101``, and the handler sees its
  path and subprotocols;
- any other request gets one of the server's documented answers (400, 414,
  426, 431) or, if its head never ends, none, and a request over the
  limits always gets 414/431; never an exception out of the server, never
  a hang (every example runs on the autojump clock under
  ``trio.fail_after``);
- the answer does not depend on where the request was split.

Example counts come from the Hypothesis profile (see tests/README.md).
"""

from __future__ import annotations

import base64
import itertools
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import pytest
import trio
import trio.testing
from conftest import FUZZ_TIME_LIMIT
from hypothesis import event, given
from hypothesis import strategies as st
from server_fixtures import parse_answer, read_until_eof, start_memory_server, upgrade_request
from wsproto import ConnectionType
from wsproto.events import AcceptConnection, Request
from wsproto.frame_protocol import FrameProtocol
from wsproto.handshake import H11Handshake
from wsproto.utilities import ProtocolError

from trio_websocket import RequestLimits, WebSocketRequest
from trio_websocket._server.http import EarlyHeadCheck
from trio_websocket._server.limits import MAX_HEAD_BYTES, HeadScanner, RequestTooLarge
from trio_websocket._server.upgrade import accept_response, read_upgrade

pytestmark = pytest.mark.time_limit(FUZZ_TIME_LIMIT)

T = TypeVar("T")

#: The answers a server without a hook or connection cap may give to an
#: opening request (101: the handler accepted it; 403 only with an origin
#: list).
ANSWERS = {101, 400, 403, 414, 426, 431}
#: The origins a server may be told to allow (requests without an Origin
#: header too), and the Origin headers valid requests may carry.
ORIGINS = [None, "https://example.com", re.compile(r"https://[a-z]+\.example\.org")]
ORIGIN_HEADERS = ["https://example.com", "HTTPS://Example.COM", "https://app.example.org", "null"]
#: Virtual seconds one exchange may take: the server's connect timeout
#: (CONNECT_TIMEOUT) plus its linger and closing, with room to spare.
CONNECT_TIMEOUT = 10.0
EXCHANGE_TIMEOUT = 60.0


def run_on_autojump_clock(function: Callable[..., Awaitable[T]], *args: object) -> T:
    """One example's trio run, on a fresh autojump clock."""
    return trio.run(function, *args, clock=trio.testing.MockClock(autojump_threshold=0))


# ----------------------------------------------------------------------
# What the documented limits say about some bytes (the oracle)


@dataclass(frozen=True)
class Verdict:
    """The head's length, or the status of the limit it breaks, or neither
    (incomplete and within the limits so far)."""

    head_length: int | None = None
    status: int | None = None


INCOMPLETE = Verdict()


def limits_verdict(data: bytes, limits: RequestLimits) -> Verdict:
    """What ``RequestLimits`` documents for ``data``, read line by line: a
    request line over ``max_request_line`` gets 414; more than
    ``max_headers`` header lines, a header line over ``max_header_size``,
    or a head over 16 KiB get 431; a line not yet ended counts with what
    arrived of it. The head ends at the first empty line after the request
    line."""
    lines = data.split(b"\r\n")
    complete, rest = lines[:-1], lines[-1]
    offset = 0
    for index, line in enumerate(complete):
        offset += len(line) + 2
        if index > 0 and not line:
            return Verdict(status=431) if offset > MAX_HEAD_BYTES else Verdict(head_length=offset)
        status = line_status(index, len(line), limits)
        if status is not None:
            return Verdict(status=status)
    # The line still arriving: a CR at its end may be half of its CRLF.
    status = line_status(len(complete), len(rest) - rest.endswith(b"\r"), limits)
    if status is not None:
        return Verdict(status=status)
    if len(data) > MAX_HEAD_BYTES:
        return Verdict(status=431)
    return INCOMPLETE


def describe(verdict: Verdict) -> str:
    if verdict.status is not None:
        return str(verdict.status)
    return "incomplete" if verdict == INCOMPLETE else "complete"


def line_status(index: int, length: int, limits: RequestLimits) -> int | None:
    if index == 0:
        return 414 if length > limits.max_request_line else None
    if length > limits.max_header_size or (length and index > limits.max_headers):
        return 431
    return None


def scan_in_pieces(pieces: list[bytes], limits: RequestLimits) -> Verdict:
    """Feed ``HeadScanner`` the growing buffer, one piece at a time, as the
    server does."""
    scanner = HeadScanner(limits)
    received = b""
    try:
        for piece in pieces:
            received += piece
            length = scanner.feed(received)
            if length is not None:
                return Verdict(head_length=length)
    except RequestTooLarge as exc:
        return Verdict(status=exc.status_code)
    return INCOMPLETE


# ----------------------------------------------------------------------
# Strategies

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
PATH_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/%"
VALUE_CHARS = "".join(map(chr, range(0x21, 0x7F)))

tokens = st.text(TOKEN_CHARS, min_size=1, max_size=12)
hostnames = st.lists(
    st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12), min_size=1, max_size=4
).map(".".join)


def case_variant(text: str) -> st.SearchStrategy[str]:
    """``text`` in random letter case (header names and the tokens that
    are case-insensitive)."""
    return st.lists(st.booleans(), min_size=len(text), max_size=len(text)).map(
        lambda upper: "".join(
            c.upper() if u else c.lower() for c, u in zip(text, upper, strict=True)
        )
    )


#: Optional whitespace around a header value.
ows = st.sampled_from(["", " ", "  ", "\t", " \t"])


@dataclass(frozen=True)
class ValidRequest:
    data: bytes
    path: str
    subprotocols: tuple[str, ...]
    origin: str | None

    @property
    def origin_allowed(self) -> bool:
        """Whether a server told to allow ``ORIGINS`` takes this request."""
        if self.origin is None:
            return True
        return self.origin.lower() == "https://example.com" or bool(
            re.fullmatch(r"https://[a-z]+\.example\.org", self.origin)
        )


@st.composite
def valid_requests(draw: st.DrawFn) -> ValidRequest:
    """A valid WebSocket opening request, in many spellings: header order
    and letter case, optional whitespace, extra headers, Host with a port,
    subprotocols, a query string."""
    path = "/" + draw(st.text(PATH_CHARS, max_size=40))
    if draw(st.booleans()):
        path += "?" + draw(st.text(PATH_CHARS + "?", max_size=20))
    host = draw(hostnames)
    if draw(st.booleans()):
        host += f":{draw(st.integers(1, 65535))}"
    key = base64.b64encode(draw(st.binary(min_size=16, max_size=16))).decode()
    connection = draw(st.sampled_from(["Upgrade", "upgrade", "keep-alive, Upgrade", "Upgrade, x"]))
    headers = [
        (draw(case_variant("Host")), host),
        (draw(case_variant("Upgrade")), draw(case_variant("websocket"))),
        (draw(case_variant("Connection")), connection),
        (draw(case_variant("Sec-WebSocket-Key")), key),
        (draw(case_variant("Sec-WebSocket-Version")), "13"),
    ]
    subprotocols = tuple(draw(st.lists(tokens, max_size=3)))
    if subprotocols:
        headers.append(("Sec-WebSocket-Protocol", ", ".join(subprotocols)))
    origin = draw(st.one_of(st.none(), st.sampled_from(ORIGIN_HEADERS)))
    if origin is not None:
        headers.append((draw(case_variant("Origin")), origin))
    for _ in range(draw(st.integers(0, 4))):
        name = draw(tokens).lower()
        if name in {"host", "content-length", "transfer-encoding", "sec-websocket-key"}:
            continue
        if name in {"connection", "upgrade", "sec-websocket-version", "sec-websocket-protocol"}:
            continue
        if name == "origin":
            continue
        value = draw(st.text(VALUE_CHARS + " ", max_size=30)).strip(" ")
        headers.append((name, value))
    order = draw(st.permutations(range(len(headers))))
    lines = [f"GET {path} HTTP/1.1"]
    for index in order:
        name, value = headers[index]
        lines.append(f"{name}:{draw(ows)}{value}{draw(ows)}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    return ValidRequest(data, path, subprotocols, origin)


#: Bytes a mutation inserts: line ends, NUL, non-ASCII, header syntax.
INSERTS = [
    b"\r", b"\n", b"\r\n", b"\r\n\r\n", b"\0", b"\x80", b"\xff", "\u00e9".encode(), b" ", b"\t",
    b":", b"\r\n ", b"\x7f", b"HTTP/1.0", b"\r\nHost: other\r\n", b"\r\nContent-Length: 5\r\n",
]  # fmt: skip


@st.composite
def mutations(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` after one to four random edits: a flipped bit, inserted
    bytes, a deleted run, a header line duplicated, removed or replaced,
    a truncation."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(
            st.sampled_from(["flip", "insert", "delete", "duplicate", "remove", "replace", "cut"])
        )
        if kind in ("duplicate", "remove", "replace"):
            lines = bytes(data).split(b"\r\n")
            index = draw(st.integers(0, len(lines) - 1))
            if kind == "duplicate":
                lines.insert(index, lines[index])
            elif kind == "remove":
                del lines[index]
            else:
                lines[index] = draw(st.binary(max_size=20))
            data = bytearray(b"\r\n".join(lines))
        elif not data:
            data += draw(st.sampled_from(INSERTS))
        elif kind == "flip":
            index = draw(st.integers(0, len(data) - 1))
            data[index] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            index = draw(st.integers(0, len(data)))
            data[index:index] = draw(st.sampled_from(INSERTS))
        elif kind == "delete":
            start = draw(st.integers(0, len(data) - 1))
            del data[start : start + draw(st.integers(1, 8))]
        else:
            del data[draw(st.integers(0, len(data))) :]
    return bytes(data)


def splits(data: bytes) -> st.SearchStrategy[list[bytes]]:
    """``data`` cut at up to eight random places (no empty pieces)."""

    def cut(points: list[int]) -> list[bytes]:
        edges = [0, *sorted(set(points)), len(data)]
        return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]

    return st.lists(st.integers(0, len(data)), max_size=8).map(cut)


#: The largest line limit the properties draw: the most a limit may be.
LINE_LIMIT_CAP = MAX_HEAD_BYTES

#: Small limits, so that random heads break them often; the defaults; and
#: the largest drawn (the 16 KiB cap on the whole head then decides).
limits_strategy = st.one_of(
    st.builds(
        RequestLimits,
        max_request_line=st.integers(1, 80),
        max_headers=st.integers(1, 8),
        max_header_size=st.integers(1, 80),
    ),
    st.just(RequestLimits()),
    st.builds(
        RequestLimits,
        max_request_line=st.sampled_from([LINE_LIMIT_CAP, LINE_LIMIT_CAP - 3]),
        max_headers=st.integers(1, 400),
        max_header_size=st.sampled_from([LINE_LIMIT_CAP, LINE_LIMIT_CAP - 3]),
    ),
)


@st.composite
def heads_near_the_limits(draw: st.DrawFn) -> tuple[RequestLimits, bytes]:
    """Limits, and bytes shaped like a request head against them: line
    lengths and a line count at the limits or next to them, sometimes a
    total length next to the 16 KiB cap; ended, half ended or not;
    mutated or not."""
    limits = draw(limits_strategy)

    def length(limit: int) -> int:
        near = st.integers(max(limit - 2, 0), limit + 2)
        return draw(st.one_of(st.integers(0, 40), near))

    lines = [b"G" * length(limits.max_request_line)]
    count = draw(st.sampled_from([0, 1, 2, 5, limits.max_headers, limits.max_headers + 1]))
    for _ in range(count):
        size = length(limits.max_header_size) if count < 10 else draw(st.integers(0, 40))
        lines.append(b"h" * size)
    ending = draw(st.sampled_from([b"\r\n\r\n", b"\r\n", b"\r", b""]))
    if draw(st.integers(0, 3)) > 0:
        # Pad lines within their limits, so that the whole is just below,
        # at or above 16 KiB; what does not fit goes to the last line.
        missing = MAX_HEAD_BYTES + draw(st.sampled_from([-1, 0, 1, 2, 4]))
        missing -= len(b"\r\n".join(lines) + ending)
        for index, line in enumerate(lines):
            limit = limits.max_request_line if index == 0 else limits.max_header_size
            padding = max(min(missing, limit - len(line)), 0)
            lines[index] += b"p" * padding
            missing -= padding
        if missing > 0:
            lines[-1] += b"p" * missing
    data = b"\r\n".join(lines) + ending
    if draw(st.integers(0, 2)) == 0:
        data = draw(mutations(data))
    return limits, data


# ----------------------------------------------------------------------
# The scanner on its own


@given(st.data(), heads_near_the_limits())
def test_scanner_verdict_is_the_documented_one_whatever_the_split(
    data: st.DataObject, case: tuple[RequestLimits, bytes]
) -> None:
    limits, head = case
    expected = limits_verdict(head, limits)
    event(f"verdict: {describe(expected)}")
    assert scan_in_pieces([head], limits) == expected
    pieces = data.draw(splits(head))
    assert scan_in_pieces(pieces, limits) == expected


@pytest.mark.parametrize(("line_limit", "size"), [(16381, 16385), (16384, 16388)])
def test_a_head_over_16_kib_read_whole_gets_431(line_limit: int, size: int) -> None:
    """HeadScanner.feed's shortcut for a first read checks the 16 KiB cap
    on the whole head too: with line limits of 16381 or more, a head of
    16385..16388 bytes read in one piece used to be taken (a valid upgrade
    got 101) while the same head read in two pieces got 431."""
    limits = RequestLimits(max_request_line=line_limit, max_header_size=line_limit)
    head = upgrade_request()
    head = head.replace(b"GET / ", b"GET /" + b"a" * (size - len(head)) + b" ")
    assert len(head) == size
    assert limits_verdict(head, limits) == Verdict(status=431)
    assert scan_in_pieces([head[:100], head[100:]], limits) == Verdict(status=431)
    assert scan_in_pieces([head], limits) == Verdict(status=431)


# ----------------------------------------------------------------------
# Whole requests through a running server


@dataclass
class Exchange:
    #: Everything the server wrote until it closed the stream.
    answer: bytes
    #: The requests the handler got (it accepts each).
    requests: list[WebSocketRequest]

    @property
    def status(self) -> int | None:
        return parse_answer(self.answer).status if self.answer else None

    @property
    def head(self) -> bytes:
        return self.answer.partition(b"\r\n\r\n")[0]


async def exchange(
    pieces: list[bytes], limits: RequestLimits | None = None, origins: list[object] | None = None
) -> Exchange:
    """Send ``pieces`` to a server over a memory stream (letting the server
    run between them), then EOF; read its answer until it closes."""
    requests: list[WebSocketRequest] = []

    async def handler(request: WebSocketRequest) -> None:
        requests.append(request)
        await request.accept()

    with trio.fail_after(EXCHANGE_TIMEOUT):
        async with trio.open_nursery() as nursery:
            _, listener = await start_memory_server(
                nursery,
                handler,
                request_limits=limits,
                origins=origins,
                connect_timeout=CONNECT_TIMEOUT,
                disconnect_timeout=5.0,
            )
            stream = await listener.connect()
            try:
                for piece in pieces:
                    await stream.send_all(piece)
                    await trio.sleep(0.01)
                await stream.send_eof()  # type: ignore[attr-defined]
            except trio.BrokenResourceError:
                pass  # the server has answered and closed already
            answer = await read_until_eof(stream)
            nursery.cancel_scope.cancel()
    return Exchange(answer, requests)


@given(valid_requests(), st.data(), st.booleans())
def test_a_valid_request_gets_101_whatever_the_split(
    request: ValidRequest, data: st.DataObject, check_origin: bool
) -> None:
    """101, or 403 from a server with an origin list that does not allow
    the request's Origin."""
    pieces = data.draw(splits(request.data))
    result = run_on_autojump_clock(exchange, pieces, None, ORIGINS if check_origin else None)
    if check_origin and not request.origin_allowed:
        assert result.status == 403, result.answer
        assert not result.requests
        return
    assert result.status == 101, result.answer
    [seen] = result.requests
    assert seen.path == request.path
    assert seen.proposed_subprotocols == request.subprotocols


def judged_early(data: bytes) -> bool:
    """Whether the server may answer 400 before the head is complete or a
    limit is reached: bytes that can never become a request (a bare LF, a
    control byte, no request line). When a head also breaks a limit, which
    of the two is found first depends on where the reads split it, so
    both answers are documented ones."""
    return EarlyHeadCheck().problem(data) is not None


def allowed_statuses(data: bytes, verdict: Verdict) -> set[int | None]:
    """What the server may answer ``data`` with, as far as the limits and
    the early check decide (None: no answer, the connection just ends)."""
    early = {400} if judged_early(data) else set()
    if verdict.status is not None:
        return {verdict.status} | early
    if verdict == INCOMPLETE:
        return {None} | early
    return set(ANSWERS)


@given(st.data(), valid_requests(), st.one_of(st.none(), limits_strategy), st.booleans())
def test_a_mutated_request_gets_a_documented_answer_whatever_the_split(
    data: st.DataObject, request: ValidRequest, limits: RequestLimits | None, check_origin: bool
) -> None:
    mutated = data.draw(mutations(request.data), label="mutated")
    first = data.draw(splits(mutated), label="first split")
    second = data.draw(splits(mutated), label="second split")
    origins = ORIGINS if check_origin else None
    one = run_on_autojump_clock(exchange, first, limits, origins)
    verdict = limits_verdict(mutated, limits or RequestLimits())
    allowed = allowed_statuses(mutated, verdict)
    event(f"answer: {one.status}")
    # An unfinished head that is not judged early: the server waited, then
    # saw EOF, and answered nothing.
    assert one.status in allowed, one.answer
    assert one.status != 403 or check_origin
    if one.status == 101:
        assert len(one.requests) == 1
    else:
        assert not one.requests
    other = run_on_autojump_clock(exchange, second, limits, origins)
    if verdict.status is None and verdict != INCOMPLETE:
        assert other.head == one.head  # a whole head within the limits: one answer
    else:
        assert other.status in allowed, other.answer


@given(st.data(), heads_near_the_limits())
def test_heads_near_the_limits_get_the_limits_answer(
    data: st.DataObject, case: tuple[RequestLimits, bytes]
) -> None:
    """Long lines, many lines, the 16 KiB cap, through the server."""
    limits, head = case
    result = run_on_autojump_clock(exchange, data.draw(splits(head)), limits)
    verdict = limits_verdict(head, limits)
    event(f"answer: {result.status}")
    assert result.status in allowed_statuses(head, verdict), result.answer


# ----------------------------------------------------------------------
# Data that follows the request head


def masked_text_frame(text: str) -> bytes:
    return FrameProtocol(client=True, extensions=[]).send_data(text, True)


async def first_message_after(pieces: list[bytes]) -> list[object]:
    """Send ``pieces`` (a request and a frame) and return what the
    accepting handler received within a few (virtual) seconds."""
    received: list[object] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        with trio.move_on_after(5):
            received.append(await ws.get_message())

    with trio.fail_after(EXCHANGE_TIMEOUT):
        async with trio.open_nursery() as nursery:
            _, listener = await start_memory_server(nursery, handler, disconnect_timeout=5.0)
            stream = await listener.connect()
            for piece in pieces:
                await stream.send_all(piece)
                await trio.sleep(0.01)
            await read_until_eof(stream)
            nursery.cancel_scope.cancel()
    return received


def test_a_frame_sent_after_the_request_is_delivered() -> None:
    request, frame = upgrade_request(), masked_text_frame("hello")
    assert run_on_autojump_clock(first_message_after, [request, frame]) == ["hello"]


def test_a_frame_in_the_same_read_as_the_request_is_delivered() -> None:
    """Bytes that arrive in the same read after the request head (a client
    that sends its first frame without waiting for the 101) are kept for
    the connection, on the short path (_upgrade) and through wsproto alike
    (wsproto's server handshake passes no trailing data on by itself)."""
    request, frame = upgrade_request(), masked_text_frame("hello")
    assert run_on_autojump_clock(first_message_after, [request + frame]) == ["hello"]


# ----------------------------------------------------------------------
# The short way (``_server.upgrade``) against wsproto


def wsproto_reading(head: bytes) -> Request | None:
    """The ``Request`` event wsproto (with h11) makes of ``head``, or None
    when it refuses it."""
    handshake = H11Handshake(ConnectionType.SERVER)
    try:
        handshake.receive_data(head)
        events = list(handshake.events())
    except (ProtocolError, UnicodeError):
        return None
    requests = [item for item in events if isinstance(item, Request)]
    return requests[0] if requests else None


@given(st.data(), valid_requests())
def test_the_short_way_reads_a_request_as_wsproto_and_answers_alike(
    data: st.DataObject, request: ValidRequest
) -> None:
    """``read_upgrade`` takes only requests wsproto accepts, reads them to
    the same event, and ``accept_response`` writes wsproto's 101 byte for
    byte (the rules of ``_server.upgrade``)."""
    head = request.data
    if data.draw(st.booleans(), label="mutate"):
        head = data.draw(mutations(head), label="mutated")
    ours = read_upgrade(head)
    event(f"short way: {ours is not None}")
    if ours is None:
        return
    theirs = wsproto_reading(head)
    assert theirs == ours
    subprotocol = data.draw(st.sampled_from([None, *ours.subprotocols]), label="subprotocol")
    handshake = H11Handshake(ConnectionType.SERVER)
    handshake.receive_data(head)
    list(handshake.events())
    expected = handshake.send(AcceptConnection(subprotocol=subprotocol))
    assert accept_response(ours, subprotocol) == expected
