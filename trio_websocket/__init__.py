"""trio_websocket: WebSocket client and server for Trio.

This module only re-exports the public names; the code lives in the private
modules named in ARCHITECTURE.md. Each name's ``__module__`` is set to the
package so that reprs, docs and pickles name ``trio_websocket.X``.
"""

from ._client import (
    connect_websocket as connect_websocket,
)
from ._client import (
    connect_websocket_url as connect_websocket_url,
)
from ._client import (
    open_websocket as open_websocket,
)
from ._client import (
    open_websocket_url as open_websocket_url,
)
from ._client import (
    wrap_client_stream as wrap_client_stream,
)
from ._close import CloseReason as CloseReason
from ._compression import (
    DeflateConfig as DeflateConfig,
)
from ._compression import (
    DeflateParameters as DeflateParameters,
)
from ._connection import WebSocketConnection as WebSocketConnection
from ._endpoint import Endpoint as Endpoint
from ._errors import (
    ConnectionClosed as ConnectionClosed,
)
from ._errors import (
    ConnectionRejected as ConnectionRejected,
)
from ._errors import (
    ConnectionTimeout as ConnectionTimeout,
)
from ._errors import (
    DisconnectionTimeout as DisconnectionTimeout,
)
from ._errors import (
    HandshakeError as HandshakeError,
)
from ._server import (
    WebSocketRequest as WebSocketRequest,
)
from ._server import (
    WebSocketServer as WebSocketServer,
)
from ._server import (
    serve_websocket as serve_websocket,
)
from ._server import (
    wrap_server_stream as wrap_server_stream,
)
from ._version import __version__ as __version__

__all__ = [
    "CloseReason",
    "ConnectionClosed",
    "ConnectionRejected",
    "ConnectionTimeout",
    "DeflateConfig",
    "DeflateParameters",
    "DisconnectionTimeout",
    "Endpoint",
    "HandshakeError",
    "WebSocketConnection",
    "WebSocketRequest",
    "WebSocketServer",
    "__version__",
    "connect_websocket",
    "connect_websocket_url",
    "open_websocket",
    "open_websocket_url",
    "serve_websocket",
    "wrap_client_stream",
    "wrap_server_stream",
]

for _name in __all__:
    _value = globals()[_name]
    if hasattr(_value, "__module__"):
        try:
            _value.__module__ = __name__
        except (AttributeError, TypeError):  # pragma: no cover
            pass
del _name, _value
