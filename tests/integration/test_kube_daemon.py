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


def test_peer_changes_deletes_and_api_restarts(cluster):
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


def test_sigkill_and_restart_keeps_vtep_mac_and_routes(cluster):
    c = cluster
    names = ["n1", "n2", "n3"]
    for name in names:
        wait_for(f"{name} converged", lambda: converged(c, name, names), timeout=15)
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
    for name in ("n2", "n3"):
        assert converged(c, name, names)
