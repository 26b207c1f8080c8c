"""The connection core: one WebSocket connection over any trio stream.

``connection`` is the ``WebSocketConnection``: its state, the reader that
receives, the one send path, and closing. Around it sit the values it is
built from (``close``, ``errors``, ``config``, ``endpoint``, ``url``,
``compression``), its parts (``messages``: the bounded inbox; ``pings``,
``keepalive``, ``deflate``, ``stats``, ``log``), ``groups`` (how our
nurseries' ExceptionGroups become one exception) and ``contracts`` (what
the client, the server and the hub may ask of a connection beyond its
public API).

Rules:
- The core imports only itself and the wire layer (``_wire``): never the
  client, the server or the extras, which are built on it.
- Only ``connection`` (and the keepalive task it starts) runs tasks; the
  other modules are values and synchronous parts.
"""
