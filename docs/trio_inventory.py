"""Write ``docs/_inventories/trio.inv``, the intersphinx inventory for Trio.

Trio publishes its inventory only on its documentation site, and the docs
build runs without network access, so we make one from Trio's own sources:
its source distribution carries ``docs/source/reference-*.rst``, and the
directives there (``autoclass``, ``autofunction``, ``module``...) say which
page documents which name. The anchor of a Python object in a Sphinx page
is its full name, so that is all an inventory needs.

Run it again when the pinned Trio changes:

    pip download trio==X.Y.Z --no-binary :all: --no-deps -d /tmp/trio-sdist
    tar xzf /tmp/trio-sdist/trio-X.Y.Z.tar.gz -C /tmp/trio-sdist
    python docs/trio_inventory.py /tmp/trio-sdist/trio-X.Y.Z
"""

from __future__ import annotations

import re
import sys
import zlib
from pathlib import Path

#: Directive -> the role of the object it documents.
ROLES = {
    "module": "module",
    "class": "class",
    "autoclass": "class",
    "function": "function",
    "autofunction": "function",
    "decorator": "function",
    "exception": "exception",
    "autoexception": "exception",
    "data": "data",
    "autodata": "data",
    "method": "method",
    "automethod": "method",
    "attribute": "attribute",
    "autoattribute": "attribute",
}
#: Roles of objects that live inside the class documented just above.
MEMBER_ROLES = {"method", "attribute"}
DIRECTIVE = re.compile(r"^(?P<indent>\s*)\.\. (?P<kind>[a-z]+)::\s+(?P<target>\S[^(\n]*)")


def objects_of_page(text: str) -> list[tuple[str, str]]:
    """(full name, role) of every object one reference page documents."""
    module = "trio"
    current_class: str | None = None
    found: list[tuple[str, str]] = []
    for line in text.splitlines():
        match = DIRECTIVE.match(line)
        if match is None:
            continue
        kind, target = match["kind"], match["target"].strip()
        if kind in ("module", "currentmodule"):
            module = target
            current_class = None
            if kind == "module":
                found.append((module, "module"))
            continue
        role = ROLES.get(kind)
        if role is None:
            continue
        nested = bool(match["indent"]) and current_class is not None
        if role in MEMBER_ROLES and nested and "." not in target:
            name = f"{current_class}.{target}"
        elif target.startswith(("trio.", "trio ")) or target == "trio":
            name = target
        else:
            name = f"{module}.{target}"
        found.append((name, role))
        if role in ("class", "exception") and not match["indent"]:
            current_class = name
    return found


def inventory(source: Path, version: str) -> bytes:
    entries: dict[tuple[str, str], str] = {}
    for page in sorted((source / "docs" / "source").glob("reference-*.rst")):
        for name, role in objects_of_page(page.read_text(encoding="utf-8")):
            anchor = f"module-{name}" if role == "module" else "$"
            entries.setdefault((name, role), f"{page.stem}.html#{anchor}")
    lines = [
        f"{name} py:{role} 1 {uri} -" for (name, role), uri in sorted(entries.items())
    ]
    header = (
        "# Sphinx inventory version 2\n"
        "# Project: Trio\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    return header.encode() + zlib.compress(("\n".join(lines) + "\n").encode())


def main() -> None:
    source = Path(sys.argv[1])
    version = source.name.rpartition("-")[2]
    target = Path(__file__).parent / "_inventories" / "trio.inv"
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(inventory(source, version))
    print(f"wrote {target} (Trio {version})")


if __name__ == "__main__":
    main()
