"""The udp backend on three namespace nodes, driven over JSON lines (test_daemon_backends'
Cluster): flannel0, pods everywhere reaching each other, TTL and unreachable behaviour,
large and tiny payloads, a 64 MB transfer (200 MB in ``make reliability``), repair."""
from __future__ import annotations

import json
import os

import pytest

from tests.harness.state import link
from tests.harness.wait import wait_until
from tests.integration.udp_helpers import (MODES, MTU, UDP, counters, drops, mode_of, ping, python, transfer,
                                           udp_cluster)
from tests.integration.test_daemon_backends import link_info


def routes(node, dev: str):
    return [(r["dst"], r.get("gateway")) for r in json.loads(node.run(["ip", "-4", "-j", "route", "show", "dev", dev]).stdout)]


CONNECT = r"""
import errno, socket, sys
s = socket.socket()
s.settimeout(5)
try:
    s.connect((sys.argv[1], 80))
    print("connected")
except socket.timeout:
    print("timeout")
except OSError as exc:
    print(errno.errorcode.get(exc.errno, exc.errno))
"""


def connect_error(pod, ip: str) -> str:
    return python(pod, CONNECT, ip).strip()


@pytest.mark.parametrize("mode", MODES)
def test_udp_pods_reach_every_other_node_through_flannel0(make_node, mode):
    c = udp_cluster(make_node, mode=mode)
    c.add_pods()
    for m in c.members:
        info = link_info(m.node, "flannel0")
        assert info["linkinfo"]["info_kind"] == "tun" and info["linkinfo"]["info_data"]["type"] == "tun"
        assert info["linkinfo"]["info_data"]["pi"] is False
        assert info["mtu"] == MTU and "UP" in info["flags"]
        addrs = json.loads(m.node.run(["ip", "-4", "-j", "addr", "show", "flannel0"]).stdout)[0]["addr_info"]
        assert [(a["local"], a["prefixlen"]) for a in addrs] == [(f"10.244.{m.n}.0", 32)]
        assert routes(m.node, "flannel0") == [("10.244.0.0/16", None)]
        # upstream's udp leases carry PublicIP only; ours add PartialChecksums where offloads run
        assert m.data == ({"BackendType": "", "BackendData": {"PartialChecksums": True}} if mode == "offload"
                          else {"BackendType": ""})
        assert mode_of(m) == mode, m.proc.log()
    pings = c.cross_pings()
    assert len(pings) == 6 and all(pings.values()), pings
    for m in c.members:  # 2 requests and 2 replies each way
        got = counters(m)
        assert got["tun_to_udp"]["packets"] >= 4 and got["udp_to_tun"]["packets"] >= 4, got
        assert m.proc.ok("reconcile", peers=c.peers_of(m))["plan"] == {"delete": [], "add": []}


def test_udp_payload_sizes_ttl_and_unreachable(make_node):
    c = udp_cluster(make_node, count=2)
    c.add_pods()
    n1, n2 = c.members
    (p1, _), (p2, ips2) = n1.pods[0], n2.pods[0]
    ip2 = ips2[0]
    # The largest packet that fits the pod MTU (1472 = 20 IP + 8 ICMP + 1444) and a 1-byte one.
    assert ping(p1, ip2, "-s", str(MTU - 28), "-M", "do").returncode == 0
    assert ping(p1, ip2, "-s", "1").returncode == 0
    assert ping(p1, ip2, "-s", str(MTU - 27), "-M", "do").returncode != 0  # does not fit: refused in the pod
    # TTL: the node's kernel and each forwarder decrement it (as upstream's proxy does).
    before1, before2 = drops(n1, "tun_to_udp").get("ttl_expired", 0), drops(n2, "udp_to_tun").get("ttl_expired", 0)
    assert ping(p1, ip2, "-t", "2").returncode != 0
    assert drops(n1, "tun_to_udp").get("ttl_expired", 0) == before1 + 1
    assert ping(p1, ip2, "-t", "3").returncode != 0
    assert drops(n2, "udp_to_tun").get("ttl_expired", 0) == before2 + 1
    assert ping(p1, ip2, "-t", "5").returncode == 0
    # A destination inside the Network with no lease: ICMP net unreachable (a TCP connect fails
    # at once with ENETUNREACH) -- but never ICMP about ICMP (a ping just goes unanswered).
    assert connect_error(p1, "10.244.99.5") == "ENETUNREACH"
    before = drops(n1, "tun_to_udp").get("unreachable", 0)
    out = ping(p1, "10.244.99.5")
    assert out.returncode != 0 and "Unreachable" not in out.stdout, out.stdout
    assert drops(n1, "tun_to_udp").get("unreachable", 0) == before + 1
    # A removed peer's pods become unreachable the same way; added back, they answer again.
    n1.proc.ok("handle", events=[{"type": "removed", "lease": n2.lease("udp")}])
    assert connect_error(p1, ip2) == "ENETUNREACH"
    n1.proc.ok("handle", events=[{"type": "added", "lease": n2.lease("")}])  # upstream's form: no BackendType
    assert ping(p1, ip2).returncode == 0


