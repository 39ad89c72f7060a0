"""bridge ipMasq on nftables, GC of stale masquerade rules, STATUS, and bad
input exec'd in a node (error JSON, code 7, nothing changed)."""
from __future__ import annotations

import json

import pytest

from tests.harness.exec import run_plugin
from tests.harness.state import nft_table

NET = "mnet"


def conf(**over) -> dict:
    c = {"cniVersion": "1.1.0", "name": NET, "type": "bridge", "isGateway": True, "ipMasq": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.3.0/24"}]]}}
    c.update(over)
    return c


def nft_masq(node) -> str:
    return nft_table(node, "inet", "cni_plugins_masquerade")


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
    d = run_plugin("bridge", "DEL", c, netns=p.netns_for_del(how), node=node, container_id="c1")
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


def test_status_forwards_to_ipam(node, pod):
    r = run_plugin("bridge", "STATUS", conf(), netns=None, ifname=None, container_id=None, node=node)
    assert r.rc == 0, r
    small = conf()
    small["ipam"] = {"type": "host-local", "ranges": [[{"subnet": "10.244.3.0/30"}]]}  # one free address
    assert run_plugin("bridge", "ADD", small, netns=pod().path, node=node, container_id="c1").rc == 0
    full = run_plugin("bridge", "STATUS", small, netns=None, ifname=None, container_id=None, node=node)
    assert full.rc == 0, full  # a full pool fails ADD, never STATUS (that would make the node NotReady)
    unusable = conf()
    unusable["ipam"] = {"type": "host-local", "subnet": "10.244.3.0/24", "dataDir": "/dev/null/networks"}
    down = run_plugin("bridge", "STATUS", unusable, netns=None, ifname=None, container_id=None, node=node)
    assert down.rc == 1 and down.json["code"] == 50 and "/dev/null" in down.json["msg"], down
    broken = conf()
    broken["ipam"] = {"type": "host-local", "ranges": [[{"subnet": "10.244.3.0/99"}]]}
    bad = run_plugin("bridge", "STATUS", broken, netns=None, ifname=None, container_id=None, node=node)
    assert bad.rc == 1 and bad.json["code"] == 7, bad


BAD = [
    {"vlan": 5000}, {"vlanTrunk": [{"minID": 1, "maxID": 5}, {"id": 3}]},
    {"hairpinMode": True, "promiscMode": True}, {"mtu": 10}, {"bridge": "a-bridge-name-16"},
    {"ipam": {"ranges": []}}, {"ipMasqBackend": "pf"}, {"isGateway": "yes"},
    {"runtimeConfig": {"mac": "nonsense"}},
    {"vlan": -1}, {"vlan": "10"}, {"vlanTrunk": [{"minID": 10, "maxID": 5}]}, {"vlanTrunk": "10-20"},
    {"mtu": 70000}, {"mtu": "1500"}, {"bridge": "bad/name"}, {"bridge": 5}, {"ipam": {"type": 5}},
    {"ipam": "host-local"}, {"hairpinMode": "true"}, {"ipMasq": 1}, {"forceAddress": "no"},
    {"dns": "8.8.8.8"}, {"args": {"cni": {"mac": "zz:zz:zz:zz:zz:zz"}}},
    {"disableContainerInterface": True},
    {"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/33"}]]}},
    {"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24", "rangeStart": "10.9.0.1"}]]}},
    {"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}], [{"subnet": "10.244.1.0/25"}]]}},
    {"ipam": {"type": "host-local", "subnet": "10.244.1.0/24", "dataDir": "relative/dir"}},
]


@pytest.mark.parametrize("over", BAD, ids=[json.dumps(b) for b in BAD])
def test_bad_input_changes_nothing(node, pod, over):
    p = pod()
    before = node.run(["ip", "-o", "link"]).stdout, p.run(["ip", "-o", "link"]).stdout
    r = run_plugin("bridge", "ADD", conf(**over), netns=p.path, node=node, container_id="c1")
    code = 6 if over in ({"ipam": "host-local"}, {"dns": "8.8.8.8"}) else 7  # 6: a section is not an object
    assert r.rc == 1 and r.json["code"] == code, r
    assert r.stderr == ""
    assert (node.run(["ip", "-o", "link"]).stdout, p.run(["ip", "-o", "link"]).stdout) == before
    assert nat_cni(node) == [] and not node.exists(f"/var/lib/cni/networks/{NET}")
