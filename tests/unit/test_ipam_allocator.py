"""Allocator logic over the in-memory store: order, wrap, exhaustion, requests, dual stack, GC."""

from __future__ import annotations

import ipaddress

import pytest

from cni_flannel.cni.errors import InvalidConfig
from cni_flannel.ipam import allocator
from cni_flannel.ipam.allocator import AddressUnavailable, DuplicateAllocation, candidates
from cni_flannel.ipam.config import parse_ipam
from cni_flannel.ipam.store import MemoryStore


def conf(ranges, version="1.0.0", **kw):
    return parse_ipam({"ranges": ranges}, "net", version, **kw)


def v4(subnet="10.1.2.0/29", **extra):
    return [[dict(subnet=subnet, **extra)]]


def alloc(store, c, cid, ifname="eth0"):
    return [str(ip) for ip, _ in allocator.allocate(store, c, cid, ifname)]


def order(c, last=None, idx=0):
    rset = c.range_sets[idx]
    return [str(r.addr(v)) for r, v in candidates(rset, ipaddress.ip_address(last) if last else None)]


# -- iteration order ---------------------------------------------------------


def test_fresh_order_skips_gateway_and_broadcast():
    assert order(conf(v4())) == ["10.1.2.2", "10.1.2.3", "10.1.2.4", "10.1.2.5", "10.1.2.6"]


def test_resumes_after_last_reserved_and_wraps():
    assert order(conf(v4()), last="10.1.2.4") == ["10.1.2.5", "10.1.2.6", "10.1.2.2", "10.1.2.3", "10.1.2.4"]


def test_last_reserved_outside_set_restarts_from_the_start():
    assert order(conf(v4()), last="10.9.9.9") == order(conf(v4()))
    assert order(conf(v4()), last="fd00::1") == order(conf(v4()))


def test_gateway_in_the_middle_is_skipped():
    c = conf(v4(gateway="10.1.2.4"))
    assert order(c) == ["10.1.2.1", "10.1.2.2", "10.1.2.3", "10.1.2.5", "10.1.2.6"]
    assert order(c, last="10.1.2.3") == ["10.1.2.5", "10.1.2.6", "10.1.2.1", "10.1.2.2", "10.1.2.3"]


def test_multi_range_set_walks_ranges_in_order_and_wraps():
    c = conf([[{"subnet": "10.1.2.0/29", "rangeStart": "10.1.2.5"}, {"subnet": "10.1.3.0/30"}]])
    assert order(c) == ["10.1.2.5", "10.1.2.6", "10.1.3.2"]
    assert order(c, last="10.1.2.6") == ["10.1.3.2", "10.1.2.5", "10.1.2.6"]


def test_single_address_range_that_is_the_gateway_yields_nothing():
    c = conf(v4(rangeStart="10.1.2.1", rangeEnd="10.1.2.1"))
    assert order(c) == [] and order(c, last="10.1.2.1") == []


def test_v6_order_includes_last_address():
    assert order(conf([[{"subnet": "fd00::/126"}]])) == ["fd00::2", "fd00::3"]


# -- allocation ----------------------------------------------------------------


def test_round_robin_does_not_reuse_a_released_address_immediately():
    s, c = MemoryStore(), conf(v4())
    assert alloc(s, c, "a") == ["10.1.2.2"]
    assert alloc(s, c, "b") == ["10.1.2.3"]
    allocator.release(s, "a", "eth0")
    assert alloc(s, c, "c") == ["10.1.2.4"]
    assert str(s.last[0]) == "10.1.2.4"


def test_wrap_around_reuses_freed_addresses_from_the_start():
    s, c = MemoryStore(), conf(v4())
    for cid in "abcde":
        alloc(s, c, cid)
    allocator.release(s, "b", "eth0")
    assert alloc(s, c, "f") == ["10.1.2.3"]


def test_exhaustion():
    s, c = MemoryStore(), conf(v4())
    for cid in "abcde":
        alloc(s, c, cid)
    with pytest.raises(AddressUnavailable) as exc:
        alloc(s, c, "f")
    assert exc.value.msg.startswith("no IP addresses available in range set: 10.1.2.1-10.1.2.6")
    assert len(s.files) == 5


