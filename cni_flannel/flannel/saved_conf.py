"""The delegate configs flannel saves for DEL: ``<dataDir>/<containerID>``.

Same place and content as the reference, so either implementation can DEL
what the other added.  Written atomically (``atomicfile``) so a crash leaves
the old file or the new one, never half — and at most a temp file
(``.<containerID>.tmp.<pid>``, a save killed before its rename), which the
container's DEL and a GC that does not name it remove with the config.
"""

from __future__ import annotations

import os
from typing import List, Optional

from ..atomicfile import write_atomic
from ..cni.errors import IOFailure

DEFAULT_DIR = "/var/lib/cni/flannel"


def _path(data_dir: str, container_id: str) -> str:
    return os.path.join(data_dir, container_id)  # the ID was validated by the dispatcher


def save(data_dir: str, container_id: str, conf: bytes) -> None:
    path = _path(data_dir, container_id)
    try:
        write_atomic(path, conf, mode=0o600, dir_mode=0o700)
    except OSError as exc:
        raise IOFailure(f"failed to save delegate config {path}: {exc.strerror}") from None


def load(data_dir: str, container_id: str) -> Optional[bytes]:
    """The saved config, or None when there is none."""
    try:
        with open(_path(data_dir, container_id), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IOFailure(f"failed to read saved delegate config: {exc.strerror}") from None


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
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise IOFailure(f"failed to remove saved delegate config {path}: {exc.strerror}") from None
