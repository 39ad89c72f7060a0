"""One backend mode of the walkthrough: bring it up as the seed does, then show what the seed shows.

Bring-up: net-conf in etcd (`etcdctl put /coreos.com/network/config`), flanneld started — or,
for the second and later modes, restarted on every node (the seed's `rollout restart ds`) — and
the pods re-created (the seed's `rollout restart deploy`).  Then, on node1 (pods a and b; pod c is
on node2): subnet.env, the bridge, the backend's device, the routes, a same-node ping with its
captures, a cross-node ping with its captures, the hostPort and iperf3.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from demo.cluster import CONTAINER_PORT, HOST_PORT, HOSTPORT_POD, NETWORK, Cluster, wait_until
from demo.observe import Capture, Observer
from demo.progress import Progress
from demo.transcript import subnet_env

MODES = ("vxlan", "host-gw", "udp")
# What the seed document observed (reply TTLs of its pings; what it saw on the wire).
SEED = {
    "vxlan": {"same": "64", "cross": "62", "wire": "UDP 8472, OTV/VXLAN instance 1, inner ICMP"},
    "host-gw": {"same": "-", "cross": "61", "wire": "ICMP between pod addresses on eth0"},
    "udp": {"same": "-", "cross": "60", "wire": "(not captured on eth0 in the seed)"},
}
DEVICE = {"vxlan": "flannel.1", "udp": "flannel0", "host-gw": None}


@dataclass
class ModeResult:
    mode: str
    status: str = "ok"           # ok | failed: ... | unavailable: ...
    same_ttl: Optional[int] = None
    cross_ttl: Optional[int] = None
    wire: str = ""
    gbps: Optional[float] = None
    hostport: str = ""
    by_hand: int = 0             # routes of the previous backend the demo had to remove itself


def subnet_of(env: Dict[str, str]) -> ipaddress.IPv4Network:
    return ipaddress.ip_interface(env["FLANNEL_SUBNET"]).network


def expected_routes(mode: str, cluster: Cluster, envs: Dict[str, Dict[str, str]], node: str) -> List[str]:
    """Routes node must have in `mode` (as `ip route` prints them), from the nodes' subnet.env."""
    if mode == "udp":
        return [f"{NETWORK} dev flannel0"]
    routes = []
    for peer, env in envs.items():
        if peer == node:
            continue
        net = subnet_of(env)
        if mode == "vxlan":
            routes.append(f"{net} via {net.network_address} dev flannel.1 onlink")
        else:
            routes.append(f"{net} via {cluster.nodes[peer].underlay_ip} dev eth0")
    return routes


def stale_routes(mode: str, routes: str) -> List[str]:
    """Routes to pod subnets that belong to another backend (they would shadow this one's)."""
    stale = []
    for line in routes.splitlines():
        dst = line.split()[0] if line else ""
        if dst in ("default", NETWORK) or "/" not in dst or " dev cni0 " in f" {line} ":
            continue
        if not ipaddress.ip_network(dst).subnet_of(ipaddress.ip_network(NETWORK)):
            continue
        owner = "flannel.1" if "dev flannel.1" in line else "eth0" if "dev eth0" in line else "?"
        if {"vxlan": "flannel.1", "host-gw": "eth0", "udp": None}[mode] != owner:
            stale.append(line)
    return stale


