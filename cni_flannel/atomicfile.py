"""Crash-safe file replacement, shared by the plugins (flannel's saved configs) and the daemon
(subnet.env): a reader sees the old file or the new one, never half of either.  And its
counterpart for reading state files that someone else may have planted (``read_regular``).

The data goes to a temp file beside the target, is fsynced, renamed over the target, and the
directory is fsynced so the rename itself survives a power cut.  Stdlib only (``os``, ``stat``,
``errno`` are loaded by the interpreter anyway): this runs on every pod's ADD.
"""

from __future__ import annotations

import errno
import os
import stat

TYPE_CHECKING = False  # typing costs ~10 ms to import; this module must not pay for it
if TYPE_CHECKING:
    from typing import Optional

# O_NOFOLLOW: a symlink as the last component fails (ELOOP) instead of being followed out of the
# directory; O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# open() errors that mean "no regular file here": gone, a symlink, a socket (or a device no driver serves)
_NOT_A_FILE = (errno.ENOENT, errno.ELOOP, errno.ENXIO)


def read_regular(path: str, limit: int, *, dir_fd: Optional[int] = None,
                 mode: Optional[int] = None) -> Optional[bytes]:
    """At most ``limit`` bytes of ``path`` (one read) when it is a regular file; None when it is
    missing, a symlink, or anything but a regular file (FIFO, socket, device, directory), and
    with ``mode`` also when its permission bits (``& 0o777``) are not exactly ``mode``.  Other
    errors (EACCES, EIO, ENAMETOOLONG, ...) are raised as OSError: what they mean is the caller's.

    Why: the state we read back (host-local's address and last_reserved files, subnet.env) lives
    in directories where a hostile or buggy actor can plant a symlink, a FIFO or a device node.
    A plain open() follows the link out of the directory, blocks for ever on a FIFO that has no
    writer, and reading /dev/zero never ends.  So the file is opened without following a link and
    without blocking, checked on the open descriptor (fstat: nothing can swap it in between), and
    read with a bound.  ``dir_fd``: ``path`` is relative to that open directory (no path walk).
    """
    try:
        fd = os.open(path, _READ_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in _NOT_A_FILE:
            return None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (mode is not None and (st.st_mode & 0o777) != mode):
            return None
        return os.read(fd, limit)
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes, mode: int, dir_mode: int = 0o755) -> None:
    """Replace ``path`` with ``data`` (file mode ``mode``, whatever the umask); OSError on failure."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, dir_mode, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp.{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(directory)


def fsync_dir(directory: str) -> None:
    # The rename is only durable once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
