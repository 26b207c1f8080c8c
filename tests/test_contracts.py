"""Underscore names stay in their module (``_core.contracts``).

A module touches another module's underscore names only through a typed
contract: a ``Protocol`` (``_core.contracts``, ``_core.keepalive.KeepaliveHost``,
``_server.server.ServedRequest``) that the module defines or imports, on a
variable typed as that Protocol, so mypy checks that the owner still
provides the member. Uses on ``self``/``cls``, and on objects of a class of
the same module, are the module's own business. The type of an object is
read from the source with ``ast``: annotations (parameters, ``x: T = ...``,
``self.x: T``, ``self.x = annotated_parameter``), ``x = C(...)``,
``isinstance(x, C)`` and ``for x in annotated``; any other use must be in
``FOREIGN_PRIVATES``, with its reason.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from test_layering import MODULES, PACKAGE, parse


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _names_in(node: ast.AST | None) -> set[str]:
    """Class names an annotation (or a call's function) mentions."""
    if node is None:
        return set()
    names = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Name):
            names.add(child.id)
        elif isinstance(child, ast.Attribute):
            names.add(child.attr)
        elif isinstance(child, ast.Constant) and isinstance(child.value, str):
            try:  # a quoted annotation
                names |= _names_in(ast.parse(child.value, mode="eval"))
            except SyntaxError:
                pass
    return names


def _is_protocol(node: ast.ClassDef) -> bool:
    return any(ast.unparse(base).split(".")[-1] == "Protocol" for base in node.bases)


def _members(node: ast.ClassDef) -> set[str]:
    members = set()
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
            members.add(item.name)
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            members.add(item.target.id)
    return members


#: Underscore members of every Protocol in the package, by module and name.
def _protocols() -> dict[tuple[str, str], set[str]]:
    found = {}
    for module in MODULES:
        for node in ast.walk(parse(module)):
            if isinstance(node, ast.ClassDef) and _is_protocol(node):
                found[(module, node.name)] = _members(node)
    return found


@dataclass
class PrivateUse:
    module: str
    line: int
    base: str  # the object's expression, as written
    name: str  # the underscore name used on it
    types: set[str]  # the class names the object may be, as far as read


