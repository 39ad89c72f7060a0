"""EtcdSubnetManager against a real etcd (Debian etcd-server) on 127.0.0.1.

The store is checked with the harness's own standard-library client, not the code under test.
"""
from __future__ import annotations

import ipaddress
import json
import threading
import time
from typing import Any, List

import pytest

from cni_flannel.daemon.errors import LeaseRevoked, OutOfSubnets
from cni_flannel.daemon.etcd import EtcdOptions, EtcdSubnetManager
from cni_flannel.daemon.lease import Lease, LeaseAttrs, lease_from_kv, parse_attrs, render_attrs
from cni_flannel.daemon.manager import REMOVED
from tests.harness.etcd import etcd, etcd_factory  # noqa: F401 (fixtures)
from tests.harness.wait import wait_until
from tests.integration.etcd_manager import CONFIG, NET, SUBNETS, attrs, close_managers, managers, manager, \
    subnet_keys, watches  # noqa: F401 (fixtures)

# --- acquire ------------------------------------------------------------------------------

def test_acquire_on_empty_store_writes_flannels_key_and_value_on_an_etcd_lease(etcd):
    etcd.put(CONFIG, NET)
    lease = manager(etcd, ttl=60, renew_margin=10).acquire_lease(attrs(1))
    assert lease.subnet is not None and lease.subnet.prefixlen == 24
    assert lease.subnet != ipaddress.ip_network("10.244.0.0/24")  # never SubnetMin's predecessor
    assert lease.subnet.subnet_of(ipaddress.ip_network("10.244.0.0/16"))
    kv = etcd.get(SUBNETS + f"{lease.subnet.network_address}-24")
    assert kv is not None
    assert kv["value"] == ('{"PublicIP":"192.0.2.1","PublicIPv6":null,"BackendType":"vxlan",'
                           '"BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}}')
    assert kv["lease"] != 0 and 55 <= etcd.ttl(kv["lease"]) <= 60
    assert 55 <= lease.expiration - time.time() <= 61


def test_acquire_reuses_own_lease_by_public_ip_after_restart(etcd):
    etcd.put(CONFIG, NET)
    first = manager(etcd, ttl=60, renew_margin=10).acquire_lease(attrs(1))
    old = etcd.get(SUBNETS + first.key)
    etcd.restart()
    again = manager(etcd, ttl=60, renew_margin=10).acquire_lease(attrs(1, mac="aa:bb:cc:00:00:99"))
    assert again.subnet == first.subnet
    assert subnet_keys(etcd) == [first.key]
    kv = etcd.get(SUBNETS + first.key)
    assert parse_attrs(kv["value"]).backend_data["VtepMAC"] == "aa:bb:cc:00:00:99"  # attrs rewritten
    assert kv["lease"] != old["lease"] and etcd.ttl(old["lease"]) == -1  # moved to a new etcd lease


def test_previous_subnet_is_honoured_when_free_and_skipped_when_taken(etcd):
    etcd.put(CONFIG, NET)
    prev = Lease(subnet=ipaddress.IPv4Network("10.244.77.0/24"))
    assert manager(etcd).acquire_lease(attrs(1), previous=prev).subnet == prev.subnet
    other = manager(etcd).acquire_lease(attrs(2), previous=prev)  # 77 is node 1's now
    assert other.subnet != prev.subnet
    outside = Lease(subnet=ipaddress.IPv4Network("10.99.0.0/24"))  # not in Network: ignored
    assert manager(etcd).acquire_lease(attrs(3), previous=outside).subnet.subnet_of(
        ipaddress.ip_network("10.244.0.0/16"))


def test_incompatible_own_lease_is_deleted_and_replaced(etcd):
    etcd.put(CONFIG, NET)
    etcd.put(SUBNETS + "10.55.3.0-24", render_attrs(attrs(1)))  # from an older Network
    lease = manager(etcd).acquire_lease(attrs(1))
    assert lease.subnet.subnet_of(ipaddress.ip_network("10.244.0.0/16"))
    assert subnet_keys(etcd) == [lease.key]


