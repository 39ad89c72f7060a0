"""The environment our child processes get (iptables-restore, nft, delegates).

A PyInstaller binary may point LD_LIBRARY_PATH at its bundle (keeping the
node's value as LD_LIBRARY_PATH_ORIG) and sets private _PYI*/_MEI* variables;
none of that may reach the node's own tools.
"""

from __future__ import annotations

import os
from typing import Dict, Mapping, Optional

_LIBRARY_VARS = ("LD_LIBRARY_PATH", "LD_PRELOAD")
_PRIVATE_PREFIXES = ("_PYI", "_MEI")


def clean_env(environ: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ if environ is None else environ)
    for var in _LIBRARY_VARS:
        original = env.pop(var + "_ORIG", None)
        if original is not None:
            env[var] = original
        elif var == "LD_LIBRARY_PATH" and _frozen():
            env.pop(var, None)
    for key in [k for k in env if k.startswith(_PRIVATE_PREFIXES)]:
        del env[key]
    return env


def _frozen() -> bool:
    import sys

    return bool(getattr(sys, "frozen", False))
