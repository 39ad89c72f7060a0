"""UdpBackend's decisions that need no kernel: config, lease attributes, which peers count,
what it wants in the kernel, the peer table it hands the forwarder."""
from __future__ import annotations

import ipaddress

import pytest

from cni_flannel.daemon.backends import new
from cni_flannel.daemon.backends import udp as udp_backend
from cni_flannel.daemon.errors import BackendError
from cni_flannel.daemon.lease import Lease, LeaseAttrs

NET = "10.244.0.0/16"


def lease(n: int, kind: str = "udp", ip: str = "") -> Lease:
    return Lease.from_dict({"Subnet": f"10.244.{n}.0/24", "PublicIP": ip or f"198.18.0.{n}", "BackendType": kind})


def test_port_defaults_to_8285_and_is_configurable():
    assert new("udp", {"Type": "udp"}, networks=[NET]).port == 8285
    assert new("udp", {"Type": "udp", "Port": 0}, networks=[NET]).port == 8285
    assert new("udp", {"Type": "udp", "Port": 9000}, networks=[NET]).port == 9000


@pytest.mark.parametrize("networks", [[], ["fd00::/56"], [NET, "10.245.0.0/16"]])
def test_needs_exactly_one_ipv4_network(networks):
    with pytest.raises(BackendError, match="exactly one IPv4 Network"):
        new("udp", {"Type": "udp"}, networks=networks)


def test_lease_attrs_are_upstreams_public_ip_only_with_offloads_off(monkeypatch):
    monkeypatch.setenv("FLANNELD_UDP_OFFLOAD", "0")
    be = new("udp", {"Type": "udp"}, networks=[NET])
    ip = ipaddress.IPv4Address("198.18.0.1")
    assert be.lease_attrs(ip, None) == LeaseAttrs(public_ip=ip)
    assert be.lease_attrs(ip, None, previous=LeaseAttrs(backend_type="vxlan")) == LeaseAttrs(public_ip=ip)


def test_lease_attrs_announce_partial_checksums_where_udp_offloads_exist(monkeypatch):
    monkeypatch.delenv("FLANNELD_UDP_OFFLOAD", raising=False)
    ip = ipaddress.IPv4Address("198.18.0.1")
    monkeypatch.setattr(udp_backend, "_probe_new_socket", lambda: "")
    assert new("udp", {"Type": "udp"}, networks=[NET]).lease_attrs(ip, None) == LeaseAttrs(
        public_ip=ip, backend_data={"PartialChecksums": True})
    monkeypatch.setattr(udp_backend, "_probe_new_socket", lambda: "UDP GSO/GRO unavailable (ENOPROTOOPT)")
    assert new("udp", {"Type": "udp"}, networks=[NET]).lease_attrs(ip, None) == LeaseAttrs(public_ip=ip)


@pytest.mark.parametrize("data, partial", [
    ({"PartialChecksums": True}, True), (None, False), ({"PartialChecksums": "yes"}, False),
    ({"PartialChecksums": 1}, False), ([], False), ({"VtepMAC": "aa:bb:cc:dd:ee:ff"}, False)])
def test_only_a_lease_saying_partial_checksums_true_gets_them(data, partial):
    be = new("udp", {"Type": "udp"}, networks=[NET])
    be.node = lease(1)
    peer = Lease.from_dict({"Subnet": "10.244.2.0/24", "PublicIP": "198.18.0.2", "BackendData": data})
    assert udp_backend.takes_partial_checksums(peer) is partial
    be.peers = {peer.key: peer}
    table = be._table()
    assert table.lookup(int(ipaddress.IPv4Address("10.244.2.9"))) == ("198.18.0.2", 8285)
    assert (("198.18.0.2", 8285) in table.partial) is partial


def test_peers_upstream_form_and_ours_count_others_do_not():
    be = new("udp", {"Type": "udp"}, networks=[NET])
    be.node = lease(1)
    assert be._wanted(lease(2, "udp")) and be._wanted(lease(3, ""))
    assert not be._wanted(lease(4, "vxlan"))
    assert not be._wanted(lease(1, "udp"))  # our own lease in the watch
    assert not be._wanted(lease(5, "udp", ip="198.18.0.1"))  # another subnet at our PublicIP


def test_desired_is_one_route_and_the_table_has_every_peer():
    be = new("udp", {"Type": "udp", "Port": 8299}, networks=[NET])
    be.node = lease(1)
    be.peers = {p.key: p for p in (lease(2), lease(3, ""))}
    state, refused = be.desired(be.peers.values())
    assert [str(r) for r in state.routes] == ["route 10.244.0.0/16 via None dev flannel0"] and not refused
    table = be._table()
    assert table.lookup(int(ipaddress.IPv4Address("10.244.3.9"))) == ("198.18.0.3", 8299)
    assert table.sources == {"198.18.0.2", "198.18.0.3"}
    no_ip = Lease.from_dict({"Subnet": "10.244.5.0/24", "BackendType": "udp"})
    _, refused = be.desired([no_ip])
    assert [why for _, why in refused] == ["no IPv4 Subnet and PublicIP in its lease (udp carries IPv4 only)"]


def test_setup_refuses_leases_it_cannot_carry_before_touching_the_node():
    be = new("udp", {"Type": "udp"}, networks=[NET], handle=object())  # any netlink use would fail
    with pytest.raises(BackendError, match="BackendType 'vxlan'"):
        be.setup(lease(1, "vxlan"))
    with pytest.raises(BackendError, match="outside the Network"):
        be.setup(Lease.from_dict({"Subnet": "10.245.1.0/24", "PublicIP": "198.18.0.1", "BackendType": ""}))
    with pytest.raises(BackendError, match="IPv4 only"):
        be.setup(Lease.from_dict({"IPv6Subnet": "fd00:0:0:1::/64", "PublicIPv6": "2001:db8::1", "BackendType": "udp"}))


def test_a_forwarding_loop_that_dies_of_a_bug_is_restarted(caplog):
    from cni_flannel.daemon.udp.threads import thread_main
    calls = []

    def loop():
        calls.append(1)
        if len(calls) < 3:
            raise ZeroDivisionError("a bug")

    thread_main(loop, "udp-test", lambda: False, pause=0)()
    assert len(calls) == 3
    assert caplog.text.count("udp forwarder udp-test failed; restarting it") == 2
    calls.clear()
    thread_main(loop, "udp-test", lambda: True, pause=0)()  # stopping: no restart
    assert len(calls) == 1


def test_binds_to_the_interface_address_as_upstream_even_behind_nat():
    from cni_flannel.net.types import Address, Link

    class Handle:
        def addresses(self, index=None, family=0):
            return [Address(2, "fe80::1", 64, 253), Address(2, "192.0.2.10", 24, 0), Address(2, "192.0.2.11", 24, 0)]

    be = new("udp", {"Type": "udp"}, networks=[NET], handle=Handle())
    be.ext = Link(2, "eth0")
    assert be._bind_address("192.0.2.11") == "192.0.2.11"   # the PublicIP is on the interface
    assert be._bind_address("198.51.100.7") == "192.0.2.10"  # --public-ip of a NAT: the interface's own
