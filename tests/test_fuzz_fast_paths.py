"""Differential fuzzing of the fast paths (``_wire.fast_paths``): the same
random bytes and the same random application calls, given to a connection
built with the fast paths on and to one built with them off, give the same
behaviour.

Each example runs twice, in two trio runs, with ``fast_paths.ENABLED`` set
for the whole run (every fast path reads the switch when it decides:
connection construction, the plain upgrade, the socket stream and
acceptor, the hub's prebuilt frames), and checks that the switch took
effect (the connection frames its own data frames and reads with the fast
frame decoder, over TCP through the lean socket stream; or none of it).
On the autojump clock, a raw peer sends each of its reads only once the
connection has handled the one before, to the end: how reads coalesce and
how far the application gets meanwhile are up to trio's scheduler, which
picks at random, and must not pass for a difference.

Properties:
- Receive side, both roles: a frame stream from ``test_fuzz_frames`` (valid
  messages in fragments, control frames between, and every flaw that file
  draws: bad opcodes, reserved bits, invalid UTF-8, oversized or
  fragmented control frames, masking wrong for the role, lengths not in
  their shortest form, mutated bytes), cut into random reads, with random
  ``max_message_size`` and read sizes. The connection delivers the same
  messages (whole with ``get_message``, or joined from the pieces of
  ``receive_fragments``, with or without its ``max_size``), ends with the
  same ``ConnectionClosed`` reason, reports the same ``closed``,
  ``close_sent``, ``close_received`` and statistics, and writes the same
  frames back (pongs, close), as a wsproto peer parses them; a server
  writes the same bytes.
- The same with permessage-deflate agreed, the peer's messages compressed
  by a raw zlib compressor as ``test_fuzz_deflate``'s hostile client does
  (some mutated, some zip bombs, some with too wide a window), with plain
  messages and control frames between.
- Send side, both roles: a random sequence of ``send_message`` (text and
  binary, empty, and across the 125 and 65535 length forms; with
  ``compress`` None, True or False when permessage-deflate is agreed),
  ``send_fragments`` from lists and async generators, the hub's
  ``_send_prebuilt_frame``, messages from the peer echoed as a batch (get,
  send, get, send...), pings, pongs (too long ones too), and a final
  ``aclose`` with a random code and reason. A wsproto peer (answering pings
  and the close) parses the same frames, in the same order; a server
  writes the same bytes, compressed payloads included (a client masks with
  random keys). Every call returns or raises alike, and the connection
  ends in the same state, with the same statistics.
- Opening handshake: a valid upgrade request (many spellings, with
  subprotocols and extension offers, maybe a frame right behind it) or a
  mutated one, in random pieces, to a server whose handler accepts it
  (with a subprotocol, extra headers, compression, or not): with the fast
  paths on, a plain valid request takes the short way (``_server.upgrade``),
  off, every request goes to wsproto's ``H11Handshake``. The answer is the
  same, byte for byte (neither writes a Date or Server header, and header
  order is the same), and the handler sees the same request and the same
  first message.
- Over TCP on 127.0.0.1, in TLS or not (real time, a third of the
  examples): a valid frame stream from a raw peer to a server
  (``serve_websocket``: the lean acceptor) or a client
  (``connect_websocket``: the lean socket stream), received alike.

One difference is allowed, from the fast decoder holding an uncompressed
binary frame until it is whole: of a message that the close cut short, a
streamed receive may have had more or less of its start
(``assert_same_messages`` explains).
Five differences found here were bugs, fixed, each with a regression test:
a hub subscriber with compression got the shared uncompressed frame
(tests/test_hub.py); a message that failed to inflate was half counted in
the compression ratio, and a compressed frame was held until whole, so a
bomb's start was not refused (tests/test_deflate.py); a message received
in pieces was not counted in ``messages_received`` (tests/test_stats.py);
and, both ways, trio's scheduling could let the reader close the stream
under our close frame's write (tests/test_closing_bounds.py).

Example counts come from the Hypothesis profile (see tests/README.md).
"""

from __future__ import annotations

import functools
import itertools
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import pytest
import trio
import trio.lowlevel
import trio.testing
import trustme
from conftest import FUZZ_TIME_LIMIT, accept_by_hand, read_request_head
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st
from server_fixtures import read_until_eof, start_memory_server, upgrade_request
from test_fuzz_deflate import (
    NAME,
    HostileMessage,
    RawDeflater,
    deflate_configs,
    frames_of_payload,
    hostile_messages,
    offers,
    wsproto_deflates,
)
from test_fuzz_deflate import messages as deflate_messages
from test_fuzz_frames import (
    CLOSE,
    FLAWS,
    Frame,
    Stream,
    byte_mutations,
    chunk_sizes,
    close_payloads,
    collect,
    control_frames,
    cut,
    frame_lists,
    join,
    keys,
    read_head,
    run_on_autojump_clock,
    serialize,
    streams,
    tweaked,
)
from test_fuzz_frames import messages as frame_messages
from test_fuzz_request_head import mutations, splits, valid_requests
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError

