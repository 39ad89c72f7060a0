"""Network namespaces by path: identity checks and entering one (stdlib only).

``enter(path)`` switches the *calling thread* into the namespace and always
switches back — netlink sockets opened inside stay bound to that namespace, and
so do /proc/sys/net files opened inside (the kernel resolves /proc/sys/net by
the opening thread's namespace).  A plugin is single-threaded, so thread and
process coincide; a resident process must not share the thread meanwhile.

Measured alternative: pyroute2's ``IPRoute(netns=path)`` forks a helper to
create the socket (and would *create* a missing namespace: its default flags
are O_CREAT) — slower and unsafe for CNI_NETNS.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
from contextlib import contextmanager
from typing import Iterator, Optional, Tuple

from cni_flannel.net.errors import NetFailure, NetNSNotFound

CLONE_NEWNET = 0x40000000
_NS_GET_NSTYPE = 0xB703  # ioctl(2) on an nsfs file: the namespace type
SELF = "/proc/thread-self/ns/net"

_libc: Optional[ctypes.CDLL] = None


def libc() -> ctypes.CDLL:
    """libc with errno, loaded once (~2 ms: the resident agent loads it before forking workers)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.setns  # noqa: B018  (resolving a function builds its wrapper class: done once here too)
    return _libc


def _setns(fd: int) -> None:
    if libc().setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _ident(path: str) -> Tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def open_fd(path: str) -> int:
    """Open ``path`` as a network namespace; NetNSNotFound unless it is one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NetNSNotFound(f"failed to open netns {path!r}: {exc.strerror}") from exc
    try:
        kind = fcntl.ioctl(fd, _NS_GET_NSTYPE)
    except OSError:
        kind = -1
    if kind != CLONE_NEWNET:
        os.close(fd)
        raise NetNSNotFound(f"{path!r} is not a network namespace")
    return fd


def exists(path: str) -> bool:
    """True when ``path`` names a live network namespace (empty path: False)."""
    if not path:
        return False
    try:
        os.close(open_fd(path))
    except NetNSNotFound:
        return False
    return True


def is_current(path: str) -> bool:
    """True when ``path`` is the calling thread's own network namespace."""
    try:
        return _ident(path) == _ident(SELF)
    except OSError:
        return False


@contextmanager
def enter(path: Optional[str]) -> Iterator[None]:
    """Run the block in the network namespace at ``path`` (None/own ns: no switch)."""
    if not path or is_current(path):
        yield
        return
    target = open_fd(path)
    try:
        home = os.open(SELF, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        os.close(target)
        raise
    try:
        try:
            _setns(target)
        except OSError as exc:
            raise NetFailure(f"failed to enter netns {path!r}: {exc.strerror}", exc.errno or 0)
        try:
            yield
        finally:
            try:
                _setns(home)
            except OSError as exc:  # pragma: no cover - the kernel refused to let us go home
                # Continuing would run the rest of the plugin in the pod's namespace.
                os.write(2, b"cni-flannel: cannot return to the original netns: %s\n"
                         % os.strerror(exc.errno or 0).encode())
                os._exit(70)
    finally:
        os.close(target)
        os.close(home)


@contextmanager
def fd_of(path: str) -> Iterator[int]:
    """An open fd of the namespace at ``path`` for the duration of the block."""
    fd = open_fd(path)
    try:
        yield fd
    finally:
        os.close(fd)
