"""Sphinx configuration for the trio_websocket documentation.

Build (as CI does; warnings are errors, every reference must resolve):

    python -m sphinx -W -n -b html docs docs/_build/html

No intersphinx: the build must work without network access, and no
installable package ships the objects.inv inventories of Python, Trio or
wsproto. References to their objects are therefore written as plain
literals, and the few names that appear in our signatures are listed in
``nitpick_ignore`` below so that they render as text without a warning.
"""

from __future__ import annotations

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
    "sphinxcontrib_trio",
]

exclude_patterns = ["_build"]
default_role = "literal"
primary_domain = "py"
highlight_language = "python3"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = False

# External names that appear in signatures and docstrings. Without an
# inventory they cannot link anywhere; they are shown as plain text.
_external_classes = [
    # builtins and typing
    "bool", "bytes", "float", "int", "str", "list", "tuple", "object",
    "None", "NoneType", "Exception", "ValueError", "RuntimeError",
    "Any", "typing.Any", "NoReturn", "typing.NoReturn",
    "Sequence", "collections.abc.Sequence",
    "AsyncIterator", "collections.abc.AsyncIterator",
    "Awaitable", "collections.abc.Awaitable",
    "Callable", "collections.abc.Callable",
    "Mapping", "collections.abc.Mapping",
    "contextlib.AbstractAsyncContextManager",
    "Iterable", "collections.abc.Iterable",
    "AsyncIterable", "collections.abc.AsyncIterable",
    "re.Pattern",
    # standard library
    "ssl.SSLContext",
    "os.PathLike", "random.Random", "BaseException",
    # trio
    "trio.Nursery", "trio.abc.Stream", "trio.abc.Listener", "trio.TaskStatus",
    # wsproto
    "wsproto.connection.Connection", "wsproto.extensions.Extension",
    "wsproto.handshake.H11Handshake", "wsproto.events.Request",
    # private aliases of this package, spelled out in the prose
    "Headers", "Handler", "Message",
]
nitpick_ignore = [("py:class", name) for name in _external_classes]
nitpick_ignore += [("py:obj", name) for name in _external_classes]
nitpick_ignore += [("py:exc", name) for name in ("ValueError", "RuntimeError")]
nitpick_ignore_regex = [
    ("py:class", r"trio_websocket\._[a-z_]+\..*"),
]

html_theme = "furo"
html_title = f"trio_websocket {release}"
html_static_path: list[str] = []
autosectionlabel_prefix_document = True
