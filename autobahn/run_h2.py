#!/usr/bin/env python3
"""Run the Autobahn|Testsuite against trio_websocket over HTTP/2 (RFC 8441),
both ways, and judge it as run.py does.

wstest speaks HTTP/1.1 only, so nghttpx (Debian's nghttp2-proxy) stands in
between and translates each WebSocket's opening; the frames pass through
unchanged:

- side "server": ``wstest -m fuzzingclient`` --HTTP/1.1--> nghttpx --h2c,
  extended CONNECT--> ``echo_server.py --http2`` (our server). nghttpx
  carries every case on its one HTTP/2 connection to us. Reports in
  ``reports/h2-servers``.
- side "client": ``echo_client.py --http2`` (our client, ``http2="require"``)
  --h2c, extended CONNECT--> nghttpx --HTTP/1.1--> ``wstest -m
  fuzzingserver``. Reports in ``reports/h2-clients``.

The command line (``run_suite``), the setup (the Python 2.7 wstest
environment), the process helpers, the case selection and the judgement
(tables, exit status 0/1/2) are run.py's, imported from it. Same options as run.py:

    python3.11 autobahn/run_h2.py [--quick] [--side both|server|client]
                                  [--cases "1.*,2.*"] [--exclude "9.*"]

Mind what the suite sees: its peer is nghttpx, so a verdict judges nghttpx
and us together (the frames are ours; the TCP connection and its closing
are nghttpx's).

Rules: everything listens on and talks to 127.0.0.1 only; every wait is
bounded; only processes this script started are stopped, by their own id.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (  # run.py sits beside this script
    AGENT,
    HERE,
    HOST,
    REPO,
    REPORTS,
    RunError,
    cases_from_log,
    check_loopback_only,
    free_port,
    read_listening_line,
    run_checked,
    run_suite,
    say,
    stop,
    testee_env,
    wait_for_port,
)

SERVER_REPORTS = REPORTS / "h2-servers"
CLIENT_REPORTS = REPORTS / "h2-clients"


def nghttpx_program() -> str:
    found = shutil.which("nghttpx")
    if found is None:
        raise RunError("no nghttpx on PATH (Debian: apt-get install nghttp2-proxy)")
    return found


def start_nghttpx(
    backend_port: int, backend_proto: str, log_name: str
) -> tuple[subprocess.Popen, int]:
    """nghttpx on 127.0.0.1 (cleartext: HTTP/1.1, and HTTP/2 by prior
    knowledge) in front of 127.0.0.1:``backend_port``, which it speaks
    ``backend_proto`` ("h2": RFC 8441 extended CONNECT; "http/1.1": the
    upgrade) to. Returns the process and its port."""
    port = free_port()
    log = REPORTS / log_name
    command = [
        nghttpx_program(),
        "--conf=/dev/null",  # not the system's /etc/nghttpx/nghttpx.conf
        "--single-process",
        "--workers=1",
        "--no-ocsp",
        "--no-via",
        f"--frontend={HOST},{port};no-tls",
        f"--backend={HOST},{backend_port};;proto={backend_proto}",
        f"--errorlog-file={log}",
        f"--accesslog-file={REPORTS / (log_name + '.access')}",
        # The 9.* cases send up to 16 MiB messages: no read may time out on a
        # slow case.
        "--frontend-read-timeout=5m",
        "--backend-read-timeout=5m",
        # wstest's server answers 400 to a Host header whose port is not its
        # own: nghttpx puts the backend's address there.
        "--host-rewrite",
    ]
    say("$ " + " ".join(command))
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc, 30)
        check_loopback_only(port, "nghttpx")
    except RunError:
        stop(proc)
        raise
    return proc, port


def run_server_side(
    python3: str, python27: Path, cases: dict, timeout: float
) -> tuple[Path, list[str]]:
    """wstest fuzzingclient -> nghttpx -> our echo server over h2c."""
    outdir = SERVER_REPORTS
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir(parents=True)
    server_log = REPORTS / "h2-echo_server.log"
    wstest_log = REPORTS / "h2-wstest-fuzzingclient.log"
    server = proxy = None
    try:
        with open(server_log, "wb") as err:
            server = subprocess.Popen(
                [
                    python3,
                    str(HERE / "echo_server.py"),
                    "--http2",
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
        server_port = read_listening_line(server, 60)
        wait_for_port(server_port, server, 30)
        check_loopback_only(server_port, "echo_server.py")
        proxy, port = start_nghttpx(server_port, "h2", "h2-nghttpx-server-side.log")
        spec = {
            "outdir": str(outdir),
            "servers": [{"agent": AGENT, "url": f"ws://{HOST}:{port}"}],
            **cases,
        }
        spec_file = REPORTS / "h2-fuzzingclient.json"
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
        stop(proxy)
        stop(server)
    return outdir, cases_from_log(wstest_log)


def run_client_side(
    python3: str, python27: Path, cases: dict, timeout: float
) -> tuple[Path, list[str]]:
    """Our echo client over h2c -> nghttpx -> wstest fuzzingserver."""
    outdir = CLIENT_REPORTS
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir(parents=True)
    wstest_log = REPORTS / "h2-wstest-fuzzingserver.log"
    client_log = REPORTS / "h2-echo_client.log"
    wstest_port = free_port()
    spec = {"url": f"ws://{HOST}:{wstest_port}", "outdir": str(outdir), **cases}
    spec_file = REPORTS / "h2-fuzzingserver.json"
    spec_file.write_text(json.dumps(spec, indent=2))
    wstest = proxy = None
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
        wait_for_port(wstest_port, wstest, 60)
        check_loopback_only(wstest_port, "wstest fuzzingserver")
        proxy, port = start_nghttpx(wstest_port, "http/1.1", "h2-nghttpx-client-side.log")
        client_log.unlink(missing_ok=True)
        run_checked(
            [
                python3,
                str(HERE / "echo_client.py"),
                "--http2",
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
        stop(proxy)
        stop(wstest)
    return outdir, cases_from_log(wstest_log)


def main() -> int:
    return run_suite(
        description=__doc__.split("\n\n")[0],
        titles={
            "server": (
                "OUR SERVER OVER HTTP/2 (wstest -m fuzzingclient -> nghttpx -> "
                "echo_server.py --http2)",
                SERVER_REPORTS,
            ),
            "client": (
                "OUR CLIENT OVER HTTP/2 (echo_client.py --http2 -> nghttpx -> "
                "wstest -m fuzzingserver)",
                CLIENT_REPORTS,
            ),
        },
        runners={"server": run_server_side, "client": run_client_side},
        reports_hint="reports/h2-*",
        prepare=nghttpx_program,
        side_note=" (over HTTP/2)",
    )

if __name__ == "__main__":
    sys.exit(main())
