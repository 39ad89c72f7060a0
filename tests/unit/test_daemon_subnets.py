"""Lease math: enumeration edges, exhaustion, compatibility, acquire plans, kube podCIDRs."""

from __future__ import annotations

import ipaddress
import itertools
from typing import Any, List, Optional, Sequence

import pytest

from cni_flannel.daemon import netconf, subnets
from cni_flannel.daemon.lease import Lease, LeaseAttrs
from cni_flannel.daemon.subnets import OutOfSubnets, PodCIDRMismatch
from tests.unit.daemon_doubles import netconf_of

V4 = ipaddress.IPv4Network
V6 = ipaddress.IPv6Network
IP = ipaddress.IPv4Address


conf = netconf_of  # shared with the other daemon unit tests


def dual(**kw: Any) -> netconf.NetConf:
    return conf(EnableIPv6=True, IPv6Network="fd00:10:244::/56", **kw)


def first(xs: Sequence[Any]) -> Any:
    return xs[0]


def last(xs: Sequence[Any]) -> Any:
    return xs[-1]


def lease(v4: Optional[str], v6: Optional[str] = None, ip: Optional[str] = None) -> Lease:
    return Lease(subnet=V4(v4) if v4 else None, ipv6_subnet=V6(v6) if v6 else None,
                 attrs=LeaseAttrs(public_ip=IP(ip) if ip else None, backend_type="vxlan"))


# --- enumeration --------------------------------------------------------------------------

def test_slash16_with_slash24_has_255_leases_never_the_first() -> None:
    pool = conf().ipv4
    assert pool is not None
    all_ = list(subnets.candidates(pool))
    assert subnets.count(pool) == len(all_) == 255
    assert str(all_[0]) == "10.244.1.0/24" and str(all_[-1]) == "10.244.255.0/24"
    assert V4("10.244.0.0/24") not in all_


def test_min_max_bound_the_candidates() -> None:
    pool = conf(SubnetMin="10.244.5.0", SubnetMax="10.244.8.0").ipv4
    assert pool is not None
    assert [str(s) for s in subnets.candidates(pool)] == ["10.244.5.0/24", "10.244.6.0/24", "10.244.7.0/24", "10.244.8.0/24"]
    one = conf(SubnetMin="10.244.9.0", SubnetMax="10.244.9.0").ipv4
    assert one is not None and subnets.count(one) == 1


def test_smallest_network() -> None:
    pool = conf(Network="10.244.0.0/28").ipv4
    assert pool is not None
    assert [str(s) for s in subnets.candidates(pool)] == ["10.244.0.4/30", "10.244.0.8/30", "10.244.0.12/30"]


def test_ipv6_enumeration_is_lazy() -> None:
    pool = dual().ipv6
    assert pool is not None
    assert subnets.count(pool) == 255
    big = conf(EnableIPv4=False, EnableIPv6=True, IPv6Network="fd00::/32").ipv6
    assert big is not None and subnets.count(big) == 2 ** 32 - 1
    head = list(itertools.islice(subnets.candidates(big), 2))
    assert [str(s) for s in head] == ["fd00:0:0:1::/64", "fd00:0:0:2::/64"]


def test_free_subnets_skip_taken_and_other_lengths() -> None:
    pool = conf().ipv4
    assert pool is not None
    taken = [V4("10.244.1.0/24"), V4("10.244.2.0/23"), V4("10.244.5.128/25"), V6("fd00::/64")]
    free = subnets.free_subnets(pool, taken, limit=3)
    assert [str(s) for s in free] == ["10.244.4.0/24", "10.244.6.0/24", "10.244.7.0/24"]


def test_only_the_first_100_free_are_candidates() -> None:
    pool = conf(Network="10.0.0.0/8").ipv4
    assert pool is not None
    free = subnets.free_subnets(pool, [])
    assert len(free) == 100 and str(free[-1]) == "10.0.100.0/24"
    picked = subnets.allocate(conf(Network="10.0.0.0/8"), [], choose=last)
    assert picked == (V4("10.0.100.0/24"), None)  # flannel never looks further than 100 free ones


# --- allocation ---------------------------------------------------------------------------

