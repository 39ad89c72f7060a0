"""Three flannel nodes on the underlay, each with the daemon backend running in its namespace.

Each node gets the shipped conflist and a subnet.env written here (10.244.<i>.0/24, and
fd00:10:244:<i>::/64 when dual stack), pods made through libcni with the plugins under test,
and a ``python -m cni_flannel.daemon.backends`` process fed JSON lines (:class:`BackendProc`),
so the backend keeps its in-memory peer set between requests as the daemon would.
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from tests.harness import drivers
from tests.harness.netns import Node, Pod
from tests.harness.plugins import REPO_ROOT
from tests.integration.flannel_node import flannel_node

NETWORK, NETWORK6 = "10.244.0.0/16", "fd00:10:244::/56"


class BackendProc:
    """The backend driver running inside ``node``; ``call`` sends one request, returns the reply."""

    def __init__(self, node: Node, backend: Dict[str, Any], networks: Tuple[str, ...]) -> None:
        self.node = node
        self.log_path = f"{node.lab.run_dir}/{node.name}-backend.log"
        argv = [sys.executable, "-m", "cni_flannel.daemon.backends", "--backend", json.dumps(backend)]
        for net in networks:
            argv += ["--network", net]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO_ROOT)}
        self._log = open(self.log_path, "w")
        self.proc = node.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                               env=env, text=True)
        node.lab.add_finalizer(self.stop)

    def call(self, op: str, timeout: float = 30, **fields: Any) -> Dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"backend on {self.node.name} gave no answer to {op}:\n{self.log()}")
        return json.loads(line)

    def ok(self, op: str, **fields: Any) -> Dict[str, Any]:
        reply = self.call(op, **fields)
        assert reply["ok"], f"{op} on {self.node.name}: {reply}\n{self.log()}"
        return reply

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


class Member:
    def __init__(self, node: Node, n: int, dual: bool) -> None:
        self.node, self.n, self.dual = node, n, dual
        self.public6 = f"2001:db8::{n}" if dual else None
        self.data: Dict[str, Any] = {}
        self.proc: Optional[BackendProc] = None
        self.pods: List[Tuple[Pod, List[str]]] = []  # (pod, its IPs without prefix length)

    @property
    def public(self) -> str:
        assert self.node.underlay_ip
        return self.node.underlay_ip

    def lease(self, btype: str) -> Dict[str, Any]:
        d: Dict[str, Any] = {"Subnet": f"10.244.{self.n}.0/24", "PublicIP": self.public, "BackendType": btype}
        if self.dual:
            d.update({"IPv6Subnet": f"fd00:10:244:{self.n}::/64", "PublicIPv6": self.public6})
        d.update({k: v for k, v in self.data.items() if k != "BackendType"})
        return d


class Cluster:
    def __init__(self, make_node: Callable[..., Node], backend: Dict[str, Any], count: int = 3,
                 dual: bool = False, before_start: Optional[Callable[["Cluster"], None]] = None) -> None:
        self.backend = backend
        self.type = backend.get("Type", "vxlan")
        self.members: List[Member] = []
        mtu = 1500 - (70 if dual else 50) if self.type == "vxlan" else 1500
        for n in range(1, count + 1):
            node = make_node(f"n{n}", underlay=True)
            env = (f"FLANNEL_NETWORK={NETWORK}\nFLANNEL_SUBNET=10.244.{n}.1/24\nFLANNEL_MTU={mtu}\n"
                   "FLANNEL_IPMASQ=true\n")
            if dual:
                node.run(["ip", "addr", "add", f"2001:db8::{n}/64", "dev", "eth0", "nodad"])
                env += f"FLANNEL_IPV6_NETWORK={NETWORK6}\nFLANNEL_IPV6_SUBNET=fd00:10:244:{n}::1/64\n"
            flannel_node(node, subnet_env=env)
            self.members.append(Member(node, n, dual))
        if before_start:
            before_start(self)
        networks = (NETWORK, NETWORK6) if dual else (NETWORK,)
        for m in self.members:  # setup, then every node learns the others' leases
            m.proc = BackendProc(m.node, backend, networks)
            reply = m.proc.ok("setup", lease=m.lease(self.type))
            m.data = reply["data"]
        for m in self.members:
            m.proc.ok("reconcile", peers=self.peers_of(m))  # type: ignore[union-attr]

    def peers_of(self, m: Member) -> List[Dict[str, Any]]:
        return [o.lease(self.type) for o in self.members if o is not m]

    def add_pods(self, per_node: int = 1) -> None:
        for m in self.members:
            for i in range(per_node):
                pod = m.node.add_pod(f"p{i + 1}")
                result = drivers.libcni(m.node, "add", "cbr0", pod, cid=f"{m.node.name}-p{i + 1}")
                m.pods.append((pod, [ip["address"].split("/")[0] for ip in result["ips"]]))

    def settle_ipv6(self, deadline: float = 15.0) -> None:
        """Wait until no IPv6 address of the nodes and pods is still tentative (DAD): a
        tentative cni0 gateway address drops the pods' first packets."""
        end = time.monotonic() + deadline
        spaces = [m.node for m in self.members] + [p for m in self.members for p, _ in m.pods]
        while True:
            tentative = [ns for ns in spaces if ns.run(["ip", "-6", "addr", "show", "tentative"]).stdout.strip()]
            if not tentative:
                return
            if time.monotonic() > end:
                raise AssertionError(f"IPv6 addresses still tentative after {deadline}s in {tentative}")
            time.sleep(0.2)

    def cross_pings(self, family: int = 4) -> Dict[Tuple[str, str], bool]:
        """Every pod pings every pod on the other nodes: {(from, to): answered}."""
        if family == 6:
            self.settle_ipv6()
        out = {}
        for a in self.members:
            for b in self.members:
                if a is b:
                    continue
                for pa, _ in a.pods:
                    for pb, ips in b.pods:
                        ip = next(i for i in ips if (":" in i) == (family == 6))
                        out[(pa.netns, ip)] = pa.ping(ip)
        return out


