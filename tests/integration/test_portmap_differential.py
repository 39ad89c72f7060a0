"""Our portmap against Debian's Go portmap (1.1.1), each in its own node: the
same 8-mapping ADD gives the same nat table rule for rule, DEL leaves the same
table, and each plugin's CHECK and DEL work on the other's rules (an operator
can swap the binaries)."""
from __future__ import annotations

from typing import Dict, List

import pytest

from tests.harness.exec import run_plugin
from tests.harness.netns import Node
from tests.harness.plugins import reference_dir
from tests.portmap_samples import UPSTREAM_MAPPINGS

CID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
MAPPINGS = UPSTREAM_MAPPINGS


def config(**extra) -> dict:
    conf = {"cniVersion": "1.0.0", "name": "pmnet", "type": "portmap",
            "runtimeConfig": {"portMappings": MAPPINGS},
            "conditionsV4": ["!", "-d", "192.0.2.0/24"], "conditionsV6": ["-i", "eth0"],
            "prevResult": {"cniVersion": "1.0.0",
                           "interfaces": [{"name": "cni0"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
                           "ips": [{"address": "10.0.0.2/24", "interface": 1},
                                   {"address": "2001:db8::2/64", "interface": 1}]}}
    conf.update(extra)
    return conf


def tables(node: Node) -> Dict[str, List[str]]:
    """iptables-save/ip6tables-save of the nat table, without the timestamp comments."""
    out = {}
    for tool in ("iptables-save", "ip6tables-save"):
        text = node.run([tool, "-t", "nat"]).stdout
        out[tool] = [line for line in text.splitlines() if not line.startswith("#")]
    return out


def portmap(node: Node, command: str, pod, conf: dict, plugin: str = "portmap"):
    done = run_plugin(plugin, command, conf, container_id=CID, netns=pod.path if pod else "", node=node)
    assert done.rc == 0, done
    return done


@pytest.fixture
def pair(make_node, plugin_dir):
    ours = make_node(plugins=False)
    ours.install_plugins(plugin_dir, names=["portmap"])
    go = make_node(plugins=reference_dir())
    return ours, go


def test_same_rules_as_the_go_plugin(pair):
    ours, go = pair
    for node in pair:
        portmap(node, "ADD", node.add_pod(), config())
    mine, theirs = tables(ours), tables(go)
    assert mine == theirs
    # IPv4: 6 mappings x (hairpin mark, localhost mark, DNAT) + 2 entry rules
    #       + PREROUTING, OUTPUT, POSTROUTING, SETMARK, MASQ
    assert sum(line.startswith("-A ") for line in mine["iptables-save"]) == 6 * 3 + 2 + 5
    assert sum(line.startswith("-A ") for line in mine["ip6tables-save"]) == 6 * 2 + 2 + 5
    for node in pair:
        portmap(node, "DEL", None, config())
    assert tables(ours) == tables(go)
    assert CID not in "\n".join(sum(tables(ours).values(), []))


def test_each_checks_and_deletes_the_others_rules(make_node, plugin_dir):
    node = make_node(plugins=reference_dir())
    node.run(["cp", "/opt/cni/bin/portmap", "/opt/cni/bin/goportmap"])
    node.install_plugins(plugin_dir, names=["portmap"])
    pod = node.add_pod()
    # Go ADD -> our CHECK, our DEL (without runtimeConfig)
    portmap(node, "ADD", pod, config(), plugin="/opt/cni/bin/goportmap")
    made_by_go = tables(node)
    portmap(node, "CHECK", pod, config())
    portmap(node, "DEL", pod, config(runtimeConfig={}))
    left_by_ours = tables(node)
    assert CID not in "\n".join(sum(left_by_ours.values(), []))
    # our ADD -> the same table; Go DEL leaves what ours left
    portmap(node, "ADD", pod, config())
    assert tables(node) == made_by_go
    portmap(node, "DEL", pod, config(), plugin="/opt/cni/bin/goportmap")
    assert tables(node) == left_by_ours


def test_our_check_passes_where_go_check_cannot(make_node, plugin_dir):
    """Go 1.1.1's CHECK also looks for every chain in ip6tables (and the IPv4 rules
    there), so it fails on any node with ip6tables, even on its own rules; ours
    checks each family's rules in that family."""
    node = make_node(plugins=reference_dir())
    node.run(["cp", "/opt/cni/bin/portmap", "/opt/cni/bin/goportmap"])
    node.install_plugins(plugin_dir, names=["portmap"])
    pod = node.add_pod()
    for conf in (config(), dict(config(), prevResult=dict(config()["prevResult"], ips=config()["prevResult"]["ips"][:1]))):
        portmap(node, "ADD", pod, conf, plugin="/opt/cni/bin/goportmap")
        go_check = run_plugin("/opt/cni/bin/goportmap", "CHECK", conf, container_id=CID, netns=pod.path, node=node)
        assert go_check.rc == 1 and "could not check ipv6 dnat" in go_check.stdout
        portmap(node, "CHECK", pod, conf)
        portmap(node, "DEL", pod, conf)