from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    DeflateConfig,
    WebSocketConnection,
    WebSocketRequest,
    connect_websocket,
    serve_websocket,
    wrap_client_stream,
)
from trio_websocket._core.compression import DeflateParameters
from trio_websocket._core.deflate import DeflateExtension
from trio_websocket._extras.hub import server_frame
from trio_websocket._server.request import wrap_server_stream
from trio_websocket._wire import fast_paths
from trio_websocket._wire.frame_decoder import _FastReceiveDecoder

pytestmark = pytest.mark.time_limit(FUZZ_TIME_LIMIT)

T = TypeVar("T")

#: Virtual seconds one connection may take: the closing handshake's grace
#: periods are a few seconds.
CONNECTION_TIMEOUT = 120.0
#: The most messages one connection is read for.
MOST_MESSAGES = 10_000


# ----------------------------------------------------------------------
# The switch


@contextmanager
def fast_paths_set(enabled: bool) -> Iterator[None]:
    """``fast_paths.ENABLED`` as given, for connections built meanwhile."""
    saved = fast_paths.ENABLED
    fast_paths.ENABLED = enabled
    try:
        yield
    finally:
        fast_paths.ENABLED = saved


def run_both_ways(function: Callable[..., Awaitable[T]], *args: object) -> tuple[T, T]:
    """``function(*args)`` run with the fast paths on, then off, each in its
    own trio run on a fresh autojump clock."""
    with fast_paths_set(True):
        fast = run_on_autojump_clock(function, *args)
    with fast_paths_set(False):
        plain = run_on_autojump_clock(function, *args)
    return fast, plain


def uses_fast_paths(ws: WebSocketConnection) -> tuple[bool, bool]:
    """Whether ``ws`` frames its own data frames, and whether it reads
    frames with the fast decoder."""
    decoder = ws._proto._proto._frame_decoder
    return ws._own_framing, type(decoder) is _FastReceiveDecoder


def check_switch(fast: tuple[bool, bool], plain: tuple[bool, bool]) -> None:
    assert fast == (True, True)
    assert plain == (False, False)


# ----------------------------------------------------------------------
# Opening a connection whose peer is driven by hand


@dataclass(frozen=True)
class Deflate:
    """permessage-deflate for a connection opened with a peer driven by
    hand: the library's settings, the peer's (a raw client's offer, or
    wsproto's ``PerMessageDeflate`` arguments for a wsproto client or
    server), and the parameters both agree on."""

    config: DeflateConfig
    #: A raw client's offer (the library is the server).
    offer: str | None = None
    #: The wsproto peer's ``PerMessageDeflate`` arguments.
    theirs: tuple[bool, int | None, bool, int | None] | None = None
    parameters: DeflateParameters | None = None

    def wsproto_extension(self) -> PerMessageDeflate:
        assert self.theirs is not None
        return PerMessageDeflate(*self.theirs)

    def peer_compressor(self, to_server: bool) -> RawDeflater:
        """A raw compressor that honours what the peer agreed to."""
        agreed = self.parameters
        assert agreed is not None
        if to_server:
            bits, resets = agreed.client_max_window_bits, agreed.client_no_context_takeover
        else:
            bits, resets = agreed.server_max_window_bits, agreed.server_no_context_takeover
        return RawDeflater(max(bits, 9), resets)


def arguments_of(theirs: PerMessageDeflate) -> tuple[bool, int | None, bool, int | None]:
    return (
        theirs.client_no_context_takeover,
        theirs.client_max_window_bits,
        theirs.server_no_context_takeover,
        theirs.server_max_window_bits,
    )


def agreed_with_client(config: DeflateConfig, offer: str | PerMessageDeflate) -> Deflate:
    """What the library's server agrees with a raw client's offer, or with
    a wsproto client's."""
    ours = DeflateExtension(config, is_client=False, max_message_size=1 << 20)
    if isinstance(offer, str):
        ours.accept(offer)
        return Deflate(config, offer=offer, parameters=ours.parameters)
    ours.accept(f"{NAME}; {offer.offer()}")
    return Deflate(config, theirs=arguments_of(offer), parameters=ours.parameters)


def agreed_with_wsproto_server(config: DeflateConfig, theirs: PerMessageDeflate) -> Deflate:
    """What the library's client agrees with a wsproto server (None as the
    parameters if the client would refuse its answer)."""
    arguments = arguments_of(theirs)
    ours = DeflateExtension(config, is_client=True, max_message_size=1 << 20)
    response = PerMessageDeflate(*arguments).accept(f"{NAME}; {ours.offer()}")
    if not isinstance(response, str):
        return Deflate(config, theirs=arguments)
    try:
        ours.finalize(f"{NAME}; {response}")
    except RemoteProtocolError:
        return Deflate(config, theirs=arguments)
    return Deflate(config, theirs=arguments, parameters=ours.parameters)


@st.composite
def deflates(draw: st.DrawFn, to_server: bool, raw_client: bool) -> Deflate:
    """Settings that agree on permessage-deflate, for a library server and
    a raw or wsproto client, or for a library client and a wsproto
    server."""
    config = draw(deflate_configs)
    if not to_server:
        agreed = agreed_with_wsproto_server(config, draw(wsproto_deflates))
    else:
        offer: str | PerMessageDeflate = draw(offers) if raw_client else draw(wsproto_deflates)
        agreed = agreed_with_client(config, offer)
    assume(agreed.parameters is not None)
    return agreed


