"""`flannel doctor` on nodes broken the way nodes break: cni0 with an old gateway, an underlay
MTU too small, br_netfilter or the VXLAN checksum fix missing, forwarding off, FORWARD DROP,
FLANNEL-POSTRTG flushed, rules in the wrong iptables, a peer's entries lost, a stale route to
a vanished node, a peer that does not answer.  Each must fail exactly its check, with the fix.

br_netfilter and the kernel release cannot be changed for one network namespace: those two
tests point doctor's --proc-root at a prepared copy of the files it reads (and nothing else
changes).
"""
from __future__ import annotations

import os
import shutil

from cni_flannel.firewall import IptablesFirewall
from cni_flannel.firewall import layouts as L
from tests.integration.doctor_lab import ETCD_URL, doctor, etcd_with_leases, make_cluster, node_runner


def test_cni0_keeps_the_gateway_of_an_old_lease(make_node):
    """The node's subnet changed (10.244.7.0/24 -> 10.244.1.0/24) while cni0 kept the old
    gateway: the next pod fails with the bridge's "already has an IP address different from"."""
    c = make_cluster(make_node, pods=0)
    n1 = c.members[0].node
    n1.run(["ip", "link", "add", "cni0", "type", "bridge"])
    n1.run(["ip", "addr", "add", "10.244.7.1/24", "dev", "cni0"])
    n1.run(["ip", "link", "set", "cni0", "up"])
    r = doctor(n1)
    assert r.failing() == ["cni0"], r
    ev = r["cni0"]["evidence"]
    assert "cni0 has 10.244.7.1/24 but FLANNEL_SUBNET needs 10.244.1.1/24" in ev
    assert "already has an IP address different from 10.244.1.1/24" in ev
    assert "kubectl drain" in r["cni0"]["fix"] and "ip link delete cni0" in r["cni0"]["fix"]
    n1.run(["ip", "link", "delete", "cni0"])  # the fix: the next doctor run is clean
    assert doctor(n1).failing() == []


def test_underlay_mtu_smaller_than_flannel_mtu(make_node):
    """The node's NIC was moved to a network with MTU 1400 after flanneld wrote FLANNEL_MTU=1450."""
    c = make_cluster(make_node)
    n1 = c.members[0].node
    n1.run(["ip", "link", "set", "eth0", "mtu", "1400"])
    r = doctor(n1)
    assert r.failing() == ["mtu"], r
    assert "FLANNEL_MTU 1450 is more than eth0 (1400) carries over vxlan (1350)" in r["mtu"]["evidence"]
    assert "eth0 1400 → flannel.1 1450 → cni0 1450 → 1 veth 1450" in r["mtu"]["evidence"]
    assert "FLANNEL_MTU becomes 1350" in r["mtu"]["fix"]


def test_pod_with_an_mtu_other_than_flannel_mtu(make_node):
    c = make_cluster(make_node)
    pod, _ = c.members[0].pods[0]
    pod.run(["ip", "link", "set", "eth0", "mtu", "1500"])
    r = doctor(c.members[0].node)
    assert r.failing() == ["mtu"], r
    assert r["mtu"]["items"] == [f"{pod.netns} eth0 1500"]


def _proc_copy(node, tmp_path, drop=(), release=None) -> str:
    """A copy of the files doctor reads under /proc (the node's sysctls), minus ``drop``."""
    root = str(tmp_path / "proc")
    for key in ("sys/net/bridge/bridge-nf-call-iptables", "sys/net/bridge/bridge-nf-call-ip6tables",
                "sys/net/ipv4/ip_forward", "sys/net/ipv6/conf/all/forwarding", "sys/kernel/osrelease"):
        if key in drop:
            continue
        os.makedirs(os.path.dirname(f"{root}/{key}"), exist_ok=True)
        value = release if key.endswith("osrelease") and release else node.read_file(f"/proc/{key}")
        with open(f"{root}/{key}", "w") as fh:
            fh.write(value)
    return root


def test_br_netfilter_not_loaded(make_node, tmp_path):
    c = make_cluster(make_node, pods=0)
    n1 = c.members[0].node
    root = _proc_copy(n1, tmp_path, drop=("sys/net/bridge/bridge-nf-call-iptables",
                                          "sys/net/bridge/bridge-nf-call-ip6tables"))
    r = doctor(n1, "--proc-root", root)
    assert r.failing() == ["br-netfilter"], r
    assert "bridge-nf-call-iptables does not exist" in r["br-netfilter"]["evidence"]
    assert r["br-netfilter"]["fix"].startswith("modprobe br_netfilter")
    shutil.rmtree(root)
    assert doctor(n1, "--proc-root", _proc_copy(n1, tmp_path)).failing() == []  # the copy is faithful


def test_old_kernel_with_vxlan_checksum_offload(make_node, tmp_path):
    c = make_cluster(make_node, pods=0)
    n1 = c.members[0].node
    r = doctor(n1, "--proc-root", _proc_copy(n1, tmp_path, release="5.4.0-150-generic"))
    assert r.failing() == ["vxlan-offload"], r  # offload is on: the kernel's default for a vxlan device
    assert "5.4.0-150-generic (< 5.7) with tx checksum offload on flannel.1" in r["vxlan-offload"]["evidence"]
    assert r["vxlan-offload"]["fix"].startswith("ethtool -K flannel.1 tx-checksum-ip-generic off")


