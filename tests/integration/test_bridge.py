"""bridge in node + pod namespaces: exec'd like a runtime, through libcni and go-cni."""
from __future__ import annotations

import json
from typing import List

import pytest

from tests.harness import drivers
from tests.harness.exec import run_plugin

NET = "cbr"
SUBNET = "10.244.1.0/24"


def conf(**over) -> dict:
    c = {"cniVersion": "1.0.0", "name": NET, "type": "bridge", "bridge": "cni0",
         "isGateway": True, "mtu": 1450, "hairpinMode": True, "ipMasq": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET}]],
                  "routes": [{"dst": "10.244.0.0/16"}]}}
    c.update(over)
    return c


def add(node, pod, c=None, cid=None, **kw):
    return run_plugin("bridge", "ADD", c or conf(), netns=pod.path, node=node,
                      container_id=cid or pod.name, **kw)


def links(where) -> List[dict]:
    return json.loads(where.run(["ip", "-j", "-d", "link", "show"]).stdout)


def vethes(node) -> List[str]:
    return sorted(l["ifname"] for l in links(node) if l["ifname"].startswith("veth"))


def ip_files(node) -> List[str]:
    out = node.run(["sh", "-c", f"ls /var/lib/cni/networks/{NET} 2>/dev/null || true"]).stdout.split()
    return sorted(f for f in out if f[0].isdigit() or ":" in f)


def masq_rules(node) -> List[str]:
    out = node.run(["iptables-save", "-t", "nat"]).stdout
    return [l for l in out.splitlines() if "CNI-" in l]


def test_three_pods_on_one_bridge(node, pod):
    pods = [pod() for _ in range(3)]
    results = []
    for p in pods:
        r = add(node, p)
        assert r.rc == 0, r
        results.append(r.json)
    first = results[0]
    assert [i["name"] for i in first["interfaces"]][0] == "cni0"
    host, cont = first["interfaces"][1], first["interfaces"][2]
    assert host["name"].startswith("veth") and len(host["name"]) == 12 and "sandbox" not in host
    assert cont == {"name": "eth0", "mac": cont["mac"], "sandbox": pods[0].path}
    assert first["ips"] == [{"address": "10.244.1.2/24", "gateway": "10.244.1.1", "interface": 2}]
    assert first["routes"] == [{"dst": "10.244.0.0/16"}]
    # gateway on cni0, MTU 1450 everywhere, hairpin on every port
    br = json.loads(node.run(["ip", "-j", "addr", "show", "cni0"]).stdout)[0]
    assert [(a["local"], a["prefixlen"]) for a in br["addr_info"] if a["family"] == "inet"] == [("10.244.1.1", 24)]
    assert br["mtu"] == 1450
    ports = [l for l in links(node) if l.get("master") == "cni0"]
    assert len(ports) == 3
    for l in ports:
        assert l["mtu"] == 1450
        assert l["linkinfo"]["info_slave_data"]["hairpin"] is True
    for p in pods:
        eth0 = [l for l in links(p) if l["ifname"] == "eth0"][0]
        assert eth0["mtu"] == 1450 and "UP" in eth0["flags"]
        assert p.run(["sysctl", "-n", "net.ipv4.conf.eth0.arp_notify"]).stdout.strip() == "1"
    assert node.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"
    # everyone reaches everyone, and the gateway
    addrs = [r["ips"][0]["address"].split("/")[0] for r in results]
    for p, own in zip(pods, addrs):  # (own address: needs lo, which the loopback plugin brings up)
        for a in [a for a in addrs if a != own] + ["10.244.1.1"]:
            assert p.ping(a), (p, a)
    # masquerade chains: one per pod, reference layout
    rules = masq_rules(node)
    assert sum(1 for l in rules if l.startswith("-A POSTROUTING")) == 3
    assert any(f'-A POSTROUTING -s 10.244.1.2/32 -m comment --comment "name: \\"{NET}\\" id: \\"{pods[0].name}\\""'
               in l for l in rules), rules


def test_add_check_del_del(node, pod):
    p = pod()
    before = vethes(node)
    r = add(node, p)
    assert r.rc == 0, r
    c = dict(conf(), prevResult=r.json)
    chk = run_plugin("bridge", "CHECK", c, netns=p.path, node=node, container_id=p.name)
    assert chk.rc == 0, chk
    for _ in range(2):
        d = run_plugin("bridge", "DEL", c, netns=p.path, node=node, container_id=p.name)
        assert d.rc == 0 and d.stdout == "", d
    assert vethes(node) == before
    assert ip_files(node) == []
    assert masq_rules(node) == []
    assert "eth0" not in [l["ifname"] for l in links(p)]
    chk = run_plugin("bridge", "CHECK", c, netns=p.path, node=node, container_id=p.name)
    assert chk.rc == 1, chk


