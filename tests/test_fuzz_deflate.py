"""Property-based fuzzing of permessage-deflate (``_core.deflate``,
``_core.compression``).

Properties:
- Round trip against an independent implementation: messages compressed
  by our extension (whole or in fragments, with and without context
  takeover, every window size and level) inflate to the same messages in
  wsproto's own ``PerMessageDeflate``, and messages compressed by wsproto's
  inflate to the same in ours (behind the receive fast path, as a
  connection has it).
- Round trip between two of our connections, each side with its own
  settings: every message arrives as sent, whether compressed or not.
- Hostile payloads: a raw client sends compressed messages, some of them
  mutated (bits flipped, cut short, junk appended, a final block in the
  middle, random bytes), some zip bombs, some compressed with a window
  larger than agreed. The connection delivers exactly the messages a
  plain zlib reading of the bytes gives, up to the first one that does not
  inflate (then 1007, or 1009 if it first grew too big) or inflates past
  ``max_message_size`` (1009); nothing else escapes ``get_message``, and no
  inflate call ever produces more than ``max_message_size + 1`` bytes.

Example counts come from the Hypothesis profile (see tests/README.md).
"""

from __future__ import annotations

import itertools
import random
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import SimpleNamespace

import pytest
import trio
import trio.testing
from conftest import FUZZ_TIME_LIMIT, open_pair
from hypothesis import assume, event, given
from hypothesis import strategies as st
from server_fixtures import upgrade_request
from test_fuzz_frames import (
    BINARY,
    CONTINUATION,
    TEXT,
    Frame,
    collect,
    cut,
    messages_until_closed,
    read_head,
    run_on_autojump_clock,
)
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage, TextMessage
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import RemoteProtocolError

from trio_websocket import (
    DeflateConfig,
    WebSocketConnection,
    wrap_server_stream,
)
from trio_websocket._core import deflate as _deflate
from trio_websocket._core.deflate import DeflateExtension
from trio_websocket._wire.frame_decoder import use_fast_receive

pytestmark = pytest.mark.time_limit(FUZZ_TIME_LIMIT)

NAME = "permessage-deflate"
SYNC_TAIL = b"\x00\x00\xff\xff"
#: A receiver's limit in the round trips: never reached.
NO_LIMIT = 1 << 24

# ----------------------------------------------------------------------
# Strategies

window_bits = st.integers(9, 15)
optional_bits = st.one_of(st.none(), window_bits)


def configs(
    client_max_window_bits: st.SearchStrategy[int | None],
) -> st.SearchStrategy[DeflateConfig]:
    return st.builds(
        DeflateConfig,
        client_max_window_bits=client_max_window_bits,
        server_max_window_bits=optional_bits,
        client_no_context_takeover=st.booleans(),
        server_no_context_takeover=st.booleans(),
        memory_level=st.integers(1, 9),
        compression_level=st.integers(0, 9),
        threshold=st.sampled_from([0, 0, 128]),
    )


deflate_configs = configs(optional_bits)
wsproto_deflates = st.builds(
    PerMessageDeflate,
    client_no_context_takeover=st.booleans(),
    client_max_window_bits=optional_bits,
    server_no_context_takeover=st.booleans(),
    server_max_window_bits=optional_bits,
)

WORDS = ["alpha", "beta", "gamma", "\u00e9t\u00e9", "\u20ac", "{}", '"key": 1, ', "\n"]


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def repetitive_text(size: int, seed: int) -> bytes:
    """Text that compresses well (and repeats across messages, so that a
    shared window matters)."""
    choose = random.Random(seed).choice
    return "".join(choose(WORDS) for _ in range(size)).encode("utf-8")


payloads = st.one_of(
    st.binary(max_size=200),
    st.builds(random_bytes, st.sampled_from([1000, 5000, 40000]), st.integers(0, 999)),
    st.builds(repetitive_text, st.sampled_from([10, 300, 3000, 20000]), st.integers(0, 999)),
    st.builds(bytes, st.sampled_from([0, 1, 100, 70000])),  # zeros
)


@dataclass(frozen=True)
class Message:
    text: bool
    data: bytes
    #: Where the message is cut into fragments.
    cuts: tuple[int, ...]
    compress: bool

    @property
    def value(self) -> str | bytes:
        return self.data.decode("utf-8") if self.text else self.data

    def pieces(self) -> list[bytes]:
        edges = [0, *sorted(self.cuts), len(self.data)]
        return [self.data[a:b] for a, b in itertools.pairwise(edges)]


