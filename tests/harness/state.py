"""Read a node's state for before/after comparisons without ever turning a failing tool
into "nothing there": two empty outputs compare equal, so a snapshot helper that swallowed
an error would let every leak test pass.  Only a real absence (no such table, no such
directory) reads as empty; any other failure raises."""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from tests.harness.netns import CommandError, Node


def iptables_save(node: Node, table: str = "nat", tool: str = "iptables-save") -> str:
    """``iptables-save -t table`` without its timestamp comments; raises when the tool fails."""
    out = node.run([tool, "-t", table]).stdout
    return "\n".join(l for l in out.splitlines() if not l.startswith("#"))


def nft_ruleset(node: Node) -> str:
    return node.run(["nft", "list", "ruleset"]).stdout


def nft_table(node: Node, family: str, name: str) -> str:
    """The table's listing, or "" when it does not exist; any other nft failure raises."""
    done = node.run(["nft", "list", "table", family, name], check=False)
    if done.returncode == 0:
        return done.stdout
    if "No such file or directory" in done.stderr:
        return ""
    raise CommandError(done.returncode, done.args, done.stdout, done.stderr)


def link(node: Node, name: str) -> Optional[Dict[str, Any]]:
    """``ip -d -j link show name`` as a dict, or None when the device does not exist; any
    other failure of ``ip`` raises (so "the device is gone" can never pass by accident)."""
    done = node.run(["ip", "-d", "-j", "link", "show", name], check=False)
    if done.returncode == 0:
        return json.loads(done.stdout)[0]
    if "does not exist" in done.stderr:
        return None
    raise CommandError(done.returncode, done.args, done.stdout, done.stderr)


def list_dir(node: Node, path: str) -> List[str]:
    """Entries of a directory (hidden ones too); [] when it does not exist."""
    done = node.run(["sh", "-c", 'test -d "$1" || exit 0; ls -A "$1"', "sh", path])
    return done.stdout.split()


def node_state(node: Node, dirs: tuple = ("/var/lib/cni", "/run/flannel", "/etc/cni/net.d")) -> Dict[str, str]:
    """Everything a plugin could have changed on the node (links, addresses, routes, the
    firewall through both iptables flavours and nft, files with their sizes, ip_forward)."""
    state = {
        "links": node.run(["ip", "-o", "link", "show"]).stdout,
        "addrs": node.run(["ip", "-o", "addr", "show"]).stdout,
        "routes4": node.run(["ip", "route", "show", "table", "all"]).stdout,
        "routes6": node.run(["ip", "-6", "route", "show", "table", "all"]).stdout,
        "nft": nft_ruleset(node),
        "forward": node.run(["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout,
        "files": node.run(["sh", "-c", 'for d; do test -e "$d" && find "$d" -printf "%p %s %l\\n"; done; true',
                           "sh", *dirs]).stdout,
    }
    for table in ("nat", "filter", "mangle"):
        state[f"iptables-legacy-{table}"] = iptables_save(node, table, "iptables-legacy-save")
    return state
