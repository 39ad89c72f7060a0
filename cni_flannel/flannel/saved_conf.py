"""The delegate configs flannel saves for DEL: ``<dataDir>/<containerID>``.

Same place and content as the reference, so either implementation can DEL
what the other added.  Written atomically (``atomicfile``) so a crash leaves
the old file or the new one, never half — and at most a temp file
(``.<containerID>.tmp.<pid>``, a save killed before its rename), which the
container's DEL and a GC that does not name it remove with the config.

Read back without trusting what is there (``atomicfile.read_regular``): a FIFO, a device, a
symlink or more than ``MAX_SIZE`` bytes at ``<dataDir>/<containerID>`` is no config of ours.
``load`` logs what it found and returns None, so DEL takes the same path as for a lost or corrupt
file: it rebuilds the delegate config and still releases the address (a plain open() blocked for
ever on a FIFO and read /dev/zero until MemoryError).  A symlink to a regular file counts as
planted too: we write the file ourselves and never a link.
"""

from __future__ import annotations

import os
import stat
from typing import List, Optional

from ..atomicfile import read_regular, write_atomic
from ..cni.errors import InvalidConfig, IOFailure
from ..cni.log import logger

DEFAULT_DIR = "/var/lib/cni/flannel"
#: a delegate config is ~0.5 KiB (a huge runtimeConfig maybe a few KiB); more is not one of ours
MAX_SIZE = 1 << 20


def _path(data_dir: str, container_id: str) -> str:
    return os.path.join(data_dir, container_id)  # the ID was validated by the dispatcher


def save(data_dir: str, container_id: str, conf: bytes) -> None:
    path = _path(data_dir, container_id)
    if len(conf) > MAX_SIZE:  # DEL would not take it back: refuse it before anything changes
        raise InvalidConfig(f"delegate config is {len(conf)} bytes, more than the {MAX_SIZE} flannel saves")
    try:
        write_atomic(path, conf, mode=0o600, dir_mode=0o700)
    except OSError as exc:
        raise IOFailure(f"failed to save delegate config {path}: {exc.strerror}") from None


def load(data_dir: str, container_id: str) -> Optional[bytes]:
    """The saved config, or None when there is none we can use: none at all, or something
    planted in its place (not a regular file, a symlink, over ``MAX_SIZE``: logged).  Never
    blocks, never reads without bound; other read errors (EACCES, EIO) are an IOFailure."""
    path = _path(data_dir, container_id)
    try:
        data = read_regular(path, MAX_SIZE + 1)
    except OSError as exc:
        raise IOFailure(f"failed to read saved delegate config {path}: {exc.strerror}") from None
    if data is None:
        kind = _kind(path)
        if kind:
            logger().warning("flannel: saved config %s is a %s, not a file flannel wrote; ignoring it", path, kind)
        return None
    if len(data) > MAX_SIZE:
        logger().warning("flannel: saved config %s is larger than %d bytes; ignoring it", path, MAX_SIZE)
        return None
    return data


def _kind(path: str) -> str:
    """What stands at ``path`` (for the log), '' when nothing does."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return ""
    except OSError as exc:
        return f"entry that cannot be examined ({exc.strerror})"
    kinds = ((stat.S_ISLNK, "symlink"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISDIR, "directory"),
             (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))
    return next((name for test, name in kinds if test(mode)), "file that changed while it was read")


TEMP = ".tmp."  # atomicfile's temp files: .<name>.tmp.<pid>


def remove(data_dir: str, container_id: str) -> None:
    """The container's saved config and any temp file of an interrupted save of it."""
    _unlink(_path(data_dir, container_id))
    for name in _names(data_dir):
        if _interrupted(name) == container_id:
            _unlink(os.path.join(data_dir, name))


def container_ids(data_dir: str, interrupted: bool = False) -> List[str]:
    """Containers with a saved config; with ``interrupted``, also those with only a temp
    file of a killed save (what GC must clean up too)."""
    names = _names(data_dir)
    ids = {n for n in names if TEMP not in n}
    if interrupted:
        ids.update(i for i in map(_interrupted, names) if i)
    return sorted(ids)


def _names(data_dir: str) -> List[str]:
    try:
        return os.listdir(data_dir)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise IOFailure(f"failed to list saved delegate configs in {data_dir}: {exc.strerror}") from None


def _interrupted(name: str) -> Optional[str]:
    """The container ID of a temp file ``.<id>.tmp.<pid>``, else None."""
    if not name.startswith(".") or TEMP not in name:
        return None
    cid, _, pid = name[1:].rpartition(TEMP)
    return cid if cid and pid.isdigit() else None


def _unlink(path: str) -> None:
    # The name is ours (<dataDir>/<containerID> in flannel's private directory), whatever was
    # planted there: unlink(2) removes the entry only — it neither follows a symlink nor opens a
    # FIFO or device (so cannot block or touch anything outside dataDir).  A planted directory
    # stays: removing it would mean deleting a tree we did not create; DEL and GC go on (logged,
    # and listed by `doctor`) rather than failing every later call for that name.
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        logger().warning("flannel: %s is a directory, not a saved config; leaving it", path)
    except OSError as exc:
        raise IOFailure(f"failed to remove saved delegate config {path}: {exc.strerror}") from None
