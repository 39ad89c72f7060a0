"""Execute a plugin the way a container runtime does: a clean environment with
the CNI_* variables, the network configuration on stdin."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Union

from tests.harness.netns import Node, run
from tests.harness.plugins import plugin_dir

NODE_PLUGIN_DIR = "/opt/cni/bin"
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


@dataclass(frozen=True)
class PluginRun:
    rc: int
    stdout: str
    stderr: str
    json: Optional[Any]  # stdout parsed, None when it is not JSON

    @property
    def killed(self) -> bool:
        """True when the plugin died from SIGKILL (e.g. at a crash point)."""
        return self.rc == -9


def format_cni_args(args: Union[str, Mapping[str, str]]) -> str:
    return args if isinstance(args, str) else ";".join(f"{k}={v}" for k, v in args.items())


def run_plugin(plugin: str, command: str, config: Union[dict, bytes, str, None], *,
               container_id: Optional[str] = "cid", netns: Optional[str] = "",
               ifname: Optional[str] = "eth0", cni_args: Union[str, Mapping[str, str], None] = None,
               cni_path: Optional[str] = None, env_extra: Optional[Mapping[str, Optional[str]]] = None,
               node: Optional[Node] = None, timeout: float = 30) -> PluginRun:
    """Run one plugin command.

    plugin is a path or a plugin name: in a node a name means the node's
    /opt/cni/bin, else plugin_dir(). CNI_PATH defaults to the plugin's dir.
    An environment value of None leaves that variable unset. Without a node
    the plugin runs in the caller's namespaces: only for commands that must
    not touch the network (VERSION, rejected input).
    """
    if "/" not in plugin:
        plugin = os.path.join(NODE_PLUGIN_DIR if node else str(plugin_dir()), plugin)
    env: Dict[str, Optional[str]] = dict(BASE_ENV)
    env.update({
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_ARGS": format_cni_args(cni_args) if cni_args is not None else None,
        "CNI_PATH": cni_path if cni_path is not None else os.path.dirname(plugin),
    })
    env.update(env_extra or {})
    clean = {k: v for k, v in env.items() if v is not None}
    stdin = json.dumps(config) if isinstance(config, dict) else (config or b"")
    if node is not None:
        done = node.run([plugin], input=stdin, env=clean, check=False, timeout=timeout)
    else:
        done = run([plugin], input=stdin, env=clean, check=False, timeout=timeout)
    return PluginRun(done.returncode, done.stdout, done.stderr, _parse(done.stdout))


def _parse(text: str) -> Optional[Any]:
    try:
        return json.loads(text)
    except ValueError:
        return None
