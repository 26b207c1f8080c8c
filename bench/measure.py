"""Process plumbing for run.py: start/stop server processes (by PID, with
timeouts), run the load generator and the client scripts, and parse their
`RESULT {json}` lines.  Every child gets a timeout; servers are killed in
finally blocks by the caller via stop()."""

import json
import os
import signal
import subprocess
import sys
import time

from stacks import BENCH, REPO

#: The wait before each RSS read: longer than the second a quiet
#: connection of ours takes to give back its reader task (its handler
#: waiting in get_message: trio_websocket's _QUIET_DOZE), so what is
#: measured is an idle connection as it stays, for every stack alike.
IDLE_SETTLE = 1.5

LOG_DIR = BENCH / ".venvs" / "logs"


class BenchError(RuntimeError):
    pass


# failures of one measurement that must not stop the whole run
EXPECTED = (BenchError, OSError, ValueError, KeyError, ArithmeticError,
            subprocess.SubprocessError)


def child_env(uses_repo, repo=REPO):
    """The environment of a child: bench/ on its path, and the source tree
    `repo` (this checkout unless told) when it imports trio_websocket."""
    env = dict(os.environ)
    paths = ([str(repo)] if uses_repo else []) + [str(BENCH)]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    # keep bytecode caches out of the repo tree
    env["PYTHONPYCACHEPREFIX"] = str(BENCH / ".venvs" / "pycache")
    env.pop("PYTHONHOME", None)
    return env


class Server:
    """A server process under test (or the neutral server)."""

    def __init__(self, name, python, script, args=(), uses_repo=False,
                 start_timeout=30.0, repo=REPO):
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{name}.log"
        with open(self.log_path, "w") as log:  # the child keeps its copy
            self.proc = subprocess.Popen(
                [str(python), str(BENCH / script), *args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env=child_env(uses_repo, repo), cwd=str(BENCH))
        self.pid = self.proc.pid
        self.port = None
        deadline = time.monotonic() + start_timeout
        try:
            while self.port is None:
                if self.proc.poll() is not None:
                    raise BenchError(f"{name} server exited: {self.tail()}")
                if time.monotonic() > deadline:
                    raise BenchError(f"{name} server did not start in time")
                for line in self.log_path.read_text().splitlines():
                    if line.startswith("PORT "):
                        self.port = int(line.split()[1])
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def tail(self, n=15):
        try:
            lines = self.log_path.read_text().splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(3)


def run_results(cmd, timeout, uses_repo=False):
    """Run a child to completion; return its RESULT dicts."""
    try:
        cp = subprocess.run(cmd, check=False, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=timeout,
                            env=child_env(uses_repo), cwd=str(BENCH))
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"timed out after {timeout:.0f}s: {cmd[1]}") \
            from exc
    results = [json.loads(line[7:]) for line in cp.stdout.splitlines()
               if line.startswith("RESULT ")]
    if cp.returncode != 0:
        err = (cp.stderr.strip().splitlines() or ["?"])[-1]
        raise BenchError(f"{os.path.basename(cmd[1])} exit "
                         f"{cp.returncode}: {err}")
    return results


def loadgen(cmd, port, proto, extra, timeout):
    return run_results([sys.executable, str(BENCH / "loadgen.py"), cmd,
                        "--port", str(port), "--proto", proto, *extra],
                       timeout)


def h2loadgen(python, cmd, port, extra, timeout):
    """h2loadgen.py (the HTTP/2 load generator) in the venv `python`."""
    return run_results([str(python), str(BENCH / "h2loadgen.py"), cmd,
                        "--port", str(port), *extra], timeout)


def client(python, script, url, extra, timeout, uses_repo):
    return run_results([str(python), str(BENCH / script), "--url", url,
                        *extra], timeout, uses_repo)
