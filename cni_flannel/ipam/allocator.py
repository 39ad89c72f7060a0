"""Allocation and release over a :class:`~cni_flannel.ipam.store.Store` (pure logic).

Behaviour of backend/allocator/allocator.go and main.go, except that one lock
covers the whole ADD (every range set) and a failure rolls back exactly what
this call reserved, last_reserved_ip included:

* per range set, a requested address is reserved as is (not the gateway);
  otherwise, unless the container already holds an address of the set
  ("duplicate allocation is not allowed"), addresses are tried round robin
  from ``last_reserved_ip.<set> + 1`` through the set's ranges, skipping
  gateways and wrapping, until one is free;
* release matches ``(containerID, ifname)``; only when nothing matches does it
  fall back to files holding just the container ID (the pre-ifname format).
  Empty content is a crash leftover and is reclaimed by any release or GC.
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

from cni_flannel.cni.errors import CNIError, InvalidConfig, PluginError

from .config import IPAddress, IPAMConfig, Range, RangeSet
from .store import Owner, Reservation, Store


class AddressUnavailable(PluginError):
    """A requested address is taken, or a range set has no free address."""

    code = 110


class DuplicateAllocation(PluginError):
    """The (container, ifname) already holds an address in this range set."""

    code = 111


Allocation = Tuple[IPAddress, Range]


def candidates(rset: RangeSet, last: Optional[IPAddress]) -> Iterator[Tuple[Range, int]]:
    """The reference's RangeIter: every address once, starting after ``last``.

    Starts at ``last + 1`` when ``last`` lies in the set (``last`` itself comes
    last), else at the first range's start; gateways are skipped.
    """
    ranges = rset.ranges
    idx, cur, first = 0, None, None  # type: int, Optional[int], Optional[int]
    if last is not None:
        for i, r in enumerate(ranges):
            if r.contains(last):
                idx, cur = i, int(last)
                break
    while True:
        r = ranges[idx]
        if cur is None:
            cur = first = r.start
        else:
            if cur == r.end:
                idx = (idx + 1) % len(ranges)
                r = ranges[idx]
                cur = r.start
            else:
                cur += 1
            if first is None:
                first = cur
            elif cur == first:  # back where we began: every address was offered
                return
        if cur != int(r.gateway):
            yield r, cur


def plan_requests(conf: IPAMConfig) -> Dict[int, IPAddress]:
    """Assign each requested address to the range set that holds it (pure).

    Every request must land in a distinct set and may not be a gateway —
    checked before anything is reserved, so a bad request changes nothing.
    """
    plan: Dict[int, IPAddress] = {}
    for ip in conf.requested:
        where = [(i, s.range_for(ip)) for i, s in enumerate(conf.range_sets) if s.range_for(ip)]
        if not where:
            sets = "; ".join(str(s) for s in conf.range_sets)
            raise InvalidConfig(
                f"failed to allocate all requested IPs: {ip}",
                f"{ip} is not inside any range set ({sets})",
            )
        idx, rng = where[0]
        if ip == rng.gateway:
            raise InvalidConfig(f"requested ip {ip} is subnet's gateway", f"range set {idx}: {rng}")
        if idx in plan:
            raise InvalidConfig(
                f"failed to allocate all requested IPs: {ip}",
                f"range set {idx} gives one address per container and {plan[idx]} was requested from it too",
            )
        plan[idx] = ip
    return plan


def allocate(store: Store, conf: IPAMConfig, container_id: str, ifname: str) -> List[Allocation]:
    """One address per range set for (container_id, ifname), all or nothing."""
    plan = plan_requests(conf)
    owner: Owner = (container_id, ifname)
    with store.locked():
        held = store.reservations()
        taken: Set[str] = {r.name for r in held}
        mine = [r.ip for r in held if r.owner is not None and r.owner[0] == container_id and r.owner[1] in (ifname, None)]
        done: List[Tuple[int, str, Optional[IPAddress]]] = []  # (set, name, previous last_reserved)
        out: List[Allocation] = []
        try:
            for idx, rset in enumerate(conf.range_sets):
                previous = store.last_reserved(idx)
                if idx in plan:
                    ip = plan[idx]
                    if not store.reserve(str(ip), *owner):
                        raise AddressUnavailable(
                            f"requested IP address {ip} is not available in range set {rset}",
                            f"failed to allocate for range {idx}",
                        )
                    rng = rset.range_for(ip)
                    assert rng is not None
                else:
                    for ip in mine:
                        if ip is not None and rset.range_for(ip):
                            raise DuplicateAllocation(
                                f"{ip} has been allocated to {container_id}, duplicate allocation is not allowed",
                                f"failed to allocate for range {idx}; release it with DEL first",
                            )
                    found = _first_free(store, rset, previous, taken, owner)
                    if found is None:
                        raise AddressUnavailable(
                            f"no IP addresses available in range set: {rset}",
                            f"failed to allocate for range {idx}; every address is reserved under "
                            f"{getattr(store, 'directory', 'the data directory')}",
                        )
                    rng, ip = found
                done.append((idx, str(ip), previous))
                store.set_last_reserved(idx, ip)
                out.append((ip, rng))
        except BaseException:
            _rollback(store, done)
            raise
    return out


def _first_free(store: Store, rset: RangeSet, last: Optional[IPAddress], taken: Set[str], owner: Owner) -> Optional[Allocation]:
    for rng, value in candidates(rset, last):
        ip = rng.addr(value)
        name = str(ip)
        if name in taken:  # known taken: skip the failing create the reference would do
            continue
        if store.reserve(name, *owner):
            return rng, ip
    return None


def _rollback(store: Store, done: List[Tuple[int, str, Optional[IPAddress]]]) -> None:
    for idx, name, previous in reversed(done):
        try:
            store.release(name)
            store.set_last_reserved(idx, previous)
        except (OSError, CNIError):
            pass  # keep undoing the rest; the original error is what the caller sees


def _matches(held: List[Reservation], container_id: str, ifname: str) -> List[Reservation]:
    exact = [r for r in held if r.owner == (container_id, ifname)]
    return exact or [r for r in held if r.owner == (container_id, None)]


def release(store: Store, container_id: str, ifname: str) -> List[str]:
    """Free every address of (container_id, ifname) plus crash leftovers.

    Returns the names released.  Nothing held (or no store at all) is success.
    """
    if not store.exists():
        return []
    with store.locked():
        held = store.reservations()
        victims = _matches(held, container_id, ifname)
        victims += [r for r in held if r.leftover]
        for r in victims:
            store.release(r.name)
    return [r.name for r in victims]


def find(store: Store, container_id: str, ifname: str) -> List[str]:
    """Addresses held by (container_id, ifname) — or, failing that, by the ID alone."""
    if not store.exists():
        return []
    with store.locked():
        return [r.name for r in _matches(store.reservations(), container_id, ifname)]


def gc(store: Store, valid: Sequence[Tuple[str, str]]) -> List[str]:
    """Release every reservation whose owner is not a valid attachment.

    A legacy ID-only reservation stays when its container ID is valid on any
    interface; empty (crash) reservations always go.
    """
    if not store.exists():
        return []
    keep = set(valid)
    keep_ids = {cid for cid, _ in valid}
    released = []
    with store.locked():
        for r in store.reservations():
            if r.ip is None or (r.owner is None and not r.readable):
                continue
            if r.owner is None or (r.owner[1] is None and r.owner[0] not in keep_ids) or (
                r.owner[1] is not None and r.owner not in keep
            ):
                store.release(r.name)
                released.append(r.name)
    return released

