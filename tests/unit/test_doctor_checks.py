"""doctor's checks as pure functions of NodeFacts: each answer, evidence and fix."""
from __future__ import annotations

import ipaddress

import pytest

from cni_flannel.daemon import netconf
from cni_flannel.daemon.lease import Lease, LeaseAttrs
from cni_flannel.doctor import checks_config as C
from cni_flannel.doctor import checks_node as N
from cni_flannel.doctor import checks_peers as P
from cni_flannel.doctor import model as M
from cni_flannel.doctor.facts import Daemon, LeaseSource, NodeFacts, PodNet, Probe
from cni_flannel.doctor.run import run_checks
from cni_flannel.flannel.subnet_env import parse
from cni_flannel.net.types import Address, Link, Neighbour, Route, VxlanInfo

ENV = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
MAC2, MAC3 = "0a:00:00:00:00:02", "0a:00:00:00:00:03"


def node(**kw) -> NodeFacts:
    """A healthy vxlan node: eth0 198.18.0.1, flannel.1, cni0 with one pod, peer 10.244.2.0/24."""
    f = NodeFacts(subnet_env=parse(ENV), kernel_release="6.1.0")
    f.links = [Link(1, "lo"), Link(2, "eth0", mtu=1500),
               Link(3, "flannel.1", kind="vxlan", mtu=1450, vxlan=VxlanInfo(1, "198.18.0.1", 8472, False, link=2)),
               Link(4, "cni0", kind="bridge", mtu=1450), Link(5, "vethaaaa", kind="veth", mtu=1450, master=4,
                                                             peer_netnsid=0)]
    f.addresses = [Address(2, "198.18.0.1", 15), Address(3, "10.244.1.0", 32), Address(4, "10.244.1.1", 24)]
    f.routes = [Route("0.0.0.0/0", "198.18.0.254", 2), Route("10.244.2.0/24", "10.244.2.0", 3, onlink=True)]
    f.neighbours = [Neighbour(3, "10.244.2.0", MAC2, state=0x80)]
    f.fdb = [Neighbour(3, "198.18.0.2", MAC2, state=0x80, bridge=True)]
    f.pods = [PodNet("/run/netns/p1", 0, ("10.244.1.2",), (("eth0", 1450),))]
    f.sysctls = {"net/bridge/bridge-nf-call-iptables": "1", "net/ipv4/ip_forward": "1"}
    for k, v in kw.items():
        setattr(f, k, v)
    return f


def lease(subnet: str, ip: str, mac: str = "") -> Lease:
    data = {"VNI": 1, "VtepMAC": mac} if mac else None
    return Lease(ipaddress.ip_network(subnet), attrs=LeaseAttrs(public_ip=ipaddress.ip_address(ip),
                                                                backend_type="vxlan", backend_data=data))


def etcd(*leases: Lease, ttl: float = 80000.0) -> LeaseSource:
    return LeaseSource("etcd", "http://127.0.0.1:2379", tuple(leases), None, ttl)


def test_healthy_node_passes_every_local_check():
    f = node(lease_source=etcd(lease("10.244.1.0/24", "198.18.0.1", "0a:00:00:00:00:01"),
                               lease("10.244.2.0/24", "198.18.0.2", MAC2)),
             probes=[Probe("10.244.2.0/24", "10.244.2.0", 0.4)])
    answers = {c.id: c.status for c in run_checks(f)}
    not_ok = {k: v for k, v in answers.items() if v != M.OK}
    # no daemon, no net-conf, no firewall snapshot were collected: those say "!"
    assert not_ok == {"daemon": "unknown", "net-conf": "unknown", "iptables-mode": "unknown", "forward": "unknown",
                      "masquerade": "unknown", "firewall-leftovers": "unknown"}, answers


def test_a_failing_check_must_carry_a_fix_and_a_known_status():
    with pytest.raises(ValueError):
        M.Check("x", "x", M.FAIL, "broken")
    with pytest.raises(ValueError):
        M.Check("x", "x", "bad", "evidence")