def tx_packets(node: Node, dev: str) -> int:
    return json.loads(node.run(["ip", "-s", "-j", "link", "show", dev]).stdout)[0]["stats64"]["tx"]["packets"]


def link_info(node: Node, dev: str) -> Dict[str, Any]:
    return json.loads(node.run(["ip", "-d", "-j", "link", "show", dev]).stdout)[0]


def vtep_entries(node: Node, dev: str = "flannel.1") -> Dict[str, List[Tuple[str, ...]]]:
    """What the kernel holds on the VTEP: permanent neighbours, FDB entries, routes."""
    neigh = json.loads(node.run(["ip", "-j", "neigh", "show", "dev", dev, "nud", "permanent"]).stdout)
    fdb = json.loads(node.run(["bridge", "-j", "fdb", "show", "dev", dev]).stdout)
    family = "-6" if dev.startswith("flannel-v6") else "-4"
    routes = [r for r in json.loads(node.run(["ip", family, "-j", "route", "show", "dev", dev]).stdout)
              if r.get("protocol") != "kernel"]
    return {"neigh": sorted((n["dst"], n["lladdr"]) for n in neigh),
            "fdb": sorted((f["mac"], f.get("dst", "")) for f in fdb),
            "routes": sorted((r["dst"], r.get("gateway", ""), "onlink" in r.get("flags", []))
                             for r in routes)}


# --- vxlan --------------------------------------------------------------------------------------

VXLAN = {"Type": "vxlan", "VNI": 1}


def macs(c: Cluster) -> Dict[int, str]:
    return {m.n: m.data["BackendData"]["VtepMAC"] for m in c.members}


def expected_vtep(c: Cluster, m: Member) -> Dict[str, List[Tuple[str, ...]]]:
    mac = macs(c)
    others = [o for o in c.members if o is not m]
    return {"neigh": sorted((f"10.244.{o.n}.0", mac[o.n]) for o in others),
            "fdb": sorted((mac[o.n], o.public) for o in others),
            "routes": sorted((f"10.244.{o.n}.0/24", f"10.244.{o.n}.0", True) for o in others)}