@st.composite
def messages(draw: st.DrawFn) -> Message:
    data = draw(payloads)
    text = draw(st.booleans())
    if text:
        data = data.decode("utf-8", "replace").encode("utf-8")
    # Text is only cut where the pieces stay valid UTF-8 on their own
    # (the fragments of our own sender are str).
    cuts = draw(st.lists(st.integers(0, len(data)), max_size=3))
    if text:
        cuts = [c for c in cuts if c == len(data) or (data[c] & 0xC0) != 0x80]
    return Message(text, data, tuple(cuts), draw(st.integers(0, 3)) > 0)


message_lists = st.lists(messages(), min_size=1, max_size=6)
read_sizes = st.lists(st.sampled_from([1, 7, 100, 4096, 65536, 1 << 20]), min_size=1, max_size=4)


# ----------------------------------------------------------------------
# Round trips against wsproto's PerMessageDeflate


def frames_of(message: Message, extension: DeflateExtension | None) -> list[Frame]:
    """The frames of ``message``, compressed by ``extension`` when the
    message says so (as a connection sends them: a compressed message
    whole, with ``compress_message``; one sent in pieces uncompressed)."""
    opcode = TEXT if message.text else BINARY
    pieces = message.pieces()
    if extension is None or not message.compress:
        payloads_, rsv1 = pieces, False
    else:
        payloads_, rsv1 = [extension.compress_message(message.data)], True
    return [
        Frame(
            opcode if index == 0 else CONTINUATION,
            payload,
            fin=index == len(payloads_) - 1,
            rsv=4 if rsv1 and index == 0 else 0,
        )
        for index, payload in enumerate(payloads_)
    ]


def received(report_items: list[tuple[object, ...]]) -> list[object]:
    return [item[1] for item in report_items]


@given(deflate_configs, wsproto_deflates, message_lists, read_sizes)
def test_wsproto_inflates_what_our_client_compresses(
    config: DeflateConfig, theirs: PerMessageDeflate, sent: list[Message], sizes: list[int]
) -> None:
    ours = DeflateExtension(config, is_client=True, max_message_size=NO_LIMIT)
    response = theirs.accept(f"{NAME}; {ours.offer()}")
    assume(isinstance(response, str))
    try:
        ours.finalize(f"{NAME}; {response}")
    except RemoteProtocolError:
        assume(False)  # a response our client must refuse (tested elsewhere)
    event(f"our window: {ours._compress_bits} bits, resets: {ours._compress_resets}")
    data = b"".join(
        frame.serialize(to_server=True) for message in sent for frame in frames_of(message, ours)
    )
    server = Connection(ConnectionType.SERVER, [theirs])
    report = collect(server, cut(data, sizes), eof=False)
    assert received(report.items) == [message.value for message in sent]


@given(deflate_configs, wsproto_deflates, message_lists, read_sizes)
def test_our_server_inflates_what_wsproto_compresses(
    config: DeflateConfig, theirs: PerMessageDeflate, sent: list[Message], sizes: list[int]
) -> None:
    ours = DeflateExtension(config, is_client=False, max_message_size=NO_LIMIT)
    response = ours.accept(f"{NAME}; {theirs.offer()}")
    assume(response is not None)
    theirs.finalize(f"{NAME}; {response}")
    client = Connection(ConnectionType.CLIENT, [theirs])
    data = b""
    for message in sent:
        pieces = message.pieces()
        for index, piece in enumerate(pieces):
            finished = index == len(pieces) - 1
            if message.text:
                data += client.send(TextMessage(piece.decode("utf-8"), message_finished=finished))
            else:
                data += client.send(BytesMessage(piece, message_finished=finished))
    server = Connection(ConnectionType.SERVER, [ours])
    assert use_fast_receive(server, lambda: NO_LIMIT)
    report = collect(server, cut(data, sizes), eof=False)
    assert received(report.items) == [message.value for message in sent]


# ----------------------------------------------------------------------
# Round trip between two of our connections


