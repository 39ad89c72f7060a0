"""flanneld as a program: the frozen dist/cni/flanneld on namespace nodes against a real etcd.

Three nodes lease distinct subnets, write subnet.env, program flannel.1 with each other, and
pods made by our flannel plugin from that subnet.env ping across nodes (ttl 62).  Then the
things that go wrong in clusters: flannel.1 deleted, FLANNEL-POSTRTG flushed, a daemon
SIGKILLed and restarted (no route ever removed meanwhile), SIGTERM (everything stays), a peer's
lease deleted or expiring, our own lease deleted ("revoked", exit 1).
"""
from __future__ import annotations

import json
import signal
import time

from tests.harness import drivers
from tests.harness.etcd import etcd_factory  # noqa: F401 - fixture
from tests.harness.state import iptables_save
from tests.integration.flannel_node import flannel_node
from tests.integration.flanneld_lab import (PREFIX, EtcdNode, Flanneld, Monitor, http_get, link_mac,
                                            subnet_env, vtep, wait_until)

UPSTREAM_PEER = ('{"PublicIP":"198.18.0.77","PublicIPv6":null,"BackendType":"vxlan",'
                 '"BackendData":{"VNI":1,"VtepMAC":"a2:31:74:e2:0c:7b"}}')  # flannel's docs' form


def start_cluster(make_node, etcd_factory, count=3, ttl=0, before=None):
    etcd = EtcdNode(make_node, etcd_factory)
    nodes = [flannel_node(make_node(f"n{i}", underlay=True), subnet_env=None) for i in range(1, count + 1)]
    if before:
        before(nodes)
    daemons = [Flanneld(n, etcd.endpoint, ttl=ttl).start() for n in nodes]
    for d in daemons:
        d.ready()
    return etcd, nodes, daemons


def expected_peers(etcd: EtcdNode, me: str):
    """What flannel.1 on the node whose lease is ``me`` must hold for every other lease."""
    out = {"neigh": [], "fdb": [], "routes": []}
    for key, kv in etcd.leases().items():
        if key == me:
            continue
        value = json.loads(kv["value"])
        net, mac, ip = key.split("-")[0], value["BackendData"]["VtepMAC"], value["PublicIP"]
        out["neigh"].append((net, mac))
        out["fdb"].append((mac, ip))
        out["routes"].append((key.replace("-", "/"), net))
    return {k: sorted(v) for k, v in out.items()}


def own_key(node) -> str:
    sub = subnet_env(node)["FLANNEL_SUBNET"]  # 10.244.N.1/24
    net, plen = sub.split("/")
    return f"{net.rsplit('.', 1)[0]}.0-{plen}"


def converged(etcd, node) -> bool:
    return vtep(node) == expected_peers(etcd, own_key(node))


def plant_stale(nodes) -> None:
    n = nodes[0]
    n.run(["ip", "link", "add", "flannel.1", "type", "vxlan", "id", "1", "local", n.underlay_ip,
           "dstport", "8472", "nolearning", "dev", "eth0"])
    n.run(["ip", "link", "set", "flannel.1", "up"])
    n.run(["ip", "neigh", "add", "10.244.99.0", "lladdr", "0a:58:0a:f4:63:00", "dev", "flannel.1", "nud", "permanent"])
    n.run(["ip", "route", "add", "10.244.99.0/24", "via", "10.244.99.0", "dev", "flannel.1", "onlink"])


