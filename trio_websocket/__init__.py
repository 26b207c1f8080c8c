"""trio_websocket: WebSocket client and server for Trio.

This module only re-exports the public names; the code lives in the private
layer subpackages (``_wire``, ``_core``, ``_client``, ``_server``,
``_extras``; docs/architecture.rst is the tour). Each name's ``__module__``
is set to the package so that reprs, docs and pickles name
``trio_websocket.X``.
"""

from ._client.client import (
    connect_websocket as connect_websocket,
)
from ._client.client import (
    connect_websocket_url as connect_websocket_url,
)
from ._client.client import (
    open_websocket as open_websocket,
)
from ._client.client import (
    open_websocket_url as open_websocket_url,
)
from ._client.client import (
    wrap_client_stream as wrap_client_stream,
)
from ._client.proxy_config import Proxy as Proxy
from ._client.proxy_errors import (
    ProxyAuthenticationError as ProxyAuthenticationError,
)
from ._client.proxy_errors import (
    ProxyError as ProxyError,
)
from ._client.proxy_errors import (
    ProxyRejected as ProxyRejected,
)
from ._client.session import WebSocketSession as WebSocketSession
from ._client.session import open_websocket_session as open_websocket_session
from ._core.close import CloseReason as CloseReason
from ._core.compression import (
    DeflateConfig as DeflateConfig,
)
from ._core.compression import (
    DeflateParameters as DeflateParameters,
)
from ._core.connection import WebSocketConnection as WebSocketConnection
from ._core.endpoint import Endpoint as Endpoint
from ._core.errors import (
    ConnectionClosed as ConnectionClosed,
)
from ._core.errors import (
    ConnectionRejected as ConnectionRejected,
)
from ._core.errors import (
    ConnectionTimeout as ConnectionTimeout,
)
from ._core.errors import (
    DisconnectionTimeout as DisconnectionTimeout,
)
from ._core.errors import (
    HandshakeError as HandshakeError,
)
from ._core.stats import ConnectionStatistics as ConnectionStatistics
from ._extras.hub import Hub as Hub
from ._extras.hub import HubStatistics as HubStatistics
from ._extras.reconnect import (
    ReconnectingWebSocket as ReconnectingWebSocket,
)
from ._extras.reconnect import (
    default_retry_policy as default_retry_policy,
)
from ._extras.workers import WorkerError as WorkerError
from ._extras.workers import WorkerPool as WorkerPool
from ._extras.workers import run_websocket_workers as run_websocket_workers
from ._extras.workers import serve_websocket_workers as serve_websocket_workers
from ._h2.limits import HTTP2Limits as HTTP2Limits
from ._server.basic_auth import BasicAuth as BasicAuth
from ._server.basic_auth import basic_auth_credentials as basic_auth_credentials
from ._server.http import HTTPRequest as HTTPRequest
from ._server.http import HTTPResponse as HTTPResponse
from ._server.limits import RequestLimits as RequestLimits
from ._server.request import (
    WebSocketRequest as WebSocketRequest,
)
from ._server.request import (
    wrap_server_stream as wrap_server_stream,
)
from ._server.server import (
    WebSocketServer as WebSocketServer,
)
from ._server.server import (
    serve_websocket as serve_websocket,
)
from ._server.shutdown import ShutdownReport as ShutdownReport
from ._version import __version__ as __version__

__all__ = [
    "BasicAuth",
    "CloseReason",
    "ConnectionClosed",
    "ConnectionRejected",
    "ConnectionStatistics",
    "ConnectionTimeout",
    "DeflateConfig",
    "DeflateParameters",
    "DisconnectionTimeout",
    "Endpoint",
    "HTTP2Limits",
    "HTTPRequest",
    "HTTPResponse",
    "HandshakeError",
    "Hub",
    "HubStatistics",
    "Proxy",
    "ProxyAuthenticationError",
    "ProxyError",
    "ProxyRejected",
    "ReconnectingWebSocket",
    "RequestLimits",
    "ShutdownReport",
    "WebSocketConnection",
    "WebSocketRequest",
    "WebSocketServer",
    "WebSocketSession",
    "WorkerError",
    "WorkerPool",
    "__version__",
    "basic_auth_credentials",
    "connect_websocket",
    "connect_websocket_url",
    "default_retry_policy",
    "open_websocket",
    "open_websocket_session",
    "open_websocket_url",
    "run_websocket_workers",
    "serve_websocket",
    "serve_websocket_workers",
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
