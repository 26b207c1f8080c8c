"""Listening on a Unix domain socket path.

Rules:
- A socket file left behind by a server that is gone (nothing accepts on
  it) is replaced; a live one raises ``OSError(EADDRINUSE)``; a path that
  is not a socket is never touched (``FileExistsError``).
- The server removes the socket file when it stops, but only if the file
  is still the one it created (another server may have replaced it).
- Linux abstract names (a path starting with a NUL byte) have no file and
  need none of this.
"""

from __future__ import annotations

import errno
import os
import socket
import stat

import trio

SocketPath = str | os.PathLike[str]


async def _remove_stale_socket(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(errno.EEXIST, "path exists and is not a socket", path)
    probe = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with probe:
        try:
            await probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)
            return
        except FileNotFoundError:
            return
    raise OSError(errno.EADDRINUSE, "a server is already listening on this socket", path)


async def open_unix_listener(
    path: SocketPath,
) -> tuple[trio.SocketListener, tuple[int, int] | None]:
    """Bind and listen on ``path``; return the listener and the identity
    (device, inode) of the socket file it created, None for an abstract name."""
    name = os.fspath(path)
    if not isinstance(name, str) or not name:
        raise ValueError("unix_socket_path must be a non-empty str path")
    abstract = name.startswith("\0")
    if not abstract:
        await _remove_stale_socket(name)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(name)
        sock.listen(socket.SOMAXCONN)
        identity = None
        if not abstract:
            info = os.stat(name)
            identity = (info.st_dev, info.st_ino)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock), identity


def remove_socket_file(path: SocketPath, identity: tuple[int, int] | None) -> None:
    """Remove the socket file the server created, if it is still there."""
    if identity is None:
        return
    name = os.fspath(path)
    try:
        info = os.stat(name)
        if (info.st_dev, info.st_ino) == identity:
            os.unlink(name)
    except OSError:
        pass
