"""Loading the optional ``h2`` package, with an error that says how to
install it.

Rules:
- Imports ``h2`` only inside :func:`require_h2`, which the options of the
  server and the client call when HTTP/2 is asked for (not when
  ``trio_websocket`` is imported): a missing or too old ``h2`` fails
  there, in one place, with one message, before anything is opened.
"""

from __future__ import annotations

#: The oldest h2 release whose extended CONNECT (RFC 8441) support this
#: package relies on (``SettingCodes.ENABLE_CONNECT_PROTOCOL`` and the
#: ``:protocol`` pseudo-header checks).
MINIMUM_H2 = (4, 1)

#: (The extra is ``http2``; the hint names the package itself, which works
#: whatever this package was installed from.)
INSTALL_HINT = 'pip install "h2>=4.1"'


def require_h2() -> None:
    """Raise ``RuntimeError`` (saying how to install it) unless a usable
    ``h2`` is importable."""
    try:
        import h2
        from h2.settings import SettingCodes
    except ImportError as exc:
        raise RuntimeError(
            f"HTTP/2 needs the h2 package, which is not installed: {INSTALL_HINT}"
        ) from exc
    version = tuple(int(part) for part in h2.__version__.split(".")[:2] if part.isdigit())
    if version < MINIMUM_H2 or not hasattr(SettingCodes, "ENABLE_CONNECT_PROTOCOL"):
        raise RuntimeError(
            f"HTTP/2 needs h2 {'.'.join(map(str, MINIMUM_H2))} or newer "
            f"(found {h2.__version__}): {INSTALL_HINT}"
        )
