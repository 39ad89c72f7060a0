"""Desired vs current data-plane state -> the changes to make. Pure: no netlink here.

A backend describes what the kernel should hold as a :class:`State` (sets of neighbour, FDB
and route entries, devices named, not numbered); ``apply`` reads the current state of the
devices it owns and applies ``diff(desired, current)``.  Every add is a create-or-replace, so
an entry whose *key* is re-added is overwritten in place rather than deleted first (no gap in
traffic, and deleting a neighbour by IP after re-adding it would remove the new one).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import FrozenSet, Iterable, List, Optional, Sequence, Tuple, Union


@dataclass(frozen=True)
class Neigh:
    """`ip neigh replace <ip> lladdr <mac> dev <dev> nud permanent`."""
    dev: str
    ip: str
    mac: str
    peer: str = field(default="", compare=False)  # for error messages

    @property
    def key(self) -> Tuple:
        return ("neigh", self.dev, self.ip)  # one entry per IP: a replace overwrites it

    def __str__(self) -> str:
        return f"neighbour {self.ip} lladdr {self.mac} dev {self.dev}"


@dataclass(frozen=True)
class Fdb:
    """`bridge fdb replace <mac> dev <dev> dst <dst> self permanent`."""
    dev: str
    mac: str
    dst: Optional[str]
    peer: str = field(default="", compare=False)

    @property
    def key(self) -> Tuple:
        # A VXLAN FDB entry may have several remotes: each (mac, dst) stands alone.
        return ("fdb", self.dev, self.mac, self.dst)

    def __str__(self) -> str:
        return f"FDB entry {self.mac} dst {self.dst} dev {self.dev}"


@dataclass(frozen=True)
class RouteEntry:
    """`ip route replace <dst> via <gw> dev <dev> [onlink]` in the main table."""
    dst: str
    gw: Optional[str]
    dev: str
    onlink: bool = False
    metric: int = 0             # IPv6's kernel default 1024 is read back as 0
    peer: str = field(default="", compare=False)

    @property
    def key(self) -> Tuple:
        return ("route", self.dst, self.metric)  # what a route replace matches on

    def __str__(self) -> str:
        return f"route {self.dst} via {self.gw} dev {self.dev}{' onlink' if self.onlink else ''}"


Entry = Union[Neigh, Fdb, RouteEntry]


@dataclass(frozen=True)
class State:
    neighs: FrozenSet[Neigh] = frozenset()
    fdb: FrozenSet[Fdb] = frozenset()
    routes: FrozenSet[RouteEntry] = frozenset()

    @classmethod
    def of(cls, entries: Iterable[Entry]) -> "State":
        items = list(entries)
        return cls(frozenset(e for e in items if isinstance(e, Neigh)),
                   frozenset(e for e in items if isinstance(e, Fdb)),
                   frozenset(e for e in items if isinstance(e, RouteEntry)))

    def entries(self) -> List[Entry]:
        return [*self.neighs, *self.fdb, *self.routes]

    def __or__(self, other: "State") -> "State":
        return State(self.neighs | other.neighs, self.fdb | other.fdb, self.routes | other.routes)


@dataclass(frozen=True)
class Plan:
    """Deletes first (routes, then neighbours and FDB), then adds (neighbours and FDB before
    the route, so the kernel never resolves the gateway by ARP over the VXLAN device)."""
    delete: Tuple[Entry, ...] = ()
    add: Tuple[Entry, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.delete and not self.add

    def to_dict(self) -> dict:
        return {"delete": [str(e) for e in self.delete], "add": [str(e) for e in self.add]}


_DELETE_ORDER = {RouteEntry: 0, Neigh: 1, Fdb: 2}
_ADD_ORDER = {Neigh: 0, Fdb: 1, RouteEntry: 2}


def diff(desired: State, current: State) -> Plan:
    """What turns ``current`` into ``desired`` (entries outside ``current``'s scope untouched)."""
    want, have = set(desired.entries()), set(current.entries())
    adds = want - have
    overwritten = {e.key for e in adds}
    deletes = [e for e in have - want if e.key not in overwritten]
    return Plan(delete=tuple(sorted(deletes, key=lambda e: (_DELETE_ORDER[type(e)], str(e)))),
                add=tuple(sorted(adds, key=lambda e: (_ADD_ORDER[type(e)], str(e)))))


def directly_connected(ip: str, networks: Sequence[str]) -> bool:
    """True when ``ip`` is inside one of ``networks`` (the external interface's address
    prefixes): reachable without a router, so a route can point straight at it."""
    addr = ipaddress.ip_address(ip)
    for cidr in networks:
        net = ipaddress.ip_network(cidr, strict=False)
        if net.version == addr.version and addr in net and net.prefixlen < net.max_prefixlen:
            return True
    return False


def in_networks(cidr: str, networks: Sequence[str]) -> bool:
    """True when the network ``cidr`` lies inside one of ``networks`` (the cluster Network)."""
    net = ipaddress.ip_network(cidr, strict=False)
    for outer in networks:
        parent = ipaddress.ip_network(outer, strict=False)
        if parent.version == net.version and net.subnet_of(parent):  # type: ignore[arg-type]
            return True
    return False