def test_vxlan_pods_reach_every_other_node_through_flannel_1(make_node):
    c = Cluster(make_node, VXLAN)
    c.add_pods()
    for m in c.members:
        info = link_info(m.node, "flannel.1")
        vx = info["linkinfo"]["info_data"]
        assert (vx["id"], vx["local"], vx["port"], vx["learning"]) == (1, m.public, 8472, False)
        assert info["mtu"] == 1450 and "UP" in info["flags"]
        assert info["address"] == m.data["BackendData"]["VtepMAC"]
        assert vtep_entries(m.node) == expected_vtep(c, m)
    before = {m.n: tx_packets(m.node, "flannel.1") for m in c.members}
    pings = c.cross_pings()
    assert len(pings) == 6 and all(pings.values()), pings
    after = {m.n: tx_packets(m.node, "flannel.1") for m in c.members}
    assert all(after[n] >= before[n] + 4 for n in before), (before, after)  # 2 requests + 2 replies
    for m in c.members:  # the same state again changes nothing
        assert m.proc.ok("reconcile", peers=c.peers_of(m))["plan"] == {"delete": [], "add": []}
        assert vtep_entries(m.node) == expected_vtep(c, m)


def test_vxlan_removed_peer_loses_its_entries_and_its_pods(make_node):
    c = Cluster(make_node, VXLAN)
    c.add_pods()
    n1, n2, n3 = c.members
    plan = n1.proc.ok("handle", events=[{"type": "removed", "lease": n3.lease("vxlan")}])["plan"]
    assert len(plan["delete"]) == 3 and plan["add"] == []
    assert vtep_entries(n1.node) == {"neigh": [("10.244.2.0", macs(c)[2])], "fdb": [(macs(c)[2], n2.public)],
                                     "routes": [("10.244.2.0/24", "10.244.2.0", True)]}
    p1, p2, p3 = (m.pods[0] for m in c.members)
    assert not p1[0].ping(p3[1][0]), "node1 still reaches a removed peer's pod"
    assert p1[0].ping(p2[1][0]) and p2[0].ping(p3[1][0])
    n1.proc.ok("handle", events=[{"type": "added", "lease": n3.lease("vxlan")}])
    assert p1[0].ping(p3[1][0])


def plant_stale_vtep(c: Cluster) -> None:
    """Before node1's backend starts: a VTEP left by an earlier run with a gone peer's
    entries (10.244.9.0/24) and a live peer's entry with a stale VtepMAC."""
    n = c.members[0].node
    n.run(["ip", "link", "add", "flannel.1", "type", "vxlan", "id", "1", "local", c.members[0].public,
           "dstport", "8472", "nolearning", "dev", "eth0"])
    n.run(["ip", "link", "set", "flannel.1", "up"])
    for argv in (["ip", "neigh", "add", "10.244.9.0", "lladdr", "0a:58:0a:f4:09:00", "dev", "flannel.1", "nud", "permanent"],
                 ["bridge", "fdb", "add", "0a:58:0a:f4:09:00", "dev", "flannel.1", "dst", "198.18.0.9", "self", "permanent"],
                 ["ip", "route", "add", "10.244.9.0/24", "via", "10.244.9.0", "dev", "flannel.1", "onlink"],
                 ["ip", "neigh", "add", "10.244.2.0", "lladdr", "0a:58:0a:f4:99:99", "dev", "flannel.1", "nud", "permanent"],
                 ["ip", "route", "add", "10.244.8.0/24", "via", "198.18.0.8", "dev", "eth0"]):
        n.run(argv)