@dataclass
class Opened:
    ws: WebSocketConnection
    #: The raw peer's end of the stream.
    peer: trio.abc.Stream
    #: The peer's wsproto connection (None for a raw client, which has
    #: none: it writes frames by hand).
    peer_protocol: Connection | None


async def open_with_raw_peer(
    nursery: trio.Nursery,
    library_is_server: bool,
    deflate: Deflate | None,
    options: dict[str, Any],
    *,
    wsproto_client: bool = False,
) -> Opened:
    """A ``WebSocketConnection`` (the server or the client) whose peer's end
    of the memory stream the caller drives. The peer's side of the opening
    handshake is done by hand: a raw request from a client (or, with
    ``wsproto_client``, wsproto's client handshake), wsproto's server
    handshake for a library client."""
    client_end, server_end = trio.testing.memory_stream_pair()
    if deflate is not None:
        options = {**options, "compression": deflate.config}
    connections: list[WebSocketConnection] = []
    opened = trio.Event()

    async def open_library_end() -> None:
        if library_is_server:
            request = await wrap_server_stream(nursery, server_end, **options)
            connections.append(await request.accept())
        else:
            connections.append(
                await wrap_client_stream(nursery, client_end, "example.com", "/", **options)
            )
        opened.set()

    nursery.start_soon(open_library_end)
    peer_protocol: Connection | None = None
    extensions: list[Extension] = []
    if deflate is not None and deflate.theirs is not None:
        extensions.append(deflate.wsproto_extension())
    if library_is_server and wsproto_client:
        peer = client_end
        client = H11Handshake(ConnectionType.CLIENT)
        await peer.send_all(
            client.send(Request(host="example.com", target="/", extensions=extensions))
        )
        client.receive_data(await read_head(peer))
        assert any(isinstance(item, AcceptConnection) for item in client.events())
        peer_protocol = client.connection
    elif library_is_server:
        peer = client_end
        offer = b""
        if deflate is not None:
            offer = f"Sec-WebSocket-Extensions: {deflate.offer}\r\n".encode()
        await peer.send_all(upgrade_request(extra=offer))
        assert (await read_head(peer)).startswith(b"HTTP/1.1 101 ")
    else:
        peer = server_end
        server = H11Handshake(ConnectionType.SERVER)
        server.receive_data(await read_request_head(peer))
        assert any(isinstance(item, Request) for item in server.events())
        await peer.send_all(server.send(AcceptConnection(extensions=extensions)))
        peer_protocol = server.connection
    await opened.wait()
    [ws] = connections
    if deflate is not None:
        assert ws.compression == deflate.parameters
    return Opened(ws, peer, peer_protocol)


# ----------------------------------------------------------------------
# Receive side


@dataclass
class Received:
    """What a connection did with a peer's stream."""

    #: The messages delivered, in order; ("unfinished", joined pieces) last
    #: for a message received in pieces that the close cut short.
    messages: list[object]
    #: The reason of the ConnectionClosed that ended the receiving.
    ended_with: CloseReason | None
    closed: CloseReason | None
    close_sent: CloseReason | None
    close_received: CloseReason | None
    #: Everything the connection wrote after the opening handshake.
    output: bytes
    fast: tuple[bool, bool] = (False, False)
    #: Messages received and the compression ratio (``statistics()``).
    counts: tuple[object, ...] = ()
    bytes_received: int = 0


@dataclass(frozen=True)
class Reading:
    """How the application receives: whole messages, or in pieces (with a
    per-message limit, or none); as they come, or only once the peer has
    sent everything (the connection stops reading when its inbox is full)."""

    in_pieces: bool
    max_size: int | None
    max_message_size: int
    read_size: int
    late: bool = False


readings = st.builds(
    Reading,
    st.booleans(),
    st.sampled_from([None, None, 1, 100, 5000]),
    st.sampled_from([2**20, 1000, 100, 1]),
    st.sampled_from([2**17, 4096, 100, 7, 1]),
    st.sampled_from([False, False, True]),
)


async def messages_until_closed(
    ws: WebSocketConnection, reading: Reading
) -> tuple[list[object], CloseReason | None]:
    """Receive as ``reading`` says until ``ConnectionClosed``: the messages
    and the exception's reason."""
    messages: list[object] = []
    for _ in range(MOST_MESSAGES):
        if not reading.in_pieces:
            try:
                messages.append(await ws.get_message())
            except ConnectionClosed as exc:
                return messages, exc.reason
            continue
        pieces: list[str | bytes] = []
        try:
            async for piece in ws.receive_fragments(max_size=reading.max_size):
                pieces.append(piece)
        except ConnectionClosed as exc:
            if pieces:
                messages.append(("unfinished", join(pieces)))
            return messages, exc.reason
        messages.append(join(pieces))
    raise AssertionError("more messages than the stream can hold")


