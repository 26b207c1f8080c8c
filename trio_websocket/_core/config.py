"""Defaults and the one options record a connection is built with.

Rules:
- Every per-connection option is documented once, here, and travels as one
  frozen :class:`ConnectionOptions`; entry points validate their arguments by
  building it (keyword arguments only, each entry point once), so bad values
  fail early with ``ValueError``/``TypeError``, and hand the record down
  whole (within ``_client.options.ClientOptions`` or
  ``_server.options.ServerOptions``): a new option touches the record, its
  documentation and the public signatures only.
- No trio, no I/O.

Every buffer a connection (or a server) holds, and what bounds it; the
user-facing table is in docs/backpressure.rst, and each bound has a test
where a hostile peer pushes past it (tests/test_connection_budgets.py,
tests/test_hostile_*.py):

- inbox (messages waiting for the application): ``message_queue_size``
  messages or ``READ_AHEAD_BYTES``, never past ``max_buffered_bytes``; each
  message costs its size plus ``_core.messages.ITEM_COST``; checked message by
  message, so at most one message past it (inflated ones included);
- the message being assembled: ``max_message_size``, its fragments joined
  into one buffer past ``_core.messages.MAX_PARTS`` of them;
- one read: ``receive_buffer_size``;
- outbox of pongs and close echoes: ``OUTBOX_LIMIT``, then the reader stops;
- write coalescing: ``COALESCE_BYTES`` plus one message;
- a streamed message's pieces: ``READ_AHEAD_BYTES`` or ``max_buffered_bytes``;
- closing: ``close_timeout`` (``disconnect_timeout``) for ``aclose``,
  ``CLOSE_GRACE`` for the close on cancellation and the last frames;
- a server's request head: ``_server.limits.MAX_HEAD_BYTES`` and ``RequestLimits``;
  connections reading one: ``max_handshakes`` (``_server.server``), each for at
  most ``connect_timeout``; connections in handlers: ``max_connections``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .compression import DeflateConfig, compression_config

DEFAULT_MESSAGE_QUEUE_SIZE = 1
DEFAULT_MAX_MESSAGE_SIZE = 2**20
#: Bytes asked of the stream per read. Large reads let one wake-up of the
#: reader parse many small messages, and a large message arrive in few
#: pieces. Not larger: every read is a new ``bytes`` of this size, and at
#: 256 KiB those came from fresh pages of the kernel (malloc hands blocks
#: that big out of mmap and gives them back): 85-210 page faults per 1 MiB
#: message a client echoed, 9-21 at 128 KiB, and 20-30% less CPU per
#: 64 KiB and 1 MiB message on both sides (bench/README.md, issue 3).
DEFAULT_RECEIVE_BUFFER_SIZE = 128 * 1024
DEFAULT_CONNECT_TIMEOUT = 60.0
DEFAULT_DISCONNECT_TIMEOUT = 60.0
#: Once ``message_queue_size`` messages wait unread, the reader still reads
#: on (so pings and the close handshake are answered) until the waiting
#: messages hold this many bytes; then it stops reading until the
#: application catches up, and TCP pushes back on the peer.
READ_AHEAD_BYTES = 256 * 1024
#: The most bytes of frames ``send_message`` leaves in the outbox to be
#: written with the rest of a batch (see ``_core.connection``); also the size
#: above which frames are written one by one rather than joined.
COALESCE_BYTES = 64 * 1024
#: The reader parses no further while the outbox holds this many bytes
#: (each frame counted with a little overhead): the pongs and close echo it
#: queues for a peer that sends but does not read wait there, and past this
#: the reader stops until they are written, so TCP pushes back on the peer.
OUTBOX_LIMIT = 64 * 1024
#: How long a protocol failure waits for the application to take the
#: messages that arrived before it (and reply) before the close frame goes.
PROTOCOL_ERROR_GRACE = 1.0
#: How long closing may wait on the peer: a client for the server to close
#: TCP after the closing handshake (RFC 6455 section 7.1.1 asks the server to
#: close first), and either side for its last frames and the stream's own
#: close (a TLS goodbye) before the stream is closed without them.
CLOSE_GRACE = 2.0


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


def check_timeout(name: str, value: object) -> float:
    """``value`` as a timeout in seconds; it must be a non-negative number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds")
    if value < 0 or value != value:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return float(value)


def _check_positive_seconds(name: str, value: object) -> float:
    seconds = check_timeout(name, value)
    if seconds == 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return seconds


