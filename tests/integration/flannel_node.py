"""Shared set-up for the flannel integration tests: a node as kube-flannel leaves it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

from tests.harness.netns import Node
from tests.harness.state import iptables_save, list_dir
from tests.harness.plugins import REPO_ROOT

SHIPPED = REPO_ROOT / "conflists" / "10-flannel.conflist"
SEED = REPO_ROOT / "tests" / "fixtures" / "seed-10-flannel-0.3.1.conflist"
SUBNET_ENV = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
DUAL_ENV = SUBNET_ENV + "FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\n"


def flannel_node(node: Node, conflist: Path = SHIPPED, subnet_env: str = SUBNET_ENV) -> Node:
    node.write_file("/etc/cni/net.d/10-flannel.conflist", conflist.read_text())
    if subnet_env is not None:
        node.write_file("/run/flannel/subnet.env", subnet_env)
    return node


def links(ns: Any) -> List[Dict[str, Any]]:
    return json.loads(ns.run(["ip", "-d", "-j", "link", "show"]).stdout)


def addresses(ns: Any, ifname: str, family: str = "inet") -> List[str]:
    info = json.loads(ns.run(["ip", "-j", "addr", "show", ifname]).stdout)[0]
    return [f"{a['local']}/{a['prefixlen']}" for a in info["addr_info"] if a["family"] == family
            and a.get("scope") != "link"]


def routes(ns: Any, family: str = "-4") -> List[Dict[str, Any]]:
    return json.loads(ns.run(["ip", family, "-j", "route", "show"]).stdout)


def node_leftovers(node: Node) -> Dict[str, Any]:
    """What pods leave on a node: saved configs, held addresses, veths, masquerade chains."""
    saved = list_dir(node, "/var/lib/cni/flannel")
    held = [f for f in list_dir(node, "/var/lib/cni/networks/cbr0") if f[0].isdigit() or ":" in f]
    veths = [l["ifname"] for l in links(node) if l["ifname"].startswith("veth")]
    rules = [l for l in iptables_save(node).splitlines()
             if "CNI-" in l and "HOSTPORT" not in l]
    return {"saved": saved, "held": held, "veths": veths, "rules": rules}


CLEAN = {"saved": [], "held": [], "veths": [], "rules": []}
