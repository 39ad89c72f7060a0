"""Node objects -> leases, events and patches: the pure half of the Kubernetes subnet manager.

flannel's pkg/subnet/kube, without the I/O:

- a peer's lease is its spec.podCIDR(s) plus its ``flannel.alpha.coreos.com/*`` annotations;
  nodes whose ``kube-subnet-manager`` annotation is not "true" are not flannel's and are ignored;
- an update matters only when backend-type, backend-data or public-ip (per enabled family;
  backend-v6-data / public-ipv6 for IPv6) changed, or the podCIDRs did;
- our own node gets its annotations through one strategic-merge patch on nodes/status holding
  only the annotations that differ (what CreateTwoWayMergePatch yields upstream), and the
  ``NetworkUnavailable=False`` condition once the node is ready.

Node objects are plain dicts as the API server sends them.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..lease import (ANNOTATION_PREFIX, Lease, LeaseAttrs, LeaseFormatError, annotation_names,
                     annotations_patch, is_managed, lease_from_node)
from ..manager import ADDED, REMOVED, Event

log = logging.getLogger("cni_flannel.daemon.kube")


def name_of(node: Mapping[str, Any]) -> str:
    return str((node.get("metadata") or {}).get("name", ""))


def annotations_of(node: Mapping[str, Any]) -> Dict[str, str]:
    return dict((node.get("metadata") or {}).get("annotations") or {})


def pod_cidrs_of(node: Mapping[str, Any]) -> Tuple[List[str], str]:
    spec = node.get("spec") or {}
    return list(spec.get("podCIDRs") or []), str(spec.get("podCIDR") or "")


def has_pod_cidr(node: Mapping[str, Any]) -> bool:
    cidrs, cidr = pod_cidrs_of(node)
    return bool(cidrs or cidr)


def node_lease(node: Mapping[str, Any], enable_ipv4: bool = True, enable_ipv6: bool = False,
               prefix: str = ANNOTATION_PREFIX) -> Lease:
    """A managed node's lease (kube nodeToLease); LeaseFormatError names what is wrong."""
    cidrs, cidr = pod_cidrs_of(node)
    return lease_from_node(annotations_of(node), cidrs, cidr, enable_ipv4, enable_ipv6, name_of(node), prefix)


def relevant(node: Mapping[str, Any], enable_ipv4: bool, enable_ipv6: bool,
             prefix: str = ANNOTATION_PREFIX) -> Tuple[Any, ...]:
    """What an update must change to matter to the peers (handleUpdateLeaseEvent, plus podCIDRs)."""
    n = annotation_names(prefix)
    a = annotations_of(node)
    key: Tuple[Any, ...] = (a.get(n.backend_type),) + tuple(pod_cidrs_of(node)[0]) + (pod_cidrs_of(node)[1],)
    if enable_ipv4:
        key += (a.get(n.backend_data), a.get(n.public_ip))
    if enable_ipv6:
        key += (a.get(n.backend_v6_data), a.get(n.public_ipv6))
    return key


