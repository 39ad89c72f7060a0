"""flanneld --kube-subnet-mgr end to end: the frozen daemon on namespace nodes, configured as the
seed's DaemonSet (tests/integration/kube_cluster.py), against the test API server.
"""
from __future__ import annotations

import json
import threading
import time

import pytest

from tests.harness import drivers
from tests.integration.kube_cluster import P, KubeCluster, ping_ttl, subnet_env, vtep_mac, wait_for
from tests.integration.test_daemon_backends import vtep_entries

pytestmark = pytest.mark.integration

CIDRS = {"n1": ["10.244.0.0/24"], "n2": ["10.244.1.0/24"], "n3": ["10.244.2.0/24"]}


def expected(c: KubeCluster, me: str, names) -> dict:
    """flannel.1's entries on `me` for the peers `names` (read from their Node annotations)."""
    neigh, fdb, routes = [], [], []
    for name in names:
        if name == me:
            continue
        a = c.annotations(name)
        mac, ip = json.loads(a["backend-data"])["VtepMAC"], a["public-ip"]
        net = c.api.get(name)["spec"]["podCIDR"]
        gw = net.split("/")[0]
        neigh.append((gw, mac))
        fdb.append((mac, ip))
        routes.append((net, gw, True))
    return {"neigh": sorted(neigh), "fdb": sorted(fdb), "routes": sorted(routes)}


def converged(c: KubeCluster, me: str, names) -> bool:
    return vtep_entries(c.nodes[me]) == expected(c, me, names)


@pytest.fixture
def cluster(lab, make_node):
    c = KubeCluster(lab, make_node, ["n1", "n2", "n3"], CIDRS)
    for name in c.nodes:
        c.start(name)
    for name in c.nodes:
        c.wait_ready(name)
    return c


def test_three_nodes_as_the_daemonset(cluster):
    c = cluster
    for i, name in enumerate(["n1", "n2", "n3"]):
        env = subnet_env(c.nodes[name])
        assert env == {"FLANNEL_NETWORK": "10.244.0.0/16", "FLANNEL_SUBNET": f"10.244.{i}.1/24",
                       "FLANNEL_MTU": "1450", "FLANNEL_IPMASQ": "true"}
        a = c.annotations(name)
        assert a == {"backend-type": "vxlan", "kube-subnet-manager": "true",
                     "public-ip": c.nodes[name].underlay_ip,
                     "backend-data": json.dumps({"VNI": 1, "VtepMAC": vtep_mac(c.nodes[name])}, separators=(",", ":"))}
    for name in c.nodes:
        def conditions():
            got = {x["type"]: x for x in c.api.get(name)["status"]["conditions"]}
            return got if "NetworkUnavailable" in got else None
        conds = wait_for(f"NetworkUnavailable on {name}", conditions, timeout=10)  # set right after ready
        x = conds["NetworkUnavailable"]
        assert (x["status"], x["reason"], x["message"]) == ("False", "FlannelIsUp", "Flannel is running on this node")
        assert conds["Ready"]["status"] == "True"
    for name in c.nodes:
        wait_for(f"{name}'s flannel.1 peers", lambda: converged(c, name, c.nodes), timeout=15)
    pods = {}
    for name, node in c.nodes.items():
        pod = node.add_pod("p1")
        result = drivers.libcni(node, "add", "cbr0", pod, cid=f"{name}-p1")
        pods[name] = (pod, result["ips"][0]["address"].split("/")[0])
    for a, (pa, _) in pods.items():
        for b, (_, ip) in pods.items():
            if a != b:
                assert ping_ttl(pa, ip) == 62, f"{a} -> {b} ({ip})"


