"""The client: connecting (directly, through proxies, over Unix sockets),
the opening handshake with its redirects, and the entry points that own a
connection's lifetime (``open_websocket`` and friends).

Rules:
- Imports the core and the wire layer, never the server (a test checks).
"""
