#!/usr/bin/env python3
"""Run the Autobahn|Testsuite against trio_websocket, both ways, and judge it.

Orchestration only, standard library only (Python 3.11). From scratch it:

1. makes ``autobahn/.venv-tools`` (Python 3, ``virtualenv<20.22``, the last
   line of virtualenv that can still create Python 2.7 environments) and
   with it ``autobahn/.venv27`` from pyenv's 2.7.18, then installs
   ``autobahntestsuite`` and a pinned, known-working set of its Python 2.7
   dependencies (PIN_27 below). Both are reused while the pins are unchanged.
2. side "server": starts ``echo_server.py`` (our server) on 127.0.0.1 and
   runs ``wstest -m fuzzingclient`` against it; reports in
   ``reports/servers``.
   side "client": starts ``wstest -m fuzzingserver`` on 127.0.0.1 (see
   ``wstest_loopback.py``: stock wstest binds 0.0.0.0) and runs
   ``echo_client.py`` (our client) against it; reports in ``reports/clients``.
3. reads the JSON reports, prints a table per case group, every case that is
   not OK, and the slowest cases; exits 1 on any FAILED or UNIMPLEMENTED
   case (the echo peers enable permessage-deflate, so 12.*/13.* coming back
   UNIMPLEMENTED means compression was not agreed), any closing handshake
   verdict other than OK/INFORMATIONAL, or any case with no report; 2 when
   the run itself could not be done.

    python3.11 autobahn/run.py [--quick] [--side both|server|client]
                               [--cases "1.*,2.*"] [--exclude "9.*"]

Rules: everything listens on and talks to 127.0.0.1 only; every wait is
bounded; only processes this script started are stopped, by their own id.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
REPORTS = HERE / "reports"
TOOLS_VENV = HERE / ".venv-tools"
VENV27 = HERE / ".venv27"
AGENT = "trio_websocket"
HOST = "127.0.0.1"

TESTSUITE_VERSION = "25.10.1"
VIRTUALENV_REQ = "virtualenv<20.22"
#: Python 2.7 dependency set that installs and runs wstest 25.10.1 here
#: (autobahntestsuite itself pins autobahn 0.10.9, Twisted 19.10.0,
#: cryptography 3.3.2 ...; the rest are the last releases for Python 2.7,
#: frozen so that a new upload cannot break the run).
PIN_27 = [
    f"autobahntestsuite=={TESTSUITE_VERSION}",
    "autobahn==0.10.9",
    "Twisted==19.10.0",
    "txaio==2.1.0",
    "zope.interface==4.6.0",
    "incremental==16.10.1",
    "Automat==22.10.0",
    "attrs==21.4.0",
    "constantly==15.1.0",
    "hyperlink==21.0.0",
    "idna==2.10",
    "typing==3.10.0.0",
    "PyHamcrest==1.10.1",
    "six==1.16.0",
    "wsaccel==0.6.6",
    "ujson==2.0.3",
    "pyOpenSSL==19.1.0",
    "cryptography==3.3.2",
    "cffi==1.15.1",
    "pycparser==2.21",
    "enum34==1.1.10",
    "ipaddress==1.0.23",
    "service-identity==18.1.0",
    "pyasn1==0.5.1",
    "pyasn1-modules==0.3.0",
    "Jinja2==2.11.3",
    "MarkupSafe==1.1.1",
    "Werkzeug==1.0.1",
    "klein==17.10.0",
    "unittest2==1.1.0",
    "linecache2==1.0.0",
    "traceback2==1.4.0",
    "argparse==1.4.0",
    "setuptools==44.0.0",
]

BEHAVIORS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
GOOD_CLOSE = {"OK", "INFORMATIONAL"}
BAD_BEHAVIORS = {"FAILED", "UNIMPLEMENTED"}
#: The 13.* groups --quick leaves out (13.1.* stays).
QUICK_13_EXCLUDED = tuple(f"13.{group}.*" for group in range(2, 8))
MAX_MESSAGE_SIZE = 32 * 1024 * 1024


class RunError(Exception):
    """The run could not be carried out (as opposed to cases failing)."""


def say(text: str = "") -> None:
    print(text, flush=True)


def run_checked(cmd: list[str], timeout: float, log: Path | None = None, **kw) -> None:
    say("$ " + " ".join(str(c) for c in cmd))
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(log, "ab")) if log else subprocess.DEVNULL
        try:
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, **kw)
        except subprocess.TimeoutExpired:
            raise RunError(f"timed out after {timeout} s: {cmd[0]}") from None
    if proc.returncode != 0:
        raise RunError(
            f"exit {proc.returncode}: {' '.join(map(str, cmd))}" + (f" (see {log})" if log else "")
        )


# --------------------------------------------------------------------------
# 1. environments


def pyenv_python27() -> Path:
    try:
        root = subprocess.run(
            ["pyenv", "root"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        # pyenv not on PATH (a bare CI environment): its usual homes.
        root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
        say(f"`pyenv root` failed ({exc}); trying {root}")
    python = Path(root) / "versions" / "2.7.18" / "bin" / "python"
    if not python.exists():
        raise RunError(f"no Python 2.7.18 at {python} (pyenv install 2.7.18)")
    return python


def ensure_environments(rebuild: bool) -> Path:
    """Make (or reuse) the Python 2.7 venv with wstest; returns its python."""
    stamp = VENV27 / ".autobahn-pins"
    want = hashlib.sha256("\n".join(PIN_27).encode()).hexdigest()
    python27 = VENV27 / "bin" / "python"
    if not rebuild and stamp.exists() and stamp.read_text().strip() == want and python27.exists():
        say(f"reusing {VENV27.relative_to(REPO)} (wstest {TESTSUITE_VERSION})")
        return python27
    log = REPORTS / "setup.log"
    say(f"setting up the Python 2.7 wstest environment (log: {log.relative_to(REPO)}) ...")
    started = time.monotonic()
    for path in (TOOLS_VENV, VENV27):
        if rebuild and path.exists():
            shutil.rmtree(path)
    if not (TOOLS_VENV / "bin" / "virtualenv").exists():
        run_checked([sys.executable, "-m", "venv", str(TOOLS_VENV)], 300, log)
        run_checked(
            [
                str(TOOLS_VENV / "bin" / "pip"),
                "install",
                "--disable-pip-version-check",
                VIRTUALENV_REQ,
            ],
            600,
            log,
        )
    if VENV27.exists():
        shutil.rmtree(VENV27)
    run_checked(
        [str(TOOLS_VENV / "bin" / "virtualenv"), "-p", str(pyenv_python27()), str(VENV27)], 300, log
    )
    run_checked(
        [
            str(python27),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-python-version-warning",
            *PIN_27,
        ],
        1200,
        log,
    )
    run_checked([str(python27), "-c", "import autobahntestsuite.wstest"], 120, log)
    stamp.write_text(want + "\n")
    say(f"environment ready in {time.monotonic() - started:.0f} s")
    return python27


def testee_python(explicit: str | None) -> str:
    """A Python 3 that can import trio (and trio_websocket's other deps)."""
    candidates = [
        explicit,
        os.environ.get("AUTOBAHN_TESTEE_PYTHON"),
        sys.executable,
        str(REPO / ".venv" / "bin" / "python"),
    ]
    for candidate in candidates:
        if not candidate or not Path(candidate).exists():
            continue
        check = subprocess.run(
            [candidate, "-c", "import trio, wsproto, trio_websocket"],
            cwd=REPO,
            env=testee_env(),
            capture_output=True,
            timeout=60,
        )
        if check.returncode == 0:
            return candidate
    raise RunError("no Python found that imports trio and wsproto; pass --python")


def testee_env() -> dict[str, str]:
    """The environment for our echo programs: this checkout's trio_websocket
    comes first on the path, whatever is installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --------------------------------------------------------------------------
# process helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def listening_addresses(port: int) -> list[str]:
    """Addresses with a TCP socket listening on ``port`` (from /proc/net)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, port_hex = local.rsplit(":", 1)
            if state != "0A" or int(port_hex, 16) != port:
                continue
            if len(address) == 8:
                found.append(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]))
            else:
                raw = bytes.fromhex(address)
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                found.append(socket.inet_ntop(socket.AF_INET6, raw))
    return found


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RunError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RunError(f"nothing listening on {HOST}:{port} after {timeout} s")