async def feed(stream: Stream, reading: Reading, deflate: Deflate | None) -> Received:
    """Open a connection with a raw peer (the library is the server when the
    stream goes to a server), send it the stream's reads, then end the
    stream; receive until ``ConnectionClosed``."""
    options = {
        "max_message_size": reading.max_message_size,
        # (At most a few hundred reads: a large stream read a byte at a
        # time would take seconds.)
        "receive_buffer_size": max(reading.read_size, len(stream.data) // 400),
    }
    received = Received([], None, None, None, None, b"")
    sent_all = trio.Event()
    with trio.fail_after(CONNECTION_TIMEOUT):
        async with trio.open_nursery() as nursery:
            opened = await open_with_raw_peer(nursery, stream.to_server, deflate, options)
            ws, peer = opened.ws, opened.peer
            received.fast = uses_fast_paths(ws)

            async def send_stream() -> None:
                try:
                    for chunk in stream.chunks:
                        await peer.send_all(chunk)
                        # Handled to the end (the application included)
                        # before the next chunk: see the module docstring.
                        await trio.testing.wait_all_tasks_blocked()
                    await peer.send_eof()  # type: ignore[attr-defined]
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the connection closed its end
                finally:
                    sent_all.set()

            async def read_output() -> None:
                while chunk := await peer.receive_some():
                    received.output += chunk

            nursery.start_soon(send_stream)
            nursery.start_soon(read_output)
            if reading.late:
                await sent_all.wait()
            received.messages, received.ended_with = await messages_until_closed(ws, reading)
    received.closed = ws.closed
    received.close_sent = ws.close_sent
    received.close_received = ws.close_received
    statistics = ws.statistics()
    received.counts = (statistics.messages_received, statistics.compression_ratio)
    received.bytes_received = statistics.bytes_received
    return received


def assert_received_alike(fast: Received, plain: Received, to_server: bool) -> None:
    check_switch(fast.fast, plain.fast)
    assert_same_messages(fast.messages, plain.messages)
    assert fast.ended_with == plain.ended_with
    assert fast.counts == plain.counts
    assert fast.bytes_received == plain.bytes_received
    assert (fast.closed, fast.close_sent, fast.close_received) == (
        plain.closed,
        plain.close_sent,
        plain.close_received,
    )
    # What the connection wrote back, as a wsproto peer reads it.
    role = ConnectionType.CLIENT if to_server else ConnectionType.SERVER
    written = collect(Connection(role), [fast.output], False)
    assert written == collect(Connection(role), [plain.output], False)
    if to_server:
        assert fast.output == plain.output  # a server does not mask


def assert_same_messages(fast: list[object], plain: list[object]) -> None:
    """The same messages; of one that the close cut short (received in
    pieces), the two ways may have handed over different lengths of its
    start, never anything else.

    That is the one difference allowed, and it comes from where the payload
    is cut, not from what is done with it: the fast decoder may hold an
    uncompressed binary frame until it is whole (``_wire.frame_decoder``),
    where wsproto hands its payload over read by read. A streamed receive
    that claims the message stops the holding, and what was held comes
    with the next read: when the stream ends instead, it is never handed
    over (less with the fast paths). And the claim takes what was
    assembled so far as its first piece, all of it or nothing within
    ``max_size``: with part of a frame held back, that piece may be small
    enough where wsproto's was not (more with the fast paths)."""
    fast_part = unfinished_part(fast)
    plain_part = unfinished_part(plain)
    if isinstance(fast_part, str) or isinstance(plain_part, str):
        assert fast_part == plain_part  # (text frames are never held)
    elif fast_part is not None and plain_part is not None:
        shorter = min(len(fast_part), len(plain_part))
        assert fast_part[:shorter] == plain_part[:shorter]
    fast_whole = fast[: len(fast) - (fast_part is not None)]
    assert fast_whole == plain[: len(plain) - (plain_part is not None)]


def unfinished_part(messages: list[object]) -> str | bytes | None:
    """What was received of the message the close cut short, if any."""
    if messages and isinstance(messages[-1], tuple):
        part: str | bytes = messages[-1][1]
        return part
    return None


def describe_end(received: Received) -> str:
    reason = received.ended_with
    return f"ended with {reason.code if reason is not None else None}"


@given(streams(), readings)
def test_a_frame_stream_is_received_alike_with_and_without_fast_paths(
    stream: Stream, reading: Reading
) -> None:
    fast, plain = run_both_ways(feed, stream, reading, None)
    event(describe_end(plain))
    event(f"in pieces: {reading.in_pieces}")
    assert_received_alike(fast, plain, stream.to_server)


@dataclass(frozen=True)
class CompressedStream:
    deflate: Deflate
    stream: Stream


@st.composite
def compressed_streams(draw: st.DrawFn) -> CompressedStream:
    """permessage-deflate agreed, then a stream of messages compressed by a
    raw zlib compressor within what was agreed (some mutated, some zip
    bombs, some too wide a window: see ``test_fuzz_deflate``), plain
    messages and control frames between them, maybe one frame with a flaw,
    maybe a close frame, maybe mutated bytes."""
    to_server = draw(st.booleans())
    deflate = draw(deflates(to_server, raw_client=True))
    compressor = deflate.peer_compressor(to_server)
    clean = draw(st.booleans())
    frames: list[Frame] = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["compressed"] * 3 + ["plain", "control"]))
        if kind == "compressed":
            message: HostileMessage = draw(hostile_messages())
            if clean:
                message = replace(message, mutation=None)
            frames.extend(frames_of_payload(message, compressor.payload(message)))
        elif kind == "plain":
            frames.extend(draw(frame_messages(clean)))
        else:
            frames.append(draw(control_frames(clean)))
    if frames and not clean and draw(st.booleans()):
        index = draw(st.integers(0, len(frames) - 1))
        frames[index] = tweaked(frames[index], draw(st.sampled_from(FLAWS)))
    if draw(st.booleans()):
        frames.append(Frame(CLOSE, draw(close_payloads(clean)), key=draw(keys)))
    data = serialize(frames, to_server)
    if not clean:
        data = draw(byte_mutations(data))
    return CompressedStream(deflate, Stream(to_server, data, cut(data, draw(chunk_sizes))))


