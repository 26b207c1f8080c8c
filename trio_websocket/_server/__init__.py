"""The server: listening, reading the opening request (``request``, with
the plain upgrade's fast path in ``upgrade``), plain HTTP answers
(``http``), the request checks (``limits``, ``origins``, ``basic_auth``) and
the server that runs handlers and shuts down gracefully (``server``).

Rules:
- Imports the core and the wire layer, never the client (a test checks).
"""
