"""Daemon backends end to end against the in-memory kernel (no root): setup, reconcile,
lease events, stale entries, VTEP recreation, refused peers, error reports, the JSON driver."""
from __future__ import annotations

import errno
import json
import logging

import pytest

from cni_flannel.daemon.backends.__main__ import serve
from cni_flannel.daemon.backends.host_gw import HostGwBackend
from cni_flannel.daemon.backends.base import PeerError
from cni_flannel.daemon.errors import BackendError
from cni_flannel.daemon.lease import Lease
from cni_flannel.daemon.manager import Event
from cni_flannel.daemon.backends.vxlan import VxlanBackend
from cni_flannel.net.types import Route
from tests.unit.test_daemon_backends_fake import FakeKernel

NET = ["10.244.0.0/16", "fd00:10:244::/56"]
MAC = {2: "0a:58:0a:f4:02:00", 3: "0a:58:0a:f4:03:00", 4: "0a:58:0a:f4:04:00"}


def lease(n: int, btype: str = "vxlan", public: str = "", v6: bool = False, mac: str = "",
          public6: str = "") -> Lease:
    d = {"Subnet": f"10.244.{n}.0/24", "PublicIP": public or f"198.18.0.{n}", "BackendType": btype}
    if v6:
        d.update(IPv6Subnet=f"fd00:10:244:{n}::/64", PublicIPv6=public6 or f"2001:db8::{n}")
    if btype == "vxlan" and (mac or MAC.get(n)):
        d["BackendData"] = {"VNI": 1, "VtepMAC": mac or MAC[n]}
        if v6:
            d["BackendV6Data"] = {"VNI": 1, "VtepMAC": mac or MAC[n]}
    return Lease.from_dict(d)


def vxlan(k: FakeKernel, **config) -> VxlanBackend:
    be = VxlanBackend(config, networks=NET, handle=k)
    be.setup(lease(1, v6="2001:db8::1/64" in [a.cidr for a in k.addrs]))
    return be


def programmed(k: FakeKernel, dev: str = "flannel.1"):
    index = k.link(dev).index
    neighs = sorted((n.ip, n.mac) for n in k.neighbours(index))
    fdb = sorted((n.mac, n.ip) for n in k.neighbours(index, bridge=True))
    routes = sorted((r.dst, r.gw, r.onlink) for r in k.routes() if r.index == index)
    return neighs, fdb, routes


def test_setup_creates_the_vtep_as_flannel_does():
    k = FakeKernel()
    be = VxlanBackend({"VNI": 1}, handle=k)
    data = be.setup(lease(1))
    link = k.link("flannel.1")
    assert data == {"BackendType": "vxlan", "BackendData": {"VNI": 1, "VtepMAC": link.mac}}
    assert (link.vxlan.vni, link.vxlan.local, link.vxlan.port, link.vxlan.learning, link.vxlan.link) == \
        (1, "198.18.0.1", 8472, False, k.eth0.index)
    assert link.mtu == 1450 == be.mtu and link.up
    assert [a.cidr for a in k.addresses(link.index)] == ["10.244.1.0/32"]


def test_setup_again_keeps_a_compatible_device_and_its_mac():
    k = FakeKernel()
    first = VxlanBackend({}, handle=k).setup(lease(1))
    k.set_mtu("flannel.1", 1400)
    k.add_address(k.link("flannel.1").index, "10.244.7.0/32")  # an old subnet's address
    second = VxlanBackend({}, handle=k).setup(lease(1))
    assert first == second
    assert k.link("flannel.1").mtu == 1450
    assert [a.cidr for a in k.addresses(k.link("flannel.1").index)] == ["10.244.1.0/32"]


def test_backend_mtu_option_overrides_the_interface():
    k = FakeKernel(mtu=9000)
    assert vxlan(k).mtu == 8950
    assert vxlan(FakeKernel(mtu=9000), MTU=1500).mtu == 1450


def test_reconcile_programs_every_peer_and_is_idempotent():
    k = FakeKernel()
    be = vxlan(k)
    plan = be.reconcile([lease(2), lease(3)])
    assert len(plan.add) == 6 and plan.delete == ()
    assert programmed(k) == ([("10.244.2.0", MAC[2]), ("10.244.3.0", MAC[3])],
                             [(MAC[2], "198.18.0.2"), (MAC[3], "198.18.0.3")],
                             [("10.244.2.0/24", "10.244.2.0", True), ("10.244.3.0/24", "10.244.3.0", True)])
    k.calls.clear()
    assert be.reconcile().empty and be.reconcile([lease(3), lease(2)]).empty
    assert k.calls == []