def test_allocate_is_injectable_and_random_by_default() -> None:
    c = conf()
    assert subnets.allocate(c, [], choose=first) == (V4("10.244.1.0/24"), None)
    held = [lease("10.244.1.0/24"), lease("10.244.2.0/24")]
    assert subnets.allocate(c, held, choose=first) == (V4("10.244.3.0/24"), None)
    seen = {subnets.allocate(c, held)[0] for _ in range(200)}
    assert len(seen) > 1 and all(s is not None and subnets.is_compatible(c.ipv4, s) for s in seen)
    assert not seen & {V4("10.244.1.0/24"), V4("10.244.2.0/24")}


def test_exhaustion_names_the_range() -> None:
    c = conf(SubnetMin="10.244.1.0", SubnetMax="10.244.3.0")
    held = [lease(f"10.244.{i}.0/24") for i in (1, 2)]
    assert subnets.allocate(c, held, choose=first) == (V4("10.244.3.0/24"), None)
    with pytest.raises(OutOfSubnets) as info:
        subnets.allocate(c, held + [lease("10.244.3.0/24")])
    msg = str(info.value)
    assert "all 3 /24 subnets" in msg and "10.244.1.0/24" in msg and "10.244.3.0/24" in msg and "SubnetMin" in msg


def test_full_slash16() -> None:
    c = conf()
    held = [Lease(subnet=s) for s in subnets.candidates(c.ipv4)]  # type: ignore[arg-type]
    assert len(held) == 255
    with pytest.raises(OutOfSubnets):
        subnets.allocate(c, held)
    assert subnets.allocate(c, held[:-1], choose=first) == (V4("10.244.255.0/24"), None)


def test_dual_stack_pair_and_v6_exhaustion() -> None:
    c = dual(IPv6SubnetMin="fd00:10:244:1::", IPv6SubnetMax="fd00:10:244:2::")
    held = [lease("10.244.1.0/24", "fd00:10:244:1::/64")]
    assert subnets.allocate(c, held, choose=first) == (V4("10.244.2.0/24"), V6("fd00:10:244:2::/64"))
    held.append(lease("10.244.7.0/24", "fd00:10:244:2::/64"))
    with pytest.raises(OutOfSubnets) as info:  # plenty of IPv4 left, but no IPv6: no lease
        subnets.allocate(c, held)
    assert "IPv6SubnetMin" in str(info.value)


def test_ipv6_only_allocation() -> None:
    c = conf(EnableIPv4=False, EnableIPv6=True, IPv6Network="fd00::/48")
    assert subnets.allocate(c, [], choose=first) == (None, V6("fd00:0:0:1::/64"))


# --- compatibility ------------------------------------------------------------------------

@pytest.mark.parametrize("subnet, ok", [
    ("10.244.1.0/24", True), ("10.244.255.0/24", True),
    ("10.244.0.0/24", False),  # below SubnetMin
    ("10.244.1.0/25", False),  # another SubnetLen
    ("10.245.1.0/24", False),  # another network
    (None, False),
])
def test_is_compatible(subnet: Optional[str], ok: bool) -> None:
    assert subnets.is_compatible(conf().ipv4, V4(subnet) if subnet else None) is ok


def test_fits_both_halves() -> None:
    assert subnets.fits(conf(), V4("10.244.1.0/24"), None)
    assert not subnets.fits(conf(), V4("10.244.1.0/24"), V6("fd00:10:244:1::/64"))  # IPv6 must be absent
    assert subnets.fits(dual(), V4("10.244.1.0/24"), V6("fd00:10:244:1::/64"))
    assert not subnets.fits(dual(), V4("10.244.1.0/24"), None)
    assert not subnets.fits(dual(), V4("10.244.1.0/24"), V6("fd00:10:244::/64"))  # the first v6 subnet
    assert subnets.is_compatible(None, None) and not subnets.is_compatible(None, V4("10.0.0.0/24"))


# --- acquire plans ------------------------------------------------------------------------

ME = IP("192.0.2.11")


def test_plan_reuses_own_lease() -> None:
    mine = lease("10.244.7.0/24", ip=str(ME))
    plan = subnets.plan_acquire(conf(), [lease("10.244.1.0/24", ip="192.0.2.12"), mine], ME)
    assert plan == subnets.AcquirePlan(reuse=mine)


