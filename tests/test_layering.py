"""The package's modules depend on each other one way only (see the Layout
section of README.md): the pure modules at the bottom, ``_connection`` above
them, ``_client`` and ``_server`` on top, ``_reconnect`` over the client's
entry point, and ``__init__`` re-exporting.
Above the package's API sit its users: ``_cli`` (the command line, which
imports only the public names) and ``__main__`` (which only runs ``_cli``).

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

PURE = {
    "_close",
    "_errors",
    "_endpoint",
    "_url",
    "_config",
    "_messages",
    "_pings",
    "_groups",
    "_version",
    "_masking",
    "_fastpath",
    "_keepalive",
    "_stats",
    "_log",
    "_proxy_config",
    "_proxy_errors",
    "_redirects",
    "_bad_response",
    "_http",
    "_limits",
    "_origins",
    "_basic_auth",
    "_shutdown",
    "_compression",
    "_deflate",
    "_waiters",
    "_framing",
    "_upgrade",
    "_socket_stream",
}
#: Compiled modules (no .py source to parse); they import nothing of ours.
COMPILED = {"_speedups"}
LAYERS = {
    **dict.fromkeys(PURE | COMPILED, 0),
    "_connection": 1,
    "_proxy": 1,
    "_unix": 1,
    "_client": 2,
    "_request": 2,
    "_server": 2.1,
    "_hub": 2,
    # Build on the server, below the re-exports: the worker's side, then
    # the parent's.
    "_worker_process": 2.25,
    "_workers": 2.5,
    # Built on the client's public entry point.
    "_reconnect": 3,
    # The public testing kit sits beside the namespace: it uses the entry
    # points, and the package never imports it.
    "testing": 3,
    "__init__": 4,
    # A public module of its own, which nothing in the package imports.
    "redis_hub": 4,
    "_cli": 5,
    "__main__": 6,
}
THIRD_PARTY = {"trio", "wsproto"}
#: Optional dependencies (extras), each allowed in its own module only.
OPTIONAL_THIRD_PARTY = {"redis_hub": {"coredis"}}


@dataclass
class Imports:
    #: Modules of this package imported (``"_close"``, or ``"__init__"`` for
    #: the package itself).
    internal: set[str] = field(default_factory=set)
    #: Top-level names of everything else imported, with whether the import
    #: sits under an ``if sys.version_info ...`` guard.
    external: list[tuple[str, bool]] = field(default_factory=list)


def _is_version_guard(node: ast.If) -> bool:
    return "version_info" in ast.unparse(node.test)


def _collect(node: ast.AST, imports: Imports, guarded: bool) -> None:
    if isinstance(node, ast.Import):
        for alias in node.names:
            top = alias.name.split(".")[0]
            if top == PACKAGE:
                parts = alias.name.split(".")
                imports.internal.add(parts[1] if len(parts) > 1 else "__init__")
            else:
                imports.external.append((top, guarded))
    elif isinstance(node, ast.ImportFrom):
        module = node.module or ""
        if node.level > 0 or module.split(".")[0] == PACKAGE:
            # Relative (``from ._x import y`` / ``from . import _x``) or
            # absolute import of the package.
            inside = module if node.level > 0 else module.partition(".")[2]
            if inside:
                imports.internal.add(inside.split(".")[0])
            else:
                for alias in node.names:
                    name = alias.name
                    imports.internal.add(name if name in LAYERS else "__init__")
        else:
            imports.external.append((module.split(".")[0], guarded))
    for child in ast.iter_child_nodes(node):
        child_guarded = guarded or (isinstance(node, ast.If) and _is_version_guard(node))
        _collect(child, imports, child_guarded)


def parse(module: str) -> ast.Module:
    path = PACKAGE_DIR / f"{module}.py"
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def imports_of(module: str) -> Imports:
    imports = Imports()
    if module not in COMPILED:
        _collect(parse(module), imports, guarded=False)
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


MODULES = sorted(path.stem for path in PACKAGE_DIR.glob("*.py"))


def test_every_module_has_a_layer() -> None:
    # A new module must be placed in the layering before it can be used.
    assert set(MODULES) == set(LAYERS) - COMPILED


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_only_lower_layers(module: str) -> None:
    for imported in imports_of(module).internal:
        assert imported in LAYERS, f"{module} imports unknown module {imported}"
        if module in PURE:
            assert LAYERS[imported] == 0, f"pure module {module} imports {imported}"
        else:
            assert LAYERS[imported] < LAYERS[module], f"{module} imports {imported}"


def test_client_and_server_never_import_each_other() -> None:
    assert "_server" not in transitive_imports("_client")
    assert "_client" not in transitive_imports("_server")


@pytest.mark.parametrize("module", sorted(PURE))
def test_pure_modules_never_import_the_connection_or_the_entry_points(module: str) -> None:
    assert not transitive_imports(module) & {"_connection", "_client", "_server", "__init__"}


def test_reconnecting_client_never_imports_the_server() -> None:
    assert "_server" not in transitive_imports("_reconnect")


def test_connection_never_imports_client_or_server() -> None:
    assert not transitive_imports("_connection") & {"_client", "_server", "__init__"}


@pytest.mark.parametrize(
    "module",
    ["_url", "_close", "_config", "_proxy_config", "_proxy_errors", "_redirects", "_compression"],
)
def test_value_modules_do_not_import_trio(module: str) -> None:
    assert "trio" not in {name for name, _ in imports_of(module).external}


def test_url_does_not_depend_on_trio_even_indirectly() -> None:
    for module in {"_url"} | transitive_imports("_url"):
        assert "trio" not in {name for name, _ in imports_of(module).external}, module


@pytest.mark.parametrize("module", ["_close", "_config"])
def test_close_and_config_do_not_depend_on_trio_even_indirectly(module: str) -> None:
    for name in {module} | transitive_imports(module):
        assert "trio" not in {top for top, _ in imports_of(name).external}, name


@pytest.mark.parametrize("module", MODULES)
def test_only_stdlib_trio_and_wsproto_are_imported(module: str) -> None:
    for name, guarded in imports_of(module).external:
        if name == "exceptiongroup":
            assert guarded, f"{module} imports exceptiongroup without a version guard"
            continue
        allowed = THIRD_PARTY | OPTIONAL_THIRD_PARTY.get(module, set())
        assert name in sys.stdlib_module_names or name in allowed, f"{module} imports {name}"


def test_optional_modules_are_never_imported_by_the_package() -> None:
    # ``import trio_websocket`` must work without the extras installed.
    for module in MODULES:
        assert not set(OPTIONAL_THIRD_PARTY) & imports_of(module).internal, module


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
    assert imports_of("_cli").internal == {"__init__"}
    assert imports_of("__main__").internal == {"_cli"}


@pytest.mark.parametrize("module", sorted(set(MODULES) - {"__main__"}))
def test_only_main_imports_the_cli(module: str) -> None:
    # ``import trio_websocket`` never loads the command line.
    assert not {"_cli", "__main__"} & imports_of(module).internal


def test_layering_reader_sees_known_edges() -> None:
    # Guard the test itself: if parsing went wrong, every rule above would
    # pass vacuously.
    assert {"_connection", "_url", "_errors"} <= imports_of("_client").internal
    assert {"_request", "_errors"} <= imports_of("_server").internal
    assert {"_connection", "_errors"} <= imports_of("_request").internal
    assert "_close" in imports_of("_errors").internal
    assert ("trio", False) in imports_of("_connection").external
    assert ("exceptiongroup", True) in imports_of("_groups").external
    assert {"_client", "_server", "_connection"} <= imports_of("__init__").internal