@pytest.mark.parametrize("how", ["empty", "deleted"])
def test_del_without_netns_leaves_no_rules(node, pod, how):
    p = pod()
    assert add(node, p).rc == 0
    assert masq_rules(node)
    d = run_plugin("bridge", "DEL", conf(), netns=p.netns_for_del(how), node=node, container_id=p.name)
    assert d.rc == 0, d
    assert masq_rules(node) == []
    assert ip_files(node) == []


def test_exhausted_range_rolls_back(node, pod):
    c = conf()
    c["ipam"]["ranges"] = [[{"subnet": SUBNET, "rangeStart": "10.244.1.2", "rangeEnd": "10.244.1.2"}]]
    p1, p2 = pod(), pod()
    assert add(node, p1, c).rc == 0
    before, rules, files = vethes(node), masq_rules(node), ip_files(node)
    r = add(node, p2, c)
    assert r.rc == 1 and "no IP addresses available" in r.json["msg"], r
    assert vethes(node) == before
    assert masq_rules(node) == rules and ip_files(node) == files
    assert "eth0" not in [l["ifname"] for l in links(p2)]


@pytest.mark.parametrize("step", ["bridge.veth", "bridge.ipam", "bridge.container", "bridge.masq", "bridge.done"])
def test_injected_failure_rolls_back(node, pod, step):
    p = pod()
    before = vethes(node)
    r = add(node, p, env_extra={"CNI_FLANNEL_FAIL_AT": step})
    assert r.rc == 1 and r.json["code"] == 190, r
    assert vethes(node) == before
    assert ip_files(node) == [] and masq_rules(node) == []
    assert "eth0" not in [l["ifname"] for l in links(p)]


@pytest.mark.parametrize("step", ["bridge.ipam", "bridge.masq"])
def test_sigkill_then_runtime_del_cleans_up(node, pod, step):
    p = pod()
    before = vethes(node)
    r = add(node, p, env_extra={"CNI_FLANNEL_CRASH_AT": step})
    assert r.killed, r
    d = run_plugin("bridge", "DEL", conf(), netns=p.path, node=node, container_id=p.name)
    assert d.rc == 0, d
    assert vethes(node) == before and ip_files(node) == [] and masq_rules(node) == []


def test_gateway_conflict_and_force_address(node, pod):
    node.run(["ip", "link", "add", "cni0", "type", "bridge"])
    node.run(["ip", "addr", "add", "10.99.0.1/24", "dev", "cni0"])
    p = pod()
    r = add(node, p)
    assert r.rc == 1, r
    assert r.json["msg"] == ('failed to set bridge addr: "cni0" already has an IP address different from '
                             "10.244.1.1/24")
    assert ip_files(node) == [] and masq_rules(node) == []
    r = add(node, p, conf(forceAddress=True))
    assert r.rc == 0, r
    br = json.loads(node.run(["ip", "-j", "addr", "show", "cni0"]).stdout)[0]
    assert [a["local"] for a in br["addr_info"] if a["family"] == "inet"] == ["10.244.1.1"]


def test_default_gateway_route(node, pod):
    p = pod()
    r = add(node, p, conf(isDefaultGateway=True, isGateway=False))
    assert r.rc == 0, r
    assert {"dst": "0.0.0.0/0", "gw": "10.244.1.1"} in r.json["routes"]
    routes = json.loads(p.run(["ip", "-j", "route", "show", "default"]).stdout)
    assert routes[0]["gateway"] == "10.244.1.1" and routes[0]["dev"] == "eth0"
    c = dict(conf(isDefaultGateway=True), prevResult=r.json)
    assert run_plugin("bridge", "CHECK", c, netns=p.path, node=node, container_id=p.name).rc == 0


def test_dual_stack(node, pod):
    c = conf(isDefaultGateway=True)
    c["ipam"] = {"type": "host-local", "ranges": [[{"subnet": SUBNET}], [{"subnet": "fd00:10:244:1::/64"}]]}
    pods = [pod(), pod()]
    results = [add(node, p, c) for p in pods]
    for r in results:
        assert r.rc == 0, r
    ips = results[0].json["ips"]
    assert [i["address"] for i in ips] == ["10.244.1.2/24", "fd00:10:244:1::2/64"]
    assert {r["dst"] for r in results[0].json["routes"]} == {"0.0.0.0/0", "::/0"}
    assert pods[0].ping(results[1].json["ips"][1]["address"].split("/")[0], timeout=5)
    assert pods[0].ping("fd00:10:244:1::1", timeout=5)
    for p, r in zip(pods, results):
        chk = run_plugin("bridge", "CHECK", dict(c, prevResult=r.json), netns=p.path, node=node, container_id=p.name)
        assert chk.rc == 0, chk
        assert run_plugin("bridge", "DEL", c, netns=p.path, node=node, container_id=p.name).rc == 0
    assert masq_rules(node) == [] and ip_files(node) == []


