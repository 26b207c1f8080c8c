"""A connection's statistics: one frozen snapshot, built on request.

Rules:
- A pure value: no trio, no I/O, imports nothing from this package.
- The connection keeps only integer counters on its hot paths (one add per
  message and per read or write); everything derived, such as ratios, is
  computed here, when a snapshot is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConnectionStatistics:
    """What :meth:`WebSocketConnection.statistics` returns: a read-only
    snapshot of one connection, taken when it is called (it does not change
    afterwards). Counters start when the connection opens; the opening
    handshake is not counted.
    """

    #: Messages sent: ``send_message``/``send`` calls that returned.
    messages_sent: int
    #: Messages received from the peer, each counted once whole: queued
    #: for the application (read yet or not), or received in pieces with
    #: ``receive_fragments`` (at its last piece).
    messages_received: int
    #: Bytes written to the stream: frame headers, payloads (after
    #: compression, masked on a client) and control frames.
    bytes_sent: int
    #: Bytes read from the stream, counted the same way.
    bytes_received: int
    #: Messages received and waiting for the application to read them.
    messages_buffered: int
    #: The size of those waiting messages (bytes for binary messages,
    #: characters for text).
    buffered_bytes: int
    #: Bytes of frames serialized but not written to the stream yet.
    unsent_bytes: int
    #: Pings sent (by :meth:`~WebSocketConnection.ping` or the keepalive)
    #: still waiting for their pong.
    pings_in_flight: int
    #: The last measured ping round trip in seconds (see
    #: :attr:`WebSocketConnection.latency`), or ``None`` before the first.
    latency: float | None
    #: With permessage-deflate: the uncompressed bytes of the messages that
    #: were compressed (sent and received) divided by their compressed
    #: payload bytes; ``None`` without compression or before the first
    #: compressed message. Messages sent uncompressed do not count.
    compression_ratio: float | None = None