class Walkthrough:
    def __init__(self, cluster: Cluster, progress: Progress) -> None:
        self.c = cluster
        self.p = progress
        self.obs = Observer(progress)
        self.started = False
        self.by_hand = 0

    def bring_up(self, mode: str) -> None:
        c, p = self.c, self.p
        with p.step(f"net-conf.json in etcd: Backend.Type {mode}"):
            c.put_config(mode)
        nodes = list(c.nodes.values())
        if self.started:
            with p.step("flanneld restarted on every node (the seed: kubectl rollout restart ds kube-flannel-ds)"):
                for node in nodes:
                    c.stop_flanneld(node)
                for node in nodes:
                    c.start_flanneld(node)
        else:
            with p.step("flanneld on every node"):
                for node in nodes:
                    c.start_flanneld(node)
        self.started = True
        with p.step("flanneld ready on every node (/readyz)"):
            for node in nodes:
                c.wait_ready(node)
        with p.step("every node has its peers' routes"):
            envs = {n.name: subnet_env(n.read_file("/run/flannel/subnet.env")) for n in nodes}
            for node in nodes:
                want = expected_routes(mode, c, envs, node.name)
                wait_until(lambda: all(r in node.run(["ip", "-4", "route"]).stdout for r in want), 20,
                           f"{node.name}: routes {want}")
            c.check_running()
        self.remove_leftovers(mode)
        c.etcdctl("get", "--prefix", "/coreos.com/network/subnets")
        with p.step("pods re-created (the seed: kubectl rollout restart deploy)" if c.pods else
                    "pods created through containerd's go-cni (conflist cbr0: flannel + portmap)"):
            c.delete_pods()
            c.create_pods()

    def remove_leftovers(self, mode: str) -> None:
        """Routes of the previous backend that the restarted flanneld left in place, removed by hand.

        Upstream leaves them too (the seed's nodes had restarted: its pods show RESTARTS 1), and
        the more specific /24s would shadow udp's Network route.  Shown as the operator's step it
        is, never silently; nothing happens when the daemon cleaned up itself."""
        left = {n: stale_routes(mode, n.run(["ip", "-4", "route"]).stdout) for n in self.c.nodes.values()}
        self.by_hand = sum(map(len, left.values()))
        if not self.by_hand:
            return
        self.p.note(f"flanneld ({mode}) left routes of the previous backend in place; they would shadow "
                    f"this backend's, so they are removed by hand:")
        with self.p.step("by hand: routes the previous backend left behind removed"):
            for node, routes in left.items():
                for route in routes:
                    self.obs.show(node, ["ip", "route", "del", *route.split()])

    def observe(self, mode: str) -> ModeResult:
        c, p, obs = self.c, self.p, self.obs
        res = ModeResult(mode, by_hand=self.by_hand)
        n1, n2, n3 = (c.nodes[f"node{i}"] for i in (1, 2, 3))
        a, b, cc = c.pods["a"], c.pods["b"], c.pods["c"]
        ip_b, ip_c = c.pod_ips["b"], c.pod_ips["c"]
        dev = DEVICE[mode]

        p.section(f"{mode}: node1's view (pods a {c.pod_ips['a']}, b {ip_b}; pod c {ip_c} is on node2)")
        obs.show(n1, ["cat", "/run/flannel/subnet.env"])
        obs.show(n1, ["bridge", "link", "show"])
        obs.show(n1, ["ip", "-d", "link", "show", "cni0"])
        if dev:
            obs.show(n1, ["ip", "-d", "link", "show", dev])
        if mode == "udp":
            obs.show(n1, ["ip", "addr", "show", "flannel0"])
        routes = obs.show(n1, ["ip", "r"])
        stale = stale_routes(mode, routes)
        p.check(not stale, f"no route of another backend left on node1{': ' + '; '.join(stale) if stale else ''}")

        p.section(f"{mode}: same node, pod a -> pod b (through cni0 only)")
        silent = [Capture(n1, dev, "icmp", 1)] if dev else []
        silent.append(Capture(n1, "eth0", "udp port 8472" if mode == "vxlan" else
                              "udp port 8285" if mode == "udp" else "icmp", 1))
        same = {}
        obs.traffic_seen([Capture(n1, "cni0", "icmp", 4)], silent,
                         lambda: same.setdefault("r", obs.ping(a, ip_b)))
        res.same_ttl = same["r"].ttls[0]

        p.section(f"{mode}: other node, pod a -> pod c")
        caps = self.cross_captures(mode, n1, ip_c)
        cross = {}
        obs.traffic_seen(caps, [], lambda: cross.setdefault("r", obs.ping(a, ip_c)))
        res.cross_ttl = cross["r"].ttls[0]
        res.wire = {"vxlan": "UDP 8472, VNI 1, inner ICMP", "host-gw": "ICMP between pod addresses",
                    "udp": "UDP 8285, inner ICMP"}[mode]

        p.section(f"{mode}: hostPort {HOST_PORT} on node2 (portmap) -> pod c:{CONTAINER_PORT}, from node3")
        res.hostport = obs.hostport(c.pods[HOSTPORT_POD], CONTAINER_PORT, n3, n2.underlay_ip, HOST_PORT)

        p.section(f"{mode}: throughput pod a -> pod c (iperf3, 3 s)")
        res.gbps = obs.iperf3(a, cc, ip_c) / 1e9
        c.check_running()
        return res

    def cross_captures(self, mode: str, n1, ip_c: str) -> List[Capture]:
        if mode == "vxlan":
            # The seed's own filter: byte 39 of the UDP datagram is the inner IP's protocol (1 = ICMP).
            return [Capture(n1, "flannel.1", "icmp", 4),
                    Capture(n1, "eth0", "udp port 8472 and udp[39]=1", 2, verbose=True)]
        if mode == "host-gw":
            return [Capture(n1, "eth0", f"host {ip_c}", 4)]
        return [Capture(n1, "flannel0", "icmp", 4), Capture(n1, "eth0", "udp port 8285", 4)]


def run_mode(walk: Walkthrough, mode: str, unavailable: Callable[[str], Optional[str]]) -> ModeResult:
    p = walk.p
    p.section(f"mode {mode}: the seed's {mode} section, live")
    why = unavailable(mode)
    if why:
        p.unavailable(f"mode {mode}", why)
        return ModeResult(mode, status=f"unavailable: {why}")
    walk.bring_up(mode)
    return walk.observe(mode)
