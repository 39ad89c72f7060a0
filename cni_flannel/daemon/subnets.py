"""Lease math: which subnets a node may lease, which are free, and whether an old lease still fits.

etcd mode (pkg/subnet/etcd/local_manager.go): the candidates are the SubnetLen-sized subnets
from SubnetMin to SubnetMax; flannel collects the first 100 that overlap no existing lease and
picks one at random (``choose`` makes that deterministic in tests).  A lease is compatible with
the config when its prefix length is SubnetLen and its address lies in [SubnetMin, SubnetMax],
per family; IPv6 must be absent exactly when IPv6 is disabled.  ``plan_acquire`` is flannel's
tryAcquireLease decision without the I/O: reuse our own lease, drop it, or create one.

Kubernetes mode (pkg/subnet/kube): the node's podCIDRs are the lease; they only have to lie
inside the configured networks (``kube_subnets``).
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Union

from .lease import Lease, pod_subnets
from .netconf import NetConf, Pool

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Pair = Tuple[Optional[ipaddress.IPv4Network], Optional[ipaddress.IPv6Network]]
Chooser = Callable[[Sequence[Network]], Network]

MAX_CANDIDATES = 100  # flannel only ever considers the first 100 free subnets


class SubnetError(Exception):
    """No lease can be had: the message says why and what to change."""


class OutOfSubnets(SubnetError):
    pass


class PodCIDRMismatch(SubnetError):
    pass


def count(pool: Pool) -> int:
    """How many subnets SubnetMin..SubnetMax holds (e.g. 255 for a /16 cut into /24s)."""
    return max(0, (int(pool.subnet_max) - int(pool.subnet_min)) // pool.subnet_size + 1)


def candidates(pool: Pool) -> Iterator[Network]:
    """Every leasable subnet, lowest first; lazy, because an IPv6 pool can hold 2**64 of them."""
    make = ipaddress.IPv4Network if pool.version == 4 else ipaddress.IPv6Network
    for value in range(int(pool.subnet_min), int(pool.subnet_max) + 1, pool.subnet_size):
        yield make((value, pool.subnet_len))


def free_subnets(pool: Pool, taken: Iterable[Network], limit: int = MAX_CANDIDATES) -> List[Network]:
    """The first ``limit`` candidates that overlap nothing in ``taken`` (other families ignored)."""
    same: Set[Network] = set()
    odd: List[Network] = []  # leases of another length (an older SubnetLen): need a real overlap test
    for net in taken:
        if net is None or net.version != pool.version:
            continue
        if net.prefixlen == pool.subnet_len:
            same.add(net)
        else:
            odd.append(net)
    out: List[Network] = []
    for sn in candidates(pool):
        if len(out) >= limit:
            break
        if sn in same or any(sn.overlaps(o) for o in odd):
            continue
        out.append(sn)
    return out


def is_compatible(pool: Optional[Pool], subnet: Optional[Network]) -> bool:
    """A family's half of a lease fits the config (isSubnetConfigCompat / isIPv6SubnetConfigCompat)."""
    if pool is None:
        return subnet is None
    if subnet is None or subnet.version != pool.version or subnet.prefixlen != pool.subnet_len:
        return False
    return int(pool.subnet_min) <= int(subnet.network_address) <= int(pool.subnet_max)


def fits(conf: NetConf, subnet: Optional[ipaddress.IPv4Network],
         ipv6_subnet: Optional[ipaddress.IPv6Network]) -> bool:
    """Both halves of a (possibly dual-stack) lease fit the config."""
    return is_compatible(conf.ipv4, subnet) and is_compatible(conf.ipv6, ipv6_subnet)


def allocate(conf: NetConf, leases: Iterable[Lease], choose: Chooser = random.choice) -> Pair:
    """A free subnet per enabled family, picked by ``choose`` among the first free ones."""
    leases = list(leases)
    picked: List[Optional[Network]] = []
    for pool in (conf.ipv4, conf.ipv6):
        if pool is None:
            picked.append(None)
            continue
        taken = [lease.subnet if pool.version == 4 else lease.ipv6_subnet for lease in leases]
        free = free_subnets(pool, [t for t in taken if t is not None])
        if not free:
            key = "SubnetMin/SubnetMax" if pool.version == 4 else "IPv6SubnetMin/IPv6SubnetMax"
            raise OutOfSubnets(
                f"out of subnets: all {count(pool)} /{pool.subnet_len} subnets from {pool.first} to "
                f"{pool.last} in {pool.network} are leased; remove stale leases of nodes that are gone, "
                f"or widen {key} or the network")
        picked.append(choose(free))
    return picked[0], picked[1]  # type: ignore[return-value]


