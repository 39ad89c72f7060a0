"""Where the plugin executables under test come from.

``plugin_dir()`` is the frozen build in ``dist/cni`` (the default) or, with
``CNI_TEST_FROM_SOURCE=1``, a temp dir of shell wrappers that run
``plugins/cni-flannel.py`` from the source tree under each plugin's name.
``reference_dir()`` holds Debian's Go reference plugins.
"""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import sys
import tempfile
from pathlib import Path

from tests.harness.netns import new_prefix

REPO_ROOT = Path(__file__).resolve().parents[2]
PLUGIN_NAMES = ("flannel", "bridge", "host-local", "portmap", "loopback")
FROZEN_DIR = REPO_ROOT / "dist" / "cni"
ENTRY = REPO_ROOT / "plugins" / "cni-flannel.py"
REFERENCE_DIR = Path("/usr/lib/cni")

WRAPPER = """#!/bin/sh
PYTHONPATH={root} exec {python} {script} "$@"
"""


class PluginsNotBuilt(RuntimeError):
    pass


def from_source() -> bool:
    return os.environ.get("CNI_TEST_FROM_SOURCE") == "1"


def plugin_dir() -> Path:
    """The directory of the plugin executables the tests run."""
    if from_source():
        return _source_wrappers()
    missing = [name for name in PLUGIN_NAMES if not (FROZEN_DIR / name).exists()]
    if missing:
        raise PluginsNotBuilt(f"{FROZEN_DIR} lacks {', '.join(missing)}: run `make binaries`, "
                              "or set CNI_TEST_FROM_SOURCE=1 to run the plugins from source")
    return FROZEN_DIR


def reference_dir() -> Path:
    """Debian's Go reference plugins (containernetworking-plugins)."""
    return REFERENCE_DIR


def _python() -> str:
    venv = REPO_ROOT / ".venv" / "bin" / "python"
    return str(venv if venv.exists() else sys.executable)


@functools.lru_cache(maxsize=None)
def _source_wrappers() -> Path:
    # <name>.py -> plugins/cni-flannel.py gives the entry its plugin name in argv[0].
    wrapdir = Path(tempfile.mkdtemp(prefix=f"{new_prefix()}-src-"))
    atexit.register(shutil.rmtree, wrapdir, True)
    for name in PLUGIN_NAMES:
        script = wrapdir / f"{name}.py"
        script.symlink_to(ENTRY)
        wrapper = wrapdir / name
        wrapper.write_text(WRAPPER.format(root=REPO_ROOT, python=_python(), script=script))
        wrapper.chmod(0o755)
    wrapdir.chmod(0o755)
    return wrapdir
