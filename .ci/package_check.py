"""Build trio_websocket's sdist and wheel and prove both install and work.

Steps, each fatal (exit status 1, with what was wrong):

1. ``python -m build`` into a temporary directory: the sdist, then the
   wheel built from that sdist (so the sdist is known to build). It builds
   from a copy of the checkout's source files (what git tracks plus new
   files it does not ignore), not from the checkout itself: setuptools adds
   every file named in a leftover ``*.egg-info/SOURCES.txt`` (an editable
   install leaves one) to the sdist, which would hide a MANIFEST.in mistake.
2. ``twine check --strict`` on both (metadata, README rendering).
3. The sdist's file list: every source file under the package, tests/,
   docs/ and examples/ (and the top-level files a packager needs) is there;
   nothing from a build, a cache, a virtualenv, node_modules, docs/_build,
   bench/, autobahn/ or .ci/, and no compiled file.
4. The wheel's file list: the package with ``py.typed``, every ``.pyi`` and
   the LICENSE; no tests, docs or C source.
5. The wheel into one fresh virtualenv and the sdist into another. In each,
   from a directory outside the checkout (so the source tree cannot stand in
   for the install): ``import trio_websocket`` comes from the venv,
   ``py.typed``, ``_speedups.pyi`` and the LICENSE are installed, an echo
   over memory streams (``trio_websocket.testing``) round-trips text and
   bytes, and ``python -m trio_websocket --help`` works.
6. The sdist's own tests, a quick part of them (SDIST_TESTS), run from the
   unpacked sdist against the copy installed from it (the unpacked
   package directory is removed first), with the test tools pinned in
   requirements-dev.txt: a packager can test from the sdist alone.
7. ``.ci/verify_types.py`` on the installed wheel: what users install is
   100% typed for pyright, py.typed included.

Needs ``build``, ``twine`` and ``pyright`` (requirements-dev.txt) in the
interpreter that runs it; the venvs get trio and wsproto from the configured
package index. Run it alone as ``python .ci/package_check.py`` (``--keep``
leaves the temporary directory for a look).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "trio_websocket"

#: Top-level files the sdist must carry beside the package.
SDIST_TOP_LEVEL = (
    "LICENSE", "README.md", "CHANGELOG.md", "requirements-dev.txt",
    "pyproject.toml", "setup.py", "MANIFEST.in", "PKG-INFO",
)
#: Tracked directories shipped whole in the sdist (less UNWANTED_PARTS).
SDIST_TREES = (PACKAGE, "tests", "docs", "examples")
#: Files that must be there whatever the source listing says.
SDIST_MUST_HAVE = (
    f"{PACKAGE}/_wire/_speedups.c", f"{PACKAGE}/_wire/_speedups.pyi", f"{PACKAGE}/py.typed",
    "tests/conftest.py", "tests/interop_js/package.json", "docs/conf.py",
    "docs/index.rst", "docs/changelog.rst", "examples/demo.py",
)
#: A path with any of these components must not be in the sdist.
UNWANTED_PARTS = frozenset({
    ".venv", ".venvs", "venv", "__pycache__", ".pytest_cache", ".mypy_cache",
    ".ruff_cache", ".hypothesis", "node_modules", "_build", "build", "dist",
    "bench", "autobahn", ".ci", ".git",
})
UNWANTED_SUFFIXES = (".so", ".pyd", ".dylib", ".pyc", ".pyo", ".o")
#: Quick tests run from the unpacked sdist (step 6): the public names, URLs,
#: the testing kit, TLS, and every example script.
SDIST_TESTS = (
    "tests/test_api.py", "tests/test_url.py", "tests/test_testing_kit.py",
    "tests/test_tls.py", "tests/test_examples.py",
)
#: What those tests need beyond the package, at requirements-dev.txt's pins.
TEST_TOOLS = ("pytest", "pytest-trio", "trustme", "hypothesis")
#: Tracked files deliberately left out of the sdist.
NOT_SHIPPED_NAMES = frozenset({".gitignore"})

# Run inside each fresh venv, from a temporary directory.
SMOKE = r'''
import importlib.metadata
import sys
from pathlib import Path

import trio
import trio_websocket
from trio_websocket.testing import open_memory_client

package = Path(trio_websocket.__file__).resolve().parent
assert Path(sys.prefix).resolve() in package.parents, f"imported from {package}, not the venv"
for name in ("py.typed", "_wire/_speedups.pyi"):
    assert (package / name).is_file(), f"{name} is not installed in {package}"
distribution = importlib.metadata.distribution("trio_websocket")
licenses = [f for f in distribution.files or () if f.name == "LICENSE"]
assert licenses, "no LICENSE among the installed files"
assert "MIT License" in licenses[0].read_text(), "the installed LICENSE is not MIT"
assert distribution.version == trio_websocket.__version__, (
    distribution.version, trio_websocket.__version__)

async def echo(request):
    ws = await request.accept()
    async for message in ws:
        await ws.send_message(message)

async def main():
    with trio.fail_after(10):
        async with open_memory_client(echo) as ws:
            for message in ("héllo", b"\x00\xff" * 1000):
                await ws.send_message(message)
                assert await ws.get_message() == message

trio.run(main)
try:
    import trio_websocket._wire._speedups  # noqa: F401
    speedups = "compiled"
except ImportError:
    speedups = "pure Python"
print(f"trio_websocket {trio_websocket.__version__} from {package} ({speedups}): echo ok")
'''


class CheckFailed(Exception):
    """One step found something wrong; the message says what."""


def run(command: list[str], *, cwd: Path | None = None, quiet: bool = False) -> str:
    """Run a command; fail the check with its output when it fails."""
    shown = " ".join(str(part) for part in command)
    print(f"$ {shown}", flush=True)
    done = subprocess.run(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise CheckFailed(f"{shown} exited with {done.returncode}:\n{done.stdout}")
    if not quiet and done.stdout.strip():
        print(done.stdout.rstrip())
    return done.stdout


def source_files() -> list[str]:
    """The checkout's source files, relative and in POSIX form: what git
    tracks plus untracked files it does not ignore; without git, every file
    outside the build, cache and venv directories."""
    if shutil.which("git") is not None:
        done = subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others",
             "--exclude-standard"],
            capture_output=True, text=True,
        )
        if done.returncode == 0:
            return sorted(
                name for name in set(done.stdout.split("\0"))
                if name and (REPO / name).is_file()  # deleted but not yet staged
            )
    print("git is not available: listing the checkout's files by walking it")
    return sorted(
        path.relative_to(REPO).as_posix()
        for path in REPO.rglob("*")
        if path.is_file()
        and not unwanted([path.relative_to(REPO).as_posix()])
        and not any(part.endswith(".egg-info") for part in path.relative_to(REPO).parts)
    )


def copy_sources(names: list[str], destination: Path) -> Path:
    for name in names:
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    return destination


def build(source: Path, out: Path) -> tuple[Path, Path]:
    run([sys.executable, "-m", "build", "--outdir", str(out), str(source)], quiet=True)
    sdists = sorted(out.glob("*.tar.gz"))
    wheels = sorted(out.glob("*.whl"))
    if len(sdists) != 1 or len(wheels) != 1:
        raise CheckFailed(f"expected one sdist and one wheel, got {sdists + wheels}")
    print(f"built {sdists[0].name} and {wheels[0].name}")
    return sdists[0], wheels[0]


def sdist_names(sdist: Path) -> set[str]:
    """The sdist's member files, without the ``name-version/`` prefix."""
    with tarfile.open(sdist) as archive:
        return {
            str(PurePosixPath(*PurePosixPath(member.name).parts[1:]))
            for member in archive.getmembers()
            if member.isfile()
        }