@dataclass(frozen=True)
class AcquirePlan:
    """What to do in etcd, in order: delete ``delete``, then renew ``reuse`` or create ``create``."""

    reuse: Optional[Lease] = None  # our lease (same public IP) still fits: renew it as it is
    delete: Optional[Lease] = None  # our lease no longer fits the config: remove it first
    create: Optional[Pair] = None  # the subnets to create a lease for


def own_lease(leases: Iterable[Lease], public_ip: Optional[ipaddress.IPv4Address],
              public_ipv6: Optional[ipaddress.IPv6Address] = None) -> Optional[Lease]:
    """The lease a node with these addresses already holds (flannel matches on the public IP)."""
    for lease in leases:
        if public_ip is not None:
            if lease.attrs.public_ip == public_ip:
                return lease
        elif public_ipv6 is not None and lease.attrs.public_ipv6 == public_ipv6:
            return lease
    return None


def plan_acquire(conf: NetConf, leases: Sequence[Lease], public_ip: Optional[ipaddress.IPv4Address],
                 public_ipv6: Optional[ipaddress.IPv6Address] = None, previous: Pair = (None, None),
                 choose: Chooser = random.choice) -> AcquirePlan:
    """flannel's tryAcquireLease, decided from a snapshot of the leases.

    ``previous`` is the subnet pair from the node's old subnet.env: reused when it still fits
    and nobody else holds an overlapping subnet (flannel compares only the IPv4 half; both are
    checked here so a dual-stack pair cannot collide on its IPv6 half).
    """
    mine = own_lease(leases, public_ip, public_ipv6)
    if mine is not None and fits(conf, mine.subnet, mine.ipv6_subnet):
        return AcquirePlan(reuse=mine)
    prev4, prev6 = previous
    if (prev4 is not None or prev6 is not None) and fits(conf, prev4, prev6) \
            and not any(_overlaps(lease, prev4, prev6) for lease in leases if lease is not mine):
        return AcquirePlan(delete=mine, create=(prev4, prev6))
    return AcquirePlan(delete=mine, create=allocate(conf, leases, choose))


def kube_subnets(conf: NetConf, pod_cidrs: Sequence[str], pod_cidr: str = "", node: str = "") -> Pair:
    """The node's lease from its podCIDRs, checked against the configured networks."""
    v4, v6 = pod_subnets(pod_cidrs, pod_cidr, node)
    out: List[Optional[Network]] = []
    for pool, sub, key in ((conf.ipv4, v4, "Network"), (conf.ipv6, v6, "IPv6Network")):
        if pool is None:
            out.append(None)  # a family flannel does not run ignores that podCIDR
            continue
        family = f"IPv{pool.version}"
        if sub is None:
            raise PodCIDRMismatch(
                f"node {node!r} has no {family} podCIDR (podCIDRs: {list(pod_cidrs) or [pod_cidr]}) but "
                f"net-conf.json enables {family}: give the cluster a {family} cluster-cidr "
                f"(kube-controller-manager --allocate-node-cidrs) or disable {family} in net-conf.json")
        if not sub.subnet_of(pool.network):  # type: ignore[arg-type]
            raise PodCIDRMismatch(
                f"node {node!r} podCIDR {sub} is outside net-conf.json {key}={pool.network}: make {key} "
                f"match kube-controller-manager's --cluster-cidr")
        out.append(sub)
    return out[0], out[1]  # type: ignore[return-value]


def _overlaps(lease: Lease, v4: Optional[Network], v6: Optional[Network]) -> bool:
    return any(mine is not None and theirs is not None and mine.overlaps(theirs)  # type: ignore[arg-type]
               for mine, theirs in ((lease.subnet, v4), (lease.ipv6_subnet, v6)))