def test_duplicate_allocation_same_container_and_ifname():
    s, c = MemoryStore(), conf(v4())
    alloc(s, c, "a")
    with pytest.raises(DuplicateAllocation) as exc:
        alloc(s, c, "a")
    assert "10.1.2.2 has been allocated to a, duplicate allocation is not allowed" in exc.value.msg


def test_same_container_other_ifname_is_a_new_attachment():
    s, c = MemoryStore(), conf(v4())
    assert alloc(s, c, "a", "eth0") == ["10.1.2.2"]
    assert alloc(s, c, "a", "net1") == ["10.1.2.3"]


def test_legacy_id_only_reservation_counts_as_duplicate():
    s, c = MemoryStore(), conf(v4())
    s.files["10.1.2.5"] = ("a", None)
    with pytest.raises(DuplicateAllocation):
        alloc(s, c, "a")


def test_taken_addresses_are_skipped():
    s, c = MemoryStore(), conf(v4())
    s.files["10.1.2.2"] = ("x", "eth0")
    s.files["10.1.2.3"] = None  # crash leftover still blocks until reclaimed
    assert alloc(s, c, "a") == ["10.1.2.4"]


# -- dual stack and all-or-nothing -------------------------------------------------


def test_dual_stack_one_address_per_set():
    s, c = MemoryStore(), conf([[{"subnet": "10.1.2.0/24"}], [{"subnet": "fd00::/64"}]])
    assert alloc(s, c, "a") == ["10.1.2.2", "fd00::2"]
    assert alloc(s, c, "b") == ["10.1.2.3", "fd00::3"]
    assert {k: str(v) for k, v in s.last.items()} == {0: "10.1.2.3", 1: "fd00::3"}


def test_failure_in_a_later_set_rolls_back_earlier_sets_and_last_reserved():
    s, c = MemoryStore(), conf([[{"subnet": "10.1.2.0/29"}], [{"subnet": "fd00::/126"}]])
    alloc(s, c, "a")
    alloc(s, c, "b")  # v6 set is now full
    before = (dict(s.files), dict(s.last))
    with pytest.raises(AddressUnavailable):
        alloc(s, c, "c")
    assert (s.files, s.last) == before


def test_store_error_rolls_back_and_propagates():
    s, c = MemoryStore(), conf([[{"subnet": "10.1.2.0/29"}], [{"subnet": "fd00::/126"}]])
    s.fail_reserve_at = "fd00::2"
    with pytest.raises(OSError):
        alloc(s, c, "a")
    assert s.files == {} and s.last == {}


# -- requested addresses -----------------------------------------------------------


def req(store, c_ranges, ips, cid="a"):
    c = conf(c_ranges, runtime_config={"ips": ips})
    return alloc(store, c, cid)


def test_requested_in_range():
    s = MemoryStore()
    assert req(s, v4(), ["10.1.2.5"]) == ["10.1.2.5"]
    assert str(s.last[0]) == "10.1.2.5"


def test_requested_taken():
    s = MemoryStore()
    req(s, v4(), ["10.1.2.5"], cid="a")
    with pytest.raises(AddressUnavailable) as exc:
        req(s, v4(), ["10.1.2.5"], cid="b")
    assert "requested IP address 10.1.2.5 is not available in range set 10.1.2.1-10.1.2.6" in exc.value.msg


def test_requested_outside_every_range_changes_nothing():
    s = MemoryStore(created=False)
    with pytest.raises(InvalidConfig) as exc:
        req(s, v4(), ["10.1.9.5"])
    assert "10.1.9.5" in exc.value.msg
    assert not s.created  # refused before the store was touched


def test_requested_outside_range_but_inside_subnet():
    with pytest.raises(InvalidConfig):
        req(MemoryStore(), v4(rangeStart="10.1.2.4"), ["10.1.2.2"])


def test_requested_other_family():
    with pytest.raises(InvalidConfig) as exc:
        req(MemoryStore(), v4(), ["fd00::5"])
    assert "fd00::5" in str(exc.value)


def test_requested_gateway():
    with pytest.raises(InvalidConfig) as exc:
        req(MemoryStore(), v4(), ["10.1.2.1"])
    assert "requested ip 10.1.2.1 is subnet's gateway" in exc.value.msg


def test_unused_request_two_in_one_set():
    s = MemoryStore()
    with pytest.raises(InvalidConfig) as exc:
        req(s, v4(), ["10.1.2.3", "10.1.2.4"])
    assert "failed to allocate all requested IPs: 10.1.2.4" in exc.value.msg
    assert s.files == {}


