"""Real proxy servers on loopback for the proxy tests: Debian's tinyproxy
(HTTP CONNECT, with or without Basic credentials) and Dante (SOCKS5, with or
without username/password).

Each server gets its configuration in a fresh temporary folder, listens on
127.0.0.1 on a port found free just before, runs in its own process group
(Dante starts helper processes), and is stopped by its PID and that group.
The packages are installed with apt-get when missing; when that cannot be
done the tests are skipped with the reason, or fail under ``CI=true``
(tests/peers.py).

Dante checks SOCKS5 usernames against the system's password database, so
the setup creates a locked-down system user (no home, no shell) for it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from peers import peer_unavailable, require_program, run_setup_step

TINYPROXY = "/usr/bin/tinyproxy"
DANTED = "/usr/sbin/danted"
#: The system user Dante authenticates (created when missing).
SOCKS_USER = "twsproxytest"
SOCKS_PASSWORD = "Socks-pw-42"
#: tinyproxy's BasicAuth takes plain words only.
HTTP_USER = "alice"
HTTP_PASSWORD = "s3cret"
START_TIMEOUT = 15.0


def ensure_installed(program: str, package: str) -> str:
    """``program``, installing Debian's ``package`` when it is missing
    (tests/peers.py: skipped when that cannot be done, failed under CI)."""
    return require_program(
        program,
        peer=package,
        apt_package=package,
        how_to_get=f"install Debian's {package} (apt-get install {package}), giving {program}",
    )


def ensure_socks_user() -> None:
    """The system user Dante checks SOCKS5 credentials against, with
    :data:`SOCKS_PASSWORD`."""
    how_to_get = (
        f"run the proxy tests as root, which creates the system user {SOCKS_USER} "
        f"(password {SOCKS_PASSWORD}) for Dante"
    )
    geteuid = getattr(os, "geteuid", None)
    if geteuid is None or geteuid() != 0:
        peer_unavailable("Dante's test user", "creating a system user needs root", how_to_get)
    if run_setup_step(["id", SOCKS_USER], timeout=10) is not None:
        problem = run_setup_step(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SOCKS_USER],
            timeout=30,
        )
        # Another test run may have created it meanwhile.
        if run_setup_step(["id", SOCKS_USER], timeout=10) is not None:
            peer_unavailable(
                "Dante's test user", f"creating {SOCKS_USER} failed: {problem}", how_to_get
            )
    problem = run_setup_step(["chpasswd"], timeout=30, input=f"{SOCKS_USER}:{SOCKS_PASSWORD}\n")
    if problem is not None:
        peer_unavailable("Dante's test user", f"setting its password failed: {problem}", how_to_get)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    return free_port()


@dataclass
class RunningProxy:
    port: int
    log: Path

    def url(self, scheme: str, credentials: str = "") -> str:
        return f"{scheme}://{credentials}127.0.0.1:{self.port}"


def _wait_until_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"proxy exited with {process.returncode}:\n"
                f"{log.read_text(errors='replace')[-3000:] if log.exists() else ''}"
            )
        with socket.socket() as probe:
            probe.settimeout(1)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"proxy did not listen on port {port} in {START_TIMEOUT} s")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server (it stops its helpers), then SIGKILL to its
    process group for anything left; the leader is reaped last so that its
    group id cannot be reused before."""
    try:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                    break
                time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=10)


def _launch(command: list[str], folder: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """Start a server and wait until it listens on ``port``; RuntimeError
    (with the server stopped) when it does not."""
    with open(folder / "output.txt", "wb") as output:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_until_listening(process, port, log)
    except BaseException:
        _stop(process)
        raise
    return process


def _launch_on_free_port(
    folder: Path, log: Path, command_for: Callable[[int], list[str]]
) -> tuple[subprocess.Popen[bytes], int]:
    """Launch on a port found free; another try if it was taken meanwhile."""
    for attempt in range(3):
        port = free_port()
        try:
            return _launch(command_for(port), folder, port, log), port
        except RuntimeError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def run_tinyproxy(
    folder: Path, *, basic_auth: bool = False, connect_ports: list[int] | None = None
) -> Iterator[RunningProxy]:
    """tinyproxy on 127.0.0.1; ``basic_auth`` requires :data:`HTTP_USER`
    and :data:`HTTP_PASSWORD`; ``connect_ports`` limits CONNECT to them
    (any port when None)."""
    program = ensure_installed(TINYPROXY, "tinyproxy")
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "tinyproxy.conf"
    # Without LogFile, tinyproxy in the foreground (-d) logs to stdout.
    log = folder / "output.txt"

    def command_for(port: int) -> list[str]:
        lines = [
            f"Port {port}",
            "Listen 127.0.0.1",
            "Timeout 30",
            "MaxClients 50",
            "Allow 127.0.0.1",
            "User nobody",
            "Group nogroup",
            "LogLevel Info",
        ]
        if basic_auth:
            lines.append(f"BasicAuth {HTTP_USER} {HTTP_PASSWORD}")
        lines += [f"ConnectPort {allowed}" for allowed in connect_ports or []]
        config.write_text("\n".join(lines) + "\n")
        return [program, "-d", "-c", str(config)]

    process, port = _launch_on_free_port(folder, log, command_for)
    try:
        yield RunningProxy(port, log)
    finally:
        _stop(process)


@contextlib.contextmanager
def run_dante(folder: Path, *, username_auth: bool = False) -> Iterator[RunningProxy]:
    """Dante on 127.0.0.1; ``username_auth`` requires :data:`SOCKS_USER`
    and :data:`SOCKS_PASSWORD`. CONNECT to 127.0.0.2 is forbidden by its
    rules (reply 2), everything else on loopback is allowed."""
    program = ensure_installed(DANTED, "dante-server")
    if username_auth:
        ensure_socks_user()
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "dante.log"
    config = folder / "danted.conf"

    def command_for(port: int) -> list[str]:
        lines = [
            f"logoutput: {log}",
            f"internal: 127.0.0.1 port = {port}",
            "external: 127.0.0.1",
            "clientmethod: none",
            f"socksmethod: {'username' if username_auth else 'none'}",
            "user.privileged: root",
            "user.unprivileged: nobody",
            "client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }",
            "socks block { from: 0.0.0.0/0 to: 127.0.0.2/32 }",
            "socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 command: connect }",
        ]
        config.write_text("\n".join(lines) + "\n")
        return [program, "-f", str(config), "-p", str(folder / "danted.pid"), "-N", "1"]

    process, port = _launch_on_free_port(folder, log, command_for)
    try:
        yield RunningProxy(port, log)
    finally:
        _stop(process)