async def exchange_messages(
    client_config: DeflateConfig, server_config: DeflateConfig, sent: list[Message]
) -> tuple[list[object], list[object], object, object]:
    """Each side sends ``sent`` (whole or with send_fragments, compressed
    as each message says); returns what each side received and the
    parameters each side reports."""
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            client, server = await open_pair(
                nursery,
                client_options={"compression": client_config},
                server_options={"compression": server_config},
            )
            got: dict[WebSocketConnection, list[object]] = {client: [], server: []}

            async def send_all(ws: WebSocketConnection) -> None:
                for message in sent:
                    pieces = [p.decode() if message.text else p for p in message.pieces()]
                    if len(pieces) > 1:
                        await ws.send_fragments(pieces)  # type: ignore[arg-type]
                    else:
                        await ws.send_message(pieces[0], compress=message.compress)

            async def receive_all(ws: WebSocketConnection) -> None:
                for _ in sent:
                    got[ws].append(await ws.get_message())

            async with trio.open_nursery() as both_ways:
                for ws in (client, server):
                    both_ways.start_soon(send_all, ws)
                    both_ways.start_soon(receive_all, ws)
            nursery.start_soon(server.aclose)
            await client.aclose()
    return got[server], got[client], client.compression, server.compression


@given(deflate_configs, deflate_configs, message_lists)
def test_our_connections_round_trip_every_message(
    client_config: DeflateConfig, server_config: DeflateConfig, sent: list[Message]
) -> None:
    at_server, at_client, client_parameters, server_parameters = run_on_autojump_clock(
        exchange_messages, client_config, server_config, sent
    )
    event(f"compression agreed: {client_parameters is not None}")
    assert client_parameters == server_parameters
    expected = [message.value for message in sent]
    assert at_server == expected
    assert at_client == expected


# ----------------------------------------------------------------------
# Hostile compressed payloads from a raw client

MUTATIONS = ["flip", "cut", "junk", "final block", "random", "wide window"]


@dataclass(frozen=True)
class HostileMessage:
    text: bool
    data: bytes
    compress: bool
    #: What is wrong with the compressed payload, if anything.
    mutation: str | None
    #: Drawn values the mutation uses.
    seed: int
    #: Fragment cut points in the payload as sent.
    cuts: tuple[int, ...]


@st.composite
def hostile_messages(draw: st.DrawFn) -> HostileMessage:
    kind = draw(st.sampled_from(["plain"] * 3 + ["bomb"]))
    data = draw(payloads) if kind == "plain" else bytes(draw(st.sampled_from([5000, 300_000])))
    text = draw(st.booleans())
    if text:
        data = data.decode("utf-8", "replace").encode("utf-8")
    mutation = draw(st.one_of(st.none(), st.none(), st.sampled_from(MUTATIONS)))
    cuts = tuple(draw(st.lists(st.integers(0, 1 << 16), max_size=3)))
    return HostileMessage(
        text, data, draw(st.integers(0, 4)) > 0, mutation, draw(st.integers(0, 2**32)), cuts
    )