@given(compressed_streams(), readings)
def test_a_compressed_stream_is_received_alike_with_and_without_fast_paths(
    case: CompressedStream, reading: Reading
) -> None:
    fast, plain = run_both_ways(feed, case.stream, reading, case.deflate)
    event(describe_end(plain))
    assert_received_alike(fast, plain, case.stream.to_server)


# ----------------------------------------------------------------------
# Send side


@dataclass(frozen=True)
class Action:
    """One call on the connection: "message" (``send_message``),
    "fragments" or "async fragments" (``send_fragments`` from a list or an
    async generator), "prebuilt" (``_send_prebuilt_frame``, as the hub
    sends), "echo" (the pieces as messages from the peer, each sent back as
    it is taken), "ping" or "pong"."""

    kind: str
    message: str | bytes | None = None
    pieces: tuple[str | bytes, ...] = ()
    compress: bool | None = None
    payload: bytes | None = None


texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from([0, 125, 126, 65535, 65536, 70000]).map(lambda size: "x" * size),
    st.sampled_from([42, 22000]).map(lambda size: "\u00e9\u20ac\U0001f600" * size),
)
binaries = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([0, 125, 126, 127, 65535, 65536, 70000]).map(lambda size: bytes(size)),
)


@st.composite
def actions(draw: st.DrawFn, deflated: bool) -> Action:
    kind = draw(
        st.sampled_from(
            ["message"] * 4 + ["fragments", "async fragments", "prebuilt", "echo", "ping", "pong"]
        )
    )
    if kind in ("ping", "pong"):
        # (Too long a payload too: both refuse it alike.)
        payload: bytes | None = draw(
            st.one_of(st.binary(max_size=125), st.binary(min_size=126, max_size=130))
        )
        if kind == "pong" and draw(st.booleans()):
            payload = None
        return Action(kind, payload=payload)
    if deflated and draw(st.booleans()):
        # Compressible and random payloads, cut where text stays valid.
        drawn = draw(deflate_messages())
        message: str | bytes = drawn.value
        pieces = [piece.decode() if drawn.text else piece for piece in drawn.pieces()]
    else:
        message = draw(st.one_of(texts, binaries))
        encoded = message.encode() if isinstance(message, str) else message
        edges = sorted(draw(st.lists(st.integers(0, len(encoded)), max_size=3)))
        if isinstance(message, str):
            edges = [e for e in edges if e == len(encoded) or encoded[e] & 0xC0 != 0x80]
        pieces = [
            encoded[a:b].decode() if isinstance(message, str) else encoded[a:b]
            for a, b in itertools.pairwise([0, *edges, len(encoded)])
        ]
    compress = draw(st.sampled_from([None, True, False])) if deflated else None
    return Action(kind, message=message, pieces=tuple(pieces), compress=compress)


@dataclass(frozen=True)
class Script:
    to_server: bool
    deflate: Deflate | None
    actions: tuple[Action, ...]
    close_code: int
    close_reason: str | None


close_codes = st.sampled_from([1000, 1001, 1004, 1005, 1006, 1011, 1015, 3000, 4999])
close_reasons = st.one_of(
    st.none(),
    st.just(""),
    st.text(max_size=30),
    st.just("\u00e9" * 70),  # over 123 bytes
)


@st.composite
def scripts(draw: st.DrawFn) -> Script:
    to_server = draw(st.booleans())
    deflate = draw(st.one_of(st.none(), deflates(to_server, raw_client=False)))
    steps = draw(st.lists(actions(deflate is not None), max_size=8))
    return Script(to_server, deflate, tuple(steps), draw(close_codes), draw(close_reasons))


async def async_pieces(pieces: tuple[str | bytes, ...]) -> AsyncIterator[str | bytes]:
    for piece in pieces:
        await trio.lowlevel.checkpoint()
        yield piece


