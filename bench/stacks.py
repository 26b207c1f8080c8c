"""The stacks under test: which virtualenv (and pinned packages) each one
runs in, which server/client script drives it, and its wire protocol."""

from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

TRIO = "trio==0.35.0"
WSPROTO = "wsproto==1.3.2"
WEBSOCKETS = "websockets==17.4"
H2 = "h2==4.4.1"  # RFC 8441 (--http2): ours' optional extra and the h2 load generator
HYPERCORN = "hypercorn==0.18.0"  # the HTTP/2 reference row (asyncio worker)

# venv name -> pinned requirements (same trio everywhere)
VENVS = {
    "ours": [TRIO, WSPROTO, H2],  # + the repo itself on PYTHONPATH
    "tws012": [TRIO, WSPROTO, "trio-websocket==0.12.2"],
    "websockets": [TRIO, WEBSOCKETS],
    "plain": [TRIO],
    # the HTTP/2 scenario (run.py --http2): hypercorn's ASGI echo, and the
    # sans-I/O h2 load generator (h2loadgen.py), each in its own venv
    "hypercorn": [HYPERCORN, H2, WSPROTO, "h11==0.16.0"],
    "h2load": [H2],
    # the pure-Python scenario (run.py --pure-python): websockets built
    # from its sdist without its C extension (VENV_BUILDS)
    "websockets-pure": [TRIO, WEBSOCKETS],
}
# venv name -> (environment, pip arguments) of a venv's installation when
# it is not the default: websockets' setup.py skips its speedups module
# when BUILD_EXTENSION=no, and --no-binary makes pip build it from source
VENV_BUILDS = {
    "websockets-pure": ({"BUILD_EXTENSION": "no"},
                        ["--no-binary", "websockets"]),
}
NEUTRAL_VENV = "websockets"  # neutral server borrows websockets' C XOR


@dataclass
class Stack:
    key: str
    label: str
    short: str  # used in ratio headers
    venv: str
    server: str
    client: str
    proto: str = "ws"  # "ws" or "plain" (4-byte length prefix)
    uses_repo: bool = False
    tree: Path | None = None  # the source tree to import, if not REPO


STACKS = [
    Stack("ours", "ours", "ours", "ours",
          "servers/trio_websocket_server.py",
          "clients/trio_websocket_client.py", uses_repo=True),
    Stack("tws012", "trio-websocket 0.12.2", "0.12.2", "tws012",
          "servers/trio_websocket_server.py",
          "clients/trio_websocket_client.py"),
    Stack("wstrio", "websockets.trio", "websockets.trio", "websockets",
          "servers/websockets_trio_server.py",
          "clients/websockets_trio_client.py"),
    Stack("wsasyncio", "websockets asyncio", "websockets asyncio",
          "websockets", "servers/websockets_asyncio_server.py",
          "clients/websockets_asyncio_client.py"),
    Stack("plain", "plain trio", "plain trio", "plain",
          "servers/plain_trio_server.py", "clients/plain_trio_client.py",
          proto="plain"),
]
BY_KEY = {s.key: s for s in STACKS}

# the HTTP/2 scenario only (run.py --http2): its reference row, and the
# venv of its load generator
HYPERCORN_STACK = Stack("hypercorn", "hypercorn 0.18 (asyncio)", "hypercorn",
                        "hypercorn", "servers/hypercorn_server.py", client="")
H2LOAD_VENV = "h2load"


def standin_ours(stack):
    """`ours` pointed at the PyPI 0.12.2 package (harness self-test)."""
    return Stack(stack.key, "ours (stand-in: 0.12.2)", stack.short,
                 "tws012", stack.server, stack.client)