def test_ipv6_only_and_dual_stack_keys(etcd):
    etcd.put(CONFIG, json.dumps({"EnableIPv4": True, "EnableIPv6": True, "Network": "10.244.0.0/16",
                                 "IPv6Network": "fc00::/48", "Backend": {"Type": "vxlan"}}))
    dual = LeaseAttrs(public_ip=ipaddress.IPv4Address("192.0.2.1"), public_ipv6=ipaddress.IPv6Address("2001:db8::1"),
                      backend_type="vxlan", backend_data={"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:01"},
                      backend_v6_data={"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:02"})
    lease = manager(etcd).acquire_lease(dual)
    assert lease.subnet is not None and lease.ipv6_subnet is not None and lease.ipv6_subnet.prefixlen == 64
    key = f"{lease.subnet.network_address}-24&{lease.ipv6_subnet.network_address}-64"
    kv = etcd.get(SUBNETS + key)
    assert kv is not None and kv["value"] == render_attrs(dual)
    assert lease_from_kv(key, kv["value"]).ipv6_subnet == lease.ipv6_subnet

    prefix6 = "/v6only/network"
    etcd.put(prefix6 + "/config", json.dumps({"EnableIPv4": False, "EnableIPv6": True,
                                             "IPv6Network": "fc00::/48", "Backend": {"Type": "vxlan"}}))
    v6 = LeaseAttrs(public_ipv6=ipaddress.IPv6Address("2001:db8::7"), backend_type="vxlan",
                    backend_v6_data={"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:07"})
    m6 = manager(etcd, prefix=prefix6)
    only = m6.acquire_lease(v6)
    assert only.subnet is None and only.ipv6_subnet is not None
    assert [kv["key"] for kv in etcd.get_prefix(prefix6 + "/subnets/")] == \
        [f"{prefix6}/subnets/0.0.0.0-0&{only.ipv6_subnet.network_address}-64"]
    assert m6.acquire_lease(v6).ipv6_subnet == only.ipv6_subnet  # found again by PublicIPv6