def unwanted(names: Iterable[str]) -> list[str]:
    return sorted(
        name for name in names
        if UNWANTED_PARTS.intersection(PurePosixPath(name).parts)
        or name.endswith(UNWANTED_SUFFIXES)
    )


def check_sdist(sdist: Path, sources: list[str]) -> None:
    names = sdist_names(sdist)
    wanted = set(SDIST_TOP_LEVEL) | set(SDIST_MUST_HAVE)
    wanted |= {
        name for name in sources
        if PurePosixPath(name).parts[0] in SDIST_TREES
        and PurePosixPath(name).name not in NOT_SHIPPED_NAMES
        and not unwanted([name])
    }
    missing = sorted(wanted - names)
    extra = unwanted(names)
    if missing or extra:
        raise CheckFailed(
            f"{sdist.name}: missing {missing or 'nothing'}; should not ship {extra or 'nothing'}"
        )
    trees = {tree: sum(name.startswith(f"{tree}/") for name in names) for tree in SDIST_TREES}
    print(f"sdist: {len(names)} files ({', '.join(f'{t}/ {n}' for t, n in trees.items())})")


def check_wheel(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    package_files = [name for name in names if name.startswith(f"{PACKAGE}/")]
    problems = [
        f"no {required}"
        for required in ("__init__.py", "py.typed", "_wire/_speedups.pyi")
        if f"{PACKAGE}/{required}" not in names
    ]
    if not any(name.endswith(".dist-info/licenses/LICENSE") for name in names):
        problems.append("no dist-info/licenses/LICENSE")
    problems += [
        f"should not ship {name}" for name in sorted(names)
        if name.endswith((".c", ".pyc"))
        or not (name.startswith(f"{PACKAGE}/") or ".dist-info/" in name)
    ]
    if problems:
        raise CheckFailed(f"{wheel.name}: " + "; ".join(problems))
    stubs = sorted(name for name in package_files if name.endswith(".pyi"))
    print(f"wheel: {len(package_files)} package files, stubs {stubs}")


def check_install(label: str, artifact: Path, work: Path) -> Path:
    """Install ``artifact`` into a fresh venv and smoke-test it there."""
    venv = work / f"venv-{label}"
    run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    if not python.exists():  # Windows layout
        python = venv / "Scripts" / "python.exe"
    run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         str(artifact)], quiet=True)
    outside = work / f"run-{label}"
    outside.mkdir()
    (outside / "smoke.py").write_text(SMOKE, encoding="utf-8")
    run([str(python), "smoke.py"], cwd=outside)
    usage = run([str(python), "-m", PACKAGE, "--help"], cwd=outside, quiet=True)
    if "usage:" not in usage:
        raise CheckFailed(f"python -m {PACKAGE} --help printed no usage:\n{usage}")
    print(f"{label}: python -m {PACKAGE} --help ok")
    return python