async def perform(opened: Opened, action: Action) -> None:
    ws = opened.ws
    kind = action.kind
    if kind == "echo":
        # The peer sends the pieces as messages, in one write; the
        # application sends each back as it takes it: a batch (get, send,
        # get, send...), whose frames the connection writes together.
        peer_protocol = opened.peer_protocol
        assert peer_protocol is not None
        await opened.peer.send_all(
            b"".join(
                peer_protocol.send(
                    TextMessage(piece) if isinstance(piece, str) else BytesMessage(piece)
                )
                for piece in action.pieces
            )
        )
        for _ in action.pieces:
            await ws.send_message(await ws.get_message(), compress=action.compress)
    elif kind == "message":
        assert action.message is not None
        await ws.send_message(action.message, compress=action.compress)
    elif kind == "fragments":
        await ws.send_fragments(list(action.pieces))  # type: ignore[arg-type]
    elif kind == "async fragments":
        await ws.send_fragments(async_pieces(action.pieces))  # type: ignore[arg-type]
    elif kind == "prebuilt":
        assert action.message is not None
        await ws._send_prebuilt_frame(server_frame(action.message), action.message)
    elif kind == "ping":
        await ws.ping(action.payload)
    else:
        await ws.pong(action.payload)


@dataclass
class Sent:
    """What a connection sent for a script."""

    #: Per call: None, or the exception's type and text.
    results: list[tuple[str, str] | None]
    closed: CloseReason | None
    close_sent: CloseReason | None
    close_received: CloseReason | None
    messages_sent: int
    bytes_sent: int
    #: Everything the connection wrote after the opening handshake.
    output: bytes
    fast: tuple[bool, bool] = (False, False)
    compression: DeflateParameters | None = None
    ratio: float | None = None


async def answer_as_wsproto(
    peer: trio.abc.Stream, protocol: Connection, sent: Sent, to_server: bool
) -> None:
    """The peer: read everything, answer pings and the close (then a
    server closes the stream; a client waits for the server to)."""
    parsing = True
    try:
        while chunk := await peer.receive_some():
            sent.output += chunk
            if not parsing:
                continue
            protocol.receive_data(bytes(chunk))
            for item in protocol.events():
                if isinstance(item, Ping):
                    await peer.send_all(protocol.send(item.response()))
                elif isinstance(item, CloseConnection):
                    await peer.send_all(protocol.send(item.response()))
                    parsing = False
                    if not to_server:
                        await peer.aclose()
                        return
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # (the connection dropped the stream: its state tells)


async def play(script: Script) -> Sent:
    """Open a connection with a wsproto peer, play the script on it, close
    it; what it sent."""
    sent = Sent([], None, None, None, 0, 0, b"")
    with trio.fail_after(CONNECTION_TIMEOUT):
        async with trio.open_nursery() as nursery:
            opened = await open_with_raw_peer(
                nursery, script.to_server, script.deflate, {}, wsproto_client=True
            )
            ws = opened.ws
            assert opened.peer_protocol is not None
            sent.fast = uses_fast_paths(ws)
            sent.compression = ws.compression
            nursery.start_soon(
                answer_as_wsproto, opened.peer, opened.peer_protocol, sent, script.to_server
            )
            for action in script.actions:
                try:
                    await perform(opened, action)
                    sent.results.append(None)
                except (ValueError, TypeError, ConnectionClosed) as exc:
                    sent.results.append((type(exc).__name__, str(exc)))
            await ws.aclose(script.close_code, script.close_reason)
    sent.closed = ws.closed
    sent.close_sent = ws.close_sent
    sent.close_received = ws.close_received
    statistics = ws.statistics()
    sent.messages_sent = statistics.messages_sent
    sent.bytes_sent = statistics.bytes_sent
    sent.ratio = statistics.compression_ratio
    return sent


def parsed_frames(sent: Sent, to_server: bool) -> list[tuple[object, ...]]:
    """The frames in ``sent.output``, one event each, as a fresh wsproto
    peer (with the agreed permessage-deflate) reads them all at once."""
    extensions: list[Extension] = []
    agreed = sent.compression
    if agreed is not None:
        extension = PerMessageDeflate(
            client_no_context_takeover=agreed.client_no_context_takeover,
            client_max_window_bits=agreed.client_max_window_bits,
            server_no_context_takeover=agreed.server_no_context_takeover,
            server_max_window_bits=agreed.server_max_window_bits,
        )
        extension.finalize(NAME)  # (enables it, with the parameters given)
        extensions.append(extension)
    role = ConnectionType.CLIENT if to_server else ConnectionType.SERVER
    peer = Connection(role, extensions)
    peer.receive_data(sent.output)
    items: list[tuple[object, ...]] = []
    for item in peer.events():
        items.append(describe_event(item))
        if isinstance(item, CloseConnection):
            break
    return items


def describe_event(item: Event) -> tuple[object, ...]:
    if isinstance(item, (TextMessage, BytesMessage)):
        return (type(item).__name__, item.data, item.frame_finished, item.message_finished)
    if isinstance(item, (Ping, Pong)):
        return (type(item).__name__, bytes(item.payload))
    if isinstance(item, CloseConnection):
        return ("close", item.code, item.reason)
    return (type(item).__name__,)