def sigkill_and_restart_keeps_vtep_mac_and_routes(c: KubeCluster, names, live) -> None:
    """n1's daemon SIGKILLed and restarted: same VtepMAC, its routes never gone meanwhile; `names`
    are the peers' Node objects, `live` the nodes with a daemon."""
    mac = vtep_mac(c.nodes["n1"])
    before = vtep_entries(c.nodes["n1"])
    seen, stop = [], threading.Event()

    def watch_routes():
        while not stop.is_set():
            seen.append(vtep_entries(c.nodes["n1"])["routes"])
            time.sleep(0.05)

    t = threading.Thread(target=watch_routes)
    t.start()
    try:
        assert c.daemons["n1"].kill() == -9
        c.start("n1")
        c.wait_ready("n1")
        time.sleep(2)
    finally:
        stop.set()
        t.join()
    assert vtep_mac(c.nodes["n1"]) == mac
    assert json.loads(c.annotations("n1")["backend-data"])["VtepMAC"] == mac
    assert all(r == before["routes"] for r in seen), "a route went missing during the restart"
    assert vtep_entries(c.nodes["n1"]) == before
    for name in live:
        assert converged(c, name, names)
    # killed again and its flannel.1 is gone too: the VtepMAC recorded on the Node is reused,
    # so the peers' entries stay right
    c.daemons["n1"].kill()
    c.nodes["n1"].run(["ip", "link", "del", "flannel.1"])
    c.start("n1")
    c.wait_ready("n1")
    assert vtep_mac(c.nodes["n1"]) == mac
    for name in live:
        wait_for(f"{name} converged", lambda: converged(c, name, names), timeout=15)


def test_peer_changes_deletes_api_restarts_and_daemon_restarts(cluster):
    c = cluster
    names = ["n1", "n2", "n3"]
    for name in names:
        wait_for(f"{name} converged", lambda: converged(c, name, names), timeout=15)
    # n3's node object is deleted: its entries leave n1 and n2 within seconds
    c.daemons["n3"].kill()
    c.api.delete("n3")
    names = ["n1", "n2"]
    for name in names:
        wait_for(f"n3 gone from {name}", lambda: converged(c, name, names), timeout=5)
    # a peer that is only a Node object (another flannel writes it): its VtepMAC and public IP change
    c.api.add_node("v1", pod_cidrs=["10.244.7.0/24"], annotations={
        P + "kube-subnet-manager": "true", P + "backend-type": "vxlan", P + "public-ip": "198.18.0.77",
        P + "backend-data": '{"VNI":1,"VtepMAC":"0a:00:00:00:07:01"}'})
    names = ["n1", "n2", "v1"]
    for name in ("n1", "n2"):
        wait_for(f"v1 on {name}", lambda: converged(c, name, names), timeout=5)
    c.api.patch("v1", {"metadata": {"annotations": {P + "backend-data": '{"VNI":1,"VtepMAC":"0a:00:00:00:07:02"}'}}}, "merge")
    for name in ("n1", "n2"):
        wait_for(f"v1's new VtepMAC on {name}", lambda: converged(c, name, names), timeout=5)
    c.api.patch("v1", {"metadata": {"annotations": {P + "public-ip": "198.18.0.78"}}}, "merge")
    for name in ("n1", "n2"):
        wait_for(f"v1's new public IP on {name}", lambda: converged(c, name, names), timeout=5)
    # API server down (watches dropped); meanwhile v1 goes, v2 comes; it returns with its
    # history gone and the resourceVersion far ahead: the daemons re-list and miss nothing
    c.api.stop()
    c.api.delete("v1")
    c.api.add_node("v2", pod_cidrs=["10.244.8.0/24"], annotations={
        P + "kube-subnet-manager": "true", P + "backend-type": "vxlan", P + "public-ip": "198.18.0.79",
        P + "backend-data": '{"VNI":1,"VtepMAC":"0a:00:00:00:08:01"}'})
    c.api.jump(100000)
    c.api.compact()
    time.sleep(1.5)
    c.api.start()
    names = ["n1", "n2", "v2"]
    for name in ("n1", "n2"):
        wait_for(f"{name} after the API restart", lambda: converged(c, name, names), timeout=40)
    for name in ("n1", "n2"):
        log = c.daemons[name].log()
        assert c.daemons[name].proc.poll() is None, log
        assert "410" in log and "listing again" in log, log  # it took the re-list path
    sigkill_and_restart_keeps_vtep_mac_and_routes(c, names, live=["n1", "n2"])


# --- one node: waiting for a podCIDR, bad input ----------------------------------------------

def no_traceback(log: str) -> None:
    assert "Traceback" not in log, log