def test_reconcile_removes_stale_entries_and_spares_foreign_ones():
    k = FakeKernel()
    be = vxlan(k)
    vt = k.link("flannel.1").index
    k.set_neighbour(vt, "10.244.9.0", "0a:58:0a:f4:09:00")
    k.set_fdb(vt, "0a:58:0a:f4:09:00", "198.18.0.9")
    k.add_route(Route("10.244.9.0/24", "10.244.9.0", vt, onlink=True))
    k.add_route(Route("10.244.8.0/24", "198.18.0.8", k.eth0.index))        # stale host-gw route
    k.set_neighbour(vt, "10.244.2.0", "0a:58:0a:f4:99:99")                 # live peer, wrong MAC
    k.add_route(Route("192.168.0.0/16", "198.18.0.254", k.eth0.index))     # not the cluster's
    k.add_route(Route("10.244.1.0/24", None, 99))                          # cni0's, not ours
    be.reconcile([lease(2)])
    assert programmed(k) == ([("10.244.2.0", MAC[2])], [(MAC[2], "198.18.0.2")],
                             [("10.244.2.0/24", "10.244.2.0", True)])
    left = {r.dst for r in k.routes()}
    assert {"192.168.0.0/16", "10.244.1.0/24"} <= left and not {"10.244.9.0/24", "10.244.8.0/24"} & left


def test_removed_peer_loses_all_three_entries():
    k = FakeKernel()
    be = vxlan(k)
    be.reconcile([lease(2), lease(3)])
    plan = be.handle([Event("removed", lease(3))])
    assert sorted(type(e).__name__ for e in plan.delete) == ["Fdb", "Neigh", "RouteEntry"]
    assert programmed(k)[2] == [("10.244.2.0/24", "10.244.2.0", True)]
    assert set(be.peers) == {lease(2).key}


def test_removal_of_a_peer_never_seen_still_removes_its_entries():
    k = FakeKernel()
    old = vxlan(k)
    old.reconcile([lease(2)])
    be = vxlan(k)  # a restarted daemon that has not reconciled yet
    be.handle([Event("removed", lease(2))])
    assert programmed(k) == ([], [], [])


def test_added_peer_with_a_new_vtep_mac_replaces_the_old_entries():
    k = FakeKernel()
    be = vxlan(k)
    be.reconcile([lease(2)])
    be.handle([Event("added", lease(2, mac=MAC[4]))])
    assert programmed(k)[:2] == ([("10.244.2.0", MAC[4])], [(MAC[4], "198.18.0.2")])


def test_a_restart_keeps_the_mac_of_an_incompatible_device():
    k = FakeKernel()
    k.add_vxlan("flannel.1", 1, local="198.18.0.1", port=4789, mac="0a:11:22:33:44:55", link=k.eth0.index)
    data = vxlan(k).setup(lease(1))
    assert k.link("flannel.1").vxlan.port == 8472
    assert data["BackendData"]["VtepMAC"] == "0a:11:22:33:44:55"


def test_own_lease_and_other_backend_types_are_ignored():
    k = FakeKernel()
    be = vxlan(k)
    assert be.handle([Event("added", lease(1)), Event("added", lease(4, btype="host-gw"))]).empty
    assert be.peers == {}


def test_a_deleted_vtep_is_recreated_with_every_peer_on_the_next_batch():
    k = FakeKernel()
    be = vxlan(k)
    be.reconcile([lease(2), lease(3)])
    mac = k.link("flannel.1").mac
    k.delete_link("flannel.1")
    be.handle([Event("added", lease(4))])
    assert len(programmed(k)[2]) == 3
    assert k.link("flannel.1").mac == mac  # the VtepMAC peers know stays valid


def test_a_vtep_with_wrong_attributes_is_recreated_and_peers_readded():
    k = FakeKernel()
    be = vxlan(k)
    be.reconcile([lease(2), lease(3)])
    mac = k.link("flannel.1").mac
    k.delete_link("flannel.1")
    k.add_vxlan("flannel.1", 1, local="198.18.0.1", port=4789, learning=True, link=k.eth0.index)
    plan = be.reconcile()
    link = k.link("flannel.1")
    assert (link.vxlan.port, link.vxlan.learning, link.mac) == (8472, False, mac)
    assert len(plan.add) == 6 and len(programmed(k)[2]) == 2


