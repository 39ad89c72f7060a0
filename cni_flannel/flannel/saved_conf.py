"""The delegate configs flannel saves for DEL: ``<dataDir>/<containerID>``.

Same place and content as the reference, so either implementation can DEL
what the other added.  Written atomically (``atomicfile``) so a crash leaves
the old file or the new one, never half.
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


def remove(data_dir: str, container_id: str) -> None:
    _unlink(_path(data_dir, container_id))


def container_ids(data_dir: str) -> List[str]:
    """Containers with a saved config (temp files of interrupted saves excluded)."""
    try:
        names = os.listdir(data_dir)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if ".tmp." not in n)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise IOFailure(f"failed to remove saved delegate config {path}: {exc.strerror}") from None