class NodeTracker:
    """The managed nodes we know, turning a list or watch events into manager batches.

    A node that is not managed, or whose lease cannot be read, is absent (one log line per
    change of it); if it had a lease before, that lease is REMOVED.
    """

    def __init__(self, enable_ipv4: bool = True, enable_ipv6: bool = False,
                 prefix: str = ANNOTATION_PREFIX) -> None:
        self.enable_ipv4, self.enable_ipv6, self.prefix = enable_ipv4, enable_ipv6, prefix
        self._known: Dict[str, Tuple[Tuple[Any, ...], Lease]] = {}
        self._bad: Dict[str, Tuple[Any, ...]] = {}  # unreadable nodes, logged once per change

    def _read(self, node: Mapping[str, Any]) -> Optional[Tuple[Tuple[Any, ...], Lease]]:
        name = name_of(node)
        if not is_managed(annotations_of(node), self.prefix):
            self._bad.pop(name, None)
            return None
        key = relevant(node, self.enable_ipv4, self.enable_ipv6, self.prefix)
        try:
            lease = node_lease(node, self.enable_ipv4, self.enable_ipv6, self.prefix)
        except LeaseFormatError as exc:
            if self._bad.get(name) != key:
                log.warning("ignoring node %r: %s", name, exc)
            self._bad[name] = key
            return None
        self._bad.pop(name, None)
        return key, lease

    def reset(self, nodes: List[Mapping[str, Any]]) -> List[Lease]:
        """After a (re-)list: every lease there is now."""
        self._known = {}
        for node in nodes:
            got = self._read(node)
            if got is not None:
                self._known[name_of(node)] = got
        return [lease for _, lease in self._known.values()]

    def apply(self, kind: str, node: Mapping[str, Any]) -> Optional[Event]:
        """One watch event (ADDED / MODIFIED / DELETED) -> an Event, or None when peers need nothing."""
        name = name_of(node)
        old = self._known.get(name)
        if kind == "DELETED":
            self._known.pop(name, None)
            self._bad.pop(name, None)
            return Event(REMOVED, old[1]) if old else None
        if old is not None and old[0] == relevant(node, self.enable_ipv4, self.enable_ipv6, self.prefix) \
                and is_managed(annotations_of(node), self.prefix):
            return None
        got = self._read(node)
        if got is None:
            self._known.pop(name, None)
            return Event(REMOVED, old[1]) if old else None
        self._known[name] = got
        return Event(ADDED, got[1])

    def __len__(self) -> int:
        return len(self._known)


# --- our own node ---------------------------------------------------------------------------

def own_annotations_patch(node: Mapping[str, Any], attrs: LeaseAttrs,
                          prefix: str = ANNOTATION_PREFIX) -> Optional[Dict[str, Any]]:
    """The strategic-merge patch (for nodes/status) that records ``attrs`` on our node, or None."""
    changed = annotations_patch(annotations_of(node), attrs, prefix)
    return {"metadata": {"annotations": changed}} if changed else None


def network_available_patch(now: Optional[datetime.datetime] = None) -> Dict[str, Any]:
    """NetworkUnavailable=False, as flannel's CompleteLease sets it (merged by type on the server)."""
    stamp = (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"status": {"conditions": [{"type": "NetworkUnavailable", "status": "False", "reason": "FlannelIsUp",
                                       "message": "Flannel is running on this node",
                                       "lastTransitionTime": stamp, "lastHeartbeatTime": stamp}]}}


@dataclass(frozen=True)
class Stored:
    """What our node already says about us (from a previous run, or an operator)."""

    attrs: Optional[LeaseAttrs]  # backend type/data as we last wrote them (VtepMAC reuse)
    node_public_ip: Optional[ipaddress.IPv4Address]  # <prefix>node-public-ip, set by an operator
    node_public_ipv6: Optional[ipaddress.IPv6Address]


def stored(node: Mapping[str, Any], prefix: str = ANNOTATION_PREFIX) -> Stored:
    n = annotation_names(prefix)
    a = annotations_of(node)
    base = n.public_ip[: -len("public-ip")]
    attrs = None
    if a.get(n.backend_type) or a.get(n.backend_data) or a.get(n.backend_v6_data):
        data = [_json(a.get(key), key, node) for key in (n.backend_data, n.backend_v6_data)]
        attrs = LeaseAttrs(backend_type=a.get(n.backend_type, ""), backend_data=data[0], backend_v6_data=data[1])
    return Stored(attrs, _addr(a.get(base + "node-public-ip"), 4, base + "node-public-ip", node),
                  _addr(a.get(base + "node-public-ipv6"), 6, base + "node-public-ipv6", node))


def _json(text: Optional[str], key: str, node: Mapping[str, Any]) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        log.warning("node %r: %s=%r is not JSON: not reusing it", name_of(node), key, text)
        return None


def _addr(text: Optional[str], version: int, key: str, node: Mapping[str, Any]) -> Any:
    if not text:
        return None
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        addr = None
    if addr is None or addr.version != version:
        log.warning("node %r: %s=%r is not an IPv%d address: ignored", name_of(node), key, text, version)
        return None
    return addr