def test_ip_forward_off(make_node):
    c = make_cluster(make_node, pods=0)
    n1 = c.members[0].node
    n1.run(["sysctl", "-qw", "net.ipv4.ip_forward=0"])
    r = doctor(n1)
    assert r.failing() == ["ip-forward"], r
    assert r["ip-forward"]["fix"].startswith("sysctl -w net.ipv4.ip_forward=1")


def test_forward_policy_drop_without_flannel_fwd(make_node):
    """Docker sets FORWARD to DROP; flanneld ran with --iptables-forward-rules=false."""
    c = make_cluster(make_node, masq=False)
    n1 = c.members[0].node
    from cni_flannel.daemon.masq import MasqConfig, MasqManager

    MasqManager(MasqConfig(networks=("10.244.0.0/16",), subnets=("10.244.1.0/24",), forward=False),
                runner=node_runner(n1)).reconcile()
    n1.run(["iptables", "-P", "FORWARD", "DROP"])
    assert not any(c.cross_pings().values())  # the symptom is real: no pod reaches the other node
    r = doctor(n1)
    assert r.failing() == ["forward", "probe"] or r.failing() == ["forward"], r
    assert "FORWARD policy is DROP and nothing accepts the pod network" in r["forward"]["evidence"]
    assert "iptables -A FORWARD -s 10.244.0.0/16 -j ACCEPT" in r["forward"]["fix"]


def test_flannel_postrtg_flushed(make_node):
    """Something flushed the nat chain (flannel#2237) and no flanneld re-adds it."""
    c = make_cluster(make_node, pods=0)
    n1 = c.members[0].node
    n1.run(["iptables", "-t", "nat", "-F", "FLANNEL-POSTRTG"])
    r = doctor(n1)
    assert r.failing() == ["masquerade"], r
    assert "iptables-nft nat FLANNEL-POSTRTG is not complete" in r["masquerade"]["evidence"]
    assert len(r["masquerade"]["items"]) == 6


def test_flannel_rules_in_the_iptables_the_node_does_not_use(make_node):
    """kube-proxy's hint says nft; flanneld wrote its chains with iptables-legacy."""
    c = make_cluster(make_node, masq=False, pods=0)
    n1 = c.members[0].node
    n1.run(["iptables-nft", "-t", "mangle", "-N", "KUBE-IPTABLES-HINT"])
    legacy = IptablesFirewall("legacy", node_runner(n1))
    legacy.apply(L.flannel_masq_iptables("10.244.0.0/16", "10.244.1.0/24"))
    legacy.apply(L.flannel_forward_iptables("10.244.0.0/16"))
    r = doctor(n1)
    assert "iptables-mode" in r.failing() and "masquerade" in r.failing(), r
    assert "flanneld's chains are in iptables-legacy" in r["iptables-mode"]["evidence"]
    assert "the node uses iptables-nft" in r["iptables-mode"]["evidence"]


def test_peer_neighbour_lost(make_node):
    c = make_cluster(make_node, count=3, pods=0)
    n1 = c.members[0].node
    n1.run(["ip", "neigh", "del", "10.244.3.0", "dev", "flannel.1"])
    r = doctor(n1)
    assert "peers" in r.failing(), r
    bad = [i for i in r["peers"]["items"] if "no neighbour" in i]
    assert bad == ["10.244.3.0/24: no neighbour for 10.244.3.0"], r["peers"]  # no lease store: no public IP
    assert r["probe"]["items"][1].startswith("10.244.3.0/24 → 10.244.3.0: no answer")


def _plant_vanished_peer(node) -> None:
    """What a node that left the cluster while this one's flanneld was down leaves behind."""
    for argv in (["ip", "neigh", "add", "10.244.9.0", "lladdr", "0a:58:0a:f4:09:00", "dev", "flannel.1", "nud", "permanent"],
                 ["bridge", "fdb", "add", "0a:58:0a:f4:09:00", "dev", "flannel.1", "dst", "198.18.0.9", "self", "permanent"],
                 ["ip", "route", "add", "10.244.9.0/24", "via", "10.244.9.0", "dev", "flannel.1", "onlink"]):
        node.run(argv)


def test_stale_route_to_a_vanished_peer_against_the_leases(make_node):
    c = make_cluster(make_node, pods=0)
    n1 = etcd_with_leases(c)
    _plant_vanished_peer(n1)
    r = doctor(n1, "--etcd-endpoints", ETCD_URL)
    assert r.failing() == ["stale"], r
    assert r["stale"]["items"] == ["route 10.244.9.0/24 via 10.244.9.0 dev flannel.1 (no lease)",
                                   "neighbour 10.244.9.0 0a:58:0a:f4:09:00 on flannel.1 (no lease)",
                                   "FDB 0a:58:0a:f4:09:00 dst 198.18.0.9 on flannel.1 (no lease)"]
    assert "ip route del 10.244.9.0/24 dev flannel.1" in r["stale"]["fix"]


