"""The package's modules depend on each other one way only (see
docs/architecture.rst): the layer subpackages bottom up (``_wire``,
``_core``, then ``_client.client`` and ``_server.server`` beside each other, then
``_extras``), and inside them the pure modules at the bottom,
``_core.connection`` above them, the client's and the server's entry points
on top, ``_extras.reconnect`` over the client's entry point, and
``__init__`` re-exporting. Above the package's API sit its users:
``_extras.cli`` (the command line, which imports only the public names) and
``__main__`` (which only runs it).

The imports are read from the source with ``ast``, so nothing is executed.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import trio_websocket

PACKAGE = "trio_websocket"
PACKAGE_DIR = Path(trio_websocket.__file__).parent

#: The layer subpackages, bottom up, and which of them each may import
#: (see the Layout section of README.md). The public modules at the top
#: level (``__init__``, ``testing``, ``redis_hub``, ``__main__``) sit above
#: them all.
SUBPACKAGES = {
    "_wire": {"_wire"},
    "_core": {"_wire", "_core"},
    "_h2": {"_wire", "_core", "_h2"},
    "_client": {"_wire", "_core", "_h2", "_client"},
    "_server": {"_wire", "_core", "_h2", "_server"},
    "_extras": {"_wire", "_core", "_h2", "_client", "_server", "_extras", "__init__"},
}

#: Modules that know nothing of connections or entry points: each imports
#: only other modules of this set (and the subpackages' empty
#: ``__init__``).
PURE = {
    # the wire: bytes, frames and sockets
    "_wire.framing",
    "_wire.masking",
    "_wire.frame_decoder",
    "_wire.quick_frames",
    "_wire.close_frames",
    "_wire.socket_stream",
    "_wire.tls_stream",
    "_wire.fast_paths",
    # the values and parts a connection is built from
    "_core.close",
    "_core.errors",
    "_core.endpoint",
    "_core.url",
    "_core.config",
    "_core.messages",
    "_core.pings",
    "_core.groups",
    "_core.keepalive",
    "_core.stats",
    "_core.log",
    "_core.compression",
    "_core.deflate",
    "_core.waiters",
    "_core.contracts",
    # HTTP/2's values: frames counted, header blocks, limits, the extra
    "_h2.frame_guard",
    "_h2.headers",
    "_h2.limits",
    "_h2.dependency",
    "_h2.stream",
    "_h2.alpn",
    # the client's and the server's values
    "_client.proxy_config",
    "_client.proxy_errors",
    "_client.redirects",
    "_client.bad_response",
    "_client.options",
    "_server.http",
    "_server.limits",
    "_server.origins",
    "_server.basic_auth",
    "_server.shutdown",
    "_server.upgrade",
    "_server.options",
    "_version",
}
#: The subpackages' ``__init__`` modules: a docstring that says the layer's
#: rules, nothing imported.
SUBPACKAGE_INITS = set(SUBPACKAGES)
#: Compiled modules (no .py source to parse); they import nothing of ours.
COMPILED = {"_wire._speedups"}
LAYERS = {
    **dict.fromkeys(PURE | COMPILED | SUBPACKAGE_INITS, 0),
    # The connection's layers, bottom up (see _core/connection.py).
    "_core.sending": 0.5,
    "_core.lifecycle": 0.6,
    "_core.receiving": 0.7,
    "_core.connection": 1,
    "_client.proxy": 1,
    # One HTTP/2 connection and its streams (needs h2), and the client's
    # and the server's use of RFC 8441.
    "_h2.connection": 1,
    "_client.http2": 1.5,
    "_server.http2": 2.05,
    "_server.unix": 1,
    "_client.client": 2,
    "_server.request": 2,
    # Many WebSockets on shared HTTP/2 connections, over the client.
    "_client.session": 2.5,
    "_server.server": 2.1,
    "_extras.hub": 2,
    # Build on the server, below the re-exports: the worker's side, then
    # the parent's.
    "_extras.worker_process": 2.25,
    "_extras.workers": 2.5,
    # Built on the client's public entry point.
    "_extras.reconnect": 3,
    # The public testing kit sits beside the namespace: it uses the entry
    # points, and the package never imports it.
    "testing": 3,
    "__init__": 4,
    # A public module of its own, which nothing in the package imports.
    "redis_hub": 4,
    "_extras.cli": 5,
    "__main__": 6,
}
THIRD_PARTY = {"trio", "wsproto"}
#: Optional dependencies (extras), each allowed in its own module only.
OPTIONAL_THIRD_PARTY = {
    "redis_hub": {"coredis"},
    # (the http2 extra: _h2.dependency checks it, _h2.connection uses it,
    # and no other module imports either at import time)
    "_h2.dependency": {"h2"},
    "_h2.connection": {"h2"},
}
#: The modules that cannot be imported without their extra.
NEEDS_AN_EXTRA = {"redis_hub", "_h2.connection"}


@dataclass
class Imports:
    #: Modules of this package imported (``"_core.close"``, or
    #: ``"__init__"`` for the package itself).
    internal: set[str] = field(default_factory=set)
    #: Those of ``internal`` imported when the module itself is (not inside
    #: a function, not only for the type checker).
    eager: set[str] = field(default_factory=set)
    #: Top-level names of everything else imported, with whether the import
    #: sits under an ``if sys.version_info ...`` guard.
    external: list[tuple[str, bool]] = field(default_factory=list)


def package_of(module: str) -> list[str]:
    """The package a module sits in, as parts below ``trio_websocket``."""
    if module in SUBPACKAGE_INITS:
        return [module]
    return module.split(".")[:-1]


def _resolve(module: str, level: int, name: str) -> str:
    """The module ``from <level dots><name> import ...`` in ``module`` means."""
    base = package_of(module)
    if level > 1:
        base = base[: len(base) - (level - 1)]
    parts = [*base, *name.split(".")] if name else base
    return ".".join(parts) or "__init__"


def _is_version_guard(node: ast.If) -> bool:
    # (``if TYPE_CHECKING:`` imports never run: typing_extensions is for
    # the type checker only.)
    return "version_info" in ast.unparse(node.test) or ast.unparse(node.test) == "TYPE_CHECKING"


def _collect(
    module: str, node: ast.AST, imports: Imports, guarded: bool, deferred: bool = False
) -> None:
    if isinstance(node, ast.Import):
        for alias in node.names:
            top, _, inside = alias.name.partition(".")
            if top == PACKAGE:
                imports.internal.add(inside or "__init__")
                if not deferred:
                    imports.eager.add(inside or "__init__")
            else:
                imports.external.append((top, guarded))
    elif isinstance(node, ast.ImportFrom):
        name = node.module or ""
        if node.level > 0 or name.split(".")[0] == PACKAGE:
            if node.level > 0:
                target = _resolve(module, node.level, name)
            else:
                target = name.partition(".")[2] or "__init__"
            # ``from .pkg import module`` imports the module; any other
            # name comes from ``target`` itself.
            for alias in node.names:
                dotted = f"{target}.{alias.name}" if target != "__init__" else alias.name
                imported = dotted if dotted in LAYERS else target
                imports.internal.add(imported)
                if not deferred:
                    imports.eager.add(imported)
        else:
            imports.external.append((name.split(".")[0], guarded))
    for child in ast.iter_child_nodes(node):
        child_guarded = guarded or (isinstance(node, ast.If) and _is_version_guard(node))
        child_deferred = (
            deferred
            or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            or (isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
        )
        _collect(module, child, imports, child_guarded, child_deferred)


def path_of(module: str) -> Path:
    if module in SUBPACKAGE_INITS:
        return PACKAGE_DIR / module / "__init__.py"
    return PACKAGE_DIR / (module.replace(".", "/") + ".py")


def parse(module: str) -> ast.Module:
    path = path_of(module)
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def imports_of(module: str) -> Imports:
    imports = Imports()
    if module not in COMPILED:
        _collect(module, parse(module), imports, guarded=False)
    return imports


def transitive_imports(module: str) -> set[str]:
    seen: set[str] = set()
    todo = [module]
    while todo:
        for name in imports_of(todo.pop()).internal:
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return seen


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR).with_suffix("").parts)
    if len(parts) > 1 and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = sorted(_module_name(path) for path in PACKAGE_DIR.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    # A new module must be placed in the layering before it can be used.
    assert set(MODULES) == set(LAYERS) - COMPILED


@pytest.mark.parametrize("module", sorted(set(MODULES) - set(SUBPACKAGE_INITS)))
def test_layer_packages_import_only_the_layers_below(module: str) -> None:
    package = package_of(module)
    if not package:
        return  # the public modules at the top level may use every layer
    allowed = SUBPACKAGES[package[0]]
    for imported in imports_of(module).internal:
        imported_package = package_of(imported)[:1] or ["__init__"]
        if imported in COMPILED or imported == "_version":
            continue
        assert imported_package[0] in allowed, f"{module} imports {imported}"


@pytest.mark.parametrize("package", sorted(SUBPACKAGE_INITS))
def test_layer_package_inits_only_state_their_rules(package: str) -> None:
    tree = parse(package)
    assert ast.get_docstring(tree), f"{package}/__init__.py says the layer's rules"
    assert imports_of(package).internal == set()


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_only_lower_layers(module: str) -> None:
    for imported in imports_of(module).internal:
        assert imported in LAYERS, f"{module} imports unknown module {imported}"
        if module in PURE:
            assert LAYERS[imported] == 0, f"pure module {module} imports {imported}"
        else:
            assert LAYERS[imported] < LAYERS[module], f"{module} imports {imported}"


def test_client_and_server_never_import_each_other() -> None:
    assert not any(m.startswith("_server") for m in transitive_imports("_client.client"))
    assert not any(m.startswith("_client") for m in transitive_imports("_server.server"))


@pytest.mark.parametrize("module", sorted(PURE))
def test_pure_modules_never_import_the_connection_or_the_entry_points(module: str) -> None:
    entry_points = {"_core.connection", "_client.client", "_server.server", "__init__"}
    assert not transitive_imports(module) & entry_points


def test_reconnecting_client_never_imports_the_server() -> None:
    assert not any(m.startswith("_server") for m in transitive_imports("_extras.reconnect"))


def test_connection_never_imports_client_or_server() -> None:
    for imported in transitive_imports("_core.connection"):
        assert package_of(imported)[:1] in (["_wire"], ["_core"]), imported


@pytest.mark.parametrize(
    "module",
    [
        "_core.url",
        "_core.close",
        "_core.config",
        "_client.proxy_config",
        "_client.proxy_errors",
        "_client.redirects",
        "_core.compression",
    ],
)
def test_value_modules_do_not_import_trio(module: str) -> None:
    assert "trio" not in {name for name, _ in imports_of(module).external}


def test_url_does_not_depend_on_trio_even_indirectly() -> None:
    for module in {"_core.url"} | transitive_imports("_core.url"):
        assert "trio" not in {name for name, _ in imports_of(module).external}, module


@pytest.mark.parametrize("module", ["_core.close", "_core.config"])
def test_close_and_config_do_not_depend_on_trio_even_indirectly(module: str) -> None:
    for name in {module} | transitive_imports(module):
        assert "trio" not in {top for top, _ in imports_of(name).external}, name


@pytest.mark.parametrize("module", MODULES)
def test_only_stdlib_trio_and_wsproto_are_imported(module: str) -> None:
    for name, guarded in imports_of(module).external:
        if name in ("exceptiongroup", "typing_extensions"):
            # (Back-ports: behind a version guard, or for the type checker
            # only under ``if TYPE_CHECKING:``.)
            assert guarded, f"{module} imports {name} without a guard"
            continue
        allowed = THIRD_PARTY | OPTIONAL_THIRD_PARTY.get(module, set())
        assert name in sys.stdlib_module_names or name in allowed, f"{module} imports {name}"


def test_optional_modules_are_never_imported_by_the_package() -> None:
    # ``import trio_websocket`` must work without the extras installed: a
    # module that needs one is imported only inside the function that runs
    # once the extra was asked for (HTTP/2), or never (redis_hub).
    for module in MODULES:
        assert not NEEDS_AN_EXTRA & imports_of(module).eager, module


def test_init_only_reexports() -> None:
    tree = parse("__init__")
    for node in ast.walk(tree):
        assert not isinstance(
            node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
        ), f"__init__ defines something at line {node.lineno}"  # type: ignore[attr-defined]
    loops = 0
    for statement in tree.body:
        if isinstance(statement, ast.Expr):
            assert isinstance(statement.value, ast.Constant), "only the docstring"
        elif isinstance(statement, ast.ImportFrom):
            assert statement.level == 1, "re-exports come from the package's own modules"
            for alias in statement.names:
                # ``X as X`` marks an explicit re-export for type checkers.
                assert alias.asname == alias.name, alias.name
        elif isinstance(statement, ast.Assign):
            targets = [ast.unparse(target) for target in statement.targets]
            assert targets == ["__all__"], targets
        elif isinstance(statement, ast.For):
            # The loop that sets ``__module__`` on the public names.
            loops += 1
            assert "__module__" in ast.unparse(statement)
        elif isinstance(statement, ast.Delete):
            continue
        else:
            pytest.fail(f"unexpected statement in __init__: {ast.unparse(statement)}")
    assert loops <= 1


def test_init_exports_what_it_imports() -> None:
    tree = parse("__init__")
    imported = {
        alias.asname or alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert imported == set(trio_websocket.__all__)


def test_cli_uses_only_the_public_api() -> None:
    # ``from . import name`` reads as an import of ``__init__``.
    assert imports_of("_extras.cli").internal == {"__init__"}
    assert imports_of("__main__").internal == {"_extras.cli"}


@pytest.mark.parametrize("module", sorted(set(MODULES) - {"__main__"}))
def test_only_main_imports_the_cli(module: str) -> None:
    # ``import trio_websocket`` never loads the command line.
    assert not {"_extras.cli", "__main__"} & imports_of(module).internal


def test_layering_reader_sees_known_edges() -> None:
    # Guard the test itself: if parsing went wrong, every rule above would
    # pass vacuously.
    client = imports_of("_client.client").internal
    assert {"_core.connection", "_core.url", "_core.errors"} <= client
    assert {"_server.request", "_core.errors"} <= imports_of("_server.server").internal
    assert {"_wire.framing", "_wire.masking"} <= imports_of("_core.sending").internal
    assert {"_core.receiving", "_wire.fast_paths"} <= imports_of("_core.connection").internal
    assert "__init__" in imports_of("_extras.cli").internal
    assert {"_core.connection", "_core.errors"} <= imports_of("_server.request").internal
    assert "_core.close" in imports_of("_core.errors").internal
    assert ("trio", False) in imports_of("_core.connection").external
    assert ("exceptiongroup", True) in imports_of("_core.groups").external
    init = imports_of("__init__").internal
    assert {"_client.client", "_server.server", "_core.connection"} <= init
