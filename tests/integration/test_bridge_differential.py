"""bridge vs Debian's Go bridge (1.1.1) on the same config in two nodes: same
interfaces, pod addresses and routes, sysctls, and masquerade chains/rules."""
from __future__ import annotations

import json
import re

from tests.harness.exec import run_plugin
from tests.harness.plugins import reference_dir

CONF = {"cniVersion": "1.0.0", "name": "diffnet", "type": "bridge", "bridge": "cni0",
        "isDefaultGateway": True, "mtu": 1400, "hairpinMode": True, "ipMasq": True,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.7.0/24"}]],
                 "routes": [{"dst": "10.244.0.0/16"}]}}


def _state(node, pod):
    addrs = json.loads(pod.run(["ip", "-j", "addr", "show", "eth0"]).stdout)[0]
    routes = json.loads(pod.run(["ip", "-j", "route"]).stdout)
    sysctls = {k: pod.run(["sysctl", "-n", k]).stdout.strip()
               for k in ("net.ipv4.conf.eth0.arp_notify", "net.ipv6.conf.eth0.accept_dad")}
    sysctls["node ip_forward"] = node.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip()
    nat = [l for l in node.run(["iptables-save", "-t", "nat"]).stdout.splitlines() if "CNI-" in l]
    br = json.loads(node.run(["ip", "-j", "-d", "link", "show", "cni0"]).stdout)[0]
    ports = [l for l in json.loads(node.run(["ip", "-j", "-d", "link", "show"]).stdout)
             if l.get("master") == "cni0"]
    return {"addrs": sorted((a["family"], a["local"], a["prefixlen"]) for a in addrs["addr_info"]
                            if a.get("scope") == "global"),
            "mtu": (addrs["mtu"], br["mtu"], [p["mtu"] for p in ports]),
            "hairpin": [p["linkinfo"]["info_slave_data"]["hairpin"] for p in ports],
            "routes": sorted((r["dst"], r.get("gateway"), r["dev"]) for r in routes),
            "sysctls": sysctls, "nat": nat}


def _shape(result):
    r = dict(result)
    r["interfaces"] = [dict(i, mac="MAC", name=re.sub("^veth[0-9a-f]{8}$", "vethX", i["name"]),
                            **({"sandbox": "NS"} if "sandbox" in i else {})) for i in r["interfaces"]]
    return r


def test_same_state_as_go_bridge(make_node, pod):
    ours_node, ref_node = make_node("ours"), make_node("ref")
    ours_pod, ref_pod = pod(node=ours_node), pod(node=ref_node)
    ours = run_plugin("bridge", "ADD", CONF, netns=ours_pod.path, node=ours_node, container_id="c1")
    ref = run_plugin(str(reference_dir() / "bridge"), "ADD", CONF, netns=ref_pod.path, node=ref_node,
                     container_id="c1", cni_path=str(reference_dir()))
    assert ours.rc == 0, ours
    assert ref.rc == 0, ref
    assert _shape(ours.json) == _shape(ref.json)
    state = _state(ours_node, ours_pod)
    assert state == _state(ref_node, ref_pod)
    assert len(state["nat"]) == 4 and ("default", "10.244.7.1", "eth0") in state["routes"]
    assert state["hairpin"] == [True] and state["mtu"] == (1400, 1400, [1400])
    # each DELs cleanly, leaving the same (empty) masquerade state
    run_plugin("bridge", "DEL", CONF, netns=ours_pod.path, node=ours_node, container_id="c1")
    run_plugin(str(reference_dir() / "bridge"), "DEL", CONF, netns=ref_pod.path, node=ref_node,
               container_id="c1", cni_path=str(reference_dir()))
    for node in (ours_node, ref_node):
        assert [l for l in node.run(["iptables-save", "-t", "nat"]).stdout.splitlines() if "CNI-" in l] == []