@pytest.mark.parametrize("driver", ["exec", "libcni", "gocni"])
def test_ipv6_only(node, pod, driver):
    c = conf(isDefaultGateway=True)
    c["ipam"] = {"type": "host-local", "ranges": [[{"subnet": "fd00:10:244:1::/64"}]]}
    pods = [pod(), pod()]
    if driver == "exec":
        addrs = [add(node, p, c).json["ips"][0]["address"] for p in pods]
    else:
        node.write_file("/etc/cni/net.d/10-cbr.conflist",
                        json.dumps({"cniVersion": "1.0.0", "name": NET, "plugins": [dict(c, cniVersion=None)]}))
        if driver == "libcni":
            addrs = [drivers.libcni(node, "add", NET, p, cid=p.name)["ips"][0]["address"] for p in pods]
        else:
            addrs = [drivers.gocni(node, "add", p, cid=p.name)["Interfaces"]["eth0"]["IPConfigs"][0]["IP"] + "/64"
                     for p in pods]
    assert addrs == ["fd00:10:244:1::2/64", "fd00:10:244:1::3/64"]
    gw = json.loads(node.run(["ip", "-6", "-j", "addr", "show", "cni0"]).stdout)[0]["addr_info"]
    assert "fd00:10:244:1::1" in [a["local"] for a in gw]
    route = json.loads(pods[0].run(["ip", "-6", "-j", "route", "show", "default"]).stdout)
    assert route and route[0]["gateway"] == "fd00:10:244:1::1"
    assert pods[0].ping(addrs[1].split("/")[0], timeout=5) and pods[1].ping("fd00:10:244:1::1", timeout=5)
    for p in pods:
        if driver == "exec":
            assert run_plugin("bridge", "DEL", c, netns=p.path, node=node, container_id=p.name).rc == 0
        elif driver == "libcni":
            drivers.libcni(node, "del", NET, p, cid=p.name)
        else:
            drivers.gocni(node, "del", p, cid=p.name)
    assert masq_rules(node) == [] and ip_files(node) == [] and vethes(node) == []


def test_existing_non_bridge_link_is_refused(node, pod):
    node.run(["ip", "link", "add", "cni0", "type", "veth", "peer", "name", "cni0peer"])
    p = pod()
    r = add(node, p)
    assert r.rc == 1 and r.json["code"] == 7, r
    assert r.json["msg"] == '"cni0" already exists but is not a bridge'
    assert vethes(node) == [] and ip_files(node) == []


def test_mac_precedence(node, pod):
    p = pod()
    c = conf(args={"cni": {"mac": "0a:58:00:00:00:02"}}, runtimeConfig={"mac": "0a:58:00:00:00:03"})
    r = add(node, p, c, cni_args="IgnoreUnknown=1;MAC=0a:58:00:00:00:01")
    assert r.rc == 0, r
    assert r.json["interfaces"][2]["mac"] == "0a:58:00:00:00:03"


def test_libcni_add_check_del_del(node, pod):
    p = pod()
    conflist = {"cniVersion": "1.0.0", "name": NET, "plugins": [{k: v for k, v in conf().items()
                                                                  if k not in ("cniVersion", "name")}]}
    node.write_file(f"/etc/cni/net.d/10-{NET}.conflist", json.dumps(conflist))
    r = drivers.libcni(node, "add", NET, p, cid="c1")
    assert r["ips"][0]["interface"] == 2 and r["interfaces"][2]["sandbox"] == p.path
    drivers.libcni(node, "check", NET, p, cid="c1")
    drivers.libcni(node, "del", NET, p, cid="c1")
    drivers.libcni(node, "del", NET, p, cid="c1")
    assert vethes(node) == [] and ip_files(node) == [] and masq_rules(node) == []


def test_gocni_add_del(node, pod):
    p = pod()
    conflist = {"cniVersion": "1.0.0", "name": NET, "plugins": [{k: v for k, v in conf().items()
                                                                  if k not in ("cniVersion", "name")}]}
    node.write_file(f"/etc/cni/net.d/10-{NET}.conflist", json.dumps(conflist))
    r = drivers.gocni(node, "add", p, cid="sb1")
    assert r["Interfaces"]["eth0"]["IPConfigs"][0]["IP"] == "10.244.1.2"
    assert r["Interfaces"]["eth0"]["Sandbox"] == p.path
    drivers.gocni(node, "del", p, cid="sb1")
    p.delete()
    drivers.gocni(node, "del", p, cid="sb1")
    assert vethes(node) == [] and ip_files(node) == [] and masq_rules(node) == []


def test_add_check_del_in_process_and_through_agent(node, pod, plugin_path):
    p = pod()
    r = add(node, p)
    assert r.rc == 0, r
    c = dict(conf(), prevResult=r.json)
    assert run_plugin("bridge", "CHECK", c, netns=p.path, node=node, container_id=p.name).rc == 0
    assert run_plugin("bridge", "DEL", c, netns=p.path, node=node, container_id=p.name).rc == 0
    assert vethes(node) == [] and ip_files(node) == [] and masq_rules(node) == []