def test_vxlan_reconcile_at_startup_removes_stale_entries(make_node):
    c = Cluster(make_node, VXLAN, before_start=plant_stale_vtep)
    n1 = c.members[0]
    assert vtep_entries(n1.node) == expected_vtep(c, n1)
    routes = n1.node.run(["ip", "route"]).stdout
    assert "10.244.9.0" not in routes and "10.244.8.0" not in routes
    c.add_pods()
    pings = c.cross_pings()
    assert all(pings.values()), pings


def test_vxlan_recreated_vtep_gets_its_peers_back(make_node):
    c = Cluster(make_node, VXLAN)
    c.add_pods()
    n1 = c.members[0]
    mac = macs(c)[1]
    # Someone replaces flannel.1 with a device of the wrong port and learning: all entries gone.
    n1.node.run(["ip", "link", "del", "flannel.1"])
    n1.node.run(["ip", "link", "add", "flannel.1", "type", "vxlan", "id", "1", "local", n1.public,
                 "dstport", "4789", "learning", "dev", "eth0"])
    p1, p2 = c.members[0].pods[0], c.members[1].pods[0]
    assert not p1[0].ping(p2[1][0])
    plan = n1.proc.ok("reconcile")["plan"]
    assert len(plan["add"]) == 6
    vx = link_info(n1.node, "flannel.1")["linkinfo"]["info_data"]
    assert (vx["port"], vx["learning"]) == (8472, False)
    assert link_info(n1.node, "flannel.1")["address"] == mac  # peers' entries stay valid
    assert vtep_entries(n1.node) == expected_vtep(c, n1)
    pings = c.cross_pings()
    assert all(pings.values()), pings
    # And a VTEP deleted while running comes back with the next batch of events.
    n1.node.run(["ip", "link", "del", "flannel.1"])
    n1.proc.ok("handle", events=[])
    assert vtep_entries(n1.node) == expected_vtep(c, n1) and p1[0].ping(p2[1][0])


def test_vxlan_direct_routing_bypasses_the_vtep_on_one_l2_network(make_node):
    c = Cluster(make_node, {**VXLAN, "DirectRouting": True})
    c.add_pods()
    n1 = c.members[0]
    routes = json.loads(n1.node.run(["ip", "-j", "route", "show", "10.244.2.0/24"]).stdout)
    assert [(r["gateway"], r["dev"]) for r in routes] == [(c.members[1].public, "eth0")]
    before = tx_packets(n1.node, "flannel.1")
    pings = c.cross_pings()
    assert all(pings.values()), pings
    assert tx_packets(n1.node, "flannel.1") == before
    assert n1.proc.ok("reconcile")["plan"] == {"delete": [], "add": []}


def plant_stale_v6_route(c: Cluster) -> None:
    c.members[0].node.run(["ip", "-6", "route", "add", "fd00:10:244:9::/64", "via", "2001:db8::9", "dev", "eth0"])


def test_vxlan_dual_stack_uses_flannel_v6_with_its_own_overhead(make_node):
    c = Cluster(make_node, VXLAN, dual=True, before_start=plant_stale_v6_route)
    c.add_pods()
    n1 = c.members[0]
    assert "fd00:10:244:9::" not in n1.node.run(["ip", "-6", "route"]).stdout
    assert vtep_entries(n1.node, "flannel-v6.1")["routes"] == [
        ("fd00:10:244:2::/64", "fd00:10:244:2::", True), ("fd00:10:244:3::/64", "fd00:10:244:3::", True)]
    assert link_info(n1.node, "flannel.1")["mtu"] == 1450
    assert link_info(n1.node, "flannel-v6.1")["mtu"] == 1430
    assert link_info(n1.node, "flannel-v6.1")["linkinfo"]["info_data"]["local6"] == "2001:db8::1"
    before = tx_packets(n1.node, "flannel-v6.1")
    pings = c.cross_pings(family=6)
    assert len(pings) == 6 and all(pings.values()), pings
    assert tx_packets(n1.node, "flannel-v6.1") >= before + 4
    assert all(c.cross_pings(family=4).values())
    assert n1.proc.ok("reconcile")["plan"] == {"delete": [], "add": []}