def test_direct_routing_uses_host_gw_routes_for_directly_connected_peers():
    k = FakeKernel()
    be = vxlan(k, DirectRouting=True)
    be.reconcile([lease(2), lease(5, public="192.0.2.5", mac=MAC[4])])
    routes = sorted((r.dst, r.gw, r.index) for r in k.routes() if r.proto != 2)
    assert routes == [("10.244.2.0/24", "198.18.0.2", k.eth0.index),
                      ("10.244.5.0/24", "10.244.5.0", k.link("flannel.1").index)]
    assert be.reconcile().empty


def test_dual_stack_uses_one_code_path_and_the_v6_overhead():
    k = FakeKernel(ext_ip="198.18.0.1/15,2001:db8::1/64")
    be = vxlan(k)
    assert k.link("flannel-v6.1").mtu == 1430 and be.mtu == 1430
    assert [a.cidr for a in k.addresses(k.link("flannel-v6.1").index)] == ["fd00:10:244:1::/128"]
    be.reconcile([lease(2, v6=True)])
    assert programmed(k, "flannel-v6.1") == ([("fd00:10:244:2::", MAC[2])], [(MAC[2], "2001:db8::2")],
                                             [("fd00:10:244:2::/64", "fd00:10:244:2::", True)])
    assert be.reconcile().empty  # the kernel's IPv6 metric 1024 reads back as ours


def test_a_failed_entry_names_the_peer_and_skips_its_route():
    k = FakeKernel()
    be = vxlan(k)
    k.fail[f"set fdb {MAC[3]}"] = errno.EPERM
    with pytest.raises(PeerError) as info:
        be.reconcile([lease(2), lease(3)])
    assert info.value.peers == ["10.244.3.0/24 (198.18.0.3)"]
    assert "peer 10.244.3.0/24 (198.18.0.3)" in info.value.msg and "Operation not permitted" in info.value.msg
    assert [r[0] for r in programmed(k)[2]] == ["10.244.2.0/24"]
    del k.fail[f"set fdb {MAC[3]}"]
    assert len(be.reconcile().add) == 2  # the next reconcile completes it


def test_handle_and_reconcile_need_setup():
    with pytest.raises(BackendError, match="setup"):
        VxlanBackend({}, handle=FakeKernel()).reconcile([])


def test_setup_needs_an_interface_with_the_public_ip():
    with pytest.raises(BackendError, match="no interface holds the node's public IP"):
        VxlanBackend({}, handle=FakeKernel()).setup(lease(1, public="198.18.0.77"))


# --- host-gw --------------------------------------------------------------------------------

def hostgw(k: FakeKernel) -> HostGwBackend:
    be = HostGwBackend({"Type": "host-gw"}, networks=NET, handle=k)
    assert be.setup(lease(1, btype="host-gw")) == {"BackendType": "host-gw"}
    return be


def test_host_gw_routes_peers_via_their_public_ip_and_is_idempotent():
    k = FakeKernel()
    be = hostgw(k)
    be.reconcile([lease(2, btype="host-gw"), lease(3, btype="host-gw")])
    assert sorted((r.dst, r.gw, r.index) for r in k.routes() if r.proto != 2) == [
        ("10.244.2.0/24", "198.18.0.2", k.eth0.index), ("10.244.3.0/24", "198.18.0.3", k.eth0.index)]
    assert be.mtu == 1500 and k.find_link("flannel.1") is None
    assert be.reconcile().empty
    be.handle([Event("removed", lease(2, btype="host-gw"))])
    assert [r.dst for r in k.routes() if r.proto != 2] == ["10.244.3.0/24"]


def test_host_gw_refuses_a_peer_off_link_but_programs_the_others():
    k = FakeKernel()
    be = hostgw(k)
    with pytest.raises(PeerError) as info:
        be.reconcile([lease(2, btype="host-gw"), lease(5, btype="host-gw", public="192.0.2.5")])
    assert info.value.peers == ["10.244.5.0/24 (192.0.2.5)"]
    assert "192.0.2.5 is not on a network directly connected to eth0 (198.18.0.0/15)" in info.value.msg
    assert [r.dst for r in k.routes() if r.proto != 2] == ["10.244.2.0/24"]


def test_host_gw_reconcile_removes_stale_cluster_routes_only():
    k = FakeKernel()
    k.add_route(Route("10.244.9.0/24", "198.18.0.9", k.eth0.index))
    k.add_route(Route("172.16.0.0/12", "198.18.0.254", k.eth0.index))
    be = hostgw(k)
    be.reconcile([lease(2, btype="host-gw")])
    assert sorted(r.dst for r in k.routes() if r.proto != 2) == ["10.244.2.0/24", "172.16.0.0/12"]