def test_plan_replaces_own_lease_that_no_longer_fits() -> None:
    mine = lease("10.244.7.0/24", ip=str(ME))
    plan = subnets.plan_acquire(conf(SubnetLen=25), [mine], ME, choose=first)
    assert plan.delete == mine and plan.reuse is None
    assert plan.create == (V4("10.244.0.128/25"), None)


def test_plan_takes_previous_subnet_when_free() -> None:
    plan = subnets.plan_acquire(conf(), [lease("10.244.1.0/24", ip="192.0.2.12")], ME,
                                previous=(V4("10.244.9.0/24"), None), choose=first)
    assert plan == subnets.AcquirePlan(create=(V4("10.244.9.0/24"), None))


def test_plan_ignores_previous_subnet_that_is_taken_or_misfit() -> None:
    other = lease("10.244.9.0/24", "fd00:10:244:9::/64", ip="192.0.2.12")
    plan = subnets.plan_acquire(conf(), [other], ME, previous=(V4("10.244.9.0/24"), None), choose=first)
    assert plan.create == (V4("10.244.1.0/24"), None)
    plan = subnets.plan_acquire(conf(), [], ME, previous=(V4("10.99.9.0/24"), None), choose=first)
    assert plan.create == (V4("10.244.1.0/24"), None)
    # dual stack: an IPv6 half held by someone else disqualifies the pair (flannel checks IPv4 only)
    plan = subnets.plan_acquire(dual(), [other], ME, previous=(V4("10.244.3.0/24"), V6("fd00:10:244:9::/64")),
                                choose=first)
    assert plan.create == (V4("10.244.1.0/24"), V6("fd00:10:244:1::/64"))


def test_plan_allocates_fresh() -> None:
    plan = subnets.plan_acquire(dual(), [], ME, choose=first)
    assert plan == subnets.AcquirePlan(create=(V4("10.244.1.0/24"), V6("fd00:10:244:1::/64")))


def test_own_lease_matching() -> None:
    a = Lease(subnet=None, ipv6_subnet=V6("fd00::/64"),
              attrs=LeaseAttrs(public_ipv6=ipaddress.IPv6Address("2001:db8::1")))
    assert subnets.own_lease([a], None, ipaddress.IPv6Address("2001:db8::1")) is a
    assert subnets.own_lease([a], IP("192.0.2.1"), ipaddress.IPv6Address("2001:db8::1")) is None
    assert subnets.own_lease([], None) is None


# --- kube ---------------------------------------------------------------------------------

def test_kube_subnets() -> None:
    assert subnets.kube_subnets(conf(), ["10.244.0.0/24"]) == (V4("10.244.0.0/24"), None)  # podCIDR may be .0
    assert subnets.kube_subnets(conf(), [], pod_cidr="10.244.3.0/24") == (V4("10.244.3.0/24"), None)
    # a dual-stack node under a v4-only flannel keeps its IPv6 podCIDR out of the lease
    assert subnets.kube_subnets(conf(), ["10.244.3.0/24", "fd00::/64"]) == (V4("10.244.3.0/24"), None)
    assert subnets.kube_subnets(dual(), ["fd00:10:244:3::/64", "10.244.3.0/24"]) == \
        (V4("10.244.3.0/24"), V6("fd00:10:244:3::/64"))


@pytest.mark.parametrize("c, cidrs, words", [
    (conf(), ["10.99.3.0/24"], ["10.99.3.0/24", "outside", "Network=10.244.0.0/16", "--cluster-cidr"]),
    (dual(), ["10.244.3.0/24"], ["no IPv6 podCIDR"]),
    (dual(), ["10.244.3.0/24", "fd00:99::/64"], ["IPv6Network="]),
    (conf(), ["10.244.0.0/15"], ["outside"]),
])
def test_kube_subnet_mismatch(c: netconf.NetConf, cidrs: List[str], words: List[str]) -> None:
    with pytest.raises(PodCIDRMismatch) as info:
        subnets.kube_subnets(c, cidrs, node="n1")
    for word in words:
        assert word in str(info.value)