def test_vanished_peer_without_a_lease_store_fails_the_probe(make_node):
    c = make_cluster(make_node, pods=0)
    n1 = c.members[0].node
    _plant_vanished_peer(n1)
    r = doctor(n1)
    assert r.failing() == ["probe"], r
    assert r["probe"]["evidence"] == "1 of 2 peers answer; none from 10.244.9.0/24"
    assert r["probe"]["items"][0].endswith(" ms") and "no answer" in r["probe"]["items"][1]


def test_peer_that_does_not_answer(make_node):
    """The peer's entries here are right but its VTEP is down (its flanneld died and someone
    removed flannel.1, or UDP 8472 is filtered)."""
    c = make_cluster(make_node, pods=0)
    c.members[1].node.run(["ip", "link", "set", "flannel.1", "down"])
    r = doctor(c.members[0].node)
    assert r.failing() == ["probe"], r
    assert "UDP 8472" in r["probe"]["fix"]


DUMP_VS_HANDLE = """
import json, time
from cni_flannel.net.dump import Dumper
from cni_flannel.net.handle import Handle
fields = ("index", "name", "kind", "mac", "mtu", "flags", "master", "peer_netnsid", "operstate", "vxlan")
def read(x):
    got = {"links": [[repr(getattr(l, k)) for k in fields] for l in x.links()], "addresses": x.addresses(),
           "routes": x.routes(), "neigh": x.neighbours(), "fdb": x.neighbours(bridge=True)}
    return {k: sorted(map(repr, v)) for k, v in got.items()}
# The kernel adds entries by itself (IPv6 multicast neighbours of a new veth, after DAD): the
# handle's read counts only when the dump read before and after it saw the same node.
with Dumper() as d, Handle() as h:
    for _ in range(50):
        before, full, after = read(d), read(h), read(d)
        if before == after:
            break
        time.sleep(0.2)
print(json.dumps(before))
print(json.dumps(full))
"""


def test_the_fast_netlink_dump_reads_what_the_handle_reads(make_node):
    """doctor reads namespaces with net/dump.py (no pyroute2): on a node with flannel.1, cni0,
    veths, peers' neighbours/FDB and onlink routes it must see exactly what Handle sees."""
    import json
    import sys

    from tests.harness.plugins import REPO_ROOT

    c = make_cluster(make_node, count=3)
    n1 = c.members[0].node
    out = n1.run([sys.executable, "-c", DUMP_VS_HANDLE], env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"})
    lite, full = (json.loads(line) for line in out.stdout.splitlines())
    assert lite == full
    assert any("flannel.1" in l and "VxlanInfo(vni=1" in l for l in lite["links"]) and len(lite["fdb"]) >= 2


def test_dual_stack_node_checks_both_families_then_a_lost_v6_route(make_node):
    """IPv6 goes through the same checks: flannel-v6.1's peers and probe, ip6tables masquerade,
    IPv6 forwarding and bridge-nf-call-ip6tables."""
    c = make_cluster(make_node, dual=True)
    c.settle_ipv6()
    n1 = c.members[0].node
    r = doctor(n1)
    assert r.failing() == [], r
    assert [i.split(": ")[0] for i in r["probe"]["items"]] == ["10.244.2.0/24 → 10.244.2.0",
                                                                "fd00:10:244:2::/64 → fd00:10:244:2::"]
    assert "net.ipv6.conf.all.forwarding=1" in r["ip-forward"]["evidence"]
    assert "fd00:10:244:1::/64" in r["masquerade"]["evidence"]
    n1.run(["ip", "-6", "route", "del", "fd00:10:244:2::/64", "dev", "flannel-v6.1"])
    lost = doctor(n1)  # no lease store: the peer is still known by its neighbour fd00:10:244:2::
    assert lost.failing() == ["peers", "probe"], lost
    assert "fd00:10:244:2::/64 (2001:db8::2): route missing" in lost["peers"]["items"], lost["peers"]


def test_host_gw_node_then_a_stale_route_to_a_gone_node(make_node):
    """host-gw: peers are routes via the peers' addresses (no VTEP to probe: "!"); a route to a
    node that left while flanneld was down is named against the leases."""
    c = make_cluster(make_node, pods=0, backend={"Type": "host-gw"})
    n1 = etcd_with_leases(c)
    r = doctor(n1, "--etcd-endpoints", ETCD_URL)
    assert r.failing() == [], r
    assert r["peers"]["items"] == ["10.244.2.0/24: via 198.18.0.2"]
    assert r.status("probe") == "unknown" and r.status("vxlan-offload") == "ok"
    n1.run(["ip", "route", "add", "10.244.8.0/24", "via", "198.18.0.8", "dev", "eth0"])
    stale = doctor(n1, "--etcd-endpoints", ETCD_URL)
    assert stale.failing() == ["stale"], stale
    assert stale["stale"]["items"] == ["route 10.244.8.0/24 via 198.18.0.8 (no lease)"]