def test_host_gw_refuses_a_public_ip_it_does_not_hold():
    k = FakeKernel()
    be = HostGwBackend({"Type": "host-gw"}, networks=NET, ext_iface="eth0", handle=k)
    with pytest.raises(BackendError, match="198.18.0.77 is not an address of 'eth0'"):
        be.setup(lease(1, btype="host-gw", public="198.18.0.77"))


# --- the JSON-lines driver --------------------------------------------------------------------

def test_driver_requests():
    k = FakeKernel()
    be = VxlanBackend({}, networks=NET, handle=k)
    reply = serve(be, json.dumps({"op": "setup", "lease": lease(1).to_dict()}))
    assert reply["ok"] and reply["mtu"] == 1450 and reply["data"]["BackendData"]["VNI"] == 1
    reply = serve(be, json.dumps({"op": "reconcile", "peers": [lease(2).to_dict()]}))
    assert len(reply["plan"]["add"]) == 3
    reply = serve(be, json.dumps({"op": "handle", "events": [{"type": "removed", "lease": lease(2).to_dict()}]}))
    assert len(reply["plan"]["delete"]) == 3
    assert serve(be, json.dumps({"op": "peers"})) == {"ok": True, "peers": []}
    assert not serve(be, json.dumps({"op": "dance"}))["ok"]


def test_lease_attrs_keep_the_existing_vteps_mac_and_setup_uses_a_new_one():
    """The lease is acquired before setup: its VtepMAC must be the one the device will have."""
    import ipaddress

    k = FakeKernel()
    be = VxlanBackend({}, handle=k)
    fresh = be.lease_attrs(ipaddress.ip_address("198.18.0.1"))
    assert fresh.backend_type == "vxlan" and fresh.backend_v6_data is None
    mac = fresh.backend_data["VtepMAC"]
    own = lease(1).with_backend("vxlan", fresh.backend_data)
    assert be.setup(own)["BackendData"]["VtepMAC"] == mac == k.link("flannel.1").mac
    again = VxlanBackend({}, handle=k).lease_attrs(ipaddress.ip_address("198.18.0.1"))  # a restart
    assert again.backend_data == {"VNI": 1, "VtepMAC": mac}
    assert HostGwBackend({}, handle=k).lease_attrs(ipaddress.ip_address("198.18.0.1")).backend_data is None


def test_lease_attrs_reuse_the_stored_vtep_mac_when_no_device_survived():
    import ipaddress

    from cni_flannel.daemon.lease import LeaseAttrs

    stored = LeaseAttrs(backend_type="vxlan", backend_data={"VNI": 1, "VtepMAC": MAC[4]})
    attrs = VxlanBackend({}, handle=FakeKernel()).lease_attrs(ipaddress.ip_address("198.18.0.1"), previous=stored)
    assert attrs.backend_data["VtepMAC"] == MAC[4]


def test_a_removal_without_attributes_removes_the_known_peer():
    """etcd's DELETE event carries the key only: the lease has no BackendType, IP or MAC."""
    from cni_flannel.daemon.lease import Lease as L

    k = FakeKernel()
    be = vxlan(k)
    be.reconcile([lease(2), lease(3)])
    be.handle([Event("removed", L.from_dict({"Subnet": "10.244.3.0/24", "BackendType": ""}))])
    assert programmed(k)[2] == [("10.244.2.0/24", "10.244.2.0", True)]


# --- a peer at one of our own addresses -------------------------------------------------------

def refusals(caplog) -> list:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_peer_claiming_our_public_ip_is_refused_with_one_warning(caplog):
    """Another subnet at our PublicIP (a stale lease of ours, or a lying peer): programming it
    would point its FDB entry at ourselves.  Skipped, named in one warning; the others go on."""
    k = FakeKernel()
    be = vxlan(k)
    with caplog.at_level(logging.WARNING, logger="cni_flannel.daemon.backends"):
        be.reconcile([lease(2), lease(5, public="198.18.0.1", mac=MAC[4])])
    assert list(be.peers) == [lease(2).key]
    assert programmed(k) == ([("10.244.2.0", MAC[2])], [(MAC[2], "198.18.0.2")],
                             [("10.244.2.0/24", "10.244.2.0", True)])
    assert refusals(caplog) == ["refusing peer 10.244.5.0/24 (198.18.0.1): its public IP 198.18.0.1 "
                                "is this node's own address; nothing is programmed for it"]


@pytest.mark.parametrize("subnet", ["10.244.1.128/25", "10.244.1.0/25", "10.244.0.0/16", "10.0.0.0/8",
                                    "10.244.1.7/32"])
