"""flannel end to end: the shipped conflist and the seed's 0.3.1 one, through libcni and go-cni,
with the plugins doing the work themselves and through the resident agent."""

from __future__ import annotations

import json
from typing import Any, List

import pytest

from tests.harness import drivers
from tests.harness.exec import run_plugin
from tests.integration.flannel_node import (CLEAN, DUAL_ENV, SEED, SHIPPED, addresses, flannel_node, links,
                                            node_leftovers, routes)


def _pod_ips(results: List[Any], driver: str) -> List[str]:
    if driver == "libcni":
        return [r["ips"][0]["address"] if "ips" in r else r["ip4"]["ip"] for r in results]
    return [f"{r['Interfaces']['eth0']['IPConfigs'][0]['IP']}/24" for r in results]


@pytest.mark.parametrize("driver", ["libcni", "gocni"])
@pytest.mark.parametrize("conflist", [SHIPPED, SEED], ids=["shipped-1.0.0", "seed-0.3.1"])
def test_pods_on_a_flannel_node(node: Any, pod: Any, plugin_path: str, driver: str, conflist: Any) -> None:
    flannel_node(node, conflist)
    pods = [pod(f"p{i}") for i in range(2)]
    results = []
    for i, p in enumerate(pods):
        if driver == "libcni":
            results.append(drivers.libcni(node, "add", "cbr0", p, cid=f"c{i}"))
        else:
            results.append(drivers.gocni(node, "add", p, cid=f"c{i}", pod_name=f"web-{i}"))
    ips = _pod_ips(results, driver)
    assert ips == ["10.244.1.2/24", "10.244.1.3/24"]
    # the node: gateway on cni0, FLANNEL_MTU on cni0 and every port, hairpin on
    assert addresses(node, "cni0") == ["10.244.1.1/24"]
    ports = [l for l in links(node) if l.get("master") == "cni0"]
    assert len(ports) == 2 and all(l["mtu"] == 1450 for l in ports)
    assert all(l["linkinfo"]["info_slave_data"]["hairpin"] is True for l in ports)
    assert [l for l in links(node) if l["ifname"] == "cni0"][0]["mtu"] == 1450
    # the pods: FLANNEL_MTU, the flannel network via the gateway, a default route (isDefaultGateway)
    for p, ip in zip(pods, ips):
        assert addresses(p, "eth0") == [ip]
        assert [l for l in links(p) if l["ifname"] == "eth0"][0]["mtu"] == 1450
        table = {r["dst"]: r.get("gateway") for r in routes(p)}
        assert table["10.244.0.0/16"] == "10.244.1.1" and table["default"] == "10.244.1.1"
    assert pods[0].ping(ips[1].split("/")[0]) and pods[1].ping(ips[0].split("/")[0])
    assert node.ping(ips[0].split("/")[0])
    # the saved delegate config is the reference's
    saved = json.loads(node.read_file("/var/lib/cni/flannel/c0"))
    assert saved["type"] == "bridge" and saved["name"] == "cbr0" and saved["hairpinMode"] is True
    assert saved["ipam"]["ranges"] == [[{"subnet": "10.244.1.0/24"}]]
    if driver == "libcni" and conflist is SHIPPED:  # CHECK needs >= 0.4.0; go-cni adds a 0.3.1 loopback net
        for i, p in enumerate(pods):
            drivers.libcni(node, "check", "cbr0", p, cid=f"c{i}")
    for i, p in enumerate(pods):
        if driver == "libcni":
            drivers.libcni(node, "del", "cbr0", p, cid=f"c{i}")
            drivers.libcni(node, "del", "cbr0", p, cid=f"c{i}")  # repeated DEL succeeds
        else:
            drivers.gocni(node, "del", p, cid=f"c{i}", pod_name=f"web-{i}")
    assert node_leftovers(node) == CLEAN


def test_dual_stack(node: Any, pod: Any) -> None:
    flannel_node(node, SHIPPED, DUAL_ENV)
    p = pod()
    result = drivers.libcni(node, "add", "cbr0", p, cid="c0")
    assert [ip["address"] for ip in result["ips"]] == ["10.244.1.2/24", "fd00:10:244:1::2/64"]
    assert addresses(p, "eth0", "inet6") == ["fd00:10:244:1::2/64"]
    assert {r["dst"] for r in routes(p, "-6")} >= {"fd00:10:244::/56"}
    drivers.libcni(node, "del", "cbr0", p, cid="c0")
    assert node_leftovers(node) == CLEAN


def _conf(version: str = "1.1.0", **extra: Any) -> dict:
    doc = {"cniVersion": version, "name": "cbr0", "type": "flannel",
           "delegate": {"hairpinMode": True, "isDefaultGateway": True}}
    doc.update(extra)
    return doc