class RawDeflater:
    """The raw client's compressor, honouring (or, for "wide window",
    breaking) what was agreed."""

    def __init__(self, bits: int, resets: bool) -> None:
        self.bits = bits
        self.resets = resets
        self.compressor: zlib._Compress | None = None

    def payload(self, message: HostileMessage) -> bytes:
        if not message.compress:
            return message.data
        rng = random.Random(message.seed)
        if message.mutation == "random":
            return rng.randbytes(rng.randrange(1, 64))
        if message.mutation == "wide window" and self.bits < 15:
            # A message compressed on its own with a 32 KiB window: back
            # references may reach further than the agreed window.
            wide = zlib.compressobj(9, zlib.DEFLATED, -15)
            return (wide.compress(message.data) + wide.flush(zlib.Z_SYNC_FLUSH))[:-4]
        if self.compressor is None:
            self.compressor = zlib.compressobj(6, zlib.DEFLATED, -self.bits)
        compressor = self.compressor
        if message.mutation == "final block":
            payload = compressor.compress(message.data) + compressor.flush(zlib.Z_FINISH)
            self.compressor = None
            payload += b"\x01\x00"  # something after the final block
            return payload
        payload = compressor.compress(message.data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        payload = payload[:-4]
        if self.resets:
            self.compressor = None
        if not payload:
            return payload
        if message.mutation == "flip":
            mutated = bytearray(payload)
            for _ in range(rng.randrange(1, 4)):
                mutated[rng.randrange(len(mutated))] ^= 1 << rng.randrange(8)
            payload = bytes(mutated)
        elif message.mutation == "cut":
            payload = payload[: rng.randrange(len(payload))]
        elif message.mutation == "junk":
            payload += rng.randbytes(rng.randrange(1, 16))
        if message.mutation is not None:
            self.compressor = None  # our own stream is out of step now
        return payload


def frames_of_payload(message: HostileMessage, payload: bytes) -> list[Frame]:
    edges = sorted({0, len(payload), *(c % (len(payload) + 1) for c in message.cuts)})
    pieces = [payload[a:b] for a, b in itertools.pairwise(edges)] or [b""]
    opcode = TEXT if message.text else BINARY
    return [
        Frame(
            opcode if index == 0 else CONTINUATION,
            piece,
            fin=index == len(pieces) - 1,
            rsv=4 if message.compress and index == 0 else 0,
        )
        for index, piece in enumerate(pieces)
    ]


@dataclass
class Verdict:
    messages: list[str | bytes]
    #: The close codes allowed.
    codes: set[int]


def inflate_like_zlib(
    payloads_: list[tuple[HostileMessage, bytes]],
    bits: int,
    resets: bool,
    limit: int,
    inflater: zlib._Decompress | None = None,
    delivered: tuple[str | bytes, ...] = (),
) -> list[Verdict]:
    """What RFC 7692 makes of the messages, read with plain zlib (no
    bounds): each compressed payload gets the sync tail back and inflates
    with the agreed window, the window carried from message to message
    unless the client resets it or a stream ended with a final block.

    The outcomes allowed, more than one when the reads decide: zlib lets a
    back reference reach past the window into the output of the same call,
    so a payload that reaches too far (compressed with a wider window, or
    mutated) may inflate when it comes in one read and fail (1007) when it
    comes in small ones."""
    for index, (message, payload) in enumerate(payloads_):
        data = payload
        if message.compress:
            if inflater is None:
                inflater = zlib.decompressobj(-bits)
            whole = inflate_in_reads(inflater.copy(), payload, whole=True)
            if whole is None:
                # Where the bad bytes are against the limit decides.
                return [Verdict(list(delivered), {1007, 1009})]
            data, unused = whole
            if unused:
                return [Verdict(list(delivered), {1007} if len(data) <= limit else {1007, 1009})]
            if inflate_in_reads(inflater.copy(), payload, whole=False) is None:
                fail_here = Verdict(list(delivered), {1007, 1009})
                inflater.decompress(payload)
                if not inflater.eof:
                    inflater.decompress(SYNC_TAIL)
                rest = payloads_[index:]
                rest = [(replace(message, compress=False), data), *rest[1:]]
                carried = None if inflater.eof or resets else inflater
                go_on = inflate_like_zlib(rest, bits, resets, limit, carried, delivered)
                return [fail_here, *go_on]
            inflater.decompress(payload)
            if not inflater.eof:
                inflater.decompress(SYNC_TAIL)
            if inflater.eof or resets:
                inflater = None
        if len(data) > limit:
            return [Verdict(list(delivered), {1009, 1007} if message.text else {1009})]
        if message.text:
            try:
                delivered = (*delivered, data.decode("utf-8"))
            except UnicodeDecodeError:
                return [Verdict(list(delivered), {1007})]
        else:
            delivered = (*delivered, data)
    return [Verdict(list(delivered), {1006})]


def inflate_in_reads(
    inflater: zlib._Decompress, payload: bytes, *, whole: bool
) -> tuple[bytes, bytes] | None:
    """``payload`` inflated (and the sync tail unless the stream ended),
    in one call or a byte at a time; the output and any data after the end
    of the stream, or None if zlib refuses it."""
    steps = [payload] if whole else [payload[i : i + 1] for i in range(len(payload))]
    out = b""
    try:
        for step in steps:
            out += inflater.decompress(step)
            if inflater.eof:
                return out, inflater.unused_data
        out += inflater.decompress(SYNC_TAIL)
    except zlib.error:
        return None
    return out, inflater.unused_data


@contextmanager
def inflate_calls_recorded(outputs: list[int]) -> Iterator[None]:
    """Record the size of every inflate call ``_core.deflate`` makes."""
    real = _deflate.zlib

    class Recording:
        def __init__(self, wbits: int) -> None:
            self._inner = real.decompressobj(wbits)

        def decompress(self, data: bytes, max_length: int = 0) -> bytes:
            out = self._inner.decompress(data, max_length)
            outputs.append(len(out))
            return out

        def __getattr__(self, name: str) -> object:
            return getattr(self._inner, name)

    fake = SimpleNamespace(**{name: getattr(real, name) for name in dir(real)})
    fake.decompressobj = Recording
    _deflate.zlib = fake  # type: ignore[assignment]
    try:
        yield
    finally:
        _deflate.zlib = real


@dataclass
class HostileOutcome:
    messages: list[object]
    code: int | None
    payloads: list[tuple[HostileMessage, bytes]]
    bits: int
    resets: bool


async def send_hostile(
    config: DeflateConfig, offer: str, sent: list[HostileMessage], limit: int, sizes: list[int]
) -> HostileOutcome:
    """A server connection with permessage-deflate agreed with a raw
    client, which then sends ``sent`` in reads of ``sizes`` and ends the
    stream; the server's messages until ConnectionClosed."""
    client_end, server_end = trio.testing.memory_stream_pair()
    outcome = HostileOutcome([], None, [], 15, False)
    accepted = trio.Event()
    connections: list[WebSocketConnection] = []

    async def serve() -> None:
        request = await wrap_server_stream(
            nursery, server_end, compression=config, max_message_size=limit
        )
        connections.append(await request.accept())
        accepted.set()

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            extension = f"Sec-WebSocket-Extensions: {offer}\r\n".encode()
            await client_end.send_all(upgrade_request(extra=extension))
            assert (await read_head(client_end)).startswith(b"HTTP/1.1 101 ")
            await accepted.wait()
            [ws] = connections
            agreed = ws.compression
            assert agreed is not None
            outcome.bits = max(agreed.client_max_window_bits, 9)
            outcome.resets = agreed.client_no_context_takeover
            deflater = RawDeflater(outcome.bits, outcome.resets)
            data = b""
            for message in sent:
                payload = deflater.payload(message)
                outcome.payloads.append((message, payload))
                data += b"".join(f.serialize(True) for f in frames_of_payload(message, payload))

            async def send_then_end() -> None:
                try:
                    for chunk in cut(data, sizes):
                        await client_end.send_all(chunk)
                        await trio.lowlevel.checkpoint()
                    await client_end.send_eof()  # type: ignore[attr-defined]
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

            async def drain() -> None:
                while await client_end.receive_some():
                    pass

            nursery.start_soon(send_then_end)
            nursery.start_soon(drain)
            outcome.messages, outcome.code = await messages_until_closed(ws, 1000)
    return outcome


offers = st.sampled_from(
    [
        NAME,
        f"{NAME}; client_max_window_bits",
        f"{NAME}; client_max_window_bits; client_no_context_takeover",
        f"{NAME}; client_max_window_bits=9",
        f"{NAME}; client_max_window_bits=10; server_no_context_takeover",
    ]
)


@given(
    # (A server that requires a client window would refuse some offers.)
    configs(client_max_window_bits=st.none()),
    offers,
    st.lists(hostile_messages(), min_size=1, max_size=5),
    st.sampled_from([64, 5000, 100_000, 2**20]),
    read_sizes,
)
def test_hostile_compressed_messages_inflate_or_close_with_1007_or_1009(
    config: DeflateConfig,
    offer: str,
    sent: list[HostileMessage],
    limit: int,
    sizes: list[int],
) -> None:
    outputs: list[int] = []
    with inflate_calls_recorded(outputs):
        outcome = run_on_autojump_clock(send_hostile, config, offer, sent, limit, sizes)
    verdicts = inflate_like_zlib(outcome.payloads, outcome.bits, outcome.resets, limit)
    event(f"close code {outcome.code}")
    assert any(
        outcome.messages == verdict.messages and outcome.code in verdict.codes
        for verdict in verdicts
    ), (outcome.messages, outcome.code, verdicts)
    # Inflating is bounded: never more than the limit and one byte per call.
    assert max(outputs, default=0) <= limit + 1
