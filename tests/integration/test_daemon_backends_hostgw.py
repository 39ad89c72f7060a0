"""The host-gw backend on three simulated nodes: pods routed over the underlay without
encapsulation, peer removal, stale routes at startup, a peer off the L2 network refused."""
from __future__ import annotations

import json
from typing import List, Tuple

from tests.harness.state import link
from tests.integration.test_daemon_backends import Cluster

HOSTGW = {"Type": "host-gw"}


def cluster_routes(node) -> List[Tuple[str, str, str]]:
    """Routes inside the cluster Network through something other than cni0."""
    routes = json.loads(node.run(["ip", "-j", "route", "show", "root", "10.244.0.0/16"]).stdout)
    return sorted((r["dst"], r.get("gateway", ""), r["dev"]) for r in routes if r["dev"] != "cni0")


def test_host_gw_pods_reach_every_other_node_via_peer_ips(make_node):
    c = Cluster(make_node, HOSTGW)
    c.add_pods()
    for m in c.members:
        assert cluster_routes(m.node) == sorted((f"10.244.{o.n}.0/24", o.public, "eth0")
                                                for o in c.members if o is not m)
        assert m.data == {"BackendType": "host-gw"}
        assert link(m.node, "flannel.1") is None
    pings = c.cross_pings()
    assert len(pings) == 6 and all(pings.values()), pings
    for m in c.members:
        assert m.proc.ok("reconcile", peers=c.peers_of(m))["plan"] == {"delete": [], "add": []}


def test_host_gw_removed_peer_loses_its_route_and_its_pods(make_node):
    c = Cluster(make_node, HOSTGW)
    c.add_pods()
    n1, n2, n3 = c.members
    n1.proc.ok("handle", events=[{"type": "removed", "lease": n3.lease("host-gw")}])
    assert cluster_routes(n1.node) == [("10.244.2.0/24", n2.public, "eth0")]
    p1, p2, p3 = (m.pods[0] for m in c.members)
    assert not p1[0].ping(p3[1][0])
    assert p1[0].ping(p2[1][0]) and p2[0].ping(p3[1][0])


def plant_stale_routes(c: Cluster) -> None:
    n = c.members[0].node
    n.run(["ip", "route", "add", "10.244.9.0/24", "via", "198.18.0.9", "dev", "eth0"])
    n.run(["ip", "route", "add", "10.244.2.0/24", "via", "198.18.0.22", "dev", "eth0"])  # a moved peer
    n.run(["ip", "route", "add", "192.0.2.0/24", "via", "198.18.0.254", "dev", "eth0"])  # not the cluster's


def test_host_gw_reconcile_at_startup_removes_stale_cluster_routes(make_node):
    c = Cluster(make_node, HOSTGW, before_start=plant_stale_routes)
    n1, n2, n3 = c.members
    assert cluster_routes(n1.node) == [("10.244.2.0/24", n2.public, "eth0"), ("10.244.3.0/24", n3.public, "eth0")]
    assert "192.0.2.0/24 via 198.18.0.254" in n1.node.run(["ip", "route"]).stdout
    c.add_pods()
    assert all(c.cross_pings().values())


def test_host_gw_refuses_a_peer_off_the_l2_network_naming_it(make_node):
    c = Cluster(make_node, HOSTGW, count=2)
    n1, n2 = c.members
    far = {"Subnet": "10.244.7.0/24", "PublicIP": "192.0.2.50", "BackendType": "host-gw"}
    reply = n1.proc.call("reconcile", peers=[n2.lease("host-gw"), far])
    assert not reply["ok"] and reply["error"] == "PeerError"
    assert reply["peers"] == ["10.244.7.0/24 (192.0.2.50)"]
    assert "192.0.2.50 is not on a network directly connected to eth0" in reply["msg"]
    assert cluster_routes(n1.node) == [("10.244.2.0/24", n2.public, "eth0")]