def test_status_and_gc(node: Any, pod: Any, plugin_path: str) -> None:
    flannel_node(node, SHIPPED, subnet_env=None)
    status = run_plugin("flannel", "STATUS", _conf(), node=node, container_id=None, ifname=None)
    assert status.rc == 1 and status.json["code"] == 50 and "subnet.env" in status.json["msg"]
    flannel_node(node, SHIPPED)
    assert run_plugin("flannel", "STATUS", _conf(), node=node, container_id=None, ifname=None).rc == 0
    keep, stale = pod("keep"), pod("stale")
    for cid, p in (("keep", keep), ("stale", stale)):
        assert run_plugin("flannel", "ADD", _conf(), node=node, netns=p.path, container_id=cid).rc == 0
    stale.delete()  # the runtime lost this sandbox (e.g. a reboot) and never called DEL
    gc = run_plugin("flannel", "GC", _conf(**{"cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]}),
                    node=node, container_id=None, ifname=None)
    assert gc.rc == 0, gc
    left = node_leftovers(node)
    assert left["saved"] == ["keep"] and left["held"] == ["10.244.1.2"]
    assert len(left["rules"]) == 0  # ipMasq is off (flanneld masquerades: FLANNEL_IPMASQ=true)


def test_chaining_with_go_tuning_and_bandwidth(node: Any, pod: Any) -> None:
    flannel_node(node, SHIPPED)
    node.run(["cp", "/usr/lib/cni/tuning", "/usr/lib/cni/bandwidth", "/opt/cni/bin/"])
    conflist = json.loads(SHIPPED.read_text())
    conflist["plugins"] = [conflist["plugins"][0],
                           {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.rp_filter": "2"}},
                           {"type": "bandwidth", "capabilities": {"bandwidth": True}}]
    node.write_file("/etc/cni/net.d/10-flannel.conflist", json.dumps(conflist))
    p = pod()
    shaping = {"bandwidth": {"ingressRate": 1000000, "ingressBurst": 100000,
                             "egressRate": 1000000, "egressBurst": 100000}}
    result = drivers.libcni(node, "add", "cbr0", p, cid="c0", capability_args=shaping)
    assert result["ips"][0]["address"] == "10.244.1.2/24"
    assert p.run(["sysctl", "-n", "net.ipv4.conf.eth0.rp_filter"]).stdout.strip() == "2"
    host_veth = [i["name"] for i in result["interfaces"] if i["name"].startswith("veth")][0]
    assert "tbf" in node.run(["tc", "qdisc", "show", "dev", host_veth]).stdout
    drivers.libcni(node, "check", "cbr0", p, cid="c0", capability_args=shaping)  # Go bandwidth panics without
    drivers.libcni(node, "del", "cbr0", p, cid="c0", capability_args=shaping)
    assert node_leftovers(node) == CLEAN


def test_external_delegate_through_cni_path(node: Any, pod: Any) -> None:
    """A delegate type we do not run in-process is exec'd from CNI_PATH (here Debian's Go bridge)."""
    flannel_node(node, SHIPPED)
    node.run(["cp", "/usr/lib/cni/bridge", "/opt/cni/bin/gobridge"])
    conf = _conf("1.0.0", delegate={"type": "gobridge", "isGateway": True, "hairpinMode": True})
    p = pod()
    add = run_plugin("flannel", "ADD", conf, node=node, netns=p.path, container_id="c0")
    assert add.rc == 0, add
    assert add.json["ips"][0]["address"] == "10.244.1.2/24"
    assert json.loads(node.read_file("/var/lib/cni/flannel/c0"))["type"] == "gobridge"
    assert addresses(node, "cni0") == ["10.244.1.1/24"]
    assert run_plugin("flannel", "DEL", conf, node=node, netns=p.path, container_id="c0").rc == 0
    assert node_leftovers(node) == CLEAN


def test_bridge_keeping_an_old_subnet_is_explained(node: Any, pod: Any) -> None:
    flannel_node(node, SHIPPED)
    node.run(["ip", "link", "add", "cni0", "type", "bridge"])
    node.run(["ip", "addr", "add", "10.244.9.1/24", "dev", "cni0"])
    add = run_plugin("flannel", "ADD", _conf("1.0.0"), node=node, netns=pod().path, container_id="c0")
    assert add.rc == 1
    assert "already has an IP address different from" in add.json["msg"]
    assert "10.244.1.0/24" in add.json["details"] and "ip link delete cni0" in add.json["details"]
    left = node_leftovers(node)
    assert left["saved"] == [] and left["held"] == [] and left["veths"] == []
