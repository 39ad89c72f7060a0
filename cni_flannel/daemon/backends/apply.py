"""The thin netlink part: read what a backend owns into a State, apply a Plan.

What is "ours" (:class:`Scope`): every permanent neighbour and FDB entry and every non-kernel
main-table route on the backend's own devices (flannel.<VNI>, flannel-v6.<VNI>), plus routes
through the external interface whose destination lies inside the cluster Network (host-gw and
DirectRouting routes).  Nothing else is read, so nothing else can be deleted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Set, Tuple

from cni_flannel.daemon.backends.plan import Entry, Fdb, Neigh, Plan, RouteEntry, State, in_networks
from cni_flannel.net.errors import NetFailure, NotFound, failure
from cni_flannel.net.types import RT_TABLE_MAIN, Route

log = logging.getLogger("cni_flannel.daemon.backends")

RTPROT_KERNEL = 2
NUD_PERMANENT = 0x80
IPV6_DEFAULT_METRIC = 1024


@dataclass(frozen=True)
class Scope:
    devices: Dict[str, int] = field(default_factory=dict)  # our devices: name -> ifindex
    ext: Optional[Tuple[str, int]] = None                   # external interface (name, ifindex)
    networks: Tuple[str, ...] = ()                          # the cluster Network(s)

    def index(self, dev: str) -> int:
        if dev in self.devices:
            return self.devices[dev]
        if self.ext and self.ext[0] == dev:
            return self.ext[1]
        raise KeyError(dev)


def read_state(h: Any, scope: Scope) -> State:
    names = {index: name for name, index in scope.devices.items()}
    entries: List[Entry] = []
    for index, name in names.items():
        for n in h.neighbours(index):
            if n.ip and n.state & NUD_PERMANENT:
                entries.append(Neigh(name, n.ip, n.mac.lower()))
        for n in h.neighbours(index, bridge=True):
            if n.state & NUD_PERMANENT:
                entries.append(Fdb(name, n.mac.lower(), n.ip))
    for r in h.routes(0, table=RT_TABLE_MAIN):
        if r.proto == RTPROT_KERNEL or not r.index:
            continue  # connected and link-local routes belong to the kernel
        if r.index in names:
            dev = names[r.index]
        elif scope.ext and r.index == scope.ext[1] and in_networks(r.dst, scope.networks):
            dev = scope.ext[0]
        else:
            continue
        metric = 0 if r.family == 6 and r.priority == IPV6_DEFAULT_METRIC else r.priority
        entries.append(RouteEntry(r.dst, r.gw, dev, r.onlink, metric))
    return State.of(entries)


def _route(e: RouteEntry, scope: Scope) -> Route:
    metric = e.metric or 0
    return Route(dst=e.dst, gw=e.gw, index=scope.index(e.dev), onlink=e.onlink, priority=metric)


def _delete(h: Any, e: Entry, scope: Scope) -> None:
    if isinstance(e, RouteEntry):
        h.delete_route(_route(e, scope))
    elif isinstance(e, Neigh):
        h.delete_neighbour(scope.index(e.dev), e.ip)
    else:
        h.delete_fdb(scope.index(e.dev), e.mac, e.dst)


def _add(h: Any, e: Entry, scope: Scope) -> None:
    if isinstance(e, RouteEntry):
        h.add_route(_route(e, scope), replace=True)
    elif isinstance(e, Neigh):
        h.set_neighbour(scope.index(e.dev), e.ip, e.mac)
    else:
        h.set_fdb(scope.index(e.dev), e.mac, e.dst)


BATCH_FROM = 16  # changes: below this, one request each is as quick and simpler


def _message(e: Entry, add: bool, scope: Scope) -> Any:
    from cni_flannel.net import batch
    if isinstance(e, RouteEntry):
        return batch.route(add, e.dst, e.gw, scope.index(e.dev), e.onlink, e.metric or 0)
    if isinstance(e, Neigh):
        return batch.neigh(add, scope.index(e.dev), e.ip, e.mac)
    return batch.fdb(add, scope.index(e.dev), e.mac, e.dst)


def _batched(h: Any, plan: Plan, scope: Scope) -> List[Tuple[Entry, NetFailure]]:
    """apply() in three netlink round trips per window: deletes, neighbours + FDB, routes."""
    from cni_flannel.net.batch import Batch
    failed: List[Tuple[Entry, NetFailure]] = []
    broken: Set[str] = set()
    adds_first = [e for e in plan.add if not isinstance(e, RouteEntry)]
    with Batch(getattr(h, "netns", None)) as b:
        for entries, add in ((list(plan.delete), False), (adds_first, True), (None, True)):
            if entries is None:  # routes last, and none for a peer whose neighbour/FDB failed
                entries = [e for e in plan.add if isinstance(e, RouteEntry) and not (e.peer and e.peer in broken)]
            errs = b.run([_message(e, add, scope) for e in entries])
            for e, err in zip(entries, errs):
                exc = failure(f"{'adding' if add else 'deleting'} {e}", err) if err else None
                if exc is None or (not add and isinstance(exc, NotFound)):
                    log.debug("%s %s%s", "added" if add else "deleted", e, f" (peer {e.peer})" if e.peer else "")
                    continue
                failed.append((e, exc))
                if add:
                    broken.add(e.peer)
    return failed


def apply(h: Any, plan: Plan, scope: Scope) -> List[Tuple[Entry, NetFailure]]:
    """Apply ``plan``; return what failed (already gone counts as deleted).

    A peer whose neighbour or FDB entry failed gets no route: traffic to it would otherwise
    be sent into the VXLAN device with nowhere to go (upstream skips the route the same way).
    Large plans on a real netlink handle go in batches (:mod:`cni_flannel.net.batch`).
    """
    if len(plan.delete) + len(plan.add) >= BATCH_FROM and type(h).__name__ == "Handle":
        return _batched(h, plan, scope)
    failed: List[Tuple[Entry, NetFailure]] = []
    broken: Set[str] = set()
    for e in plan.delete:
        try:
            _delete(h, e, scope)
            log.info("deleted %s%s", e, f" (peer {e.peer})" if e.peer else "")
        except NotFound:
            pass
        except NetFailure as exc:
            failed.append((e, exc))
    for e in plan.add:
        if isinstance(e, RouteEntry) and e.peer and e.peer in broken:
            continue
        try:
            _add(h, e, scope)
            log.info("added %s%s", e, f" (peer {e.peer})" if e.peer else "")
        except NetFailure as exc:
            failed.append((e, exc))
            broken.add(e.peer)
    return failed
