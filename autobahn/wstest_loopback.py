"""Run Autobahn|Testsuite's ``wstest`` with its listening sockets on loopback.

Python 2.7 (runs inside autobahn/.venv27); arguments are wstest's own.

Why: ``wstest -m fuzzingserver`` calls autobahn's ``listenWS(factory,
sslContext)`` without an ``interface``, so it binds every interface (0.0.0.0)
whatever host the spec's ``url`` names; the spec has no setting for it. Here
``listenWS`` as seen by the fuzzing module is replaced by one that passes
``interface=127.0.0.1``, and any other TCP listen through the reactor is
refused unless it is on loopback (run.py also passes ``--webport 0`` so the
embedded web server is not started at all). run.py checks the bound address
in /proc/net/tcp after start.
"""

import sys

LOOPBACK = "127.0.0.1"


def _install_loopback_only():
    from autobahntestsuite import fuzzing

    original_listen_ws = fuzzing.listenWS

    def listen_ws_loopback(factory, contextFactory=None, backlog=50, interface=""):
        return original_listen_ws(factory, contextFactory, backlog, interface=LOOPBACK)

    fuzzing.listenWS = listen_ws_loopback

    from twisted.internet import reactor

    original_listen_tcp = reactor.listenTCP

    def listen_tcp_loopback(port, factory, backlog=50, interface=""):
        if interface not in (LOOPBACK, "localhost", "::1"):
            if interface == "":
                interface = LOOPBACK
            else:
                raise RuntimeError("refusing to listen on " + repr(interface) + ": loopback only")
        return original_listen_tcp(port, factory, backlog=backlog, interface=interface)

    reactor.listenTCP = listen_tcp_loopback


def main():
    # wstest picks and installs the best reactor when its module is imported,
    # so import it first, then patch what it will use.
    from autobahntestsuite import wstest

    _install_loopback_only()
    sys.argv[0] = "wstest"
    return wstest.run()


if __name__ == "__main__":
    sys.exit(main())