def test_a_check_that_raises_becomes_unknown_not_a_crash(monkeypatch):
    def broken(f):
        raise KeyError("boom")
    monkeypatch.setattr("cni_flannel.doctor.run.CHECKS", [broken])
    [answer] = run_checks(node())
    assert answer.status == M.UNKNOWN and "KeyError" in answer.evidence


def test_subnet_env_missing_and_broken():
    assert C.subnet_env(node(subnet_env=None, subnet_env_missing=True)).status == M.FAIL
    bad = C.subnet_env(node(subnet_env=None, subnet_env_error="FLANNEL_MTU=0 is not a valid MTU"))
    assert bad.status == M.FAIL and bad.evidence == "FLANNEL_MTU=0 is not a valid MTU" and "restart" in bad.fix


def test_lease_conflicts():
    mine, other = lease("10.244.1.0/24", "198.18.0.1"), lease("10.244.1.0/24", "198.18.0.9")
    assert C.lease(node(lease_source=etcd(mine))).status == M.OK
    taken = C.lease(node(lease_source=etcd(other)))
    assert taken.status == M.FAIL and "leased to 10.244.1.0/24 (198.18.0.9)" in taken.evidence
    moved = C.lease(node(lease_source=etcd(lease("10.244.5.0/24", "198.18.0.1"))))
    assert moved.evidence == "etcd leases 10.244.5.0/24 to this node, subnet.env says 10.244.1.0/24"
    gone = C.lease(node(lease_source=etcd()))
    assert gone.status == M.FAIL and "holds no lease" in gone.evidence
    assert C.lease(node()).status == M.UNKNOWN


def test_lease_expiry_from_etcd_or_metrics():
    assert C.lease_expiry(node(lease_source=etcd(ttl=-1))).status == M.FAIL
    assert C.lease_expiry(node(lease_source=etcd(ttl=600))).status == M.FAIL
    assert C.lease_expiry(node(lease_source=etcd(ttl=7200))).status == M.OK
    d = Daemon("http://127.0.0.1:8081", False, True, 200, metrics={C.LEASE_METRIC: 1000.0 + 86000})
    assert "expires in 23h 53m" in C.lease_expiry(node(daemon=d), now=1000.0).evidence
    assert C.lease_expiry(node()).status == M.UNKNOWN


def test_daemon_answers():
    url = "http://127.0.0.1:8081"
    assert C.daemon(node(daemon=Daemon(url, False, True, 200))).status == M.OK
    assert C.daemon(node(daemon=Daemon(url, False, False, 503, "no lease yet"))).evidence.endswith("503: no lease yet")
    assert C.daemon(node(daemon=Daemon(url, False, None, error="Connection refused"))).status == M.UNKNOWN
    assert C.daemon(node(daemon=Daemon(url, True, None, error="Connection refused"))).status == M.FAIL


def test_net_conf_disagreement():
    f = node(netconf=netconf.parse('{"Network": "10.245.0.0/16", "Backend": {"Type": "vxlan"}}'),
             netconf_path="/etc/kube-flannel/net-conf.json")
    r = C.net_conf(f)
    assert r.status == M.FAIL and "the lease 10.244.1.0/24 is outside the Network 10.245.0.0/16" in r.evidence


def test_cni0_with_the_old_gateway_and_without_cni0():
    f = node()
    f.addresses = [a for a in f.addresses if a.index != 4] + [Address(4, "10.244.7.1", 24)]
    r = N.cni0_address(f)
    assert r.status == M.FAIL and "already has an IP address different from 10.244.1.1/24" in r.evidence
    f.links = [l for l in f.links if l.name != "cni0"]
    assert N.cni0_address(f).status == M.OK


def test_mtu_chain():
    assert N.mtu_chain(node()).evidence == "eth0 1500 → flannel.1 1450 → cni0 1450 → 1 veth 1450 (FLANNEL_MTU 1450)"
    small = node()
    small.links[1] = Link(2, "eth0", mtu=1400)
    assert "carries over vxlan (1350)" in N.mtu_chain(small).evidence
    odd = node(pods=[PodNet("/run/netns/p1", 0, ("10.244.1.2",), (("eth0", 1500),))])
    assert N.mtu_chain(odd).items == ("p1 eth0 1500",)


