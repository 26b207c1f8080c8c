"""Sphinx configuration for the trio_websocket documentation.

Build (as CI does; warnings are errors, every reference must resolve):

    python -m sphinx -W -n -b html docs docs/_build/html

Intersphinx without network access: the build reads each inventory from a
local file and links to the project's site.
- Python: Debian's ``python3.X-doc`` package (``.ci/run`` installs it).
- wsproto: Debian's ``python-wsproto-doc`` package (likewise).
- Trio: ``_inventories/trio.inv``, made from Trio's own sources by
  ``trio_inventory.py`` (Trio ships its inventory only on its site).
When a Debian inventory is missing (a machine without those packages), the
build still works: the names of that project are then listed in
``nitpick_ignore`` and shown as plain text instead of links.
"""

from __future__ import annotations

import glob
import os
import sys

sys.path.insert(0, os.path.abspath(".."))

import trio_websocket

project = "trio_websocket"
author = "trio_websocket contributors"
copyright = "trio_websocket contributors, MIT license"
release = trio_websocket.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosectionlabel",
    "sphinx.ext.intersphinx",
    "sphinxcontrib_trio",
]

exclude_patterns = ["_build"]
default_role = "literal"
primary_domain = "py"
highlight_language = "python3"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = False

_here = os.path.dirname(os.path.abspath(__file__))


def _first(*patterns: str) -> str | None:
    for pattern in patterns:
        found = sorted(glob.glob(pattern))
        if found:
            return found[-1]
    return None


_inventories = {
    "python": (
        "https://docs.python.org/3",
        _first(
            "/usr/share/doc/python3.*/html/objects.inv",
            "/usr/share/doc/python3/html/objects.inv",
        ),
    ),
    "trio": (
        "https://trio.readthedocs.io/en/stable",
        os.path.join(_here, "_inventories", "trio.inv"),
    ),
    "wsproto": (
        "https://python-hyper.org/projects/wsproto/en/stable",
        _first("/usr/share/doc/python-wsproto-doc/html/objects.inv"),
    ),
}
intersphinx_mapping = {
    name: (url, path) for name, (url, path) in _inventories.items() if path and os.path.exists(path)
}

# External names, by project: shown as plain text when that project's
# inventory is missing (see above).
_external_names = {
    "python": [
        "bool", "bytes", "float", "int", "str", "list", "tuple", "object",
        "None", "NoneType", "Exception", "ValueError", "RuntimeError",
        "BaseException", "typing.Any", "typing.NoReturn",
        "collections.abc.Sequence", "collections.abc.AsyncIterator",
        "collections.abc.Awaitable", "collections.abc.Callable",
        "collections.abc.Mapping", "collections.abc.Iterable",
        "collections.abc.AsyncIterable", "contextlib.AbstractAsyncContextManager",
        "re.Pattern", "ssl.SSLContext", "os.PathLike", "random.Random",
    ],
    "trio": ["trio.Nursery", "trio.abc.Stream", "trio.abc.Listener", "trio.TaskStatus"],
    "wsproto": [
        "wsproto.connection.Connection", "wsproto.extensions.Extension",
        "wsproto.handshake.H11Handshake", "wsproto.events.Request",
    ],
}
_unresolvable = [
    name
    for project, names in _external_names.items()
    if project not in intersphinx_mapping
    for name in names
]
# Names that no inventory has: short spellings from annotations (``Any``,
# ``Sequence``...) and private aliases of this package spelled out in the
# prose.
_unresolvable += [
    "Any", "NoReturn", "Sequence", "AsyncIterator", "Awaitable", "Callable",
    "Mapping", "Iterable", "AsyncIterable",
    "re.Pattern",  # not in Python's inventory as a class
    "Headers", "Handler", "Message",
]
nitpick_ignore = [("py:class", name) for name in _unresolvable]
nitpick_ignore += [("py:obj", name) for name in _unresolvable]
nitpick_ignore += [("py:exc", name) for name in ("ValueError", "RuntimeError")]
nitpick_ignore_regex = [
    ("py:class", r"trio_websocket\._[a-z_]+\..*"),
]

html_theme = "furo"
html_title = f"trio_websocket {release}"
html_static_path: list[str] = []
autosectionlabel_prefix_document = True