def check_keepalive(
    ping_interval: object, ping_timeout: object
) -> tuple[float | None, float | None]:
    """Validate the keepalive arguments; return ``(interval, timeout)``.

    Both ``None`` (the default) means no keepalive. A ``ping_timeout``
    without a ``ping_interval`` is a ``ValueError`` (it would never apply);
    an interval alone gets a timeout equal to it. ``math.inf`` as the
    timeout pings without ever closing (a keepalive for proxies, plus
    latency measurements).
    """
    if ping_interval is None:
        if ping_timeout is not None:
            raise ValueError("ping_timeout needs ping_interval (the keepalive is off without it)")
        return None, None
    interval = _check_positive_seconds("ping_interval", ping_interval)
    if interval == float("inf"):
        raise ValueError("ping_interval must be finite; use None to turn the keepalive off")
    if ping_timeout is None:
        return interval, interval
    return interval, _check_positive_seconds("ping_timeout", ping_timeout)


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    """What every connection is configured with.

    message_queue_size: how many received messages may wait unread before
        the connection stops reading from the network (see
        ``READ_AHEAD_BYTES`` for the extra bytes it still reads so that
        control frames are answered). 0 means messages are only read ahead
        up to that byte bound.
    max_message_size: the largest message accepted, in bytes (UTF-8 bytes
        for text); a larger one closes the connection with 1009.
    receive_buffer_size: the most bytes read from the stream at once; None
        means the library default.
    ping_interval: seconds between the keepalive's pings, or None for no
        keepalive (no task, nothing sent unasked: the 0.12.2 behaviour).
        The first ping goes one interval after the connection opens; at
        most one keepalive ping is in flight at a time.
    ping_timeout: seconds a keepalive ping may wait for its pong (it
        counts from when the ping is queued, so a peer too slow to read
        it counts as gone) before the connection closes with 1011
        (``INTERNAL_ERROR``, reason "keepalive ping timeout"). Defaults to
        ``ping_interval``; ``math.inf`` never closes.
    max_buffered_bytes: a cap, in bytes (UTF-8 bytes for text), on the
        received data waiting for the application: whole messages not yet
        taken and pieces of a streamed message. Once it is reached the
        connection stops reading until the application takes some; it is
        checked between reads, so one read (``receive_buffer_size``) more
        may arrive. It also lowers the read-ahead bound to itself. None
        (the default) sets no cap beyond ``message_queue_size`` and the
        read-ahead bound.
    compression: permessage-deflate settings (offered by a client,
        accepted by a server), or None for no compression.
    close_timeout: the longest :meth:`WebSocketConnection.aclose` waits
        (for its turn to write the close frame, then for the peer's
        answer) before it drops the connection; the entry point's
        ``disconnect_timeout``.
    close_on_cancel: whether a cancellation of the connection's nursery
        closes it with 1001 (shielded, within ``CLOSE_GRACE``) instead of
        dropping it at once: for the connections of ``open_websocket``,
        whose block a cancellation leaves (the caller cannot close them
        first, as it can a connection in a nursery of its own).
    """

    message_queue_size: int = DEFAULT_MESSAGE_QUEUE_SIZE
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    receive_buffer_size: int = DEFAULT_RECEIVE_BUFFER_SIZE
    ping_interval: float | None = None
    ping_timeout: float | None = None
    max_buffered_bytes: int | None = None
    compression: DeflateConfig | None = None
    close_timeout: float = DEFAULT_DISCONNECT_TIMEOUT
    close_on_cancel: bool = False

    @classmethod
    def build(
        cls,
        *,
        message_queue_size: int = DEFAULT_MESSAGE_QUEUE_SIZE,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        receive_buffer_size: int | None = DEFAULT_RECEIVE_BUFFER_SIZE,
        max_buffered_bytes: int | None = None,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        compression: object = None,
        close_timeout: float = DEFAULT_DISCONNECT_TIMEOUT,
        close_on_cancel: bool = False,
    ) -> ConnectionOptions:
        """Validate the public arguments and return the record."""
        if receive_buffer_size is None:
            receive_buffer_size = DEFAULT_RECEIVE_BUFFER_SIZE
        if max_buffered_bytes is not None:
            max_buffered_bytes = _check_int("max_buffered_bytes", max_buffered_bytes, 1)
        interval, timeout = check_keepalive(ping_interval, ping_timeout)
        return cls(
            message_queue_size=_check_int("message_queue_size", message_queue_size, 0),
            max_message_size=_check_int("max_message_size", max_message_size, 1),
            receive_buffer_size=_check_int("receive_buffer_size", receive_buffer_size, 1),
            ping_interval=interval,
            ping_timeout=timeout,
            max_buffered_bytes=max_buffered_bytes,
            compression=compression_config(compression),
            close_timeout=check_timeout("close_timeout", close_timeout),
            close_on_cancel=close_on_cancel,
        )