def test_a_peer_claiming_part_of_our_own_subnet_is_refused(caplog, subnet):
    """A lying peer's lease for a piece of our subnet (or a network holding it): its route would
    pull our own pods' traffic into the tunnel.  Refused with one warning; the others go on."""
    k = FakeKernel()
    be = vxlan(k)
    liar = Lease.from_dict({"Subnet": subnet, "PublicIP": "198.18.0.7", "BackendType": "vxlan",
                            "BackendData": {"VNI": 1, "VtepMAC": MAC[4]}})
    with caplog.at_level(logging.WARNING, logger="cni_flannel.daemon.backends"):
        be.reconcile([lease(2), liar])
    assert list(be.peers) == [lease(2).key]
    assert programmed(k) == ([("10.244.2.0", MAC[2])], [(MAC[2], "198.18.0.2")],
                             [("10.244.2.0/24", "10.244.2.0", True)])
    assert refusals(caplog) == [f"refusing peer {liar.name}: its subnet overlaps this node's own subnet "
                                "10.244.1.0/24; nothing is programmed for it"]
    # ... and the same through the watch (an event, not a resync)
    be.handle([Event("added", liar), Event("added", lease(3))])
    assert [r[0] for r in programmed(k)[2]] == ["10.244.2.0/24", "10.244.3.0/24"]


def test_a_peer_claiming_part_of_our_ipv6_subnet_is_refused():
    k = FakeKernel(ext_ip="198.18.0.1/15,2001:db8::1/64")
    be = vxlan(k)
    liar = Lease.from_dict({"Subnet": "10.244.5.0/24", "PublicIP": "198.18.0.5", "BackendType": "vxlan",
                            "IPv6Subnet": "fd00:10:244:1::/80", "PublicIPv6": "2001:db8::5",
                            "BackendData": {"VNI": 1, "VtepMAC": MAC[4]}, "BackendV6Data": {"VNI": 1, "VtepMAC": MAC[4]}})
    be.reconcile([lease(2, v6=True), liar])
    assert list(be.peers) == [lease(2, v6=True).key]


def test_a_peer_moving_onto_our_address_loses_what_it_had():
    k = FakeKernel()
    be = vxlan(k)
    be.reconcile([lease(2), lease(3)])
    be.handle([Event("added", lease(3, public="198.18.0.1"))])
    assert list(be.peers) == [lease(2).key]
    assert [r[0] for r in programmed(k)[2]] == ["10.244.2.0/24"]
    assert programmed(k)[1] == [(MAC[2], "198.18.0.2")]


@pytest.mark.parametrize("public, public6", [("198.18.0.1", ""), ("", "2001:db8::1"), ("", "2001:DB8:0::1"),
                                             ("192.0.2.200", ""), ("127.0.0.1", ""), ("", "::1")])
def test_dual_stack_refuses_a_peer_with_any_side_at_our_address(caplog, public, public6):
    """One check for IPv4 and IPv6: the node's PublicIP(v6), any other address it holds, loopback."""
    k = FakeKernel(ext_ip="198.18.0.1/15,2001:db8::1/64")
    k.add_address(k.lo.index, "192.0.2.200/32")
    be = vxlan(k)
    with caplog.at_level(logging.WARNING, logger="cni_flannel.daemon.backends"):
        be.reconcile([lease(2, v6=True), lease(5, v6=True, mac=MAC[4], public=public, public6=public6)])
    assert list(be.peers) == [lease(2, v6=True).key]
    for dev in ("flannel.1", "flannel-v6.1"):
        assert len(programmed(k, dev)[1]) == 1
    assert len(refusals(caplog)) == 1 and "refusing peer 10.244.5.0/24" in refusals(caplog)[0]


def test_host_gw_never_routes_a_subnet_via_our_own_address(caplog):
    k = FakeKernel()
    be = hostgw(k)
    with caplog.at_level(logging.WARNING, logger="cni_flannel.daemon.backends"):
        be.reconcile([lease(2, btype="host-gw"), lease(5, btype="host-gw", public="198.18.0.1")])
        be.handle([Event("added", lease(6, btype="host-gw", public="198.18.0.1"))])
    assert [(r.dst, r.gw) for r in k.routes() if r.proto != 2] == [("10.244.2.0/24", "198.18.0.2")]
    assert [m.split(":")[0] for m in refusals(caplog)] == ["refusing peer 10.244.5.0/24 (198.18.0.1)",
                                                           "refusing peer 10.244.6.0/24 (198.18.0.1)"]