def _class_attribute_types(cls: ast.ClassDef) -> dict[str, set[str]]:
    """``self.x``'s declared type, for each ``self.x`` of ``cls``."""
    types: dict[str, set[str]] = {}
    for method in cls.body:
        if not isinstance(method, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        params = {arg.arg: arg.annotation for arg in method.args.args + method.args.kwonlyargs}
        for node in ast.walk(method):
            target = value = annotation = None
            if isinstance(node, ast.AnnAssign):
                target, value, annotation = node.target, node.value, node.annotation
            elif isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
            if (
                isinstance(target, ast.Attribute)
                and isinstance(target.value, ast.Name)
                and target.value.id == "self"
            ):
                if annotation is None and isinstance(value, ast.Name):
                    annotation = params.get(value.id)
                types.setdefault(target.attr, set()).update(_names_in(annotation))
    return types


def _local_types(
    function: ast.FunctionDef | ast.AsyncFunctionDef, attributes: dict[str, set[str]]
) -> dict[str, set[str]]:
    """What each local name of ``function`` may be, from what it says."""
    types: dict[str, set[str]] = {}
    args = function.args
    for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
        types.setdefault(arg.arg, set()).update(_names_in(arg.annotation))

    def of(value: ast.AST | None) -> set[str]:
        if isinstance(value, ast.Call) and ast.unparse(value.func) == "list" and value.args:
            return of(value.args[0])
        if isinstance(value, ast.Call) and isinstance(value.func, (ast.Name, ast.Attribute)):
            return {ast.unparse(value.func).split(".")[-1]}
        if isinstance(value, ast.Name):
            return types.get(value.id, set())
        if (
            isinstance(value, ast.Attribute)
            and isinstance(value.value, ast.Name)
            and value.value.id == "self"
        ):
            return attributes.get(value.attr, set())
        return set()

    for node in ast.walk(function):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            types.setdefault(node.target.id, set()).update(_names_in(node.annotation))
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    types.setdefault(target.id, set()).update(of(node.value))
        elif isinstance(node, (ast.For, ast.comprehension)) and isinstance(node.target, ast.Name):
            types.setdefault(node.target.id, set()).update(of(node.iter))
        elif (
            isinstance(node, ast.Call)
            and ast.unparse(node.func) == "isinstance"
            and isinstance(node.args[0], ast.Name)
        ):
            types.setdefault(node.args[0].id, set()).update(_names_in(node.args[1]))
    return types


def _private_uses(module: str) -> list[PrivateUse]:
    """Every use of an underscore name on an object other than
    ``self``/``cls``: ``obj._x`` and ``getattr(obj, "_x", ...)``."""
    tree = parse(module)
    uses: list[PrivateUse] = []

    def visit(node: ast.AST, attributes: dict[str, set[str]], local: dict[str, set[str]]) -> None:
        if isinstance(node, ast.ClassDef):
            attributes = _class_attribute_types(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            local = _local_types(node, attributes)
        base = name = None
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            base, name = node.value, node.attr
        elif (
            isinstance(node, ast.Call)
            and ast.unparse(node.func) in ("getattr", "setattr", "hasattr")
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _is_private(node.args[1].value)
        ):
            base, name = node.args[0], node.args[1].value
        if base is not None and name is not None:
            if isinstance(base, ast.Name) and base.id in ("self", "cls"):
                pass
            else:
                if isinstance(base, ast.Name):
                    # A name with no local type may be a class: ``C._x``.
                    types = local.get(base.id) or {base.id}
                elif (
                    isinstance(base, ast.Attribute)
                    and isinstance(base.value, ast.Name)
                    and base.value.id == "self"
                ):
                    types = attributes.get(base.attr, set())
                else:
                    types = set()
                uses.append(PrivateUse(module, node.lineno, ast.unparse(base), name, types))  # type: ignore[attr-defined]
        for child in ast.iter_child_nodes(node):
            visit(child, attributes, local)

    visit(tree, {}, {})
    return uses


def _visible_protocols(
    module: str, protocols: dict[tuple[str, str], set[str]]
) -> dict[str, set[str]]:
    """The Protocols ``module`` defines or imports from the package, by name."""
    visible = {name: members for (owner, name), members in protocols.items() if owner == module}
    for node in ast.walk(parse(module)):
        if isinstance(node, ast.ImportFrom) and (
            node.level > 0 or (node.module or "").startswith(PACKAGE)
        ):
            for alias in node.names:
                for (_owner, name), members in protocols.items():
                    if name == alias.name:
                        visible[alias.asname or alias.name] = members
    return visible


def _own_classes(module: str) -> set[str]:
    """The module's classes, but not its Protocols (a use through one of
    those is checked as a contract)."""
    return {
        node.name
        for node in ast.walk(parse(module))
        if isinstance(node, ast.ClassDef) and not _is_protocol(node)
    }


#: The underscore names a module uses on objects of other modules without a
#: Protocol, as ``(module, object as written, name)``, each with its reason.
#: Keep it short: a new entry needs a better reason than these.
FOREIGN_PRIVATES: dict[tuple[str, str, str], str] = {
    # wsproto's internals, touched only here, each guarded by a getattr
    # that falls back to wsproto's own code, and pinned both ways by
    # tests/test_fastpath*.py (see the module's rules).
    ("_wire.frame_decoder", "masker", "_masking_key"): "wsproto's XorMaskerSimple key",
    ("_wire.frame_decoder", "XorMaskerSimple(b'\\x01\\x02\\x03\\x04')", "_masking_key"): (
        "the same, probed"
    ),
    ("_wire.frame_decoder", "protocol", "_events"): "wsproto Connection's event queue",
    ("_wire.frame_decoder", "protocol", "_state"): (
        "wsproto Connection's state, moved as its own close frame handling moves it"
    ),
    ("_wire.frame_decoder", "protocol._proto", "_parse_more"): (
        "wsproto's parsing generator, ended after a close frame as wsproto ends it"
    ),
    ("_wire.frame_decoder", "protocol", "_proto"): "wsproto Connection's FrameProtocol",
    ("_wire.frame_decoder", "getattr(protocol, '_proto', None)", "_frame_decoder"): (
        "FrameProtocol's FrameDecoder"
    ),
    ("_wire.frame_decoder", "frame_protocol", "_frame_decoder"): "the same",
    ("_wire.frame_decoder", "frame_protocol", "_message_decoder"): (
        "FrameProtocol's MessageDecoder: is a message under way"
    ),
    ("_wire.frame_decoder", "frame_protocol", "_parse_more"): (
        "FrameProtocol's parsing generator: is the parser alive"
    ),
    ("_wire.frame_decoder", "buffer", "_size"): "wsproto's Buffer, read by our decoder",
    ("_wire.frame_decoder", "buffer", "_used"): "the same",
    ("_wire.frame_decoder", "self.buffer", "_size"): "the same",
    # trio's internals, the same way, in the lean socket stream.
    ("_wire.socket_stream", "trio_socket", "_sock"): "the stdlib socket in a trio socket",
    ("_wire.socket_stream", "listener", "_ssl_context"): "an SSLListener's settings",
    ("_wire.socket_stream", "listener", "_https_compatible"): "the same",
    ("_wire.socket_stream", "listening", "_accept"): (
        "the stdlib socket's accept without its enum reads of family and type"
    ),
    ("_wire.socket_stream", "socket.socket", "_accept"): "the same, probed",
    # trio.SSLStream's internals, the same way, in the TLS read-ahead.
    ("_wire.tls_stream", "trio", "_ssl"): "trio's TLS module, for its state enum",
    ("_wire.tls_stream", "getattr(trio, '_ssl', None)", "_State"): "SSLStream's states",
    ("_wire.tls_stream", "stream", "_ssl_object"): "SSLStream's TLS object",
    ("_wire.tls_stream", "stream", "_incoming"): "SSLStream's received bytes",
    ("_wire.tls_stream", "stream", "_outgoing"): "SSLStream's bytes to send",
    ("_wire.tls_stream", "stream", "_state"): "SSLStream's state (OK, BROKEN)",
    ("_wire.tls_stream", "stream", "_estimated_receive_size"): "SSLStream's read size",
    ("_wire.tls_stream", "stream", "_https_compatible"): "SSLStream's EOF rule",
    # ... and in its direct reads and writes over a lean socket.
    ("_wire.tls_stream", "stream", "_handshook"): "SSLStream's handshake: is it done",
    ("_wire.tls_stream", "stream", "_delayed_outgoing"): "SSLStream's held-back session tickets",
    ("_wire.tls_stream", "stream", "_inner_send_lock"): "SSLStream's lock around transport sends",
    ("_wire.tls_stream", "stream", "_inner_recv_lock"): "SSLStream's lock around transport reads",
    ("_wire.tls_stream", "stream", "_inner_recv_count"): "SSLStream's count of transport reads",
    ("_wire.tls_stream", "stream", "_outer_send_conflict_detector"): (
        "SSLStream's check for two senders"
    ),
    ("_wire.tls_stream", "stream", "_outer_recv_conflict_detector"): (
        "SSLStream's check for two receivers"
    ),
    ("_wire.tls_stream", "stream", "_retry"): "SSLStream's own loop, for a write that must read",
    ("_wire.tls_stream", "stream", "_do_handshake"): "SSLStream's handshake, checked as _Once's",
    ("_wire.tls_stream", "handshook", "_afn"): "trio's _Once: the handshake it runs, ours instead",
    ("_wire.tls_stream", "handshook", "_args"): "trio's _Once: its arguments, checked empty",
    ("_wire.tls_stream", "handshook", "_done"): "trio's _Once: its event, set once done",
    ("_wire.tls_stream", "finished", "_done"): "the same, of the shared finished _Once",
    # zlib's compressor types have no public name (annotations only).
    ("_core.deflate", "zlib", "_Compress"): "zlib's type, for annotations",
    ("_core.deflate", "zlib", "_Decompress"): "the same",
}


def _unexplained_private_uses() -> list[PrivateUse]:
    protocols = _protocols()
    unexplained = []
    for module in MODULES:
        own = _own_classes(module)
        visible = _visible_protocols(module, protocols)
        for use in _private_uses(module):
            if use.types & own:
                continue  # an object of this module's own class
            if any(use.name in visible.get(t, set()) for t in use.types):
                continue  # through a declared contract
            if (use.module, use.base, use.name) in FOREIGN_PRIVATES:
                continue
            unexplained.append(use)
    return unexplained


def test_underscore_names_cross_modules_only_through_contracts() -> None:
    unexplained = [
        f"{use.module}:{use.line}: {use.base}.{use.name} (object read as {sorted(use.types)})"
        for use in _unexplained_private_uses()
    ]
    assert not unexplained, "\n".join(unexplained)


def test_no_module_imports_another_modules_underscore_names() -> None:
    found = []
    for module in MODULES:
        for node in ast.walk(parse(module)):
            if isinstance(node, ast.ImportFrom) and (
                node.level > 0 or (node.module or "").startswith(PACKAGE)
            ):
                found += [
                    f"{module}: {alias.name}" for alias in node.names if _is_private(alias.name)
                ]
    assert not found, found


def test_every_foreign_private_use_still_exists() -> None:
    # The allow-list must not outlive the code it excuses.
    used = {(use.module, use.base, use.name) for module in MODULES for use in _private_uses(module)}
    assert set(FOREIGN_PRIVATES) <= used, set(FOREIGN_PRIVATES) - used


def test_private_use_reader_sees_known_cases() -> None:
    # Guard the reader itself: if it missed uses or types, the rules above
    # would pass vacuously.
    protocols = _protocols()
    assert "_send_keepalive_ping" in protocols[("_core.keepalive", "KeepaliveHost")]
    assert {"_start", "_opening_failed"} <= protocols[("_core.contracts", "OpeningConnection")]
    seen = {(use.base, use.name): use.types for use in _private_uses("_client.client")}
    assert seen[("opening", "_start")] == {"OpeningConnection"}
    seen = {(use.base, use.name): use.types for use in _private_uses("_core.receiving")}
    assert seen[("receiver", "_state")] == {"FragmentReceiver"}
    assert "FragmentReceiver" in _own_classes("_core.receiving")
    assert "KeepaliveHost" not in _own_classes("_core.keepalive")  # a contract