def test_sysctls_and_kernel():
    f = node(sysctls={"net/bridge/bridge-nf-call-iptables": None, "net/ipv4/ip_forward": "0"})
    assert N.br_netfilter(f).status == M.FAIL and N.ip_forward(f).status == M.FAIL
    f.netconf = netconf.parse('{"Network": "10.244.0.0/16", "EnableNFTables": true, "Backend": {"Type": "vxlan"}}')
    assert N.br_netfilter(f).status == M.OK  # not needed with EnableNFTables
    no_vxlan = node(kernel_features={"vxlan": False})
    no_vxlan.links = [l for l in no_vxlan.links if l.kind != "vxlan"]
    no_vxlan.netconf = netconf.parse('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}')
    r = N.kernel_support(no_vxlan)
    assert r.status == M.FAIL and "modprobe vxlan" in r.fix


@pytest.mark.parametrize("release,offload,status", [("6.1.0", True, M.OK), ("5.4.0", True, M.FAIL),
                                                    ("5.4.0", False, M.OK), ("5.4.0", None, M.UNKNOWN)])
def test_vxlan_offload_advice(release, offload, status):
    assert N.vxlan_offload(node(kernel_release=release, tx_checksum={"flannel.1": offload})).status == status


def test_peer_entries_against_leases():
    src = etcd(lease("10.244.1.0/24", "198.18.0.1"), lease("10.244.2.0/24", "198.18.0.2", MAC2),
               lease("10.244.3.0/24", "198.18.0.3", MAC3))
    r = P.peer_entries(node(lease_source=src))
    assert r.status == M.FAIL
    assert r.items[1] == "10.244.3.0/24 (198.18.0.3): route missing; no neighbour for 10.244.3.0; no FDB entry for " + MAC3
    moved = node(lease_source=etcd(lease("10.244.2.0/24", "198.18.0.7", MAC2)))
    assert "FDB sends 0a:00:00:00:00:02 to 198.18.0.2, lease says 198.18.0.7" in P.peer_entries(moved).items[0]


def test_stale_entries_with_and_without_leases():
    f = node(lease_source=etcd(lease("10.244.1.0/24", "198.18.0.1")))
    r = P.stale_entries(f)
    assert r.status == M.FAIL and r.items[0] == "route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 (no lease)"
    orphan = node()
    orphan.fdb = orphan.fdb + [Neighbour(3, "198.18.0.9", MAC3, state=0x80, bridge=True)]
    assert P.stale_entries(orphan).items == (f"FDB {MAC3} dst 198.18.0.9 on flannel.1 (no neighbour uses it)",)
    lonely = node()  # no lease store: a VTEP neighbour <subnet>.0 without its route is a peer that lost it
    lonely.neighbours = lonely.neighbours + [Neighbour(3, "10.244.9.0", MAC3, state=0x80)]
    assert P.stale_entries(lonely).status == M.OK
    assert P.peer_entries(lonely).items[1] == f"10.244.9.0/24: route missing; no FDB entry for {MAC3}"
    odd = node()  # ...but one that is no subnet's .0 is nobody's
    odd.neighbours = odd.neighbours + [Neighbour(3, "10.244.9.7", MAC3, state=0x80)]
    assert P.stale_entries(odd).items[0] == f"neighbour 10.244.9.7 {MAC3} on flannel.1 (no route uses it)"
    assert P.stale_entries(node()).status == M.OK


def test_probe_results():
    f = node(probes=[Probe("10.244.2.0/24", "10.244.2.0", 0.3), Probe("10.244.9.0/24", "10.244.9.0", None, "no reply")])
    r = P.peer_probe(f)
    assert r.status == M.FAIL and r.evidence == "1 of 2 peers answer; none from 10.244.9.0/24"
    assert P.peer_probe(node(unavailable={"probe": "--no-probe"})).status == M.UNKNOWN
