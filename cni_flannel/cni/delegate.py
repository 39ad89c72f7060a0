"""Running another plugin from CNI_PATH (pkg/invoke): find, exec, decode.

The child gets the node's environment (not our bundler's), the CNI_* variables
of this request with CNI_COMMAND (and optionally CNI_IFNAME) replaced, and the
config on stdin.  Its error JSON comes back as a CNIError with the same code.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any, Dict, List, Optional

from .errors import CNIError, InternalError, InvalidConfig
from .procenv import clean_env
from .request import Request


def find_plugin(plugin_type: str, path: List[str]) -> str:
    if not plugin_type or "/" in plugin_type or plugin_type in (".", ".."):
        raise InvalidConfig(f"invalid plugin type {plugin_type!r}", "a type is a plain executable name")
    for directory in path:
        candidate = os.path.join(directory, plugin_type)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise InvalidConfig(
        f'failed to find plugin "{plugin_type}" in path {path}',
        "install the plugin in one of the CNI_PATH directories (usually /opt/cni/bin)",
    )


def invoke(
    plugin_type: str,
    command: str,
    conf: Dict[str, Any],
    req: Request,
    ifname: Optional[str] = None,
) -> Optional[Dict[str, Any]]:
    """Run ``plugin_type`` for ``command``; the decoded stdout JSON (ADD) or None."""
    binary = find_plugin(plugin_type, req.path)
    env = clean_env()
    env.update(
        CNI_COMMAND=command,
        CNI_CONTAINERID=req.container_id,
        CNI_NETNS=req.netns,
        CNI_IFNAME=ifname or req.ifname,
        CNI_PATH=":".join(req.path),
    )
    if req.args:
        env["CNI_ARGS"] = ";".join(f"{k}={v}" for k, v in req.args.items())
    try:
        proc = subprocess.run(
            [binary], input=json.dumps(conf).encode(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except OSError as exc:
        raise InternalError(f"failed to run plugin {binary}: {exc.strerror}") from None
    out = proc.stdout.strip()
    if proc.returncode != 0:
        raise _child_error(binary, proc.returncode, out, proc.stderr)
    if not out:
        return None
    try:
        doc = json.loads(out)
    except ValueError:
        raise InternalError(f"plugin {binary} printed invalid JSON", out[:200].decode(errors="replace")) from None
    return doc if isinstance(doc, dict) else None


def _child_error(binary: str, rc: int, out: bytes, err: bytes) -> CNIError:
    try:
        doc = json.loads(out)
        code = int(doc["code"])
        return CNIError(str(doc.get("msg", "")), str(doc.get("details", "")), code=code)
    except (ValueError, KeyError, TypeError):
        text = (err or out).decode(errors="replace").strip()[-500:]
        return InternalError(f"plugin {binary} failed (exit {rc})", text)
