"""Stdlib-only helpers shared by the harness, the load generator, the
neutral server and the per-stack server/client scripts: /proc sampling,
self-termination watchdog, fd-limit raising, result printing, and the
TLS contexts of the HTTP/2 scenario's --tls mode (a self-signed
certificate for 127.0.0.1 made once with the openssl command; clients
do not verify it: the benchmark measures cost, not trust)."""

import ctypes
import json
import math
import os
import resource
import signal
import ssl
import subprocess
import sys
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
MAX_MESSAGE_SIZE = 4 * 2**20  # limit given to every stack (1 MiB must fit)


def proc_cpu_seconds(pid):
    """utime+stime of all threads of `pid` (from /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    fields = raw[raw.rindex(b")") + 2:].split()
    # fields[0] is the state (field 3); utime/stime are fields 14/15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_kib(pid):
    """VmRSS of `pid` in KiB (from /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def raise_nofile(want=8192):
    """Raise the soft RLIMIT_NOFILE so 1000+ sockets fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def watchdog(lifetime):
    """Die with the parent (PR_SET_PDEATHSIG) and after `lifetime` s."""
    signal.alarm(int(lifetime))
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # 1 == PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # parent already gone
        os._exit(1)


def emit(tag, obj):
    """Print one machine-readable line `TAG {json}` to stdout."""
    sys.stdout.write(f"{tag} {json.dumps(obj)}\n")
    sys.stdout.flush()


def percentile(sorted_values, q):
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return None
    rank = math.ceil(q / 100 * len(sorted_values))
    k = max(0, min(len(sorted_values) - 1, rank - 1))
    return sorted_values[k]


TLS_DIR = Path(__file__).resolve().parent / ".venvs" / "tls"


def self_signed_certificate():
    """(cert, key) paths of a self-signed certificate for 127.0.0.1,
    made with the openssl command the first time."""
    cert, key = TLS_DIR / "cert.pem", TLS_DIR / "key.pem"
    if not (cert.exists() and key.exists()):
        TLS_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-days", "3650",
             "-subj", "/CN=127.0.0.1", "-addext",
             "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
             "-out", str(cert)],
            check=True, capture_output=True, timeout=60)
    return cert, key


def server_tls_context():
    """The servers' context (ALPN is the server's own business)."""
    cert, key = self_signed_certificate()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def client_tls_context(alpn):
    """A load generator's context: offers `alpn`, verifies nothing."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(alpn)
    return context