def check_loopback_only(port: int, what: str) -> None:
    addresses = listening_addresses(port)
    if not addresses:
        raise RunError(f"{what}: no listening socket found for port {port}")
    bad = [a for a in addresses if a not in ("127.0.0.1", "::1")]
    if bad:
        raise RunError(f"{what} listens on {bad} (port {port}), not loopback only")
    say(f"{what} listens on {', '.join(addresses)}:{port} only")


def stop(proc: subprocess.Popen | None, grace: float = 10) -> None:
    """Stop a process this script started (by its own pid)."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)


def spec_cases(include: list[str], exclude: list[str]) -> dict:
    return {"cases": include, "exclude-cases": exclude, "exclude-agent-cases": {}}


def cases_from_log(log: Path) -> list[str]:
    """The case ids wstest announced it will run ("Cases = [...]")."""
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("Cases = "):
            return re.findall(r"'(\d+(?:\.\d+)*)'", line)
    return []


# --------------------------------------------------------------------------
# 2. the two sides


def run_server_side(
    python3: str, python27: Path, cases: dict, timeout: float
) -> tuple[Path, list[str]]:
    """wstest fuzzingclient -> our echo server."""
    outdir = REPORTS / "servers"
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir(parents=True)
    server_log = REPORTS / "echo_server.log"
    wstest_log = REPORTS / "wstest-fuzzingclient.log"
    server = None
    try:
        with open(server_log, "wb") as err:
            server = subprocess.Popen(
                [
                    python3,
                    str(HERE / "echo_server.py"),
                    "--port",
                    "0",
                    "--max-seconds",
                    str(timeout + 60),
                ],
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=REPO,
                env=testee_env(),
            )
        port = read_listening_line(server, 60)
        wait_for_port(port, server, 30)
        check_loopback_only(port, "echo_server.py")
        spec = {
            "outdir": str(outdir),
            "servers": [{"agent": AGENT, "url": f"ws://{HOST}:{port}"}],
            **cases,
        }
        spec_file = REPORTS / "fuzzingclient.json"
        spec_file.write_text(json.dumps(spec, indent=2))
        wstest_log.unlink(missing_ok=True)
        run_checked(
            [
                str(python27),
                str(HERE / "wstest_loopback.py"),
                "-m",
                "fuzzingclient",
                "-s",
                str(spec_file),
            ],
            timeout,
            wstest_log,
            cwd=REPORTS,
        )
    finally:
        stop(server)
    return outdir, cases_from_log(wstest_log)


def read_listening_line(proc: subprocess.Popen, timeout: float) -> int:
    """The port from the ``LISTENING <port>`` line of echo_server.py."""
    import selectors

    deadline = time.monotonic() + timeout
    buffer = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buffer += chunk
            match = re.search(rb"LISTENING (\d+)", buffer)
            if match:
                return int(match.group(1))
    raise RunError(
        f"echo_server.py did not report its port within {timeout} s "
        f"(exit code {proc.poll()}, see reports/echo_server.log)"
    )


def run_client_side(
    python3: str, python27: Path, cases: dict, timeout: float
) -> tuple[Path, list[str]]:
    """Our echo client -> wstest fuzzingserver."""
    outdir = REPORTS / "clients"
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir(parents=True)
    wstest_log = REPORTS / "wstest-fuzzingserver.log"
    client_log = REPORTS / "echo_client.log"
    port = free_port()
    spec = {"url": f"ws://{HOST}:{port}", "outdir": str(outdir), **cases}
    spec_file = REPORTS / "fuzzingserver.json"
    spec_file.write_text(json.dumps(spec, indent=2))
    wstest = None
    try:
        with open(wstest_log, "wb") as out:
            wstest = subprocess.Popen(
                [
                    str(python27),
                    str(HERE / "wstest_loopback.py"),
                    "-m",
                    "fuzzingserver",
                    "-s",
                    str(spec_file),
                    "--webport",
                    "0",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPORTS,
            )
        wait_for_port(port, wstest, 60)
        check_loopback_only(port, "wstest fuzzingserver")
        client_log.unlink(missing_ok=True)
        run_checked(
            [
                python3,
                str(HERE / "echo_client.py"),
                "--port",
                str(port),
                "--agent",
                AGENT,
                "--max-seconds",
                str(timeout),
            ],
            timeout + 60,
            client_log,
            cwd=REPO,
            env=testee_env(),
        )
    finally:
        stop(wstest)
    return outdir, cases_from_log(wstest_log)


# --------------------------------------------------------------------------
# 3. reports


def case_key(case_id: str) -> tuple[int, ...]:
    return tuple(int(p) for p in case_id.split("."))


def load_index(outdir: Path) -> dict[str, dict]:
    index_file = outdir / "index.json"
    if not index_file.exists():
        return {}
    index = json.loads(index_file.read_text())
    return index.get(AGENT, {})


def summarize(title: str, outdir: Path, expected: list[str], slowest: int) -> bool:
    """Print the tables for one side; returns whether that side passed."""
    results = load_index(outdir)
    say()
    say("=" * 100)
    say(f"{title}: {len(results)} case reports in {outdir.relative_to(REPO)}")
    say("=" * 100)
    groups: dict[int, dict[str, int]] = {}
    for case_id, result in results.items():
        counts = groups.setdefault(case_key(case_id)[0], {})
        behavior = result["behavior"] if result["behavior"] in BEHAVIORS else "other"
        counts[behavior] = counts.get(behavior, 0) + 1
        counts["cases"] = counts.get("cases", 0) + 1
        close = result["behaviorClose"]
        close_col = {"OK": "close OK", "INFORMATIONAL": "close INFO"}.get(close, "close BAD")
        counts[close_col] = counts.get(close_col, 0) + 1
    columns = ["cases", *BEHAVIORS, "other", "close OK", "close INFO", "close BAD"]
    widths = [max(len(c), 5) for c in columns]

    def row(label: str, counts: dict[str, int]) -> str:
        cells = (str(counts.get(c, 0)).rjust(w) for c, w in zip(columns, widths, strict=True))
        return f"{label:<7}" + "  ".join(cells)

    say("group  " + "  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)))
    totals: dict[str, int] = {}
    for group in sorted(groups):
        counts = groups[group]
        for c in columns:
            totals[c] = totals.get(c, 0) + counts.get(c, 0)
        say(row(f"{group}.*", counts))
    say(row("all", totals))

    passed = True
    missing = [c for c in expected if c not in results]
    if missing:
        passed = False
        say(
            f"\nMISSING: {len(missing)} cases announced by wstest have no report: "
            + ", ".join(missing[:30])
            + (" ..." if len(missing) > 30 else "")
        )
    if not results:
        say("\nNO REPORTS: nothing to judge")
        return False

    not_ok = [
        c
        for c in sorted(results, key=case_key)
        if results[c]["behavior"] != "OK" or results[c]["behaviorClose"] != "OK"
    ]
    if not_ok:
        say(f"\nnot OK ({len(not_ok)}):")
        say(f"  {'case':<10} {'behavior':<14} {'close':<14} {'code':>5} {'ms':>7}  description")
    for case_id in not_ok:
        r = results[case_id]
        description = ""
        report = outdir / r["reportfile"]
        if report.exists():
            try:
                description = json.loads(report.read_text()).get("description", "")
            except ValueError:
                pass
        description = re.sub(r"<[^>]+>", "", description).replace("\n", " ")
        if len(description) > 70:
            description = description[:67] + "..."
        say(
            f"  {case_id:<10} {r['behavior']:<14} {r['behaviorClose']:<14} "
            f"{r.get('remoteCloseCode')!s:>5} {r.get('duration', 0):>7}  {description}"
        )
        if r["behavior"] in BAD_BEHAVIORS or r["behaviorClose"] not in GOOD_CLOSE:
            passed = False

    say(f"\nslowest {slowest}:")
    for case_id in sorted(results, key=lambda c: -results[c].get("duration", 0))[:slowest]:
        say(f"  {case_id:<10} {results[case_id].get('duration', 0):>7} ms")
    total_ms = sum(r.get("duration", 0) for r in results.values())
    say(f"sum of case durations: {total_ms / 1000:.1f} s")
    say(f"\n{title}: {'PASS' if passed else 'FAIL'}")
    return passed


# --------------------------------------------------------------------------


def split_patterns(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def main() -> int:
    return run_suite(
        description="Autobahn|Testsuite for trio_websocket",
        titles={
            "server": (
                "OUR SERVER (wstest -m fuzzingclient -> echo_server.py)",
                REPORTS / "servers",
            ),
            "client": (
                "OUR CLIENT (echo_client.py -> wstest -m fuzzingserver)",
                REPORTS / "clients",
            ),
        },
        runners={"server": run_server_side, "client": run_client_side},
        reports_hint="reports/",
    )


def run_suite(
    *,
    description: str,
    titles: dict[str, tuple[str, Path]],
    runners: dict[str, Callable[[str, Path, dict, float], tuple[object, list[str]]]],
    reports_hint: str,
    prepare: Callable[[], object] = lambda: None,
    side_note: str = "",
) -> int:
    """The command line of a suite runner (this one, and run_h2.py over
    HTTP/2): parse the arguments, choose the cases, run the sides with
    ``runners`` (after ``prepare``), judge each side's reports under its
    title. Returns the exit status."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cases", default="*", help='cases to run, e.g. "1.*,2.*" (default: all)')
    parser.add_argument(
        "--exclude",
        default="",
        help='cases to leave out, e.g. "12.*,13.*" (the permessage-deflate cases; '
        "default: none)",
    )
    parser.add_argument(
        "--side",
        choices=["server", "client", "both"],
        default="both",
        help="server: wstest tests our server; client: wstest tests our client",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="also leave out 9.* (performance) and keep only 12.1.*/13.1.* of the "
        "permessage-deflate cases",
    )
    parser.add_argument(
        "--timeout", type=float, default=1800, help="seconds allowed per side (default 1800)"
    )
    parser.add_argument("--python", help="Python 3 that runs trio_websocket (default: found)")
    parser.add_argument("--rebuild", action="store_true", help="recreate the wstest environments")
    parser.add_argument(
        "--setup-only",
        action="store_true",
        help="make (or check) the wstest environment and what this runner needs, run no case",
    )
    parser.add_argument("--slowest", type=int, default=10, help="how many slowest cases to list")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help=f"do not run anything: judge the reports already in {reports_hint}",
    )
    args = parser.parse_args()

    include = split_patterns(args.cases) or ["*"]
    exclude = split_patterns(args.exclude)
    if args.quick:
        # 12.* and 13.* are 216 cases of up to 1,000 messages each; their
        # first group covers every message size with the default parameters.
        for pattern in ("9.*", "12.2.*", "12.3.*", "12.4.*", "12.5.*", *QUICK_13_EXCLUDED):
            if pattern not in exclude:
                exclude.append(pattern)
    cases = spec_cases(include, exclude)
    sides = ["server", "client"] if args.side == "both" else [args.side]
    REPORTS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    expected: dict[str, list[str]] = {}
    if args.setup_only:
        try:
            prepare()
            ensure_environments(args.rebuild)
        except RunError as exc:
            say(f"\nRUN ERROR: {exc}")
            return 2
        return 0
    try:
        if not args.report_only:
            say(f"cases: {include}, excluded: {exclude}, sides: {sides}")
            prepare()
            python27 = ensure_environments(args.rebuild)
            python3 = testee_python(args.python)
            say(f"trio_websocket from {REPO} run by {python3}")
            for side in sides:
                side_started = time.monotonic()
                say(f"\n--- side {side}{side_note} ---")
                _, expected[side] = runners[side](python3, python27, cases, args.timeout)
                say(f"side {side} took {time.monotonic() - side_started:.0f} s")
    except RunError as exc:
        say(f"\nRUN ERROR: {exc}")
        for side in sides:
            summarize(*titles[side], expected.get(side, []), args.slowest)
        return 2
    ok = True
    for side in sides:
        ok = summarize(*titles[side], expected.get(side, []), args.slowest) and ok
    say(f"\ntotal time {time.monotonic() - started:.0f} s; overall: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1

if __name__ == "__main__":
    sys.exit(main())