def test_three_nodes_lease_program_and_repair(make_node, etcd_factory):
    etcd, nodes, daemons = start_cluster(make_node, etcd_factory, before=plant_stale)
    leases = etcd.leases()
    keys = sorted(own_key(n) for n in nodes)
    assert sorted(leases) == keys and len(set(keys)) == 3 and "10.244.0.0-24" not in keys
    for n in nodes:
        env = subnet_env(n)
        assert env["FLANNEL_NETWORK"] == "10.244.0.0/16" and env["FLANNEL_MTU"] == "1450"
        assert env["FLANNEL_IPMASQ"] == "true"
        value = leases[own_key(n)]["value"]
        mac = link_mac(n)
        assert value == ('{"PublicIP":"%s","PublicIPv6":null,"BackendType":"vxlan",'
                         '"BackendData":{"VNI":1,"VtepMAC":"%s"}}' % (n.underlay_ip, mac))  # upstream's bytes
        wait_until(lambda n=n: converged(etcd, n), 10, f"{n.name}'s peers")  # planted 10.244.99.0 gone
    # Pods from our flannel plugin on that subnet.env reach every other node: ttl 64 - 2 hops.
    pods = []
    for n in nodes:
        pod = n.add_pod("p1")
        result = drivers.libcni(n, "add", "cbr0", pod, cid=f"{n.name}-p1")
        pods.append((pod, result["ips"][0]["address"].split("/")[0]))
    for pa, _ in pods:
        for pb, ip in pods:
            if pa is not pb:
                out = pa.run(["ping", "-c", "1", "-W", "2", ip], check=False).stdout
                assert "ttl=62" in out, out
    n1, d1 = nodes[0], daemons[0]
    code, text = http_get(n1, "/metrics")
    assert code == 200 and "flannel_peers 2.0" in text and "flannel_lease_expiry_timestamp_seconds" in text
    # flannel.1 deleted under the running daemon: recreated with the same MAC and every peer.
    mac = link_mac(n1)
    n1.run(["ip", "link", "del", "flannel.1"])
    wait_until(lambda: link_mac(n1) == mac and converged(etcd, n1), 10, "flannel.1 repaired")
    assert pods[0][0].ping(pods[1][1])
    # FLANNEL-POSTRTG flushed: back within one resync (1 s here).
    n1.run(["iptables", "-t", "nat", "-F", "FLANNEL-POSTRTG"])
    wait_until(lambda: "-A FLANNEL-POSTRTG" in iptables_save(n1), 5, "FLANNEL-POSTRTG re-added")
    # Our own lease deleted from etcd: "revoked", exit 1, and the node keeps what it had.
    etcd.server.delete(f"{PREFIX}/subnets/{own_key(nodes[2])}")
    assert daemons[2].wait(15) == 1
    assert "revoked" in daemons[2].log().splitlines()[-1], daemons[2].log()
    # ... and the others drop that node's entries.
    for n in nodes[:2]:
        wait_until(lambda n=n: converged(etcd, n), 10, f"{n.name} forgets the revoked node")
    assert "Traceback" not in "".join(d.log() for d in daemons)