def pinned(names: Iterable[str]) -> list[str]:
    """The requirement lines of requirements-dev.txt for these names."""
    lines = (REPO / "requirements-dev.txt").read_text(encoding="utf-8").splitlines()
    found = []
    for name in names:
        matching = [
            line.strip() for line in lines
            if line.strip().lower().startswith(f"{name}==")
        ]
        if not matching:
            raise CheckFailed(f"requirements-dev.txt pins no {name}")
        found += matching
    return found


def check_sdist_tests(sdist: Path, python: Path, work: Path) -> None:
    unpacked = work / "unpacked"
    with tarfile.open(sdist) as archive:
        if hasattr(tarfile, "data_filter"):  # Python 3.10.12+, 3.11.4+
            archive.extractall(unpacked, filter="data")
        else:
            archive.extractall(unpacked)  # our own archive, just built
    (top,) = unpacked.iterdir()
    shutil.rmtree(top / PACKAGE)  # the tests must import the installed copy
    run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         *pinned(TEST_TOOLS)], quiet=True)
    output = run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *SDIST_TESTS], cwd=top,
        quiet=True,
    )
    print(f"sdist tests: {output.strip().splitlines()[-1]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="trio_websocket-package-"))
    try:
        sources = source_files()
        sdist, wheel = build(copy_sources(sources, work / "source"), work / "dist")
        twine = [sys.executable, "-m", "twine", "--no-color", "check", "--strict"]
        run([*twine, str(sdist), str(wheel)])
        check_sdist(sdist, sources)
        check_wheel(wheel)
        wheel_python = check_install("wheel", wheel, work)
        sdist_python = check_install("sdist", sdist, work)
        check_sdist_tests(sdist, sdist_python, work)
        run([sys.executable, str(REPO / ".ci" / "verify_types.py"), "--python", str(wheel_python)])
    except CheckFailed as failure:
        print(f"package check failed: {failure}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("package check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