@pytest.mark.parametrize("mode", MODES)
def test_udp_tcp_transfer_arrives_intact(make_node, mode):
    c = udp_cluster(make_node, count=2, mode=mode)
    c.add_pods()
    (p1, _), (p2, ips2) = c.members[0].pods[0], c.members[1].pods[0]
    size = int(os.environ.get("UDP_TRANSFER_MB", "32")) << 20  # make reliability: 200
    transfer(p1, p2, ips2[0], size)
    transfer(p2, p1, c.members[0].pods[0][1][0], 4 << 20, port=5002)  # and the other way
    sender, receiver = counters(c.members[0]), counters(c.members[1])
    assert sender["tun_to_udp"]["bytes"] > size
    if mode == "offload":  # the batch paths carried the stream, not a silent per-packet fallback
        assert sender["tun_to_udp"]["batched"] > sender["tun_to_udp"]["packets"] // 2, sender
        assert receiver["udp_to_tun"]["batched"] > receiver["udp_to_tun"]["packets"] // 2, receiver
        # cut from TSO super-packets, sent with partial checksums (both nodes lease PartialChecksums)
        assert sender["tun_to_udp"]["partial_checksum"] > sender["tun_to_udp"]["packets"] // 2, sender
    else:
        assert sender["tun_to_udp"]["batched"] == receiver["udp_to_tun"]["batched"] == 0
        assert sender["tun_to_udp"]["partial_checksum"] == 0


def test_udp_flannel0_deleted_is_recreated_and_a_restart_resumes(make_node):
    c = udp_cluster(make_node, count=2)
    c.add_pods()
    n1, n2 = c.members
    (p1, _), (p2, ips2) = n1.pods[0], n2.pods[0]
    n1.node.run(["ip", "link", "del", "flannel0"])
    assert not p1.ping(ips2[0])
    plan = n1.proc.ok("reconcile")["plan"]
    assert plan["add"] == ["route 10.244.0.0/16 via None dev flannel0"]
    assert link_info(n1.node, "flannel0")["mtu"] == MTU and p1.ping(ips2[0]) and p2.ping(n1.pods[0][1][0])
    # The process goes (a daemon restart): flannel0 goes with it; a new one brings it back.
    n1.proc.stop()
    assert link(n1.node, "flannel0") is None
    from tests.integration.test_daemon_backends import BackendProc, NETWORK
    n1.proc = BackendProc(n1.node, UDP, (NETWORK,))
    n1.proc.ok("setup", lease=n1.lease("udp"))
    n1.proc.ok("reconcile", peers=c.peers_of(n1))
    assert p1.ping(ips2[0]) and p2.ping(n1.pods[0][1][0])


def plant_host_gw_routes(c) -> None:
    """What a host-gw run before this one leaves on node 1 (routes outlive flanneld)."""
    n = c.members[0].node
    n.run(["ip", "route", "add", "10.244.2.0/24", "via", "198.18.0.2", "dev", "eth0"])
    n.run(["ip", "route", "add", "10.244.9.0/24", "via", "198.18.0.9", "dev", "eth0"])


def test_udp_after_host_gw_removes_its_routes_via_eth0(make_node):
    c = udp_cluster(make_node, count=2, before_start=plant_host_gw_routes)
    n1 = c.members[0]
    assert [r for r in routes(n1.node, "eth0") if r[0].startswith("10.244.")] == []
    c.add_pods()
    before = counters(n1)["tun_to_udp"]["packets"]
    pings = c.cross_pings()
    assert len(pings) == 2 and all(pings.values()), pings
    assert counters(n1)["tun_to_udp"]["packets"] > before  # through flannel0, not eth0


def test_udp_bad_setups_leave_nothing_behind(make_node):
    node = make_node("n1", underlay=True)
    from tests.integration.test_daemon_backends import BackendProc, NETWORK
    blocker = node.popen(["python3", "-c", "import socket,time; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM);"
                          " s.bind(('0.0.0.0', 8285)); time.sleep(60)"])
    node.lab.add_finalizer(lambda: (blocker.kill(), blocker.wait()))
    wait_until(lambda: ":8285" in node.run(["ss", "-H", "-uln", "sport", "= :8285"]).stdout, 10, "the blocker on 8285")
    proc = BackendProc(node, UDP, (NETWORK,))
    lease = {"Subnet": "10.244.1.0/24", "PublicIP": node.underlay_ip, "BackendType": "udp"}
    reply = proc.call("setup", lease=lease)
    assert not reply["ok"] and "cannot listen on 198.18.0.1:8285" in reply["msg"], reply
    assert link(node, "flannel0") is None
    for bad, why in (({**lease, "Subnet": "10.245.1.0/24"}, "outside the Network"),
                     ({"IPv6Subnet": "fd00::/64", "PublicIPv6": "2001:db8::1", "BackendType": "udp"}, "IPv4 only"),
                     ({**lease, "BackendType": "vxlan"}, "BackendType 'vxlan'")):
        reply = proc.call("setup", lease=bad)
        assert not reply["ok"] and why in reply["msg"], reply
    assert link(node, "flannel0") is None