def test_restart_keeps_subnet_mac_and_routes_and_sigterm_leaves_everything(make_node, etcd_factory):
    etcd, nodes, daemons = start_cluster(make_node, etcd_factory, ttl=10)
    n1, n2, n3 = nodes
    for n in nodes:
        wait_until(lambda n=n: converged(etcd, n), 10, f"{n.name}'s peers")
    key, mac, before = own_key(n2), link_mac(n2), vtep(n2)
    # Interop: a lease written as upstream writes it is a peer like any other.
    # 10.244.177.0/24: beyond the first 100 free subnets, so no node of ours can hold it
    etcd.server.put(f"{PREFIX}/subnets/10.244.177.0-24", UPSTREAM_PEER)
    wait_until(lambda: ("10.244.177.0/24", "10.244.177.0") in vtep(n1)["routes"], 10, "upstream-format peer")
    etcd.server.delete(f"{PREFIX}/subnets/10.244.177.0-24")
    wait_until(lambda: converged(etcd, n1) and converged(etcd, n2), 10, "upstream-format peer removed")
    before = vtep(n2)
    # SIGKILL + restart: same subnet, same VtepMAC, and not one route or neighbour removed meanwhile.
    monitor = Monitor(n2)
    daemons[1].signal(signal.SIGKILL)
    daemons[1].wait()
    time.sleep(1)
    daemons[1].start().ready()
    time.sleep(2)  # a resync or two after the restart
    deletions = [l for l in monitor.stop() if l.startswith("Deleted")]
    assert deletions == [], deletions
    assert own_key(n2) == key and link_mac(n2) == mac and vtep(n2) == before
    assert json.loads(etcd.leases()[key]["value"])["BackendData"]["VtepMAC"] == mac
    # Leases are renewed (TTL 10 s here): after 12 s every key is still there.
    time.sleep(12)
    assert sorted(etcd.leases()) == sorted(own_key(n) for n in nodes)
    # SIGTERM: exit 0 within seconds; VTEP, routes, rules, subnet.env and the lease all stay.
    rules = iptables_save(n3)
    state3 = vtep(n3)
    daemons[2].signal(signal.SIGTERM)
    assert daemons[2].wait(5) == 0
    assert vtep(n3) == state3 and link_mac(n3) and iptables_save(n3).count("FLANNEL") == rules.count("FLANNEL")
    assert own_key(n3) in etcd.leases()
    # With nobody renewing it, n3's lease expires (TTL 10 s) and the others drop its entries.
    gone = own_key(n3)
    wait_until(lambda: gone not in etcd.leases(), 20, "n3's lease to expire")
    for n in (n1, n2):
        wait_until(lambda n=n: converged(etcd, n) and gone.split("-")[0] not in str(vtep(n)), 10,
                   f"{n.name} drops the expired peer")
    # A lease deleted by hand goes the same way.
    etcd.server.delete(f"{PREFIX}/subnets/{own_key(n1)}")
    assert daemons[0].wait(15) == 1
    wait_until(lambda: vtep(n2) == {"neigh": [], "fdb": [], "routes": []}, 10, "n2 drops n1")


def test_host_gw_dual_stack(make_node, etcd_factory):
    """host-gw over both families: one code path picks eth0's IPv4 and IPv6 addresses, leases a
    subnet of each, and routes each peer's subnets via its public addresses."""
    conf = ('{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56",'
            ' "Backend": {"Type": "host-gw"}}')
    etcd = EtcdNode(make_node, etcd_factory, conf=conf)
    nodes = []
    for i in (1, 2):
        n = flannel_node(make_node(f"n{i}", underlay=True), subnet_env=None)
        n.run(["ip", "addr", "add", f"2001:db8::{i}/64", "dev", "eth0", "nodad"])
        nodes.append(n)
    for d in [Flanneld(n, etcd.endpoint) for n in nodes]:
        d.start().ready()
    leases = etcd.leases()
    assert len(leases) == 2 and all("&fd00:10:244:" in k for k in leases), leases
    for n, other, i in ((nodes[0], nodes[1], 2), (nodes[1], nodes[0], 1)):
        env = subnet_env(n)
        assert env["FLANNEL_MTU"] == "1500" and env["FLANNEL_IPV6_NETWORK"] == "fd00:10:244::/56"
        v4, v6 = subnet_env(other)["FLANNEL_SUBNET"], subnet_env(other)["FLANNEL_IPV6_SUBNET"]
        net4 = v4.rsplit(".", 1)[0] + ".0/24"
        net6 = v6.split("::")[0] + "::/64"
        wait_until(lambda: f"{net4} via {other.underlay_ip} dev eth0" in n.run(["ip", "-4", "route"]).stdout,
                   10, f"{n.name}'s IPv4 route to {other.name}")
        wait_until(lambda: f"{net6} via 2001:db8::{i} dev eth0" in n.run(["ip", "-6", "route"]).stdout,
                   10, f"{n.name}'s IPv6 route to {other.name}")
    value = json.loads(etcd.leases()[own_key(nodes[0]) + "&" + subnet_env(nodes[0])["FLANNEL_IPV6_SUBNET"]
                                     .replace("::1/", "::-")]["value"])
    assert (value["PublicIP"], value["PublicIPv6"], value["BackendType"]) == (nodes[0].underlay_ip, "2001:db8::1", "host-gw")
