"""The exact CNI GC command that releases what no live pod holds (pure).

GC (CNI 1.1) hands every plugin of the network the attachments that are still valid; each
releases the rest: host-local their addresses, flannel their saved configs, bridge their
masquerade and spoof-check rules, portmap their DNAT chains.  So the command lists the live
attachments -- the ones doctor found on this node -- never the leaked ones.
"""

from __future__ import annotations

import json
import shlex
from typing import Any, Dict, List, Sequence, Tuple

GC_VERSION = "1.1.0"


def plugin_configs(conflist: Dict[str, Any], attachments: Sequence[Tuple[str, str]]) -> List[Dict[str, Any]]:
    """One GC stdin per plugin of the conflist, as a runtime builds it (libcni)."""
    valid = [{"containerID": cid, "ifname": ifname} for cid, ifname in attachments]
    out = []
    for plugin in conflist.get("plugins") or []:
        if not isinstance(plugin, dict) or not isinstance(plugin.get("type"), str):
            continue
        conf = {"cniVersion": GC_VERSION, "name": conflist.get("name", "cbr0")}
        conf.update({k: v for k, v in plugin.items() if k not in ("cniVersion", "name")})
        conf["cni.dev/valid-attachments"] = valid
        out.append(conf)
    return out


def command(conflist: Dict[str, Any], attachments: Sequence[Tuple[str, str]], bin_dir: str = "/opt/cni/bin") -> str:
    """Shell commands (one line per plugin, joined by ' && ')."""
    lines = []
    for conf in plugin_configs(conflist, attachments):
        text = json.dumps(conf, separators=(",", ":"), sort_keys=True)
        lines.append(f"echo {shlex.quote(text)} | CNI_COMMAND=GC CNI_PATH={shlex.quote(bin_dir)} "
                     f"{shlex.quote(bin_dir + '/' + conf['type'])}")
    return " && ".join(lines)
