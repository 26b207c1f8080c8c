"""The wire layer: bytes, frames and sockets, with no idea of a connection.

Each module here is a faster equivalent of something wsproto or trio
already does, kept because it is where the per-message CPU goes:

- ``framing``: data frame headers, equal to wsproto's serialization byte
  for byte (tests/test_framing.py).
- ``masking`` (compiled in ``_wire._speedups`` when available): wsproto's
  ``XorMaskerSimple`` (tests/test_masking.py).
- ``frame_decoder``: wsproto's receive buffer, plain frame header parser
  and event deque (tests/test_fastpath_*.py; tests/test_fuzz_frames.py
  feeds the same bytes to it and to plain wsproto).
- ``quick_frames``: wsproto's receiving of whole, unfragmented data frames
  (connection, frame and message layers, and its event objects), for the
  messages at the start of a read (tests/test_quick_frames.py compares it
  with wsproto on every first two bytes and random mixes of frames).
- ``socket_stream``: ``trio.SocketStream`` (tests/test_socket_stream.py).
- ``tls_stream``: ``trio.SSLStream``'s ``receive_some``, handing over
  every record already received (tests/test_tls_stream.py), and over a
  lean socket its ``send_all`` and ``receive_some`` with one schedule
  point each (tests/test_tls_send.py compares both with ``SSLStream`` on
  real TCP connections) and its handshake without trio's locks
  (tests/test_tls_handshake.py, the same against real TLS peers).

(The server's plain opening handshake, ``_server.server.upgrade``, is the one
fast path outside this layer: it answers what wsproto's ``H11Handshake``
would, checked by tests/test_upgrade_shortcut.py.)

Rules:
- Nothing here imports another layer of the package: these modules know
  frames and streams, not connections, clients or servers.
- Every fast path can be turned off (``fast_paths``): with
  ``TRIO_WEBSOCKET_FAST_PATHS=0`` in the environment wsproto and trio do all
  of the work, and CI runs the whole suite both ways.
  tests/test_fuzz_fast_paths.py gives the same random bytes and calls to a
  connection built each way and checks that they behave alike.
"""
