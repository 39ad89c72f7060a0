"""Daemon backends without root: the pure parts — leases and Backend options, the plan
(desired vs current -> deletes/adds), VTEP specs and compatibility, per-peer entries."""
from __future__ import annotations

import ipaddress

import pytest

from cni_flannel.daemon.backends import new
from cni_flannel.daemon.backends.__main__ import event_from_dict
from cni_flannel.daemon.errors import ConfigError
from cni_flannel.daemon.lease import Lease, LeaseFormatError, Side
from cni_flannel.daemon.netconf import parse_backend
from cni_flannel.daemon.backends.plan import (Fdb, Neigh, RouteEntry, State, diff,
                                              directly_connected, in_networks)
from cni_flannel.daemon.backends.vxlan import (VtepSpec, incompatible, peer_entries, random_mac,
                                               vtep_spec)
from cni_flannel.net.types import Link, VxlanInfo

MAC2, MAC3 = "0a:58:0a:f4:02:00", "0a:58:0a:f4:03:00"


def peer_state(n: int, mac: str, public: str, dev: str = "flannel.1") -> State:
    return State.of([Neigh(dev, f"10.244.{n}.0", mac), Fdb(dev, mac, public),
                     RouteEntry(f"10.244.{n}.0/24", f"10.244.{n}.0", dev, onlink=True)])


# --- leases, events, options --------------------------------------------------------------

def test_lease_round_trips_the_etcd_form():
    d = {"Subnet": "10.244.2.0/24", "PublicIP": "198.18.0.2", "BackendType": "vxlan",
         "BackendData": {"VNI": 1, "VtepMAC": MAC2},
         "IPv6Subnet": "fd00:10:244:2::/64", "PublicIPv6": "2001:db8::2",
         "BackendV6Data": {"VNI": 1, "VtepMAC": MAC3}}
    lease = Lease.from_dict(d)
    assert lease.to_dict() == d
    assert lease.key == "10.244.2.0-24&fd00:10:244:2::-64"
    assert lease.name == "10.244.2.0/24 (198.18.0.2) & fd00:10:244:2::/64 (2001:db8::2)"
    assert [s.family for s in lease.sides()] == [4, 6]
    assert lease.side(6) == Side(6, ipaddress.ip_network("fd00:10:244:2::/64"), "2001:db8::2", MAC3)


@pytest.mark.parametrize("d,needle", [
    ({}, "needs a Subnet"), ([], "JSON object"), ({"Subnet": "10.244.2.0/24", "BackendType": 3}, "BackendType"),
    ({"Subnet": "10.244.2.1/24"}, "is not a network"),
    ({"Subnet": "fd00::/64"}, "not an IPv4 network"),
    ({"Subnet": "10.244.2.0/24", "PublicIP": "2001:db8::1"}, "PublicIP"),
    ({"IPv6Subnet": "fd00::/64", "PublicIPv6": "nope"}, "PublicIPv6"),
])
def test_bad_leases_name_the_field(d, needle):
    with pytest.raises(LeaseFormatError, match=needle):
        Lease.from_dict(d)


def test_ipv6_only_lease_has_upstreams_key():
    lease = Lease.from_dict({"IPv6Subnet": "fd00:10:244:2::/64", "PublicIPv6": "2001:db8::2"})
    assert lease.key == "0.0.0.0-0&fd00:10:244:2::-64"  # flannel's empty IP4Net, as etcd holds it
    assert [s.family for s in lease.sides()] == [6] and lease.side(4) is None


def test_vtep_mac_is_read_leniently_from_backend_data():
    lease = Lease.from_dict({"Subnet": "10.244.2.0/24", "BackendData": {"vtepmac": MAC2.upper()}})
    assert lease.side(4).vtep_mac == MAC2
    assert Lease.from_dict({"Subnet": "10.244.2.0/24", "BackendData": {"VtepMAC": "nope"}}).side(4).vtep_mac is None


def test_event_type_is_checked():
    assert event_from_dict({"type": "Added", "lease": {"Subnet": "10.244.2.0/24"}}).type == "added"
    with pytest.raises(LeaseFormatError, match="'renamed'"):
        event_from_dict({"type": "renamed", "lease": {"Subnet": "10.244.2.0/24"}})


def test_backend_config_defaults_are_flannels():
    c = parse_backend({"Type": "vxlan"})
    assert (c.vni, c.effective_port, c.gbp, c.learning, c.direct_routing, c.mtu) == (1, 8472, False, False, False, 0)
    assert parse_backend({"Type": "vxlan", "Port": 0, "MTU": 0}).effective_port == 8472
    assert parse_backend(None, default_type="vxlan").type == "vxlan"
    assert parse_backend({"type": "host-gw", "directrouting": True}).direct_routing  # keys as Go reads them
    c = parse_backend({"Type": "host-gw", "VNI": 4096, "Port": 4789, "DirectRouting": True, "MTU": 9000})
    assert (c.type, c.vni, c.effective_port, c.direct_routing, c.mtu) == ("host-gw", 4096, 4789, True, 9000)


