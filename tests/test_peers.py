"""The rules of tests/peers.py, which every test with an outside peer goes
through: a peer that is there is used; a missing program is installed with
apt-get when that can be done; otherwise the test is skipped with a reason
that says how to get the peer, except under ``CI=true``, where it fails.

PATH points at a folder of this test's own, holding (or not) a fake
``apt-get`` that logs its arguments, so no real package is installed.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import peers
import pytest

HOW_TO_GET = "apt-get install fakepeer, or see the README"


@pytest.fixture(autouse=True)
def fresh_peers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing remembered from other tests; an empty PATH of our own."""
    monkeypatch.setattr(peers, "_programs", {})
    monkeypatch.setattr(peers, "_unavailable", {})
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.delenv("CI", raising=False)


def as_root(monkeypatch: pytest.MonkeyPatch, root: bool = True) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0 if root else 1000, raising=False)


def fake_apt_get(tmp_path: Path, *, installs: str | None) -> Path:
    """A fake apt-get in our PATH folder; its calls go to the log returned.
    With ``installs``, ``apt-get install`` creates that executable in the
    folder; without, it fails as for an unknown package."""
    log = tmp_path / "apt-get.log"
    if installs is None:
        on_install = 'echo "E: Unable to locate package fakepeer" >&2; exit 100'
    else:
        target = tmp_path / "bin" / installs
        on_install = f"printf '#!/bin/sh\\n' > {target}; /bin/chmod +x {target}; exit 0"
    script = tmp_path / "bin" / "apt-get"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {log}\n'
        f'case "$*" in *" install "*) {on_install};; esac\n'
        "exit 0\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return log


def require_fakepeer() -> str:
    return peers.require_program(
        "fakepeer", peer="Fake Peer", apt_package="fakepeer", how_to_get=HOW_TO_GET
    )


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes"])
def test_ci_is_recognised(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    assert peers.running_in_ci()


@pytest.mark.parametrize("value", [None, "", "false", "0"])
def test_anything_else_is_not_ci(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is not None:
        monkeypatch.setenv("CI", value)
    assert not peers.running_in_ci()


def test_a_program_that_is_there_is_used(tmp_path: Path) -> None:
    program = tmp_path / "bin" / "fakepeer"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    assert require_fakepeer() == str(program)


def test_without_apt_get_a_missing_program_is_skipped_saying_how_to_get_it() -> None:
    with pytest.raises(pytest.skip.Exception) as skipped:
        require_fakepeer()
    reason = str(skipped.value)
    assert "Fake Peer" in reason
    assert "no apt-get" in reason
    assert HOW_TO_GET in reason


def test_under_ci_a_missing_program_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception) as failed:
        require_fakepeer()
    assert "CI=true" in str(failed.value)
    assert HOW_TO_GET in str(failed.value)


@pytest.mark.skipif(sys.platform == "win32", reason="a shell script stands in for apt-get")
def test_apt_get_needs_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    log = fake_apt_get(tmp_path, installs="fakepeer")
    as_root(monkeypatch, root=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        require_fakepeer()
    assert "needs root" in str(skipped.value)
    assert not log.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="a shell script stands in for apt-get")
def test_a_missing_program_is_installed_with_apt_get(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log = fake_apt_get(tmp_path, installs="fakepeer")
    as_root(monkeypatch)
    assert require_fakepeer() == str(tmp_path / "bin" / "fakepeer")
    assert require_fakepeer() == str(tmp_path / "bin" / "fakepeer")
    calls = log.read_text().splitlines()
    assert len(calls) == 1
    assert calls[0].endswith("install -y --no-install-recommends fakepeer")


@pytest.mark.skipif(sys.platform == "win32", reason="a shell script stands in for apt-get")
@pytest.mark.parametrize("ci", [False, True])
def test_a_failed_installation_is_tried_once_and_reported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ci: bool
) -> None:
    log = fake_apt_get(tmp_path, installs=None)
    as_root(monkeypatch)
    if ci:
        monkeypatch.setenv("CI", "true")
    outcome = pytest.fail.Exception if ci else pytest.skip.Exception
    for _ in range(2):
        with pytest.raises(outcome) as stopped:
            require_fakepeer()
        assert "exited 100" in str(stopped.value)
        assert "Unable to locate package fakepeer" in str(stopped.value)
        assert HOW_TO_GET in str(stopped.value)
    # Install, refresh the package lists, install again; then remembered.
    calls = [call.split()[-1] for call in log.read_text().splitlines()]
    assert calls == ["fakepeer", "update", "fakepeer"]


def test_a_python_peer_that_is_there_is_imported() -> None:
    assert peers.require_module("json.decoder").__name__ == "json.decoder"


@pytest.mark.parametrize("ci", [False, True])
def test_a_missing_python_peer_is_skipped_or_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch, ci: bool
) -> None:
    monkeypatch.setitem(sys.modules, "fakepeer_module", None)  # as if not installed
    if ci:
        monkeypatch.setenv("CI", "true")
    outcome = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(outcome) as stopped:
        peers.require_module("fakepeer_module")
    assert "fakepeer_module" in str(stopped.value)
    assert "requirements-dev.txt" in str(stopped.value)
