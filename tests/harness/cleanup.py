"""Remove what harness runs left behind: ``python -m tests.harness.cleanup [PREFIX...]``.

Deletes every network namespace, /run dir and temp dir named with a harness
prefix (``cft`` + 4 hex digits; only the given prefixes when some are named),
e.g. after a killed test run. Without prefixes, labs whose owning process is
still alive (``/run/<prefix>/owner``) are spared, so it is safe during a test run.
"""
from __future__ import annotations

import glob
import os
import shutil
import sys
import tempfile
from typing import List, Sequence

from tests.harness.netns import OWNED_RE, netns_names, remove_netns, remove_run_dir


def cleanup(prefixes: Sequence[str] = ()) -> List[str]:
    """Remove harness leftovers (of prefixes, or of any run); return what was removed."""
    def ours(name: str) -> bool:
        match = OWNED_RE.match(name)
        if not match:
            return False
        return name[:7] in prefixes if prefixes else not _owner_alive(name[:7])

    removed = []
    for name in netns_names():
        if ours(name):
            remove_netns(name)
            removed.append(f"netns {name}")
    for path in glob.glob("/run/cft*"):
        if ours(os.path.basename(path)):
            remove_run_dir(path)
            removed.append(path)
    for path in glob.glob(os.path.join(tempfile.gettempdir(), "cft*")):
        if ours(os.path.basename(path)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _owner_alive(prefix: str) -> bool:
    try:
        with open(f"/run/{prefix}/owner") as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return pid != os.getpid()


if __name__ == "__main__":
    for item in cleanup(sys.argv[1:]):
        print("removed", item)