@given(scripts())
def test_sends_go_out_alike_with_and_without_fast_paths(script: Script) -> None:
    fast, plain = run_both_ways(play, script)
    check_switch(fast.fast, plain.fast)
    event(f"compression agreed: {plain.compression is not None}")
    assert fast.compression == plain.compression
    assert fast.results == plain.results
    frames = parsed_frames(fast, script.to_server)
    assert frames == parsed_frames(plain, script.to_server)
    # Every message the script sent arrived (the peer saw a close last).
    assert frames and frames[-1][0] == "close"
    assert (fast.closed, fast.close_sent, fast.close_received) == (
        plain.closed,
        plain.close_sent,
        plain.close_received,
    )
    assert (fast.messages_sent, fast.bytes_sent, fast.ratio) == (
        plain.messages_sent,
        plain.bytes_sent,
        plain.ratio,
    )
    if script.to_server:
        assert fast.output == plain.output  # a server does not mask


# ----------------------------------------------------------------------
# The opening handshake


@dataclass(frozen=True)
class Handshake:
    pieces: list[bytes]
    #: Which proposed subprotocol the handler picks (modulo their number;
    #: None: none).
    subprotocol: int | None
    compression: DeflateConfig | None
    extra_headers: bool


@dataclass
class Answered:
    answer: bytes
    #: What the handler saw: path, subprotocols, headers, first message.
    seen: list[tuple[object, ...]]
    #: Whether the request was read the short way (``_server.upgrade``).
    shortcut: bool = False


EXTENSION_OFFERS = [
    "permessage-deflate",
    "permessage-deflate; client_max_window_bits",
    "permessage-deflate; server_no_context_takeover, x-other",
    "x-unknown; a=1",
]


@st.composite
def handshakes(draw: st.DrawFn) -> Handshake:
    request = draw(valid_requests()).data
    if draw(st.booleans()):
        offer = draw(st.sampled_from(EXTENSION_OFFERS))
        request = request[:-2] + f"Sec-WebSocket-Extensions: {offer}\r\n\r\n".encode()
    if draw(st.integers(0, 2)) == 0:
        request = draw(mutations(request))
    if draw(st.integers(0, 3)) == 0:
        # A client that sends its first frame without waiting for the 101.
        request += Frame(0x1, b"early").serialize(to_server=True)
    return Handshake(
        pieces=draw(splits(request)),
        subprotocol=draw(st.one_of(st.none(), st.integers(0, 3))),
        compression=draw(st.one_of(st.none(), st.just(DeflateConfig()))),
        extra_headers=draw(st.integers(0, 4)) == 0,
    )


async def serve_one(case: Handshake) -> Answered:
    """Send the pieces to a server, then end the stream; its answer until
    it closes, and what its handler saw."""
    seen: list[tuple[object, ...]] = []
    shortcut: list[bool] = []

    async def handler(request: WebSocketRequest) -> None:
        # (The raw head, where wsproto's handshake would be.)
        shortcut.append(isinstance(request._handshake, bytes))
        proposed = request.proposed_subprotocols
        subprotocol = None
        if case.subprotocol is not None and proposed:
            subprotocol = proposed[case.subprotocol % len(proposed)]
        extra = [(b"x-extra", b"1")] if case.extra_headers else None
        seen.append((request.path, proposed, tuple(request.headers), subprotocol))
        ws = await request.accept(subprotocol=subprotocol, extra_headers=extra)
        seen.append(uses_fast_paths(ws))
        with trio.move_on_after(5):
            try:
                seen.append(("message", await ws.get_message()))
            except ConnectionClosed as exc:
                seen.append(("closed", exc.reason))

    with trio.fail_after(CONNECTION_TIMEOUT):
        async with trio.open_nursery() as nursery:
            _, listener = await start_memory_server(
                nursery,
                handler,
                compression=case.compression,
                connect_timeout=10.0,
                disconnect_timeout=5.0,
            )
            stream = await listener.connect()
            try:
                for piece in case.pieces:
                    await stream.send_all(piece)
                    await trio.sleep(0.01)
                await stream.send_eof()  # type: ignore[attr-defined]
            except trio.BrokenResourceError:
                pass  # the server has answered and closed already
            answer = await read_until_eof(stream)
            nursery.cancel_scope.cancel()
    return Answered(answer, seen, any(shortcut))


@given(handshakes())
def test_the_opening_handshake_is_answered_alike_with_and_without_fast_paths(
    case: Handshake,
) -> None:
    fast, plain = run_both_ways(serve_one, case)
    status = plain.answer[9:12].decode("ascii", "replace") if plain.answer else "none"
    event(f"answer: {status}")
    event(f"read the short way: {fast.shortcut}")
    assert not plain.shortcut
    assert fast.answer == plain.answer
    if len(plain.seen) > 1:
        check_switch(fast.seen.pop(1), plain.seen.pop(1))  # type: ignore[arg-type]
    assert fast.seen == plain.seen


# ----------------------------------------------------------------------
# Over TCP: the lean socket stream and the lean acceptor


