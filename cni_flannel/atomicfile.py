"""Crash-safe file replacement, shared by the plugins (flannel's saved configs) and the daemon
(subnet.env): a reader sees the old file or the new one, never half of either.

The data goes to a temp file beside the target, is fsynced, renamed over the target, and the
directory is fsynced so the rename itself survives a power cut.  Stdlib ``os`` only: this runs
on every pod's ADD.
"""

from __future__ import annotations

import os


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
