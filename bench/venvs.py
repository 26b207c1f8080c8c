"""Creates the per-stack virtualenvs under bench/.venvs/ with pinned
packages from PyPI (python3.11 -m venv + pip, with a venv's own build
environment and pip arguments from stacks.VENV_BUILDS); reuses ones whose
pin marker (pins and build options) matches, rebuilds the rest."""

import os
import shutil
import subprocess
import sys

from stacks import BENCH, VENV_BUILDS, VENVS

ROOT = BENCH / ".venvs"
MARKER = ".bench-pins"


def python_of(name):
    return ROOT / name / "bin" / "python"


def ensure(name, log=print):
    pins = VENVS[name]
    build_env, pip_args = VENV_BUILDS.get(name, ({}, []))
    path = ROOT / name
    marker = path / MARKER
    wanted = "\n".join(pins) + "\n"
    if name in VENV_BUILDS:
        wanted += f"# build: {sorted(build_env.items())} {pip_args}\n"
    if python_of(name).exists() and marker.exists() \
            and marker.read_text() == wanted:
        return python_of(name)
    log(f"[venv] creating {path} with {' '.join(pins)}"
        + (f" ({build_env} {' '.join(pip_args)})" if name in VENV_BUILDS
           else ""))
    if path.exists():
        shutil.rmtree(path)
    ROOT.mkdir(parents=True, exist_ok=True)
    base = shutil.which("python3.11") or sys.executable
    subprocess.run([base, "-m", "venv", str(path)], check=True, timeout=300)
    pip([str(python_of(name)), "-m", "pip", "install", "-q",
         "--disable-pip-version-check", *pip_args, *pins], build_env)
    marker.write_text(wanted)
    return python_of(name)


def pip(cmd, extra_env=None):
    """Run pip quietly; show its output only if it fails."""
    env = {**os.environ, **extra_env} if extra_env else None
    cp = subprocess.run(cmd, check=False, capture_output=True, text=True,
                        timeout=900, env=env)
    if cp.returncode != 0:
        sys.stderr.write(cp.stdout + cp.stderr)
        raise RuntimeError(f"pip failed: {' '.join(cmd)}")


def pip_install_editable(name, repo):
    """Optional: `pip install -e <repo>` into venv `name` (no deps)."""
    pip([str(python_of(name)), "-m", "pip", "install", "-q",
         "--disable-pip-version-check", "--no-deps", "-e", str(repo)])
