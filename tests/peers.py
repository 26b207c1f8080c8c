"""Getting the outside peers some tests run against, or saying why not.

The peers: programs (Node.js and npm, Chromium, redis-server, tinyproxy,
Dante, nghttpx from Debian's nghttp2-proxy), packages from a registry that
the tests install themselves (npm's ``ws``, by ``npm ci``), and Python
packages from PyPI that requirements-dev.txt pins (websockets, aiohttp,
websocket-client, coredis, hypercorn).

Rules, the same for every peer:

- A peer that is there is used as it is.
- A missing program is installed with Debian's apt-get when this machine
  allows it (apt-get on PATH and we are root); the tests never install
  Python packages (pip's environment is the user's).
- When a peer cannot be had (no apt-get, not root, macOS, no network, an
  installation that failed) the tests that need it are skipped, with a
  reason that names the peer, says what went wrong and how to get it:
  except when the environment has ``CI=true``, where they fail instead, so
  that CI never passes with a peer silently missing.
- Each program is looked for (and installed) once per test session: the
  outcome, found or not, is remembered.
- Every installation step has a time bound; the tail of its output goes
  into the reason.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
from types import ModuleType
from typing import Any, NoReturn

import pytest

#: How to get the Python peers: requirements-dev.txt pins every one.
PIP_PEERS = "pip install -r requirements-dev.txt (it pins every Python peer)"

#: apt-get waits this long for another apt-get's lock (seconds), instead of
#: failing at once: two test runs side by side may install the same package.
APT_LOCK_WAIT = 300

_programs: dict[str, str] = {}
_unavailable: dict[str, str] = {}


def running_in_ci() -> bool:
    """Whether the environment says this is CI (``CI=true``, as GitHub
    Actions, GitLab and .ci/run set it; ``1`` and ``yes`` count too)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def peer_unavailable(peer: str, problem: str, how_to_get: str) -> NoReturn:
    """Skip the calling test (or module) for want of ``peer``; under
    ``CI=true``, fail it."""
    if running_in_ci():
        pytest.fail(
            f"{peer} is needed and CI=true, so its tests fail instead of skipping: "
            f"{problem}. To get it: {how_to_get}",
            pytrace=False,
        )
    pytest.skip(f"needs {peer}: {problem}. To get it: {how_to_get}", allow_module_level=True)


def require_module(name: str, how_to_get: str = PIP_PEERS) -> ModuleType:
    """The Python module ``name`` (a peer from PyPI), imported."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        peer_unavailable(f"the Python module {name}", f"importing it failed ({exc})", how_to_get)


def require_program(program: str, *, peer: str, apt_package: str, how_to_get: str) -> str:
    """The executable ``program`` (a name looked up on PATH, or an absolute
    path) of ``peer``, installed from Debian's ``apt_package`` if it is
    missing and this machine allows it."""
    if program in _programs:
        return _programs[program]
    if program not in _unavailable:
        found = _find(program)
        if found is None:
            problem = _install_with_apt(apt_package)
            found = _find(program)
            if found is None:
                problem = problem or f"apt-get installed {apt_package}, but there is no {program}"
                _unavailable[program] = f"{program} is missing; {problem}"
        if found is not None:
            _programs[program] = found
            return found
    peer_unavailable(peer, _unavailable[program], how_to_get)


def run_setup_step(command: list[str], *, timeout: float, **kwargs: Any) -> str | None:
    """Run one installation step (``command``, bounded by ``timeout``
    seconds); None when it worked, else what went wrong."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=env,
            **kwargs,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{' '.join(command)} failed: {exc}"
    if result.returncode != 0:
        output = (result.stdout[-1500:] + "\n" + result.stderr[-1500:]).strip()
        return f"{' '.join(command)} exited {result.returncode}: {output}"
    return None


def _find(program: str) -> str | None:
    if os.path.isabs(program):
        return program if os.access(program, os.X_OK) else None
    return shutil.which(program)


def _install_with_apt(package: str) -> str | None:
    """Install ``package`` with apt-get; None when that worked, else why not."""
    if shutil.which("apt-get") is None:
        return "there is no apt-get here to install it with"
    geteuid = getattr(os, "geteuid", None)
    if geteuid is None or geteuid() != 0:
        return "installing it with apt-get needs root"
    install = [
        "apt-get",
        "-o",
        f"DPkg::Lock::Timeout={APT_LOCK_WAIT}",
        "install",
        "-y",
        "--no-install-recommends",
        package,
    ]
    if run_setup_step(install, timeout=900) is None:
        return None
    # Most often stale package lists (a fresh container has none): refresh
    # them and try once more.
    problem = run_setup_step(
        ["apt-get", "-o", f"DPkg::Lock::Timeout={APT_LOCK_WAIT}", "update"], timeout=300
    )
    if problem is not None:
        return problem
    return run_setup_step(install, timeout=900)
