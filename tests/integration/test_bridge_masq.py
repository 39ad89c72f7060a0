"""bridge ipMasq on nftables, GC of stale masquerade rules, STATUS, and bad
input exec'd in a node (error JSON, code 7, nothing changed)."""
from __future__ import annotations

import json

import pytest

from tests.harness.exec import run_plugin

NET = "mnet"


def conf(**over) -> dict:
    c = {"cniVersion": "1.1.0", "name": NET, "type": "bridge", "isGateway": True, "ipMasq": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.3.0/24"}]]}}
    c.update(over)
    return c


def nft_masq(node) -> str:
    done = node.run(["nft", "list", "table", "inet", "cni_plugins_masquerade"], check=False)
    return done.stdout if done.returncode == 0 else ""


def nat_cni(node):
    return [l for l in node.run(["iptables-save", "-t", "nat"]).stdout.splitlines() if "CNI-" in l]


@pytest.mark.parametrize("how", ["netns", "empty", "deleted"])
def test_nftables_backend_add_check_del(node, pod, how):
    p = pod()
    c = conf(ipMasqBackend="nftables")
    r = run_plugin("bridge", "ADD", c, netns=p.path, node=node, container_id="c1")
    assert r.rc == 0, r
    table = nft_masq(node)
    assert "ip saddr 10.244.3.2 ip daddr != 10.244.3.0/24 masquerade" in table, table
    assert nat_cni(node) == []
    chk = run_plugin("bridge", "CHECK", dict(c, prevResult=r.json), netns=p.path, node=node, container_id="c1")
    assert chk.rc == 0, chk
    netns = p.path
    if how != "netns":
        netns = ""
        if how == "deleted":
            p.delete()
            netns = p.path
    d = run_plugin("bridge", "DEL", c, netns=netns, node=node, container_id="c1")
    assert d.rc == 0, d
    assert "10.244.3.2" not in nft_masq(node)


def test_gc_removes_rules_and_addresses_of_unlisted_attachments(node, pod):
    pods = [pod(), pod()]
    for i, p in enumerate(pods):
        assert run_plugin("bridge", "ADD", conf(), netns=p.path, node=node, container_id=f"c{i}").rc == 0
    assert sum(l.startswith("-A POSTROUTING") for l in nat_cni(node)) == 2
    gc = conf(**{"cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]})
    r = run_plugin("bridge", "GC", gc, netns=None, ifname=None, container_id=None, node=node)
    assert r.rc == 0, r
    rules = nat_cni(node)
    assert sum(l.startswith("-A POSTROUTING") for l in rules) == 1
    assert all('id: \\"c1\\"' in l for l in rules if "comment" in l), rules
    files = node.run(["ls", f"/var/lib/cni/networks/{NET}"]).stdout.split()
    assert "10.244.3.2" not in files and "10.244.3.3" in files


def test_status_forwards_to_ipam(node):
    r = run_plugin("bridge", "STATUS", conf(), netns=None, ifname=None, container_id=None, node=node)
    assert r.rc == 0, r
    bad = conf()
    bad["ipam"] = {"type": "host-local", "ranges": [[{"subnet": "10.244.3.0/30"}]]}
    r = run_plugin("bridge", "STATUS", bad, netns=None, ifname=None, container_id=None, node=node)
    assert r.rc == 0 or r.json["code"] in (7, 50), r


BAD = [
    {"vlan": 5000}, {"vlanTrunk": [{"minID": 1, "maxID": 5}, {"id": 3}]},
    {"hairpinMode": True, "promiscMode": True}, {"mtu": 10}, {"bridge": "a-bridge-name-16"},
    {"ipam": {"ranges": []}}, {"ipMasqBackend": "pf"}, {"isGateway": "yes"},
    {"runtimeConfig": {"mac": "nonsense"}},
]


@pytest.mark.parametrize("over", BAD, ids=[json.dumps(b) for b in BAD])
def test_bad_input_changes_nothing(node, pod, over):
    p = pod()
    before = node.run(["ip", "-o", "link"]).stdout, p.run(["ip", "-o", "link"]).stdout
    r = run_plugin("bridge", "ADD", conf(**over), netns=p.path, node=node, container_id="c1")
    assert r.rc == 1 and r.json["code"] == 7, r
    assert r.stderr == ""
    assert (node.run(["ip", "-o", "link"]).stdout, p.run(["ip", "-o", "link"]).stdout) == before
    assert nat_cni(node) == [] and not node.exists(f"/var/lib/cni/networks/{NET}")