@dataclass(frozen=True)
class TcpCase:
    stream: Stream
    tls: bool


@st.composite
def tcp_cases(draw: st.DrawFn) -> TcpCase:
    """Valid messages and control frames, maybe a close frame last, in
    random sends (over TCP the reads are the kernel's: only a valid stream
    gets one answer whatever they are); in TLS or not (a TLS stream cannot
    be half-closed: its peer always ends with a close frame)."""
    to_server = draw(st.booleans())
    tls = draw(st.booleans())
    frames = draw(frame_lists(True))
    closes = [index for index, frame in enumerate(frames) if frame.opcode == CLOSE]
    if closes:
        # Nothing after the first close frame: a socket closed with bytes
        # still unread sends a reset, and its peer may lose what it had
        # not read yet (the pongs, the close), as the kernel's timing has it.
        del frames[closes[0] + 1 :]
    elif tls:
        frames.append(Frame(CLOSE, (1000).to_bytes(2, "big")))
    data = serialize(frames, to_server)
    return TcpCase(Stream(to_server, data, cut(data, draw(chunk_sizes))), tls)


@functools.cache
def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server's and a client's TLS context for 127.0.0.1."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


#: Real seconds one exchange over TCP may take (the autojump clock cannot
#: drive real sockets).
TCP_TIMEOUT = 10.0
TCP_READING = Reading(False, None, 2**20, 65536)


def socket_stream_of(ws: WebSocketConnection) -> trio.abc.Stream:
    stream = ws._stream
    return stream.transport_stream if isinstance(stream, trio.SSLStream) else stream


async def feed_over_tcp(case: TcpCase) -> Received:
    """A library server (``serve_websocket``) or client
    (``connect_websocket``) on 127.0.0.1, fed the stream by a raw TCP peer,
    which ends its side once the stream is sent and closes the connection
    once it has seen the library's close frame."""
    stream = case.stream
    server_context, client_context = tls_contexts()
    received = Received([], None, None, None, None, b"")
    done = trio.Event()

    async def take_messages(ws: WebSocketConnection) -> None:
        lean = type(socket_stream_of(ws)).__name__ == "LeanSocketStream"
        received.fast = (uses_fast_paths(ws)[0], lean)
        received.messages, received.ended_with = await messages_until_closed(ws, TCP_READING)
        await ws.aclose()
        received.closed = ws.closed
        received.close_sent = ws.close_sent
        received.close_received = ws.close_received
        done.set()

    async def handler(request: WebSocketRequest) -> None:
        await take_messages(await request.accept())

    async def play_peer(peer: trio.abc.Stream, reader: Connection) -> None:
        try:
            for chunk in stream.chunks:
                await peer.send_all(chunk)
            if isinstance(peer, trio.abc.HalfCloseableStream):
                await peer.send_eof()
        except trio.BrokenResourceError:
            pass  # the library closed the connection after a close frame
        try:
            while data := await peer.receive_some():
                received.output += data
                reader.receive_data(bytes(data))
                if any(isinstance(item, CloseConnection) for item in reader.events()):
                    break
        except trio.BrokenResourceError:
            pass  # (reset, or TLS closed without a goodbye: what was read counts)
        await trio.aclose_forcefully(peer)

    with trio.fail_after(TCP_TIMEOUT):
        async with trio.open_nursery() as nursery:
            peer: trio.abc.Stream
            if stream.to_server:
                server = await nursery.start(
                    functools.partial(
                        serve_websocket,
                        handler,
                        "127.0.0.1",
                        0,
                        server_context if case.tls else None,
                    )
                )
                peer = await trio.open_tcp_stream("127.0.0.1", server.port)
                if case.tls:
                    peer = trio.SSLStream(peer, client_context, server_hostname="127.0.0.1")
                await peer.send_all(upgrade_request())
                assert (await read_head(peer)).startswith(b"HTTP/1.1 101 ")
                await play_peer(peer, Connection(ConnectionType.CLIENT))
            else:
                [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
                port = listener.socket.getsockname()[1]

                async def connect() -> None:
                    ws = await connect_websocket(
                        nursery,
                        "127.0.0.1",
                        port,
                        "/",
                        use_ssl=client_context if case.tls else False,
                        proxy=False,
                    )
                    await take_messages(ws)

                nursery.start_soon(connect)
                peer = await listener.accept()
                await listener.aclose()
                if case.tls:
                    peer = trio.SSLStream(peer, server_context, server_side=True)
                reader = await accept_by_hand(peer, await read_request_head(peer))
                await play_peer(peer, reader)
            await done.wait()
            nursery.cancel_scope.cancel()
    return received


@settings(max_examples=max(settings().max_examples // 3, 10))
@given(tcp_cases())
def test_a_stream_over_tcp_is_received_alike_with_and_without_fast_paths(case: TcpCase) -> None:
    with fast_paths_set(True):
        fast = trio.run(feed_over_tcp, case)
    with fast_paths_set(False):
        plain = trio.run(feed_over_tcp, case)
    event(describe_end(plain))
    event(f"TLS: {case.tls}")
    assert_received_alike(fast, plain, case.stream.to_server)