def test_waits_for_pod_cidr_then_comes_up(lab, make_node):
    c = KubeCluster(lab, make_node, ["n1"], {"n1": None})
    d = c.start("n1")
    wait_for("the podCIDR wait message", lambda: "has no podCIDR yet" in d.log(), timeout=15)
    time.sleep(1.5)
    assert not c.nodes["n1"].exists("/run/flannel/subnet.env")
    assert d.log().count("has no podCIDR yet") == 1  # repeated every 30 s, not per poll
    c.api.patch("n1", {"spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]}}, "strategic")
    env = c.wait_ready("n1", timeout=10)
    assert env["FLANNEL_SUBNET"] == "10.244.0.1/24"
    no_traceback(d.log())


# (more variants, without a daemon: tests/integration/test_kube_manager.py::test_bad_net_conf)
BAD_NET_CONF = [
    ("{", "net-conf.json"),
    ('{"Network": "10.244.0.0/16", "Backend": {"Type": "nope"}}', "nope"),
    ('{"Network": "10.99.0.0/16", "Backend": {"Type": "vxlan"}}', "outside net-conf.json Network=10.99.0.0/16"),
]


def test_bad_input_exits_with_one_clear_line(lab, make_node):
    c = KubeCluster(lab, make_node, ["n1"], {"n1": ["10.244.0.0/24"]})
    node = c.nodes["n1"]

    def failed(d, match):
        assert d.wait_exit() == 1, d.log()
        log = d.log()
        no_traceback(log)
        assert match in log, log
        assert not node.exists("/run/flannel/subnet.env"), log
        assert not c.annotations("n1"), "annotations written although the daemon failed"
        return log

    for text, match in BAD_NET_CONF:
        node.write_file("/etc/kube-flannel/net-conf.json", text)
        failed(c.start("n1"), match)
    node.write_file("/etc/kube-flannel/net-conf.json", c.net_conf)
    # no API server at that address: retried, then a clear error
    unreachable = c.api.url.replace(":6443", ":6444")
    log = failed(c.start("n1", f"--kube-api-url={unreachable}", "--startup-timeout=3"), "unreachable")
    assert "retrying" in log
    # RBAC without nodes/status patch
    c.api.forbid("patch", "nodes/status")
    failed(c.start("n1"), "403 Forbidden")
    c.api.forbidden.clear()
    # a peer with malformed annotations: one log line, skipped; the daemon runs on
    c.api.add_node("bad", pod_cidrs=["10.244.5.0/24"], annotations={
        P + "kube-subnet-manager": "true", P + "backend-type": "vxlan", P + "public-ip": "not-an-ip",
        P + "backend-data": '{"VNI":1,"VtepMAC":"0a:00:00:00:05:01"}'})
    d = c.start("n1")
    c.wait_ready("n1")
    c.api.patch("bad", {"metadata": {"labels": {"touched": "1"}}}, "merge")
    wait_for("the skipped peer's log line", lambda: "'bad'" in d.log(), timeout=10)
    time.sleep(1)
    assert d.proc.poll() is None, d.log()
    assert [l for l in d.log().splitlines() if "'bad'" in l and "public-ip" in l].__len__() == 1, d.log()
    assert vtep_entries(node)["fdb"] == []
    no_traceback(d.log())


def test_dual_stack(lab, make_node):
    conf = json.dumps({"Network": "10.244.0.0/16", "EnableIPv6": True, "IPv6Network": "fd00:10:244::/56",
                       "Backend": {"Type": "vxlan"}})
    cidrs = {"n1": ["10.244.0.0/24", "fd00:10:244::/64"], "n2": ["10.244.1.0/24", "fd00:10:244:1::/64"]}
    c = KubeCluster(lab, make_node, ["n1", "n2"], cidrs, net_conf=conf, ipv6=True)
    for name in c.nodes:
        c.start(name)
    for name in c.nodes:
        env = c.wait_ready(name)
        assert env["FLANNEL_IPV6_SUBNET"] == cidrs[name][1].replace("::/64", "::1/64")
        assert env["FLANNEL_IPV6_NETWORK"] == "fd00:10:244::/56"
    a = c.annotations("n2")
    assert a["public-ipv6"] == "2001:db8::2"
    assert json.loads(a["backend-v6-data"])["VtepMAC"] == vtep_mac(c.nodes["n2"], "flannel-v6.1")

    def v6_peer(name, other):
        return wait_for(f"{name}'s IPv6 peer", lambda: vtep_entries(c.nodes[name], "flannel-v6.1")["routes"] == [
            (cidrs[other][1], cidrs[other][1].split("/")[0], True)], timeout=15)
    v6_peer("n1", "n2")
    v6_peer("n2", "n1")