@pytest.mark.parametrize("d,needle", [({"VNI": "1"}, "Backend.VNI"), ({"VNI": 1 << 24}, "Backend.VNI"),
                                      ({"Port": 70000}, "Backend.Port"), ({"GBP": "yes"}, "Backend.GBP"),
                                      ({"DirectRouting": 1}, "Backend.DirectRouting"),
                                      ({"MTU": 40}, "Backend.MTU"), ({"VNI": True}, "Backend.VNI")])
def test_backend_config_rejects_bad_values(d, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_backend(d, default_type="vxlan")


def test_unknown_backend_type_is_refused():
    with pytest.raises(ConfigError, match="'tun' is not supported"):
        new("tun")
    assert type(new("vxlan")).__name__ == "VxlanBackend" and type(new("host-gw")).__name__ == "HostGwBackend"


# --- the plan -----------------------------------------------------------------------------

def test_same_state_twice_plans_nothing():
    s = peer_state(2, MAC2, "198.18.0.2") | peer_state(3, MAC3, "198.18.0.3")
    assert diff(s, s).empty


def test_missing_entries_are_added_neighbour_and_fdb_before_the_route():
    plan = diff(peer_state(2, MAC2, "198.18.0.2"), State())
    assert [type(e).__name__ for e in plan.add] == ["Neigh", "Fdb", "RouteEntry"]
    assert plan.delete == ()


def test_stale_entries_are_deleted_route_first():
    plan = diff(State(), peer_state(9, MAC3, "198.18.0.9"))
    assert [type(e).__name__ for e in plan.delete] == ["RouteEntry", "Neigh", "Fdb"]
    assert plan.add == ()


def test_a_changed_vtep_mac_replaces_the_neighbour_in_place_and_drops_the_old_fdb_remote():
    plan = diff(peer_state(2, MAC3, "198.18.0.2"), peer_state(2, MAC2, "198.18.0.2"))
    assert plan.delete == (Fdb("flannel.1", MAC2, "198.18.0.2"),)  # never the neighbour we re-add
    assert set(plan.add) == {Neigh("flannel.1", "10.244.2.0", MAC3), Fdb("flannel.1", MAC3, "198.18.0.2")}


def test_a_moved_peer_replaces_its_fdb_remote():
    plan = diff(peer_state(2, MAC2, "198.18.0.22"), peer_state(2, MAC2, "198.18.0.2"))
    assert plan.delete == (Fdb("flannel.1", MAC2, "198.18.0.2"),)
    assert plan.add == (Fdb("flannel.1", MAC2, "198.18.0.22"),)


def test_a_route_to_the_same_destination_is_replaced_not_deleted():
    hostgw = State.of([RouteEntry("10.244.2.0/24", "198.18.0.2", "eth0")])
    plan = diff(peer_state(2, MAC2, "198.18.0.2"), hostgw)
    assert plan.delete == () and len(plan.add) == 3


def test_a_route_with_another_metric_is_not_overwritten():
    other = State.of([RouteEntry("10.244.2.0/24", "198.18.0.2", "eth0", metric=100)])
    plan = diff(State.of([RouteEntry("10.244.2.0/24", "198.18.0.2", "eth0")]), other)
    assert plan.delete == tuple(other.routes)


def test_peer_labels_do_not_affect_equality():
    assert Neigh("flannel.1", "10.244.2.0", MAC2, peer="x") == Neigh("flannel.1", "10.244.2.0", MAC2)
    assert diff(State.of([Neigh("flannel.1", "10.244.2.0", MAC2, peer="p")]),
                State.of([Neigh("flannel.1", "10.244.2.0", MAC2)])).empty


def test_plan_renders_for_logs():
    plan = diff(peer_state(2, MAC2, "198.18.0.2"), State())
    assert plan.to_dict()["add"] == [f"neighbour 10.244.2.0 lladdr {MAC2} dev flannel.1",
                                     f"FDB entry {MAC2} dst 198.18.0.2 dev flannel.1",
                                     "route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink"]


@pytest.mark.parametrize("ip,nets,ok", [
    ("198.18.0.2", ["198.18.0.1/15"], True), ("198.20.0.2", ["198.18.0.1/15"], False),
    ("192.0.2.9", ["198.18.0.1/15", "192.0.2.1/24"], True), ("2001:db8::2", ["2001:db8::1/64"], True),
    ("2001:db8::2", ["198.18.0.1/15"], False), ("198.18.0.1", ["198.18.0.1/32"], False),
])
def test_directly_connected(ip, nets, ok):
    assert directly_connected(ip, nets) is ok


def test_in_networks():
    assert in_networks("10.244.3.0/24", ["10.244.0.0/16"])
    assert not in_networks("10.245.3.0/24", ["10.244.0.0/16"])
    assert not in_networks("10.0.0.0/8", ["10.244.0.0/16"])
    assert in_networks("fd00:10:244:2::/64", ["10.244.0.0/16", "fd00:10:244::/56"])


# --- vxlan: the device and the per-peer entries -----------------------------------------------

def v4side(n: int = 1, public: str = "198.18.0.1", mac: str = "") -> Side:
    return Side(4, ipaddress.ip_network(f"10.244.{n}.0/24"), public, mac or None)


def test_vtep_spec_v4_and_v6():
    spec = vtep_spec(1, 8472, False, False, v4side(), 2, 1500)
    assert spec == VtepSpec("flannel.1", 4, 1, "198.18.0.1", 8472, False, False, 2, 1450, "10.244.1.0/32")
    v6 = Side(6, ipaddress.ip_network("fd00:10:244:1::/64"), "2001:db8::1", None)
    spec6 = vtep_spec(7, 8472, False, False, v6, 2, 1500)
    assert (spec6.name, spec6.mtu, spec6.address) == ("flannel-v6.7", 1430, "fd00:10:244:1::/128")


def test_vtep_spec_needs_a_public_ip():
    with pytest.raises(Exception, match="no public IPv4 address"):
        vtep_spec(1, 8472, False, False, v4side(public=""), 2, 1500)


def test_incompatible_names_each_difference():
    spec = vtep_spec(1, 8472, False, False, v4side(), 2, 1500)
    good = Link(5, "flannel.1", kind="vxlan", vxlan=VxlanInfo(1, "198.18.0.1", 8472, False, False, 2))
    assert incompatible(spec, good) == ""
    assert incompatible(spec, Link(5, "flannel.1", mtu=1400, kind="vxlan",
                                   vxlan=VxlanInfo(1, "198.18.0.1", 8472, False, False, 0))) == ""
    bad = Link(5, "flannel.1", kind="vxlan", vxlan=VxlanInfo(2, "198.18.0.9", 4789, True, True, 3))
    assert incompatible(spec, bad) == ("VNI 2 (want 1), local 198.18.0.9 (want 198.18.0.1), dstport 4789 "
                                       "(want 8472), learning True (want False), gbp True (want False), "
                                       "dev (ifindex) 3 (want 2)")
    assert "not vxlan" in incompatible(spec, Link(5, "flannel.1", kind="bridge"))


def test_random_mac_is_locally_administered_unicast():
    for _ in range(50):
        first = int(random_mac().split(":")[0], 16)
        assert first & 0x02 and not first & 0x01


def test_peer_entries():
    entries, why = peer_entries(v4side(2, "198.18.0.2", MAC2.upper()), "flannel.1", "p2")
    assert why == "" and State.of(entries) == peer_state(2, MAC2, "198.18.0.2")
    assert all(e.peer == "p2" for e in entries)
    direct, _ = peer_entries(v4side(2, "198.18.0.2", MAC2), "flannel.1", "p2", direct_via="eth0")
    assert direct == [RouteEntry("10.244.2.0/24", "198.18.0.2", "eth0")]
    assert peer_entries(v4side(2, "198.18.0.2"), "flannel.1", "p2") == ([], "no VtepMAC in its IPv4 backend data")
    assert peer_entries(v4side(2, ""), "flannel.1", "p2")[1] == "no public IPv4 address in its lease"


def test_lease_from_the_lease_managers_form() -> None:
    """The lease the managers read from etcd is the one the backends program from."""
    from cni_flannel.daemon import lease as stored

    key = "/coreos.com/network/subnets/10.244.2.0-24&fd00:10:244:2::-64"
    value = ('{"PublicIP":"198.18.0.2","PublicIPv6":"2001:db8::2","BackendType":"vxlan",'
             '"BackendData":{"VNI":1,"VtepMAC":"0a:58:0a:f4:02:00"},'
             '"BackendV6Data":{"VNI":1,"VtepMAC":"0a:58:0a:f4:02:01"}}')
    lease = stored.lease_from_kv(key, value, 86400, 0.0)
    assert lease.backend_type == "vxlan" and lease.key == "10.244.2.0-24&fd00:10:244:2::-64"
    assert lease.sides() == [Side(4, ipaddress.ip_network("10.244.2.0/24"), "198.18.0.2", "0a:58:0a:f4:02:00"),
                             Side(6, ipaddress.ip_network("fd00:10:244:2::/64"), "2001:db8::2", "0a:58:0a:f4:02:01")]