def test_two_nodes_racing_for_the_last_subnet_never_share_it(etcd):
    etcd.put(CONFIG, json.dumps({"Network": "10.244.0.0/16", "SubnetMin": "10.244.5.0",
                                 "SubnetMax": "10.244.6.0", "Backend": {"Type": "vxlan"}}))
    etcd.put(SUBNETS + "10.244.5.0-24", render_attrs(attrs(9)))
    both_planned = threading.Barrier(2, timeout=20)

    def choose_after_both_listed(free):
        both_planned.wait()  # both nodes saw 10.244.6.0 free before either writes
        return free[0]

    results: List[Any] = [None, None]

    def node(i: int) -> None:
        m = EtcdSubnetManager(EtcdOptions(**etcd.options(config_attempts=1)), choose=choose_after_both_listed)
        managers.append(m)
        try:
            results[i] = m.acquire_lease(attrs(i + 1))
        except Exception as exc:  # noqa: BLE001 - the outcome is checked below
            results[i] = exc

    threads = [threading.Thread(target=node, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    won = [r for r in results if isinstance(r, Lease)]
    lost = [r for r in results if not isinstance(r, Lease)]
    assert len(won) == 1 and str(won[0].subnet) == "10.244.6.0/24", results
    assert len(lost) == 1 and isinstance(lost[0], OutOfSubnets) and "out of subnets" in str(lost[0]), results
    assert sorted(subnet_keys(etcd)) == ["10.244.5.0-24", "10.244.6.0-24"]
    assert parse_attrs(etcd.get(SUBNETS + "10.244.6.0-24")["value"]).public_ip == won[0].attrs.public_ip


def test_reservation_is_never_taken_by_others_and_kept_ttl_free_for_its_owner(etcd):
    etcd.put(CONFIG, json.dumps({"Network": "10.244.0.0/16", "SubnetMin": "10.244.50.0",
                                 "SubnetMax": "10.244.51.0", "Backend": {"Type": "vxlan"}}))
    etcd.put(SUBNETS + "10.244.50.0-24", '{"PublicIP":"192.0.2.1"}')  # no etcd lease: a reservation
    prev = Lease(subnet=ipaddress.IPv4Network("10.244.50.0/24"))
    other = manager(etcd).acquire_lease(attrs(2), previous=prev)
    assert str(other.subnet) == "10.244.51.0/24"
    with pytest.raises(OutOfSubnets):
        manager(etcd).acquire_lease(attrs(3))
    owner_mgr = manager(etcd)
    owner = owner_mgr.acquire_lease(attrs(1))
    assert str(owner.subnet) == "10.244.50.0/24" and owner.expiration is None
    kv = etcd.get(SUBNETS + "10.244.50.0-24")
    assert kv["lease"] == 0 and kv["value"] == render_attrs(attrs(1))
    assert owner_mgr.renew_lease(owner).expiration is None
    assert etcd.get(SUBNETS + "10.244.50.0-24")["lease"] == 0


# --- expiry and renewal ------------------------------------------------------------------

def test_short_ttl_key_expires_and_the_watcher_sees_it_removed(etcd, watches):
    etcd.put(CONFIG, NET)
    m = manager(etcd, ttl=2, renew_margin=1)
    lease = m.acquire_lease(attrs(1))
    w = watches(manager(etcd))
    wait_until(lambda: w.snapshots(), 10, "the first snapshot")
    assert [str(x.subnet) for x in w.snapshots()[0].leases] == [str(lease.subnet)]
    wait_until(lambda: w.saw(REMOVED, str(lease.subnet)), 10, "REMOVED after the TTL")
    assert etcd.get(SUBNETS + lease.key) is None
    assert not m.lease_exists(lease)
    with pytest.raises(LeaseRevoked, match="revoked"):
        m.renew_lease(lease)


def test_renew_moves_expiry_and_keeps_the_key_past_the_first_ttl(etcd):
    etcd.put(CONFIG, NET)
    m = manager(etcd, ttl=3, renew_margin=1)
    lease = m.acquire_lease(attrs(1))
    old = etcd.get(SUBNETS + lease.key)["lease"]
    time.sleep(1.5)
    renewed = m.renew_lease(lease)
    assert renewed.expiration - lease.expiration >= 1.0
    new = etcd.get(SUBNETS + lease.key)["lease"]
    assert new != old and etcd.ttl(old) == -1 and etcd.ttl(new) >= 2
    time.sleep(max(0.0, lease.expiration - time.time()) + 1.0)  # past the first expiry
    assert etcd.get(SUBNETS + lease.key) is not None and m.lease_exists(renewed)


def test_renew_of_a_deleted_key_is_revoked_not_recreated(etcd):
    etcd.put(CONFIG, NET)
    m = manager(etcd, ttl=60, renew_margin=10)
    lease = m.acquire_lease(attrs(1))
    etcd.delete(SUBNETS + lease.key)
    assert not m.lease_exists(lease)
    with pytest.raises(LeaseRevoked, match="revoked"):
        m.renew_lease(lease)
    assert subnet_keys(etcd) == []


def test_a_small_network_fills_from_subnet_min_never_its_predecessor(etcd):
    etcd.put(CONFIG, '{"Network": "10.244.0.0/22", "Backend": {"Type": "vxlan"}}')  # 4 /24s, 3 leasable
    got = sorted(str(manager(etcd).acquire_lease(attrs(n)).subnet) for n in (1, 2, 3))
    assert got == ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"]
    with pytest.raises(OutOfSubnets, match="out of subnets"):
        manager(etcd).acquire_lease(attrs(4))