def test_requested_in_one_set_allocated_in_the_other():
    s = MemoryStore()
    assert req(s, [[{"subnet": "10.1.2.0/24"}], [{"subnet": "fd00::/64"}]], ["fd00::99"]) == ["10.1.2.2", "fd00::99"]


def test_requested_bypasses_duplicate_check_like_the_reference():
    s = MemoryStore()
    alloc(s, conf(v4()), "a")
    assert req(s, v4(), ["10.1.2.6"], cid="a") == ["10.1.2.6"]


def test_requested_taken_in_second_set_rolls_back_first():
    s = MemoryStore()
    s.files["fd00::3"] = ("x", "eth0")
    with pytest.raises(AddressUnavailable):
        req(s, [[{"subnet": "10.1.2.0/24"}], [{"subnet": "fd00::/64"}]], ["fd00::3"], cid="b")
    assert s.files == {"fd00::3": ("x", "eth0")} and s.last == {}


# -- release, find, gc -----------------------------------------------------------------


def test_release_by_container_and_ifname_only():
    s, c = MemoryStore(), conf([[{"subnet": "10.1.2.0/24"}], [{"subnet": "fd00::/64"}]])
    alloc(s, c, "a", "eth0")
    alloc(s, c, "a", "net1")
    assert sorted(allocator.release(s, "a", "eth0")) == ["10.1.2.2", "fd00::2"]
    assert set(s.files) == {"10.1.2.3", "fd00::3"}


def test_release_nothing_held_and_no_store():
    assert allocator.release(MemoryStore(), "a", "eth0") == []
    s = MemoryStore(created=False)
    assert allocator.release(s, "a", "eth0") == [] and not s.created


def test_release_legacy_id_only_when_no_exact_match():
    s = MemoryStore()
    s.files.update({"10.1.2.2": ("a", None), "10.1.2.3": ("b", None)})
    assert allocator.release(s, "a", "eth0") == ["10.1.2.2"]
    s.files.update({"10.1.2.4": ("b", "eth0")})
    assert allocator.release(s, "b", "eth0") == ["10.1.2.4"]  # exact match wins; legacy stays, as upstream
    assert "10.1.2.3" in s.files


def test_release_reclaims_crash_leftovers():
    s = MemoryStore()
    s.files.update({"10.1.2.2": None, "10.1.2.3": ("b", "eth0")})
    assert allocator.release(s, "zzz", "eth0") == ["10.1.2.2"]
    assert set(s.files) == {"10.1.2.3"}


def test_find():
    s = MemoryStore()
    s.files.update({"10.1.2.2": ("a", "eth0"), "10.1.2.3": ("old", None)})
    assert allocator.find(s, "a", "eth0") == ["10.1.2.2"]
    assert allocator.find(s, "a", "net1") == []
    assert allocator.find(s, "old", "eth0") == ["10.1.2.3"]


def test_gc_keeps_valid_attachments_only():
    s = MemoryStore()
    s.files.update({
        "10.1.2.2": ("keep", "eth0"),
        "10.1.2.3": ("keep", "eth1"),  # same container, other interface: not valid
        "10.1.2.4": ("gone", "eth0"),
        "10.1.2.5": ("keep", None),  # legacy, container valid
        "10.1.2.6": ("old", None),  # legacy, stale
        "10.1.2.7": None,  # crash leftover
        "fd00::2": ("gone", "eth0"),
    })
    released = allocator.gc(s, [("keep", "eth0"), ("other", "eth0")])
    assert sorted(released) == ["10.1.2.3", "10.1.2.4", "10.1.2.6", "10.1.2.7", "fd00::2"]
    assert set(s.files) == {"10.1.2.2", "10.1.2.5"}


def test_gc_empty_list_releases_everything_and_keeps_bookkeeping():
    s, c = MemoryStore(), conf(v4())
    alloc(s, c, "a")
    assert allocator.gc(s, []) == ["10.1.2.2"]
    assert s.files == {} and str(s.last[0]) == "10.1.2.2"


def test_gc_then_freed_address_is_allocatable():
    s, c = MemoryStore(), conf(v4(rangeEnd="10.1.2.2"))
    alloc(s, c, "leaked")
    allocator.gc(s, [])
    assert alloc(s, c, "new") == ["10.1.2.2"]

